/*
 * rocksdb_scan_floor.c: what RocksDB alone costs a full scan, per row, with
 * none of iq_fdw around it (issue 20: is 1/3 of the heap copy's full scan
 * within reach while every scan iterates the store?).
 *
 *   cc -O2 bench/rocksdb_scan_floor.c -lrocksdb -o /tmp/rocksdb_scan_floor
 *   /tmp/rocksdb_scan_floor <new directory> [rows, default 333334]
 *
 * Writes rows keys "b:NNNNNNN" (every third of bench/fdw_lookup.sh's, one
 * instance's share of 1,000,000 on three) with 8-byte values into a new
 * database with the store's table options (worker/store/options.c) and 1 MB
 * memtables, so that it ends as a bulk load leaves a partition: L0 files
 * and a memtable.  Then times full scans as worker/store/cursor.c reads
 * them (batches of 8,192 rows, a new iterator and a seek past the last key
 * for each, key and value read per row), best of 12, in ns a row:
 *   - as loaded, with default read options and with each of
 *     verify_checksums off, pin_data, ignore_range_deletions, tailing, and
 *     the thread's perf level disabled;
 *   - after a flush and a forced compaction into one sorted run.
 * The best of several scans: the machine is shared, the floor is the point.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rocksdb/c.h>

#define BATCH_ROWS 8192

typedef enum
{
	RO_DEFAULT, RO_NO_CHECKSUMS, RO_PIN_DATA, RO_NO_RANGE_DELETIONS, RO_TAILING, RO_PERF_OFF
} Variant;

static const char *const variant_names[] = {
	"default read options", "verify_checksums off", "pin_data",
	"ignore_range_deletions", "tailing", "perf level disabled"
};

/* the values read, so that the compiler keeps the reads */
static volatile unsigned value_sink;

static double
now_ns(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e9 + t.tv_nsec;
}

static rocksdb_readoptions_t *
read_options(Variant v)
{
	rocksdb_readoptions_t *ro = rocksdb_readoptions_create();

	rocksdb_set_perf_level(v == RO_PERF_OFF ? rocksdb_disable : rocksdb_enable_count);
	if (v == RO_NO_CHECKSUMS)
		rocksdb_readoptions_set_verify_checksums(ro, 0);
	if (v == RO_PIN_DATA)
		rocksdb_readoptions_set_pin_data(ro, 1);
	if (v == RO_NO_RANGE_DELETIONS)
		rocksdb_readoptions_set_ignore_range_deletions(ro, 1);
	if (v == RO_TAILING)
		rocksdb_readoptions_set_tailing(ro, 1);
	return ro;
}

/* scan_once: every row, a batch at a time as the cursor reads; the rows */
static long
scan_once(rocksdb_t *db, rocksdb_readoptions_t *ro)
{
	char		last[64];
	size_t		last_len = 0;
	long		rows = 0;
	int			more = 1;

	for (int started = 0; more; started = 1)
	{
		rocksdb_iterator_t *it = rocksdb_create_iterator(db, ro);
		int			got = 0;

		if (!started)
			rocksdb_iter_seek_to_first(it);
		else
		{
			rocksdb_iter_seek(it, last, last_len);
			if (rocksdb_iter_valid(it))
				rocksdb_iter_next(it);
		}
		for (; got < BATCH_ROWS && rocksdb_iter_valid(it); got++, rows++)
		{
			size_t		kl,
						vl;
			const char *k = rocksdb_iter_key(it, &kl);
			const char *v = rocksdb_iter_value(it, &vl);

			value_sink += (unsigned char) v[vl - 1];
			last_len = kl < sizeof(last) ? kl : sizeof(last);
			memcpy(last, k, last_len);
			rocksdb_iter_next(it);
		}
		more = rocksdb_iter_valid(it);
		rocksdb_iter_destroy(it);
	}
	return rows;
}

static void
report(rocksdb_t *db, const char *shape, Variant v)
{
	rocksdb_readoptions_t *ro = read_options(v);
	double		best = 1e30;
	long		rows = 0;

	for (int i = 0; i < 12; i++)
	{
		double		t0 = now_ns();
		double		t;

		rows = scan_once(db, ro);
		t = now_ns() - t0;
		if (t < best)
			best = t;
	}
	rocksdb_readoptions_destroy(ro);
	printf("%-10s %-24s %ld rows  %6.1f ns a row\n", shape, variant_names[v], rows, best / rows);
}

static rocksdb_options_t *
store_options(void)
{
	rocksdb_options_t *o = rocksdb_options_create();
	rocksdb_block_based_table_options_t *b = rocksdb_block_based_options_create();

	rocksdb_block_based_options_set_format_version(b, 5);
	rocksdb_block_based_options_set_block_cache(b, rocksdb_cache_create_lru(256 << 20));
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(b, 1);
	rocksdb_block_based_options_set_filter_policy(b, rocksdb_filterpolicy_create_bloom(10));
	rocksdb_block_based_options_set_index_type(b, rocksdb_block_based_table_index_type_two_level_index_search);
	rocksdb_block_based_options_set_partition_filters(b, 1);
	rocksdb_block_based_options_set_metadata_block_size(b, 4096);
	rocksdb_block_based_options_set_pin_top_level_index_and_filter(b, 1);
	rocksdb_options_set_block_based_table_factory(o, b);
	rocksdb_options_set_compression(o, rocksdb_lz4_compression);
	rocksdb_options_set_create_if_missing(o, 1);
	rocksdb_options_set_write_buffer_size(o, 1 << 20);
	rocksdb_options_set_max_write_buffer_number(o, 2);
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(o, 0.1);
	rocksdb_options_set_memtable_whole_key_filtering(o, 1);
	return o;
}

static void
levels(rocksdb_t *db)
{
	char	   *l0 = rocksdb_property_value(db, "rocksdb.num-files-at-level0");
	char	   *l1 = rocksdb_property_value(db, "rocksdb.num-files-at-level1");
	char	   *mem = rocksdb_property_value(db, "rocksdb.cur-size-all-mem-tables");

	printf("files at L0 %s, at L1 %s, memtable bytes %s\n", l0, l1, mem);
	free(l0);
	free(l1);
	free(mem);
}

int
main(int argc, char **argv)
{
	char	   *err = NULL;
	long		n = argc > 2 ? atol(argv[2]) : 333334;
	rocksdb_t  *db;
	rocksdb_writeoptions_t *wo = rocksdb_writeoptions_create();
	rocksdb_compactoptions_t *co = rocksdb_compactoptions_create();
	rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();

	if (argc < 2)
	{
		fprintf(stderr, "usage: %s <new directory> [rows]\n", argv[0]);
		return 2;
	}
	db = rocksdb_open(store_options(), argv[1], &err);
	if (err)
	{
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	for (long i = 0; i < n; i++)
	{
		char		k[32];
		char		v[8] = {0, 0, 0, 0, 0, 0, 0, 1};
		int			kl = snprintf(k, sizeof(k), "b:%07ld", i * 3);

		rocksdb_put(db, wo, k, kl, v, sizeof(v), &err);
		if (err)
		{
			fprintf(stderr, "%s\n", err);
			return 1;
		}
	}
	sleep(2);					/* background flushes and compactions settle */
	levels(db);
	for (Variant v = RO_DEFAULT; v <= RO_PERF_OFF; v++)
		report(db, "as loaded", v);
	rocksdb_flush(db, fo, &err);
	rocksdb_compactoptions_set_bottommost_level_compaction(co, 2);	/* kForce */
	rocksdb_compact_range_opt(db, co, NULL, 0, NULL, 0);
	levels(db);
	report(db, "compacted", RO_DEFAULT);
	report(db, "compacted", RO_PERF_OFF);
	fflush(stdout);
	_exit(0);					/* the numbers are out; no orderly close needed */
}

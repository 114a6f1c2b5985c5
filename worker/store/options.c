/*-------------------------------------------------------------------------
 * options.c
 *	  The RocksDB options of the store: one LRU block cache shared by every
 *	  partition's database, the read and write options, and each database's
 *	  options sized from the memory budget.
 *
 * Memory is bounded by the block cache (index and filter blocks charged to
 * it) and by a write-buffer limit per database: the memtable share of the
 * budget (memory.c) over the partition count.
 *
 * Reviewed against RocksDB 7.8 (Debian 12) and 9.10 (Debian 13): the same
 * source builds on both, with no version check.
 *	- C API: every function used here, in write.c and the rest of the store
 *	  is in the c.h of 7.8.3, 9.10.0 and 11.x, none of them deprecated.
 *	- format_version: 9.0 made 6 the default (readable by 8.6 and later),
 *	  which 7.8 cannot read; pinned to 5, the 7.8 default (readable since
 *	  6.6), so a state directory stays readable by a build of either, on an
 *	  upgrade of the distribution and on its way back.  Format 6's checksums
 *	  of a block's place in its file are what is given up; the changelog
 *	  rebuilds a damaged store anyway.
 *	- level_compaction_dynamic_level_bytes: true by default since 8.4,
 *	  false in 7.8.  Left to each: 9.x reshapes an existing store to it on
 *	  open, while 7.8 warns against switching it on for an existing
 *	  database; either shape reads the same.
 *	- Bloom filter: rocksdb_filterpolicy_create_bloom is the same full
 *	  filter (the format 5 Bloom) in both; 9.x's optimize_filters_for_memory
 *	  (on by default) sizes it to the allocator without changing its
 *	  format, and 7.8 has no C setter for it: left.
 *	- Other defaults that changed (compaction_readahead_size 2 MB,
 *	  fail_if_options_file_error, ingestion's write_global_seqno off, the
 *	  default block cache's size) either do not apply (our cache, our
 *	  max_open_files) or are better as 9.x has them.
 *-------------------------------------------------------------------------
 */
#include <stddef.h>

#include <rocksdb/c.h>

#include "worker/store/store_internal.h"

/* readable by RocksDB 6.6 and later, 7.8 included (see above) */
#define TABLE_FORMAT_VERSION	5

rocksdb_readoptions_t *iq_store_read_opts = NULL;
rocksdb_writeoptions_t *iq_store_write_opts = NULL;

static rocksdb_cache_t *block_cache = NULL;
static size_t memtable_bytes = 0;

/*
 * iq_store_options_init
 *		The shared objects, made once; the memtable budget may change with
 *		each call.
 */
void
iq_store_options_init(size_t block_cache_bytes, size_t memtables)
{
	memtable_bytes = memtables;
	if (block_cache == NULL)
		block_cache = rocksdb_cache_create_lru(block_cache_bytes);
	if (iq_store_read_opts == NULL)
		iq_store_read_opts = rocksdb_readoptions_create();
	if (iq_store_write_opts == NULL)
	{
		iq_store_write_opts = rocksdb_writeoptions_create();
		/* the WAL survives a crash of the process; the changelog covers the machine */
		rocksdb_writeoptions_set_sync(iq_store_write_opts, 0);
	}
}

/* iq_store_options_free: after every database is closed */
void
iq_store_options_free(void)
{
	if (block_cache)
		rocksdb_cache_destroy(block_cache);
	block_cache = NULL;
	if (iq_store_read_opts)
		rocksdb_readoptions_destroy(iq_store_read_opts);
	iq_store_read_opts = NULL;
	if (iq_store_write_opts)
		rocksdb_writeoptions_destroy(iq_store_write_opts);
	iq_store_write_opts = NULL;
}

/*
 * table_options
 *		Block-based tables in the shared cache, with bloom filters, in a
 *		format both RocksDB 7.8 and 9.x read.
 *
 * Filters and indexes in 4 KB partitions under a pinned top level: a
 * whole-file filter (1.2 MB for a million keys) that a small block cache
 * cannot keep was read and checksummed again for each get, which was 80% of
 * ingest time with 10 M keys and a 64 MB budget.
 */
static void
table_options(rocksdb_options_t *opts)
{
	rocksdb_block_based_table_options_t *bbto = rocksdb_block_based_options_create();

	rocksdb_block_based_options_set_format_version(bbto, TABLE_FORMAT_VERSION);
	rocksdb_block_based_options_set_block_cache(bbto, block_cache);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(bbto, 1);
	/* most joins miss (no such customer): a bloom filter answers those */
	rocksdb_block_based_options_set_filter_policy(bbto, rocksdb_filterpolicy_create_bloom(10));
	rocksdb_block_based_options_set_index_type(bbto,
											   rocksdb_block_based_table_index_type_two_level_index_search);
	rocksdb_block_based_options_set_partition_filters(bbto, 1);
	rocksdb_block_based_options_set_metadata_block_size(bbto, 4096);
	rocksdb_block_based_options_set_pin_top_level_index_and_filter(bbto, 1);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(bbto, 1);
	rocksdb_options_set_block_based_table_factory(opts, bbto);
	rocksdb_block_based_options_destroy(bbto);
}

/*
 * iq_store_db_options
 *		Options of one partition's database, sized from the budget and the
 *		np partitions sharing it (the caller destroys them).
 *
 * The memtable share is split between the partitions; within one, the
 * database-wide limit makes RocksDB flush the largest column family's
 * memtable when the sum reaches it.
 */
rocksdb_options_t *
iq_store_db_options(int np)
{
	rocksdb_options_t *opts = rocksdb_options_create();
	size_t		per_db;
	size_t		per_cf;

	if (np <= 0)
		np = 1;
	per_db = memtable_bytes / np;
	if (per_db < 1024 * 1024)
		per_db = 1024 * 1024;
	per_cf = per_db / 2;

	table_options(opts);
	rocksdb_options_set_create_if_missing(opts, 1);
	rocksdb_options_set_create_missing_column_families(opts, 1);
	rocksdb_options_set_db_write_buffer_size(opts, per_db);
	rocksdb_options_set_write_buffer_size(opts, per_cf);
	rocksdb_options_set_max_write_buffer_number(opts, 2);
	rocksdb_options_set_max_total_wal_size(opts, per_db * 2);
	rocksdb_options_set_max_open_files(opts, 256);
	rocksdb_options_set_max_background_jobs(opts, 2);
	/* one writer: the plain memtable insert, fast for keys in order */
	rocksdb_options_set_allow_concurrent_memtable_write(opts, 0);
	rocksdb_options_set_keep_log_file_num(opts, 2);
	rocksdb_options_set_info_log_level(opts, 2);	/* WARN */
	rocksdb_options_set_compression(opts, rocksdb_lz4_compression);
	rocksdb_options_set_memtable_prefix_bloom_size_ratio(opts, 0.1);
	rocksdb_options_set_memtable_whole_key_filtering(opts, 1);
	return opts;
}

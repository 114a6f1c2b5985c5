/*-------------------------------------------------------------------------
 * store.c
 *	  RocksDB state per partition: open/close/write for the worker's main
 *	  thread, reads for any thread (store.h, store_admin.h).
 *
 * No PostgreSQL function is called here (postgres.h only for types), because the HTTP and local-socket
 * threads read through this file.  Each partition has a writer-preferring
 * rwlock: readers (get, a cursor's batch) hold it shared while they use the
 * database, open/close take it exclusively, so a rebalance that closes a
 * partition waits for its readers and never frees a database under them.
 * No reader keeps it while it waits on anyone else (a client, a peer): a
 * cursor reads a bounded batch and lets go (see "cursors" below).
 * The main thread writes without the lock: RocksDB is safe for concurrent
 * reads and writes, and only the main thread opens or closes.
 *
 * Memory is bounded by one LRU block cache shared by every database (index
 * and filter blocks charged to it) and by a write-buffer limit per database:
 * the memtable share of the budget (memory.c) over the partition count.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "common/shmem.h"
#include "common/value_cache.h"
#include "worker/store/store_admin.h"

/* RocksDB insists on "default"; it stays empty */
#define CF_OF(store)	((store) + 1)
#define CF_CHECKPOINT	(IQ_NUM_STORES + 1)
#define NUM_CF			(IQ_NUM_STORES + 2)

static const char *const cf_names[NUM_CF] = {
	"default", "customer-v1-changelog", "order-count", "checkpoint"
};

typedef struct PartStore
{
	pthread_rwlock_t lock;
	rocksdb_t  *db;				/* NULL when closed */
	rocksdb_column_family_handle_t *cf[NUM_CF];
	bool		held;			/* assigned to us and published */
	bool		restoring;
	uint64_t	generation;		/* changes when db is opened or closed */
	int64_t		consumed_offset;	/* atomics: read without the lock */
	int64_t		end_offset;
} PartStore;

struct IqStoreBatch
{
	int			partition;
	rocksdb_writebatch_t *wb;
};


static PartStore parts[IQ_MAX_PARTITIONS];

/*
 * One past the highest partition ever opened: readers scan only up to it,
 * since taking 256 partition locks per request was a tenth of the cost of
 * a local point read.
 */
static int	parts_limit = 0;
static bool initialized = false;
static char *base_dir = NULL;
static size_t cache_bytes = 0;
static size_t memtable_bytes = 0;
static rocksdb_cache_t *block_cache = NULL;
static rocksdb_readoptions_t *read_opts = NULL;
static rocksdb_writeoptions_t *write_opts = NULL;
static int	partition_count = 0;	/* atomic */

static void set_err(char **err, const char *fmt,...) __attribute__((format(printf, 2, 3)));

/*
 * set_err
 *		A malloc'd message for the caller (no PostgreSQL allocator here).
 */
static void
set_err(char **err, const char *fmt,...)
{
	char		buf[1024];
	va_list		ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	*err = strdup(buf);
}

/*
 * mkdir_p
 *		Create a directory and its parents (0700, as PostgreSQL's own).
 */
static int
mkdir_p(const char *path)
{
	char		tmp[4096];
	size_t		len = strlen(path);

	if (len >= sizeof(tmp))
		return ENAMETOOLONG;
	memcpy(tmp, path, len + 1);
	for (char *p = tmp + 1; *p; p++)
	{
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
			return errno;
		*p = '/';
	}
	if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
		return errno;
	return 0;
}

/*
 * iq_store_init
 *		Shared cache and options; partitions are opened on assignment.
 */
bool
iq_store_init(const char *dir, size_t block_cache_bytes, size_t memtables, char **err)
{
	int			rc;

	if (!initialized)
	{
		pthread_rwlockattr_t attr;

		pthread_rwlockattr_init(&attr);
		/* a waiting close must not be starved by a stream of new readers */
		pthread_rwlockattr_setkind_np(&attr,
									  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
		for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
		{
			memset(&parts[i], 0, sizeof(PartStore));
			pthread_rwlock_init(&parts[i].lock, &attr);
			parts[i].consumed_offset = -1;
			parts[i].end_offset = -1;
		}
		pthread_rwlockattr_destroy(&attr);
		initialized = true;
	}
	rc = mkdir_p(dir);
	if (rc != 0)
	{
		set_err(err, "could not create state directory \"%s\": %s", dir, strerror(rc));
		return false;
	}
	free(base_dir);
	base_dir = strdup(dir);
	cache_bytes = block_cache_bytes;
	memtable_bytes = memtables;
	if (block_cache == NULL)
		block_cache = rocksdb_cache_create_lru(cache_bytes);
	if (read_opts == NULL)
		read_opts = rocksdb_readoptions_create();
	if (write_opts == NULL)
	{
		write_opts = rocksdb_writeoptions_create();
		/* the WAL survives a crash of the process; the changelog covers the machine */
		rocksdb_writeoptions_set_sync(write_opts, 0);
	}
	return true;
}

void
iq_store_set_partition_count(int n)
{
	__atomic_store_n(&partition_count, n, __ATOMIC_RELEASE);
}

int
iq_store_partition_count(void)
{
	return __atomic_load_n(&partition_count, __ATOMIC_ACQUIRE);
}

static void
partition_path(int partition, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%d", base_dir, partition);
}

/*
 * make_options
 *		Options of one partition's database, sized from the budget.
 *
 * The memtable share is split between the partitions; within one, the
 * database-wide limit makes RocksDB flush the largest column family's
 * memtable when the sum reaches it.
 */
static rocksdb_options_t *
make_options(void)
{
	rocksdb_options_t *opts = rocksdb_options_create();
	rocksdb_block_based_table_options_t *bbto;
	int			np = iq_store_partition_count();
	size_t		per_db;
	size_t		per_cf;

	if (np <= 0)
		np = 1;
	per_db = memtable_bytes / np;
	if (per_db < 1024 * 1024)
		per_db = 1024 * 1024;
	per_cf = per_db / 2;

	bbto = rocksdb_block_based_options_create();
	rocksdb_block_based_options_set_block_cache(bbto, block_cache);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks(bbto, 1);
	/* most joins miss (no such customer): a bloom filter answers those */
	rocksdb_block_based_options_set_filter_policy(bbto, rocksdb_filterpolicy_create_bloom(10));

	/*
	 * Filters and indexes in 4 KB partitions under a pinned top level: a
	 * whole-file filter (1.2 MB for a million keys) that a small block
	 * cache cannot keep was read and checksummed again for each get,
	 * which was 80% of ingest time with 10 M keys and a 64 MB budget.
	 */
	rocksdb_block_based_options_set_index_type(bbto,
											   rocksdb_block_based_table_index_type_two_level_index_search);
	rocksdb_block_based_options_set_partition_filters(bbto, 1);
	rocksdb_block_based_options_set_metadata_block_size(bbto, 4096);
	rocksdb_block_based_options_set_pin_top_level_index_and_filter(bbto, 1);
	rocksdb_block_based_options_set_cache_index_and_filter_blocks_with_high_priority(bbto, 1);
	rocksdb_options_set_block_based_table_factory(opts, bbto);
	rocksdb_block_based_options_destroy(bbto);

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

static int64_t
decode_i64(const char *p)
{
	uint64_t	u = 0;

	for (int i = 0; i < 8; i++)
		u = (u << 8) | (unsigned char) p[i];
	return (int64_t) u;
}

static void
encode_i64(int64_t v, char out[8])
{
	uint64_t	u = (uint64_t) v;

	for (int i = 7; i >= 0; i--)
	{
		out[i] = (char) (u & 0xff);
		u >>= 8;
	}
}

static const char *const ckpt_keys[3] = {"customer", "order", "changelog"};

/*
 * read_checkpoint
 *		The offsets written with the data; -1 where absent.
 */
static bool
read_checkpoint(PartStore *ps, IqCheckpoint *ck, char **err)
{
	int64_t    *slots[3] = {&ck->customer_next, &ck->order_next, &ck->changelog_next};

	for (int i = 0; i < 3; i++)
	{
		char	   *e = NULL;
		size_t		vlen = 0;
		char	   *v = rocksdb_get_cf(ps->db, read_opts, ps->cf[CF_CHECKPOINT],
									   ckpt_keys[i], strlen(ckpt_keys[i]), &vlen, &e);

		*slots[i] = -1;
		if (e != NULL)
		{
			set_err(err, "could not read checkpoint: %s", e);
			free(e);
			return false;
		}
		if (v != NULL && vlen == 8)
			*slots[i] = decode_i64(v);
		rocksdb_free(v);
	}
	return true;
}

/*
 * iq_store_open
 *		Open (or create) one partition's database, not yet readable.
 */
bool
iq_store_open(int partition, IqCheckpoint *checkpoint, bool *existed, char **err)
{
	PartStore  *ps;
	char		path[4096];
	char		current[4200];
	struct stat st;
	rocksdb_options_t *opts;
	const rocksdb_options_t *cf_opts[NUM_CF];
	char	   *e = NULL;
	rocksdb_t  *db;
	int			rc;

	if (partition < 0 || partition >= IQ_MAX_PARTITIONS)
	{
		set_err(err, "partition %d is out of range", partition);
		return false;
	}
	ps = &parts[partition];
	if (ps->db != NULL)
	{
		if (existed)
			*existed = true;
		return read_checkpoint(ps, checkpoint, err);
	}

	partition_path(partition, path, sizeof(path));
	snprintf(current, sizeof(current), "%s/CURRENT", path);
	if (existed)
		*existed = (stat(current, &st) == 0);
	rc = mkdir_p(path);
	if (rc != 0)
	{
		set_err(err, "could not create \"%s\": %s", path, strerror(rc));
		return false;
	}

	opts = make_options();
	for (int i = 0; i < NUM_CF; i++)
		cf_opts[i] = opts;
	{
		rocksdb_column_family_handle_t *handles[NUM_CF];

		db = rocksdb_open_column_families(opts, path, NUM_CF,
										  (const char *const *) cf_names,
										  cf_opts, handles, &e);
		if (e != NULL)
		{
			set_err(err, "could not open RocksDB at \"%s\": %s", path, e);
			free(e);
			rocksdb_options_destroy(opts);
			return false;
		}
		pthread_rwlock_wrlock(&ps->lock);
		ps->db = db;
		ps->generation++;
		if (partition + 1 > __atomic_load_n(&parts_limit, __ATOMIC_RELAXED))
			__atomic_store_n(&parts_limit, partition + 1, __ATOMIC_RELEASE);
		memcpy(ps->cf, handles, sizeof(handles));
		ps->held = false;
		ps->restoring = true;
		pthread_rwlock_unlock(&ps->lock);
	}
	rocksdb_options_destroy(opts);
	return read_checkpoint(ps, checkpoint, err);
}

bool
iq_store_is_empty(int partition, IqStoreId store)
{
	PartStore  *ps = &parts[partition];
	rocksdb_iterator_t *it;
	bool		empty;

	if (ps->db == NULL)
		return false;
	it = rocksdb_create_iterator_cf(ps->db, read_opts, ps->cf[CF_OF(store)]);
	rocksdb_iter_seek_to_first(it);
	empty = !rocksdb_iter_valid(it);
	if (empty)
	{
		char	   *e = NULL;

		rocksdb_iter_get_error(it, &e);
		if (e != NULL)
		{
			empty = false;		/* unknown: not known complete */
			free(e);
		}
	}
	rocksdb_iter_destroy(it);
	return empty;
}

bool
iq_store_is_open(int partition)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS && parts[partition].db != NULL;
}

void
iq_store_set_held(int partition, bool held, bool restoring)
{
	PartStore  *ps = &parts[partition];

	pthread_rwlock_wrlock(&ps->lock);
	ps->held = held && ps->db != NULL;
	ps->restoring = restoring;
	iq_vc_new_generation(iq_value_cache, partition);
	pthread_rwlock_unlock(&ps->lock);
}

/*
 * close_locked
 *		Free a database's handles; the caller holds the write lock.
 */
static void
close_locked(PartStore *ps)
{
	if (ps->db == NULL)
		return;
	for (int i = 0; i < NUM_CF; i++)
	{
		rocksdb_column_family_handle_destroy(ps->cf[i]);
		ps->cf[i] = NULL;
	}
	rocksdb_close(ps->db);
	ps->db = NULL;
	ps->generation++;
	ps->held = false;
	iq_vc_new_generation(iq_value_cache, (int) (ps - parts));
	ps->restoring = false;
	__atomic_store_n(&ps->consumed_offset, -1, __ATOMIC_RELAXED);
	__atomic_store_n(&ps->end_offset, -1, __ATOMIC_RELAXED);
}

void
iq_store_close(int partition)
{
	PartStore  *ps = &parts[partition];

	if (ps->db == NULL)
		return;
	pthread_rwlock_wrlock(&ps->lock);
	close_locked(ps);
	pthread_rwlock_unlock(&ps->lock);
}

/*
 * iq_store_destroy
 *		Close and delete one partition's database.
 */
bool
iq_store_destroy(int partition, char **err)
{
	char		path[4096];
	char	   *e = NULL;
	rocksdb_options_t *opts;

	iq_store_close(partition);
	partition_path(partition, path, sizeof(path));
	opts = rocksdb_options_create();
	rocksdb_destroy_db(opts, path, &e);
	rocksdb_options_destroy(opts);
	if (e != NULL)
	{
		set_err(err, "could not delete RocksDB at \"%s\": %s", path, e);
		free(e);
		return false;
	}
	return true;
}

/*
 * iq_store_set_aside
 *		Close a partition's database and rename its directory out of the
 *		way, so that the next open starts an empty one.
 *
 * Renamed rather than deleted: a corrupt database is evidence (a disk, a
 * file system, or a RocksDB bug), and the rename is as fast and as
 * atomic as a delete.  The name carries the time, so repeated corruptions
 * never collide; the caller logs where it went.
 */
bool
iq_store_set_aside(int partition, char *moved_to, size_t moved_to_len, char **err)
{
	char		path[4096];
	time_t		now = time(NULL);
	struct tm	tm;
	char		stamp[32];

	iq_store_close(partition);
	partition_path(partition, path, sizeof(path));
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (int n = 0; n < 100; n++)
	{
		struct stat st;

		if (n == 0)
			snprintf(moved_to, moved_to_len, "%s.corrupt-%s", path, stamp);
		else
			snprintf(moved_to, moved_to_len, "%s.corrupt-%s-%d", path, stamp, n);
		if (lstat(moved_to, &st) != 0 && errno == ENOENT)
		{
			if (rename(path, moved_to) == 0)
				return true;
			set_err(err, "could not rename \"%s\" to \"%s\": %s", path, moved_to,
					strerror(errno));
			return false;
		}
	}
	set_err(err, "could not find a free name to move \"%s\" aside", path);
	return false;
}

/*
 * iq_store_error_is_corruption
 *		Whether a RocksDB error says the files are damaged (its status
 *		"Corruption: ..."), as opposed to a failure worth retrying (I/O, a
 *		lock, no space).
 */
bool
iq_store_error_is_corruption(const char *err)
{
	return err != NULL && strstr(err, "Corruption") != NULL;
}

void
iq_store_shutdown(void)
{
	if (!initialized)
		return;
	for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
		iq_store_close(i);
	if (block_cache)
		rocksdb_cache_destroy(block_cache);
	block_cache = NULL;
	if (read_opts)
		rocksdb_readoptions_destroy(read_opts);
	read_opts = NULL;
	if (write_opts)
		rocksdb_writeoptions_destroy(write_opts);
	write_opts = NULL;
	free(base_dir);
	base_dir = NULL;
}

void
iq_store_set_position(int partition, int64_t consumed, int64_t end)
{
	__atomic_store_n(&parts[partition].consumed_offset, consumed, __ATOMIC_RELAXED);
	__atomic_store_n(&parts[partition].end_offset, end, __ATOMIC_RELAXED);
}

/* ---- reads, any thread ---- */

int
iq_store_held_partitions(int *out, int max)
{
	int			n = 0;
	int			limit = __atomic_load_n(&parts_limit, __ATOMIC_ACQUIRE);

	if (!initialized)
		return 0;

	for (int i = 0; i < limit && n < max; i++)
	{
		PartStore  *ps = &parts[i];
		bool		ok;

		pthread_rwlock_rdlock(&ps->lock);
		ok = ps->db != NULL && ps->held && !ps->restoring;
		pthread_rwlock_unlock(&ps->lock);
		if (ok)
			out[n++] = i;
	}
	return n;
}

/*
 * get_common
 *		Point read under the partition's read lock.
 */
static IqReadStatus
get_common(IqStoreId store, int partition, const char *key, size_t key_len,
		   char **value, size_t *value_len, char **err, bool raw)
{
	PartStore  *ps;
	char	   *e = NULL;
	char	   *v;
	size_t		vlen = 0;
	IqReadStatus status;
	IqVcTicket	ticket;

	*value = NULL;
	*value_len = 0;
	if (!initialized || partition < 0 || partition >= IQ_MAX_PARTITIONS ||
		store < 0 || store >= IQ_NUM_STORES)
		return IQ_READ_NOT_HELD;
	ps = &parts[partition];
	pthread_rwlock_rdlock(&ps->lock);
	if (ps->db == NULL || (!raw && !ps->held))
	{
		pthread_rwlock_unlock(&ps->lock);
		return IQ_READ_NOT_HELD;
	}
	if (!raw && ps->restoring)
	{
		pthread_rwlock_unlock(&ps->lock);
		return IQ_READ_RESTORING;
	}
	/* answered before: no RocksDB read (value_cache.h) */
	if (!raw && key_len < IQ_VC_DATA)
	{
		char		cached[IQ_VC_DATA];
		size_t		cached_len = 0;
		IqVcResult	r = iq_vc_lookup(iq_value_cache, store, partition, key, key_len,
									 cached, &cached_len);

		if (r != IQ_VC_MISS)
		{
			pthread_rwlock_unlock(&ps->lock);
			if (r == IQ_VC_ABSENT)
				return IQ_READ_NOT_FOUND;
			*value = malloc(cached_len + 1);
			if (*value == NULL)
			{
				set_err(err, "out of memory");
				return IQ_READ_ERROR;
			}
			memcpy(*value, cached, cached_len);
			(*value)[cached_len] = '\0';
			*value_len = cached_len;
			return IQ_READ_OK;
		}
	}
	/* backends may keep what a served read finds */
	ticket = iq_vc_ticket(raw ? NULL : iq_value_cache, partition);
	v = rocksdb_get_cf(ps->db, read_opts, ps->cf[CF_OF(store)], key, key_len, &vlen, &e);
	pthread_rwlock_unlock(&ps->lock);
	if (e != NULL)
	{
		set_err(err, "RocksDB read failed: %s", e);
		free(e);
		rocksdb_free(v);
		return IQ_READ_ERROR;
	}
	iq_vc_fill(raw ? NULL : iq_value_cache, ticket, store, partition, key, key_len, v, vlen);
	if (v == NULL)
		return IQ_READ_NOT_FOUND;
	/* hand out a malloc'd copy: callers free() it without knowing RocksDB */
	*value = malloc(vlen + 1);
	if (*value == NULL)
		status = IQ_READ_ERROR;
	else
	{
		memcpy(*value, v, vlen);
		(*value)[vlen] = '\0';
		*value_len = vlen;
		status = IQ_READ_OK;
	}
	rocksdb_free(v);
	if (status == IQ_READ_ERROR)
		set_err(err, "out of memory");
	return status;
}

IqReadStatus
iq_store_get(IqStoreId store, int partition, const char *key, size_t key_len,
			 char **value, size_t *value_len, char **err)
{
	return get_common(store, partition, key, key_len, value, value_len, err, false);
}

IqReadStatus
iq_store_get_raw(IqStoreId store, int partition, const char *key, size_t key_len,
				 char **value, size_t *value_len, char **err)
{
	return get_common(store, partition, key, key_len, value, value_len, err, true);
}

uint64_t
iq_store_approximate_count(IqStoreId store, const int *partitions, int npartitions)
{
	uint64_t	total = 0;
	int			held[IQ_MAX_PARTITIONS];

	if (!initialized || store < 0 || store >= IQ_NUM_STORES)
		return 0;
	if (npartitions == 0)
	{
		npartitions = iq_store_held_partitions(held, IQ_MAX_PARTITIONS);
		partitions = held;
	}
	for (int i = 0; i < npartitions; i++)
	{
		int			p = partitions[i];
		PartStore  *ps;
		uint64_t	n = 0;

		if (p < 0 || p >= IQ_MAX_PARTITIONS)
			continue;
		ps = &parts[p];
		pthread_rwlock_rdlock(&ps->lock);
		if (ps->db != NULL && ps->held &&
			rocksdb_property_int_cf(ps->db, ps->cf[CF_OF(store)],
									"rocksdb.estimate-num-keys", &n) == 0)
			total += n;
		pthread_rwlock_unlock(&ps->lock);
	}
	return total;
}

bool
iq_store_position(int partition, IqPartitionPosition *pos)
{
	PartStore  *ps;
	bool		ok;

	if (!initialized || partition < 0 || partition >= IQ_MAX_PARTITIONS)
		return false;
	ps = &parts[partition];
	pthread_rwlock_rdlock(&ps->lock);
	ok = ps->db != NULL && ps->held;
	pthread_rwlock_unlock(&ps->lock);
	if (!ok)
		return false;
	pos->partition = partition;
	pos->consumed_offset = __atomic_load_n(&ps->consumed_offset, __ATOMIC_RELAXED);
	pos->end_offset = __atomic_load_n(&ps->end_offset, __ATOMIC_RELAXED);
	return true;
}

/* ---- cursors ---- */

/*
 * A cursor never keeps a partition's lock, nor an iterator, between calls:
 * it copies a batch of rows (at most IQ_STORE_BATCH_ROWS, and about
 * IQ_STORE_BATCH_BYTES) into its own buffer under the read locks of its
 * partitions, releases them, and hands the rows out from the buffer.  The
 * next batch seeks each partition just past the last key it gave, so the
 * merge goes on in key byte order.  A reader that stalls (a client reading
 * slowly, a peer) therefore holds nothing a rebalance waits for: closing a
 * partition waits for one batch at most.  Between batches the partitions
 * may change: a write is seen or not, as a write during one iterator's
 * life would be; a partition closed meanwhile (handed to another instance,
 * the pipeline rebuilt) ends the scan with IQ_READ_MOVED, never a shorter
 * list.
 *
 * The first batch is small (IQ_STORE_BATCH_FIRST_ROWS), for LIMITs and
 * point-like ranges, and each next one twice as large up to the bound.
 */
typedef struct CursorPart
{
	int			partition;
	uint64_t	generation;		/* of its database when the cursor opened */
	char	   *pos;			/* last key handed out, when started */
	size_t		pos_len;
	size_t		pos_cap;
	bool		started;
	bool		done;			/* no more rows within the bounds */
	bool		locked;			/* while a batch is read */
	int			last_row;		/* in this batch, -1 none */
} CursorPart;

typedef struct BatchRow
{
	size_t		key_off;
	size_t		key_len;
	size_t		value_off;
	size_t		value_len;
	int			part;			/* index into cp */
} BatchRow;

struct IqStoreCursor
{
	IqStoreId	store;
	int			nparts;
	CursorPart *cp;				/* ascending partition: locks in one order */
	char	   *lower;
	size_t		lower_len;
	bool		lower_incl;
	char	   *upper;
	size_t		upper_len;
	bool		upper_incl;
	/* the batch in hand */
	char	   *data;
	size_t		data_len;
	size_t		data_cap;
	BatchRow   *rows;
	int			nrows;
	int			next;
	int			batch_rows;		/* rows the next batch may take */
	/* while a batch is read (locks held) */
	rocksdb_iterator_t **iters;
	int		   *heap;			/* indexes into iters, min-heap by key */
	int			heap_len;
	rocksdb_readoptions_t *ropts;
	IqReadStatus status;		/* IQ_READ_OK, _MOVED or _ERROR */
	char	   *error;			/* why, when not OK */
};

static int
key_cmp(rocksdb_iterator_t *a, rocksdb_iterator_t *b)
{
	size_t		la,
				lb;
	const char *ka = rocksdb_iter_key(a, &la);
	const char *kb = rocksdb_iter_key(b, &lb);
	int			c = memcmp(ka, kb, la < lb ? la : lb);

	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

static void
heap_down(IqStoreCursor *c, int i)
{
	for (;;)
	{
		int			l = 2 * i + 1,
					r = l + 1,
					m = i;

		if (l < c->heap_len && key_cmp(c->iters[c->heap[l]], c->iters[c->heap[m]]) < 0)
			m = l;
		if (r < c->heap_len && key_cmp(c->iters[c->heap[r]], c->iters[c->heap[m]]) < 0)
			m = r;
		if (m == i)
			return;
		{
			int			t = c->heap[i];

			c->heap[i] = c->heap[m];
			c->heap[m] = t;
		}
		i = m;
	}
}

/* cursor_fail: the first failure sticks; the cursor hands out nothing more */
static void
cursor_fail(IqStoreCursor *c, IqReadStatus status, const char *fmt,...)
__attribute__((format(printf, 3, 4)));

static void
cursor_fail(IqStoreCursor *c, IqReadStatus status, const char *fmt,...)
{
	char		buf[1024];
	va_list		ap;

	if (c->status != IQ_READ_OK)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	c->status = status;
	c->error = strdup(buf);
}

/*
 * iter_usable
 *		Valid and within the upper bound; records an iterator error.
 */
static bool
iter_usable(IqStoreCursor *c, int i)
{
	rocksdb_iterator_t *it = c->iters[i];

	if (!rocksdb_iter_valid(it))
	{
		char	   *e = NULL;

		rocksdb_iter_get_error(it, &e);
		if (e != NULL)
		{
			cursor_fail(c, IQ_READ_ERROR, "RocksDB iterator failed on partition %d: %s",
						c->cp[i].partition, e);
			free(e);
		}
		return false;
	}
	if (c->upper != NULL)
	{
		size_t		kl;
		const char *k = rocksdb_iter_key(it, &kl);
		int			cmp = memcmp(k, c->upper, kl < c->upper_len ? kl : c->upper_len);

		if (cmp == 0)
			cmp = (kl > c->upper_len) - (kl < c->upper_len);
		if (cmp > 0 || (cmp == 0 && !c->upper_incl))
			return false;
	}
	return true;
}

/* seek_past: position it after what was handed out, or at the lower bound */
static void
seek_past(IqStoreCursor *c, rocksdb_iterator_t *it, const CursorPart *cp)
{
	const char *at = cp->started ? cp->pos : c->lower;
	size_t		at_len = cp->started ? cp->pos_len : c->lower_len;
	bool		incl = cp->started ? false : c->lower_incl;

	if (at == NULL)
	{
		rocksdb_iter_seek_to_first(it);
		return;
	}
	rocksdb_iter_seek(it, at, at_len);
	if (!incl && rocksdb_iter_valid(it))
	{
		size_t		kl;
		const char *k = rocksdb_iter_key(it, &kl);

		if (kl == at_len && memcmp(k, at, kl) == 0)
			rocksdb_iter_next(it);
	}
}

/* batch_append: copy the row under iterator i into the batch */
static bool
batch_append(IqStoreCursor *c, int i)
{
	rocksdb_iterator_t *it = c->iters[i];
	size_t		kl,
				vl;
	const char *k = rocksdb_iter_key(it, &kl);
	const char *v = rocksdb_iter_value(it, &vl);
	BatchRow   *r;

	if (c->data_len + kl + vl > c->data_cap)
	{
		size_t		cap = c->data_cap > 0 ? c->data_cap : 4096;
		char	   *d;

		while (cap < c->data_len + kl + vl)
			cap *= 2;
		d = realloc(c->data, cap);
		if (d == NULL)
			return false;
		c->data = d;
		c->data_cap = cap;
	}
	r = &c->rows[c->nrows];
	r->key_off = c->data_len;
	r->key_len = kl;
	memcpy(c->data + c->data_len, k, kl);
	c->data_len += kl;
	r->value_off = c->data_len;
	r->value_len = vl;
	memcpy(c->data + c->data_len, v, vl);
	c->data_len += vl;
	r->part = i;
	c->cp[i].last_row = c->nrows;
	c->nrows++;
	return true;
}

/* remember_positions: each partition's last key of the batch, for the next */
static bool
remember_positions(IqStoreCursor *c)
{
	for (int i = 0; i < c->nparts; i++)
	{
		CursorPart *cp = &c->cp[i];
		const BatchRow *r;

		if (cp->last_row < 0)
			continue;
		r = &c->rows[cp->last_row];
		if (r->key_len > cp->pos_cap || cp->pos == NULL)
		{
			char	   *p = realloc(cp->pos, r->key_len > 0 ? r->key_len : 1);

			if (p == NULL)
				return false;
			cp->pos = p;
			cp->pos_cap = r->key_len > 0 ? r->key_len : 1;
		}
		memcpy(cp->pos, c->data + r->key_off, r->key_len);
		cp->pos_len = r->key_len;
		cp->started = true;
	}
	return true;
}

/*
 * cursor_fill
 *		Read the next batch under the read locks of the partitions not yet
 *		done, and release them.
 */
static void
cursor_fill(IqStoreCursor *c)
{
	bool		oom = false;

	c->nrows = 0;
	c->next = 0;
	c->data_len = 0;
	c->heap_len = 0;
	for (int i = 0; i < c->nparts; i++)
	{
		CursorPart *cp = &c->cp[i];
		PartStore  *ps = &parts[cp->partition];

		cp->last_row = -1;
		c->iters[i] = NULL;
		if (cp->done)
			continue;
		pthread_rwlock_rdlock(&ps->lock);
		cp->locked = true;
		if (ps->db == NULL || ps->generation != cp->generation)
		{
			cursor_fail(c, IQ_READ_MOVED,
						"partition %d moved during the scan (closed here by a rebalance or a restart of the worker)",
						cp->partition);
			break;
		}
		c->iters[i] = rocksdb_create_iterator_cf(ps->db, c->ropts, ps->cf[CF_OF(c->store)]);
		seek_past(c, c->iters[i], cp);
		if (iter_usable(c, i))
			c->heap[c->heap_len++] = i;
		else
			cp->done = true;
	}
	if (c->status == IQ_READ_OK)
	{
		for (int i = c->heap_len / 2 - 1; i >= 0; i--)
			heap_down(c, i);
		while (c->heap_len > 0 && c->nrows < c->batch_rows &&
			   c->data_len < IQ_STORE_BATCH_BYTES)
		{
			int			top = c->heap[0];

			if (!batch_append(c, top))
			{
				oom = true;
				break;
			}
			rocksdb_iter_next(c->iters[top]);
			if (!iter_usable(c, top))
			{
				c->cp[top].done = true;
				c->heap[0] = c->heap[--c->heap_len];
			}
			if (c->status != IQ_READ_OK)
				break;
			if (c->heap_len > 0)
				heap_down(c, 0);
		}
	}
	for (int i = 0; i < c->nparts; i++)
	{
		if (c->iters[i])
			rocksdb_iter_destroy(c->iters[i]);
		c->iters[i] = NULL;
		if (c->cp[i].locked)
			pthread_rwlock_unlock(&parts[c->cp[i].partition].lock);
		c->cp[i].locked = false;
	}
	if (oom || !remember_positions(c))
		cursor_fail(c, IQ_READ_ERROR, "out of memory reading a batch of a scan");
	if (c->status != IQ_READ_OK)
		c->nrows = 0;
	if (c->batch_rows < IQ_STORE_BATCH_ROWS)
		c->batch_rows = c->batch_rows * 2 < IQ_STORE_BATCH_ROWS ?
			c->batch_rows * 2 : IQ_STORE_BATCH_ROWS;
}

static void
cursor_free(IqStoreCursor *c)
{
	if (c->cp)
		for (int i = 0; i < c->nparts; i++)
			free(c->cp[i].pos);
	if (c->ropts)
		rocksdb_readoptions_destroy(c->ropts);
	free(c->cp);
	free(c->iters);
	free(c->heap);
	free(c->rows);
	free(c->data);
	free(c->lower);
	free(c->upper);
	free(c->error);
	free(c);
}

static int
int_cmp(const void *a, const void *b)
{
	return *(const int *) a - *(const int *) b;
}

/* copy_bound: a malloc'd copy of a bound (never NULL for a present one) */
static bool
copy_bound(char **dst, size_t *dst_len, const char *src, size_t len)
{
	*dst = malloc(len > 0 ? len : 1);
	if (*dst == NULL)
		return false;
	memcpy(*dst, src, len);
	*dst_len = len;
	return true;
}

/*
 * iq_store_cursor_open
 *		A k-way merge of the partitions, in key byte order, read a batch at a
 *		time (see above); checks now that every partition is readable.
 */
IqStoreCursor *
iq_store_cursor_open(IqStoreId store, const int *partitions, int npartitions,
					 const char *lower, size_t lower_len, bool lower_incl,
					 const char *upper, size_t upper_len, bool upper_incl,
					 IqReadStatus *status, char **err)
{
	IqStoreCursor *c;
	int			held[IQ_MAX_PARTITIONS];
	int		   *sorted = NULL;
	int			n = 0;
	int			alloc;

	*status = IQ_READ_OK;
	if (!initialized || store < 0 || store >= IQ_NUM_STORES)
	{
		*status = IQ_READ_NOT_HELD;
		return NULL;
	}
	if (npartitions == 0)
	{
		npartitions = iq_store_held_partitions(held, IQ_MAX_PARTITIONS);
		partitions = held;
	}
	alloc = npartitions > 0 ? npartitions : 1;
	c = calloc(1, sizeof(IqStoreCursor));
	if (c == NULL)
		goto oom;
	c->store = store;
	c->batch_rows = IQ_STORE_BATCH_FIRST_ROWS;
	sorted = malloc(sizeof(int) * alloc);
	c->cp = calloc(alloc, sizeof(CursorPart));
	c->iters = calloc(alloc, sizeof(rocksdb_iterator_t *));
	c->heap = malloc(sizeof(int) * alloc);
	c->rows = malloc(sizeof(BatchRow) * IQ_STORE_BATCH_ROWS);
	if (!sorted || !c->cp || !c->iters || !c->heap || !c->rows)
		goto oom;
	/* sorted and deduplicated: locks are always taken in the same order */
	memcpy(sorted, partitions, sizeof(int) * npartitions);
	qsort(sorted, npartitions, sizeof(int), int_cmp);
	for (int i = 0; i < npartitions; i++)
		if (i == 0 || sorted[i] != sorted[n - 1])
			sorted[n++] = sorted[i];
	if (lower != NULL)
	{
		if (!copy_bound(&c->lower, &c->lower_len, lower, lower_len))
			goto oom;
		c->lower_incl = lower_incl;
	}
	if (upper != NULL)
	{
		if (!copy_bound(&c->upper, &c->upper_len, upper, upper_len))
			goto oom;
		c->upper_incl = upper_incl;
	}
	c->ropts = rocksdb_readoptions_create();

	for (int i = 0; i < n; i++)
	{
		int			p = sorted[i];
		PartStore  *ps;

		if (p < 0 || p >= IQ_MAX_PARTITIONS)
		{
			*status = IQ_READ_NOT_HELD;
			set_err(err, "partition %d is not held by this instance", p);
			break;
		}
		ps = &parts[p];
		pthread_rwlock_rdlock(&ps->lock);
		if (ps->db == NULL || !ps->held || ps->restoring)
		{
			*status = (ps->db != NULL && ps->held) ? IQ_READ_RESTORING : IQ_READ_NOT_HELD;
			pthread_rwlock_unlock(&ps->lock);
			break;
		}
		c->cp[c->nparts].partition = p;
		c->cp[c->nparts].generation = ps->generation;
		c->cp[c->nparts].last_row = -1;
		c->nparts++;
		pthread_rwlock_unlock(&ps->lock);
	}
	free(sorted);
	if (*status != IQ_READ_OK)
	{
		cursor_free(c);
		return NULL;
	}
	return c;

oom:
	free(sorted);
	if (c)
		cursor_free(c);
	*status = IQ_READ_ERROR;
	set_err(err, "out of memory");
	return NULL;
}

/*
 * iq_store_cursor_next
 *		The next row of the batch in hand, reading a batch when it is used up.
 */
bool
iq_store_cursor_next(IqStoreCursor *c, IqStoreRow *row)
{
	const BatchRow *r;

	if (c->next >= c->nrows)
	{
		bool		more = false;

		if (c->status != IQ_READ_OK)
			return false;
		for (int i = 0; i < c->nparts && !more; i++)
			more = !c->cp[i].done;
		if (!more)
			return false;
		cursor_fill(c);
		if (c->nrows == 0)
			return false;
	}
	r = &c->rows[c->next++];
	row->key = c->data + r->key_off;
	row->key_len = r->key_len;
	row->value = c->data + r->value_off;
	row->value_len = r->value_len;
	row->partition = c->cp[r->part].partition;
	return true;
}

IqReadStatus
iq_store_cursor_close(IqStoreCursor *c, char **err)
{
	IqReadStatus status;

	if (c == NULL)
		return IQ_READ_OK;
	status = c->status;
	if (status != IQ_READ_OK)
		set_err(err, "%s", c->error ? c->error : "the scan failed");
	cursor_free(c);
	return status;
}

/* ---- writes, main thread ---- */

/*
 * iq_store_ingest
 *		Write sorted records as an SST file and ingest it: a restore then
 *		costs a sequential file write instead of a memtable insert per
 *		record.  The checkpoint follows the ingest, so a crash in between
 *		only repeats (idempotent) work.
 */
bool
iq_store_ingest(int partition, IqStoreId store, const IqKV *kvs, int n,
				const IqCheckpoint *ck, char **err)
{
	PartStore  *ps = &parts[partition];
	char		path[4200];
	char		dir[4096];
	const char *files[1];
	char	   *e = NULL;
	rocksdb_envoptions_t *envopts;
	rocksdb_options_t *opts;
	rocksdb_sstfilewriter_t *w;
	rocksdb_ingestexternalfileoptions_t *iopts;
	IqStoreBatch *b;

	if (ps->db == NULL)
	{
		set_err(err, "partition is not open");
		return false;
	}
	partition_path(partition, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/restore-%d.sst", dir, (int) store);
	files[0] = path;
	envopts = rocksdb_envoptions_create();
	opts = make_options();
	w = rocksdb_sstfilewriter_create(envopts, opts);
	rocksdb_sstfilewriter_open(w, path, &e);
	for (int i = 0; i < n && e == NULL; i++)
	{
		if (kvs[i].value != NULL)
			rocksdb_sstfilewriter_put(w, kvs[i].key, kvs[i].key_len,
									  kvs[i].value, kvs[i].value_len, &e);
		else
			rocksdb_sstfilewriter_delete(w, kvs[i].key, kvs[i].key_len, &e);
	}
	if (e == NULL)
		rocksdb_sstfilewriter_finish(w, &e);
	rocksdb_sstfilewriter_destroy(w);
	rocksdb_options_destroy(opts);
	rocksdb_envoptions_destroy(envopts);
	if (e == NULL)
	{
		iopts = rocksdb_ingestexternalfileoptions_create();
		rocksdb_ingestexternalfileoptions_set_move_files(iopts, 1);
		/* no put names the keys loaded: every cached answer goes */
		iq_vc_write_begin(iq_value_cache, partition);
		rocksdb_ingest_external_file_cf(ps->db, ps->cf[CF_OF(store)], files, 1, iopts, &e);
		iq_vc_new_generation(iq_value_cache, partition);
		iq_vc_write_end(iq_value_cache, partition);
		rocksdb_ingestexternalfileoptions_destroy(iopts);
	}
	unlink(path);				/* gone already when it was moved in */
	if (e != NULL)
	{
		set_err(err, "RocksDB bulk load failed: %s", e);
		free(e);
		return false;
	}
	b = iq_store_batch_begin(partition);
	iq_store_batch_checkpoint(b, ck);
	return iq_store_batch_commit(b, err);
}

IqStoreBatch *
iq_store_batch_begin(int partition)
{
	IqStoreBatch *b = malloc(sizeof(IqStoreBatch));

	if (b == NULL)
		return NULL;
	b->partition = partition;
	b->wb = rocksdb_writebatch_create();
	iq_vc_write_begin(iq_value_cache, partition);
	return b;
}

void
iq_store_batch_put(IqStoreBatch *b, IqStoreId store, const char *key, size_t key_len,
				   const char *value, size_t value_len)
{
	PartStore  *ps = &parts[b->partition];

	if (ps->db == NULL)
		return;
	iq_vc_forget(iq_value_cache, store, b->partition, key, key_len);
	rocksdb_writebatch_put_cf(b->wb, ps->cf[CF_OF(store)], key, key_len, value, value_len);
}

void
iq_store_batch_delete(IqStoreBatch *b, IqStoreId store, const char *key, size_t key_len)
{
	PartStore  *ps = &parts[b->partition];

	if (ps->db == NULL)
		return;
	iq_vc_forget(iq_value_cache, store, b->partition, key, key_len);
	rocksdb_writebatch_delete_cf(b->wb, ps->cf[CF_OF(store)], key, key_len);
}

void
iq_store_batch_checkpoint(IqStoreBatch *b, const IqCheckpoint *ck)
{
	PartStore  *ps = &parts[b->partition];
	const int64_t vals[3] = {ck->customer_next, ck->order_next, ck->changelog_next};

	if (ps->db == NULL)
		return;
	for (int i = 0; i < 3; i++)
	{
		char		v[8];

		if (vals[i] < 0)
			continue;
		encode_i64(vals[i], v);
		rocksdb_writebatch_put_cf(b->wb, ps->cf[CF_CHECKPOINT],
								  ckpt_keys[i], strlen(ckpt_keys[i]), v, 8);
	}
}

int
iq_store_batch_count(IqStoreBatch *b)
{
	return rocksdb_writebatch_count(b->wb);
}

bool
iq_store_batch_commit(IqStoreBatch *b, char **err)
{
	PartStore  *ps = &parts[b->partition];
	char	   *e = NULL;
	bool		ok = true;

	if (ps->db == NULL)
	{
		set_err(err, "partition is not open");
		ok = false;
	}
	else if (rocksdb_writebatch_count(b->wb) > 0)
	{
		rocksdb_write(ps->db, write_opts, b->wb, &e);
		if (e != NULL)
		{
			set_err(err, "RocksDB write failed: %s", e);
			free(e);
			ok = false;
		}
	}
	iq_store_batch_discard(b);
	return ok;
}

void
iq_store_batch_discard(IqStoreBatch *b)
{
	if (b == NULL)
		return;
	iq_vc_write_end(iq_value_cache, b->partition);
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

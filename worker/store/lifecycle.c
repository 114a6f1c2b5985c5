/*-------------------------------------------------------------------------
 * lifecycle.c
 *	  The partitions' databases over their life: the store set up and shut
 *	  down, a partition opened, published to readers (held, restoring,
 *	  position) and closed.  Main thread of the worker.
 *
 * No PostgreSQL function is called here (postgres.h only for types),
 * because the HTTP and local-socket threads read through the table kept
 * here.  Each partition has a writer-preferring rwlock: readers (get, a
 * cursor's batch) hold it shared while they use the database, open/close
 * take it exclusively, so a rebalance that closes a partition waits for its
 * readers and never frees a database under them.  No reader keeps it while
 * it waits on anyone else (a client, a peer): a cursor reads a bounded
 * batch and lets go (cursor.c).  The main thread writes without the lock:
 * RocksDB is safe for concurrent reads and writes, and only the main thread
 * opens or closes.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <rocksdb/c.h>

#include "common/settings.h"
#include "common/shmem.h"
#include "common/value_cache.h"
#include "worker/store/store_internal.h"

PartStore	iq_store_parts[IQ_MAX_PARTITIONS];

/*
 * One past the highest partition ever opened: readers scan only up to it,
 * since taking 256 partition locks per request was a tenth of the cost of
 * a local point read.
 */
int			iq_store_parts_limit = 0;
bool		iq_store_initialized = false;

static char *base_dir = NULL;
static int	partition_count = 0;	/* atomic */

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
 * iq_store_slot
 *		A partition's entry in the table, NULL before iq_store_init or out
 *		of range.
 */
PartStore *
iq_store_slot(int partition)
{
	if (!iq_store_initialized || partition < 0 || partition >= IQ_MAX_PARTITIONS)
		return NULL;
	return &iq_store_parts[partition];
}

/* iq_store_partition_path: <state_dir>/<application_id>/<partition> */
void
iq_store_partition_path(int partition, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%d", base_dir, partition);
}

/*
 * init_parts
 *		Every partition closed, each with its lock.
 */
static void
init_parts(void)
{
	pthread_rwlockattr_t attr;

	pthread_rwlockattr_init(&attr);
	/* a waiting close must not be starved by a stream of new readers */
	pthread_rwlockattr_setkind_np(&attr,
								  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
	{
		memset(&iq_store_parts[i], 0, sizeof(PartStore));
		pthread_rwlock_init(&iq_store_parts[i].lock, &attr);
		pthread_mutex_init(&iq_store_parts[i].idle_lock, NULL);
		iq_store_parts[i].consumed_offset = -1;
		iq_store_parts[i].end_offset = -1;
	}
	pthread_rwlockattr_destroy(&attr);
}

/*
 * iq_store_init
 *		Shared cache and options; partitions are opened on assignment.
 */
bool
iq_store_init(const char *dir, size_t block_cache_bytes, size_t memtables, char **err)
{
	int			rc;

	if (!iq_store_initialized)
	{
		init_parts();
		iq_store_initialized = true;
	}
	rc = mkdir_p(dir);
	if (rc != 0)
	{
		iq_store_set_err(err, "could not create state directory \"%s\": %s", dir, strerror(rc));
		return false;
	}
	free(base_dir);
	base_dir = strdup(dir);
	iq_store_options_init(block_cache_bytes, memtables);
	return true;
}

/*
 * iq_store_shutdown
 *		Close every partition and free the shared cache and options.
 */
void
iq_store_shutdown(void)
{
	if (!iq_store_initialized)
		return;
	for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
		iq_store_close(i);
	iq_store_options_free();
	free(base_dir);
	base_dir = NULL;
}

/* iq_store_set_partition_count: the input topics' count, sizing each database */
void
iq_store_set_partition_count(int n)
{
	__atomic_store_n(&partition_count, n, __ATOMIC_RELEASE);
}

/* iq_store_partition_count: as last set, for any thread */
int
iq_store_partition_count(void)
{
	return __atomic_load_n(&partition_count, __ATOMIC_ACQUIRE);
}

/*
 * open_db
 *		Open (or create) the database at path with its column families and
 *		publish it in ps, restoring and not yet held.
 */
static bool
open_db(PartStore *ps, int partition, const char *path, char **err)
{
	static const char *const cf_names[NUM_CF] = {
		"default", "customer-v1-changelog", "order-count", CF_CHECKPOINT_NAME
	};
	rocksdb_options_t *opts = iq_store_db_options(iq_store_partition_count());
	const rocksdb_options_t *cf_opts[NUM_CF];
	rocksdb_column_family_handle_t *handles[NUM_CF];
	char	   *e = NULL;
	rocksdb_t  *db;

	for (int i = 0; i < NUM_CF; i++)
		cf_opts[i] = opts;
	/* the statistics live in the options' object: kept while db is open */
	if (iq_rocksdb_statistics)
		rocksdb_options_enable_statistics(opts);
	db = rocksdb_open_column_families(opts, path, NUM_CF,
									  (const char *const *) cf_names,
									  cf_opts, handles, &e);
	if (e != NULL || !iq_rocksdb_statistics)
	{
		rocksdb_options_destroy(opts);
		opts = NULL;
	}
	if (e != NULL)
	{
		iq_store_set_err(err, "could not open RocksDB at \"%s\": %s", path, e);
		free(e);
		return false;
	}
	pthread_rwlock_wrlock(&ps->lock);
	ps->db = db;
	ps->stats_opts = opts;
	ps->generation++;
	if (partition + 1 > __atomic_load_n(&iq_store_parts_limit, __ATOMIC_RELAXED))
		__atomic_store_n(&iq_store_parts_limit, partition + 1, __ATOMIC_RELEASE);
	memcpy(ps->cf, handles, sizeof(handles));
	ps->held = false;
	ps->restoring = true;
	pthread_rwlock_unlock(&ps->lock);
	return true;
}

/*
 * iq_store_open
 *		Open (or create) one partition's database, not yet readable, and
 *		record its format if it has none.  Its format, when it had one, was
 *		checked before (iq_store_format_on_disk).
 */
bool
iq_store_open(int partition, IqCheckpoint *checkpoint, bool *existed, char **err)
{
	PartStore  *ps;
	char		path[4096];
	char		current[4200];
	struct stat st;
	bool		found;
	int			rc;

	if (partition < 0 || partition >= IQ_MAX_PARTITIONS)
	{
		iq_store_set_err(err, "partition %d is out of range", partition);
		return false;
	}
	ps = &iq_store_parts[partition];
	if (ps->db != NULL)
	{
		if (existed)
			*existed = true;
		return iq_store_checkpoint_read(ps, checkpoint, err);
	}

	iq_store_partition_path(partition, path, sizeof(path));
	snprintf(current, sizeof(current), "%s/CURRENT", path);
	found = (stat(current, &st) == 0);
	if (existed)
		*existed = found;
	rc = mkdir_p(path);
	if (rc != 0)
	{
		iq_store_set_err(err, "could not create \"%s\": %s", path, strerror(rc));
		return false;
	}
	if (!open_db(ps, partition, path, err))
		return false;
	return iq_store_format_mark(ps, found, err) &&
		iq_store_checkpoint_read(ps, checkpoint, err);
}

/* iq_store_is_open: the main thread's view; readers go by iq_store_readable */
bool
iq_store_is_open(int partition)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS &&
		iq_store_parts[partition].db != NULL;
}

/*
 * iq_store_set_held
 *		Publish a partition to readers, or take it back; either way the
 *		backends' cached answers of it are dropped.
 */
void
iq_store_set_held(int partition, bool held, bool restoring)
{
	PartStore  *ps = &iq_store_parts[partition];

	pthread_rwlock_wrlock(&ps->lock);
	ps->held = held && ps->db != NULL;
	ps->restoring = restoring;
	if (ps->held)
		ps->standby = false;
	iq_vc_new_generation(iq_value_cache, partition);
	pthread_rwlock_unlock(&ps->lock);
}

/*
 * iq_store_set_standby
 *		A standby replica is never held: a partition is one or the other.
 */
void
iq_store_set_standby(int partition, bool standby)
{
	PartStore  *ps = &iq_store_parts[partition];

	pthread_rwlock_wrlock(&ps->lock);
	ps->standby = standby && ps->db != NULL;
	if (ps->standby)
	{
		ps->held = false;
		ps->restoring = false;
	}
	pthread_rwlock_unlock(&ps->lock);
}

/* iq_store_is_standby: the main thread's view */
bool
iq_store_is_standby(int partition)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS &&
		iq_store_parts[partition].db != NULL && iq_store_parts[partition].standby;
}

/* iq_store_set_position: freshness for readers, without the lock */
void
iq_store_set_position(int partition, int64_t consumed, int64_t end)
{
	__atomic_store_n(&iq_store_parts[partition].consumed_offset, consumed, __ATOMIC_RELAXED);
	__atomic_store_n(&iq_store_parts[partition].end_offset, end, __ATOMIC_RELAXED);
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
	/* an iterator must go before its database; a snapshot is stale with it */
	iq_store_iter_drop_all(ps);
	iq_snap_drop_all(ps);
	for (int i = 0; i < NUM_CF; i++)
	{
		rocksdb_column_family_handle_destroy(ps->cf[i]);
		ps->cf[i] = NULL;
	}
	rocksdb_close(ps->db);
	ps->db = NULL;
	if (ps->stats_opts)
		rocksdb_options_destroy(ps->stats_opts);
	ps->stats_opts = NULL;
	ps->generation++;
	ps->held = false;
	ps->standby = false;
	iq_vc_new_generation(iq_value_cache, (int) (ps - iq_store_parts));
	ps->restoring = false;
	__atomic_store_n(&ps->consumed_offset, -1, __ATOMIC_RELAXED);
	__atomic_store_n(&ps->end_offset, -1, __ATOMIC_RELAXED);
}

/* iq_store_close: close one partition once its readers are done */
void
iq_store_close(int partition)
{
	PartStore  *ps = &iq_store_parts[partition];

	if (ps->db == NULL)
		return;
	pthread_rwlock_wrlock(&ps->lock);
	close_locked(ps);
	pthread_rwlock_unlock(&ps->lock);
}

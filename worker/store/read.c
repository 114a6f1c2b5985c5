/*-------------------------------------------------------------------------
 * read.c
 *	  Reads for any thread (store.h): which partitions are held, a key's
 *	  value, estimated counts, positions; and the main thread's own reads
 *	  (store_admin.h), which see a partition while it restores.
 *
 * Each read holds its partition's lock shared while it uses the database
 * and never calls a PostgreSQL function (lifecycle.c says why).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "common/shmem.h"
#include "common/value_cache.h"
#include "worker/store/store_internal.h"

/*
 * iq_store_held_partitions
 *		The partitions readable now, ascending.
 */
int
iq_store_held_partitions(int *out, int max)
{
	int			n = 0;
	int			limit = __atomic_load_n(&iq_store_parts_limit, __ATOMIC_ACQUIRE);

	if (!iq_store_initialized)
		return 0;

	for (int i = 0; i < limit && n < max; i++)
	{
		PartStore  *ps = &iq_store_parts[i];
		bool		ok;

		pthread_rwlock_rdlock(&ps->lock);
		ok = iq_store_readable(ps) == IQ_READ_OK;
		pthread_rwlock_unlock(&ps->lock);
		if (ok)
			out[n++] = i;
	}
	return n;
}

/*
 * copy_value
 *		The caller's malloc'd, NUL-terminated copy of a value: callers free()
 *		it without knowing RocksDB or the value cache.
 */
static IqReadStatus
copy_value(const char *src, size_t len, char **value, size_t *value_len, char **err)
{
	*value = malloc(len + 1);
	if (*value == NULL)
	{
		iq_store_set_err(err, "out of memory");
		return IQ_READ_ERROR;
	}
	memcpy(*value, src, len);
	(*value)[len] = '\0';
	*value_len = len;
	return IQ_READ_OK;
}

/*
 * get_stored
 *		The RocksDB read of a get: entered with the partition's read lock
 *		held, which it lets go as soon as RocksDB has answered.
 *
 * A served read (not raw) may fill the backends' value cache with what it
 * found, or did not find, unless a write of the partition overlapped it
 * (the ticket taken before the read says so).
 */
static IqReadStatus
get_stored(PartStore *ps, IqStoreId store, int partition,
		   const char *key, size_t key_len, bool raw,
		   char **value, size_t *value_len, char **err)
{
	IqValueCache *vc = raw ? NULL : iq_value_cache;
	IqVcTicket	ticket = iq_vc_ticket(vc, partition);
	char	   *e = NULL;
	size_t		vlen = 0;
	char	   *v;
	IqReadStatus status;

	v = rocksdb_get_cf(ps->db, iq_store_read_opts, ps->cf[CF_OF(store)],
					   key, key_len, &vlen, &e);
	pthread_rwlock_unlock(&ps->lock);
	if (e != NULL)
	{
		iq_store_set_err(err, "RocksDB read failed: %s", e);
		free(e);
		rocksdb_free(v);
		return IQ_READ_ERROR;
	}
	iq_vc_fill(vc, ticket, store, partition, key, key_len, v, vlen);
	if (v == NULL)
		return IQ_READ_NOT_FOUND;
	status = copy_value(v, vlen, value, value_len, err);
	rocksdb_free(v);
	return status;
}

/*
 * get_common
 *		Point read under the partition's read lock: from the value cache
 *		when a backend's read put it there, else from RocksDB.
 *
 * raw (the main thread's base values for updates) reads any open partition,
 * restoring or not, and neither uses nor fills the cache.
 */
static IqReadStatus
get_common(IqStoreId store, int partition, const char *key, size_t key_len,
		   char **value, size_t *value_len, char **err, bool raw, bool standby_ok)
{
	PartStore  *ps = iq_store_slot(partition);
	IqReadStatus status;
	char		cached[IQ_VC_DATA];
	size_t		cached_len = 0;
	IqVcResult	hit = IQ_VC_MISS;

	*value = NULL;
	*value_len = 0;
	if (ps == NULL || store < 0 || store >= IQ_NUM_STORES)
		return IQ_READ_NOT_HELD;
	pthread_rwlock_rdlock(&ps->lock);
	if (raw)
		status = ps->db != NULL ? IQ_READ_OK : IQ_READ_NOT_HELD;
	else
		status = iq_store_readable_as(ps, standby_ok);
	if (status != IQ_READ_OK)
	{
		pthread_rwlock_unlock(&ps->lock);
		return status;
	}
	/* a standby's answer never goes through the backends' cache */
	if (!ps->held)
		raw = true;
	/* answered before: no RocksDB read (value_cache.h) */
	if (!raw && key_len < IQ_VC_DATA)
		hit = iq_vc_lookup(iq_value_cache, store, partition, key, key_len,
						   cached, &cached_len);
	if (hit == IQ_VC_MISS)
		return get_stored(ps, store, partition, key, key_len, raw,
						  value, value_len, err);
	pthread_rwlock_unlock(&ps->lock);
	if (hit == IQ_VC_ABSENT)
		return IQ_READ_NOT_FOUND;
	return copy_value(cached, cached_len, value, value_len, err);
}

/* iq_store_get: a served read, of a held and restored partition */
IqReadStatus
iq_store_get(IqStoreId store, int partition, const char *key, size_t key_len,
			 char **value, size_t *value_len, char **err)
{
	return get_common(store, partition, key, key_len, value, value_len, err, false, false);
}

/* iq_store_get_as: a served read that may take a standby replica's answer */
IqReadStatus
iq_store_get_as(IqStoreId store, int partition, const char *key, size_t key_len,
				bool standby_ok, char **value, size_t *value_len, char **err)
{
	return get_common(store, partition, key, key_len, value, value_len, err, false,
					  standby_ok);
}

/* iq_store_get_raw: the main thread's read of any open partition */
IqReadStatus
iq_store_get_raw(IqStoreId store, int partition, const char *key, size_t key_len,
				 char **value, size_t *value_len, char **err)
{
	return get_common(store, partition, key, key_len, value, value_len, err, true, false);
}

/*
 * iq_store_is_empty
 *		Whether the store of an open partition holds no key; false when an
 *		iterator error leaves it unknown (main thread, no lock: only it
 *		closes).
 */
bool
iq_store_is_empty(int partition, IqStoreId store)
{
	PartStore  *ps = &iq_store_parts[partition];
	rocksdb_iterator_t *it;
	bool		empty;

	if (ps->db == NULL)
		return false;
	it = rocksdb_create_iterator_cf(ps->db, iq_store_read_opts, ps->cf[CF_OF(store)]);
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

/*
 * iq_store_approximate_count
 *		RocksDB's estimate of the keys, summed over the partitions named
 *		(held or standby), or over all held ones.
 */
uint64_t
iq_store_approximate_count(IqStoreId store, const int *partitions, int npartitions)
{
	uint64_t	total = 0;
	int			held[IQ_MAX_PARTITIONS];

	if (!iq_store_initialized || store < 0 || store >= IQ_NUM_STORES)
		return 0;
	if (npartitions == 0)
	{
		npartitions = iq_store_held_partitions(held, IQ_MAX_PARTITIONS);
		partitions = held;
	}
	for (int i = 0; i < npartitions; i++)
	{
		PartStore  *ps = iq_store_slot(partitions[i]);
		uint64_t	n = 0;

		if (ps == NULL)
			continue;
		pthread_rwlock_rdlock(&ps->lock);
		/* a standby only when asked by number: the caller vetted it */
		if (ps->db != NULL && (ps->held || ps->standby) &&
			rocksdb_property_int_cf(ps->db, ps->cf[CF_OF(store)],
									"rocksdb.estimate-num-keys", &n) == 0)
			total += n;
		pthread_rwlock_unlock(&ps->lock);
	}
	return total;
}

/*
 * iq_store_sizes
 *		RocksDB's sizes of a store in a partition, read under the
 *		partition's lock like a get, so a rebalance cannot close its DB
 *		meanwhile.
 */
bool
iq_store_sizes(IqStoreId store, int partition, IqStoreSizes *out)
{
	PartStore  *ps;
	bool		ok = false;

	memset(out, 0, sizeof(*out));
	if (!iq_store_initialized || store < 0 || store >= IQ_NUM_STORES ||
		(ps = iq_store_slot(partition)) == NULL)
		return false;
	pthread_rwlock_rdlock(&ps->lock);
	if (ps->db != NULL && (ps->held || ps->standby))
	{
		rocksdb_column_family_handle_t *cf = ps->cf[CF_OF(store)];

		(void) rocksdb_property_int_cf(ps->db, cf, "rocksdb.cur-size-all-mem-tables",
									   &out->memtables);
		(void) rocksdb_property_int_cf(ps->db, cf, "rocksdb.total-sst-files-size",
									   &out->sst_files);
		(void) rocksdb_property_int_cf(ps->db, cf, "rocksdb.estimate-pending-compaction-bytes",
									   &out->pending_compaction);
		ok = true;
	}
	pthread_rwlock_unlock(&ps->lock);
	return ok;
}

/* ticker: the COUNT of name in RocksDB's statistics text ("name COUNT : n") */
static uint64_t
ticker(const char *text, const char *name)
{
	size_t		len = strlen(name);

	for (const char *p = text; (p = strstr(p, name)) != NULL; p += len)
	{
		/* the whole name at a line's start: not a longer name it begins */
		if ((p == text || p[-1] == '\n') && strncmp(p + len, " COUNT : ", 9) == 0)
			return strtoull(p + len + 9, NULL, 10);
	}
	return 0;
}

/*
 * iq_store_statistics
 *		The tickers GET /metrics shows, from the statistics of a partition's
 *		database, under its lock (a close frees them).  The C API of RocksDB
 *		7.8 has no ticker getter: the statistics come as one text.
 */
bool
iq_store_statistics(int partition, IqStoreStatistics *out)
{
	PartStore  *ps;
	char	   *text = NULL;

	memset(out, 0, sizeof(*out));
	if (!iq_store_initialized || (ps = iq_store_slot(partition)) == NULL)
		return false;
	pthread_rwlock_rdlock(&ps->lock);
	if (ps->db != NULL && ps->stats_opts != NULL)
		text = rocksdb_options_statistics_get_string(ps->stats_opts);
	pthread_rwlock_unlock(&ps->lock);
	if (text == NULL)
		return false;
	out->block_cache_hits = ticker(text, "rocksdb.block.cache.hit");
	out->block_cache_misses = ticker(text, "rocksdb.block.cache.miss");
	out->stall_micros = ticker(text, "rocksdb.stall.micros");
	rocksdb_free(text);
	return true;
}

/*
 * position_of
 *		A partition's freshness, if it is open in the role asked for: held
 *		(restoring or not), or kept as a standby.
 */
static bool
position_of(int partition, bool standby, IqPartitionPosition *pos)
{
	PartStore  *ps = iq_store_slot(partition);
	bool		ok;

	if (ps == NULL)
		return false;
	pthread_rwlock_rdlock(&ps->lock);
	ok = ps->db != NULL && (standby ? ps->standby : ps->held);
	pthread_rwlock_unlock(&ps->lock);
	if (!ok)
		return false;
	pos->partition = partition;
	pos->consumed_offset = __atomic_load_n(&ps->consumed_offset, __ATOMIC_RELAXED);
	pos->end_offset = __atomic_load_n(&ps->end_offset, __ATOMIC_RELAXED);
	return true;
}

/*
 * iq_store_position
 *		The freshness of a held partition (restoring or not).
 */
bool
iq_store_position(int partition, IqPartitionPosition *pos)
{
	return position_of(partition, false, pos);
}

static IqStandbyEndFn standby_end_fn;

void
iq_store_set_standby_end_fn(IqStandbyEndFn fn)
{
	__atomic_store_n(&standby_end_fn, fn, __ATOMIC_RELEASE);
}

int64_t
iq_store_read_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* iq_store_standby_readable: a standby kept here whose position is known */
bool
iq_store_standby_readable(int partition)
{
	IqPartitionPosition pos;

	return position_of(partition, true, &pos) &&
		pos.consumed_offset >= 0 && pos.end_offset >= 0;
}

/*
 * iq_store_standby_position
 *		How far a standby replica kept here has read, against the end of its
 *		input now; false while that is not known (no flush's mark read yet,
 *		no end of its input, the broker not answering in time), as a lag
 *		that cannot be told must not pass for none.  since: when the read
 *		began (iq_store_read_clock); the end is the broker's at or after it.
 */
bool
iq_store_standby_position(int partition, int64_t since, IqPartitionPosition *pos)
{
	IqStandbyEndFn fn = __atomic_load_n(&standby_end_fn, __ATOMIC_ACQUIRE);
	int64_t		end;

	if (!position_of(partition, true, pos) || pos->consumed_offset < 0 ||
		pos->end_offset < 0)
		return false;
	if (fn == NULL || !fn(partition, since, &end))
		return false;
	if (end > pos->end_offset)
		pos->end_offset = end;
	return true;
}

/*-------------------------------------------------------------------------
 * scan_snapshot.c
 *	  Exact in-memory copies of a partition's store, made by full scans and
 *	  read by the next cursors instead of RocksDB iterators.
 *
 * RocksDB's own iteration costs 200 to 260 ns a row on the machines we
 * measured (bench/fdw_lookup.md, "full scans, second round"), more than a
 * heap scan's whole cost: no read option changes that.  A cursor that reads
 * a partition from its first row to its end (no bounds) copies every row
 * anyway; it also appends them here, and when the partition ends the copy
 * is published beside the partition's idle iterators.  The next batches,
 * of any cursor, full scan or range, read it instead of an iterator (a
 * binary search for the seek, then the next row in an array).
 *
 * Exactness: a snapshot carries the stamp of iter_pool.c (the database's
 * latest sequence number and an even ingest epoch) that every batch of its
 * build saw, and is read only while that is still the database's stamp,
 * i.e. while a new iterator would see exactly these rows.  Any write or
 * ingest makes it stale: the write hooks free it (or leave it to its last
 * reader), and a stale one is never read.  A build whose batches saw
 * different stamps, failed or stopped early is discarded.
 *
 * Memory: all snapshots and builds of the instance together stay within
 * iq_fdw.scan_snapshot_memory (a build that would pass it is dropped; 0
 * makes none).
 *
 * Callers hold the partition's read lock (take, publish) or none (release,
 * drop: the write path); the partition's idle_lock guards its snapshots and
 * their reference counts.  Any thread; no PostgreSQL call (lifecycle.c
 * says why).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/stores.h"
#include "worker/store/store_internal.h"

static size_t snap_budget;		/* bytes; set before the store starts */
static IqSnapshotStats snap_stats;	/* atomics */

/* iq_store_snapshot_budget: iq_fdw.scan_snapshot_memory, before iq_store_init */
void
iq_store_snapshot_budget(size_t bytes)
{
	snap_budget = bytes;
}

/* iq_store_snapshot_stats: the counters, for GET /metrics */
void
iq_store_snapshot_stats(IqSnapshotStats *out)
{
	out->builds = __atomic_load_n(&snap_stats.builds, __ATOMIC_RELAXED);
	out->hits = __atomic_load_n(&snap_stats.hits, __ATOMIC_RELAXED);
	out->drops_stale = __atomic_load_n(&snap_stats.drops_stale, __ATOMIC_RELAXED);
	out->drops_budget = __atomic_load_n(&snap_stats.drops_budget, __ATOMIC_RELAXED);
	out->bytes = __atomic_load_n(&snap_stats.bytes, __ATOMIC_RELAXED);
	out->budget = snap_budget;
}

/* charge: take n bytes of the budget, false when they do not fit */
static bool
charge(size_t n)
{
	uint64_t	cur = __atomic_load_n(&snap_stats.bytes, __ATOMIC_RELAXED);

	do
	{
		if (cur + n > snap_budget)
			return false;
	} while (!__atomic_compare_exchange_n(&snap_stats.bytes, &cur, cur + n, true,
										  __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return true;
}

static void
uncharge(size_t n)
{
	__atomic_sub_fetch(&snap_stats.bytes, n, __ATOMIC_RELAXED);
}

static void
count(uint64_t *counter)
{
	__atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* snap_free: a snapshot or build and its share of the budget */
static void
snap_free(IqScanSnapshot *s)
{
	uncharge(s->charged);
	free(s->data);
	free(s->rows);
	free(s);
}

/* ---- building ---- */

/*
 * iq_snap_build_begin
 *		A build for rows read under stamp; NULL when snapshots are off or
 *		the stamp is not one a snapshot may keep (an ingest running).
 */
IqScanSnapshot *
iq_snap_build_begin(IqIterStamp stamp)
{
	IqScanSnapshot *b;

	if (snap_budget == 0 || !stamp.ok)
		return NULL;
	b = calloc(1, sizeof(IqScanSnapshot));
	if (b != NULL)
		b->stamp = stamp;
	return b;
}

/*
 * grow
 *		Make *buf hold need bytes (capacity doubled), charging the budget
 *		for the growth; false when it does not fit or memory is out.
 */
static bool
grow(IqScanSnapshot *b, void **buf, size_t *cap, size_t need, size_t first)
{
	size_t		n = *cap > 0 ? *cap : first;
	void	   *p;

	while (n < need)
		n *= 2;
	if (!charge(n - *cap))
		return false;
	p = realloc(*buf, n);
	if (p == NULL)
	{
		uncharge(n - *cap);
		return false;
	}
	b->charged += n - *cap;
	*buf = p;
	*cap = n;
	return true;
}

/*
 * iq_snap_build_append
 *		The next row of the partition, in key order; false when the build
 *		no longer fits (counted; the caller discards it).
 */
bool
iq_snap_build_append(IqScanSnapshot *b, const char *key, size_t key_len,
					 const char *value, size_t value_len)
{
	size_t		need = b->data_len + key_len + value_len;
	IqSnapRow  *r;

	if (key_len > UINT32_MAX || value_len > UINT32_MAX ||
		(need > b->data_cap &&
		 !grow(b, (void **) &b->data, &b->data_cap, need, 64 * 1024)) ||
		((b->nrows + 1) * sizeof(IqSnapRow) > b->rows_cap &&
		 !grow(b, (void **) &b->rows, &b->rows_cap,
			   (b->nrows + 1) * sizeof(IqSnapRow), 4096 * sizeof(IqSnapRow))))
	{
		count(&snap_stats.drops_budget);
		return false;
	}
	r = &b->rows[b->nrows++];
	r->off = b->data_len;
	r->key_len = (uint32_t) key_len;
	r->value_len = (uint32_t) value_len;
	memcpy(b->data + b->data_len, key, key_len);
	memcpy(b->data + b->data_len + key_len, value, value_len);
	b->data_len = need;
	return true;
}

/*
 * iq_snap_build_discard
 *		A build that will not be published; stale (counted) when the
 *		database changed under it, else only abandoned (the scan stopped
 *		early, failed, or another snapshot is there).
 */
void
iq_snap_build_discard(IqScanSnapshot *b, bool stale)
{
	if (b == NULL)
		return;
	if (stale)
		count(&snap_stats.drops_stale);
	snap_free(b);
}

/* shrink: give back the room a finished build does not use */
static void
shrink(IqScanSnapshot *b)
{
	size_t		rows_bytes = b->nrows * sizeof(IqSnapRow);

	if (b->data_len > 0 && b->data_len < b->data_cap)
	{
		char	   *p = realloc(b->data, b->data_len);

		if (p != NULL)
		{
			uncharge(b->data_cap - b->data_len);
			b->charged -= b->data_cap - b->data_len;
			b->data = p;
			b->data_cap = b->data_len;
		}
	}
	if (rows_bytes > 0 && rows_bytes < b->rows_cap)
	{
		IqSnapRow  *p = realloc(b->rows, rows_bytes);

		if (p != NULL)
		{
			uncharge(b->rows_cap - rows_bytes);
			b->charged -= b->rows_cap - rows_bytes;
			b->rows = p;
			b->rows_cap = rows_bytes;
		}
	}
}

/* detach_locked: ps's snapshot of store gone; freed now or by its last reader */
static void
detach_locked(PartStore *ps, int store)
{
	IqScanSnapshot *s = ps->snap[store];

	if (s == NULL)
		return;
	ps->snap[store] = NULL;
	__atomic_sub_fetch(&ps->nsnap, 1, __ATOMIC_RELAXED);
	s->attached = false;
	if (s->refs == 0)
		snap_free(s);
}

/*
 * iq_snap_publish
 *		A finished build of store in ps (read lock held): kept when it is
 *		still what the database holds now and no current snapshot is there
 *		already, else discarded.
 */
void
iq_snap_publish(PartStore *ps, int store, IqScanSnapshot *b)
{
	IqIterStamp now;

	shrink(b);
	pthread_mutex_lock(&ps->idle_lock);
	now = iq_store_stamp_now(ps);
	if (!iq_store_same_stamp(&b->stamp, &now))
	{
		count(&snap_stats.drops_stale);
		snap_free(b);
	}
	else if (ps->snap[store] != NULL &&
			 iq_store_same_stamp(&ps->snap[store]->stamp, &now))
		snap_free(b);			/* another cursor's build was first */
	else
	{
		detach_locked(ps, store);
		b->attached = true;
		ps->snap[store] = b;
		__atomic_add_fetch(&ps->nsnap, 1, __ATOMIC_RELAXED);
		count(&snap_stats.builds);
	}
	pthread_mutex_unlock(&ps->idle_lock);
}

/* ---- reading ---- */

/*
 * iq_snap_take
 *		ps's snapshot of store when it is still exact (read lock held), with
 *		a reference the caller gives back (iq_snap_release); a stale one is
 *		detached on the way.  NULL: read RocksDB.
 */
IqScanSnapshot *
iq_snap_take(PartStore *ps, int store)
{
	IqScanSnapshot *s;
	IqIterStamp now;

	if (__atomic_load_n(&ps->nsnap, __ATOMIC_RELAXED) == 0)
		return NULL;
	pthread_mutex_lock(&ps->idle_lock);
	s = ps->snap[store];
	if (s != NULL)
	{
		now = iq_store_stamp_now(ps);
		if (iq_store_same_stamp(&s->stamp, &now))
			s->refs++;
		else
		{
			count(&snap_stats.drops_stale);
			detach_locked(ps, store);
			s = NULL;
		}
	}
	pthread_mutex_unlock(&ps->idle_lock);
	if (s != NULL)
		count(&snap_stats.hits);
	return s;
}

/* iq_snap_release: a reference from iq_snap_take back */
void
iq_snap_release(PartStore *ps, IqScanSnapshot *s)
{
	pthread_mutex_lock(&ps->idle_lock);
	if (--s->refs == 0 && !s->attached)
		snap_free(s);
	pthread_mutex_unlock(&ps->idle_lock);
}

/*
 * iq_snap_drop_all
 *		ps's snapshots are stale (after a write or an ingest) or their
 *		database closes; a reader still holding one frees it.
 */
void
iq_snap_drop_all(PartStore *ps)
{
	if (__atomic_load_n(&ps->nsnap, __ATOMIC_RELAXED) == 0)
		return;
	pthread_mutex_lock(&ps->idle_lock);
	for (int s = 0; s < IQ_NUM_STORES; s++)
		if (ps->snap[s] != NULL)
		{
			count(&snap_stats.drops_stale);
			detach_locked(ps, s);
		}
	pthread_mutex_unlock(&ps->idle_lock);
}

/*
 * iq_snap_seek
 *		The index of the first row at or after key (nrows when none): a
 *		binary search in the store's key order.
 */
size_t
iq_snap_seek(const IqScanSnapshot *s, const char *key, size_t key_len)
{
	size_t		lo = 0,
				hi = s->nrows;

	while (lo < hi)
	{
		size_t		mid = lo + (hi - lo) / 2;
		const IqSnapRow *r = &s->rows[mid];

		if (iq_key_cmp(s->data + r->off, r->key_len, key, key_len) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

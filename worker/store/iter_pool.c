/*-------------------------------------------------------------------------
 * iter_pool.c
 *	  A partition's idle RocksDB iterators, taken again by the next cursor
 *	  while nothing was written since they were made.
 *
 * A LIMIT 10 range made and destroyed an iterator per partition per
 * request, about a third of the worker's RocksDB time for it (a seek in
 * each memtable and table file is the rest).  An iterator sees the
 * database as it was when it was made; it is taken again only while that
 * is still the database as it is now, so an answer stays exactly what a
 * new iterator would give:
 *	- no write since: the database's latest sequence number is the one
 *	  read before the iterator was made (every write, put or batch, takes
 *	  a new one);
 *	- no file ingested since (a restore's bulk load need not take a
 *	  sequence number): ingest_epoch is the one read before, and even (an
 *	  ingest makes it odd while it runs).
 * Anything else is destroyed, not reused.  An idle iterator holds its
 * memtables and files: a write batch lets them go (iq_store_iter_written),
 * so a written partition keeps nothing back, and a close destroys them
 * before the database.
 *
 * Callers hold the partition's read lock (take, give) or its write lock
 * (close); the pool's own mutex orders cursors of several threads.
 * Any thread; no PostgreSQL call (lifecycle.c says why).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>

#include <rocksdb/c.h>

#include "worker/store/store_internal.h"

/*
 * iq_store_stamp_now
 *		What an iterator made now would see (ok false: do not pool); also
 *		the stamp of scan snapshots (scan_snapshot.c).
 */
IqIterStamp
iq_store_stamp_now(PartStore *ps)
{
	IqIterStamp s;

	s.ingest_epoch = __atomic_load_n(&ps->ingest_epoch, __ATOMIC_ACQUIRE);
	s.seq = rocksdb_get_latest_sequence_number(ps->db);
	s.ok = (s.ingest_epoch % 2) == 0;
	return s;
}

bool
iq_store_same_stamp(const IqIterStamp *a, const IqIterStamp *b)
{
	return a->ok && b->ok && a->seq == b->seq && a->ingest_epoch == b->ingest_epoch;
}

/*
 * iq_store_iter_take
 *		An iterator over column family cf of ps (read lock held, db open):
 *		an idle one that still sees the database as it is, else a new one.
 *		Stale idle ones are destroyed on the way.
 */
rocksdb_iterator_t *
iq_store_iter_take(PartStore *ps, int cf, IqIterStamp *stamp)
{
	rocksdb_iterator_t *found = NULL;
	IqIterStamp now = iq_store_stamp_now(ps);

	pthread_mutex_lock(&ps->idle_lock);
	for (int i = ps->nidle - 1; i >= 0; i--)
	{
		IqIdleIter *e = &ps->idle[i];

		if (!iq_store_same_stamp(&e->stamp, &now))
			rocksdb_iter_destroy(e->it);
		else if (found == NULL && e->cf == cf)
			found = e->it;
		else
			continue;
		*e = ps->idle[--ps->nidle];
	}
	pthread_mutex_unlock(&ps->idle_lock);
	*stamp = now;
	if (found)
		return found;
	/* the stamp was read first: the iterator sees at least that much */
	return rocksdb_create_iterator_cf(ps->db, iq_store_read_opts, ps->cf[cf]);
}

/*
 * iq_store_iter_give
 *		An iterator taken from ps back (read lock still held): pooled when
 *		its stamp is still the database's and there is room, else destroyed.
 */
void
iq_store_iter_give(PartStore *ps, int cf, rocksdb_iterator_t *it, IqIterStamp stamp)
{
	char	   *err = NULL;
	IqIterStamp now = iq_store_stamp_now(ps);

	rocksdb_iter_get_error(it, &err);
	if (err == NULL && iq_store_same_stamp(&stamp, &now))
	{
		pthread_mutex_lock(&ps->idle_lock);
		if (ps->nidle < IQ_IDLE_ITERS)
		{
			ps->idle[ps->nidle].it = it;
			ps->idle[ps->nidle].cf = cf;
			ps->idle[ps->nidle].stamp = stamp;
			ps->nidle++;
			it = NULL;
		}
		pthread_mutex_unlock(&ps->idle_lock);
	}
	free(err);
	if (it)
		rocksdb_iter_destroy(it);
}

/*
 * iq_store_iter_drop_all
 *		Destroy ps's idle iterators: before its database closes (write
 *		lock held), or after a write, so that they hold nothing back.
 */
void
iq_store_iter_drop_all(PartStore *ps)
{
	pthread_mutex_lock(&ps->idle_lock);
	while (ps->nidle > 0)
		rocksdb_iter_destroy(ps->idle[--ps->nidle].it);
	pthread_mutex_unlock(&ps->idle_lock);
}

/* iq_store_iter_written: after a write to ps, its idle iterators and snapshots are stale */
void
iq_store_iter_written(PartStore *ps)
{
	if (__atomic_load_n(&ps->nidle, __ATOMIC_RELAXED) > 0)
		iq_store_iter_drop_all(ps);
	iq_snap_drop_all(ps);
}

/* iq_store_iter_ingest_begin/_end: around a file ingest into ps */
void
iq_store_iter_ingest_begin(PartStore *ps)
{
	__atomic_add_fetch(&ps->ingest_epoch, 1, __ATOMIC_ACQ_REL);
}

void
iq_store_iter_ingest_end(PartStore *ps)
{
	__atomic_add_fetch(&ps->ingest_epoch, 1, __ATOMIC_ACQ_REL);
	iq_store_iter_drop_all(ps);
	iq_snap_drop_all(ps);
}

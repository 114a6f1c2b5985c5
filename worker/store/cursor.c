/*-------------------------------------------------------------------------
 * cursor.c
 *	  A scan of a store over several partitions, merged in key byte order,
 *	  read a bounded batch at a time (store.h).
 *
 * A cursor never keeps a partition's lock, nor an iterator, between calls:
 * it copies a batch of rows (at most IQ_STORE_BATCH_ROWS, and about
 * IQ_STORE_BATCH_BYTES) into its own buffer under the read locks of its
 * partitions, releases them, and hands the rows out from the buffer.  Rows
 * read from a scan snapshot (below) are not copied: the batch points into
 * the snapshot, which never changes and which the cursor keeps referenced
 * until its next batch (a stale or closed partition's snapshot is freed by
 * its last reader, so this holds up no writer and no rebalance).  The
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
 *
 * A reverse cursor (iq_store_cursor_set_reverse) does the same from the
 * upper bound down: it seeks at or before, steps back, and stops below the
 * lower bound; the merge takes the largest key first.  It builds no
 * snapshot, but reads an exact one as a forward cursor does.
 *
 * A partition read from its first row to its end (no bounds) is also
 * copied into a scan snapshot (scan_snapshot.c), batch after batch, while
 * every batch's iterator has the stamp of the first; it is published when
 * the partition ends.  A batch reads a partition whose snapshot is still
 * exact from the snapshot instead of an iterator (a Reader is either), with
 * the same seeks and bounds, so any cursor's rows stay exactly a new
 * iterator's.
 *
 * Any thread; no PostgreSQL call (lifecycle.c says why).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "common/shmem.h"
#include "worker/store/store_internal.h"

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
	IqScanSnapshot *build;		/* its rows so far, while a full read may publish them */
	bool		no_build;		/* tried and given up, or published */
	IqScanSnapshot *held;		/* referenced: the batch in hand points into it */
} CursorPart;

/* What a batch reads a partition from: an iterator, or a snapshot's rows */
typedef struct Reader
{
	rocksdb_iterator_t *it;
	IqScanSnapshot *snap;		/* when not NULL, it is NULL */
	size_t		pos;			/* the snapshot's row */
} Reader;

/* One end of the scan's range; key NULL when that side is open */
typedef struct Bound
{
	char	   *key;
	size_t		len;
	bool		incl;			/* the bound itself is in */
} Bound;

typedef struct BatchRow
{
	size_t		key_off;
	size_t		key_len;
	size_t		value_off;
	size_t		value_len;
	int			part;			/* index into cp */
	bool		borrowed;		/* offsets into cp[part].held's rows, not data */
} BatchRow;

struct IqStoreCursor
{
	IqStoreId	store;
	int			nparts;
	CursorPart *cp;				/* ascending partition: locks in one order */
	Bound		lower;
	Bound		upper;
	Bound	   *from;			/* where the scan starts: lower, or upper in reverse */
	Bound	   *to;				/* where it stops: the other */
	/* the batch in hand */
	char	   *data;
	size_t		data_len;
	size_t		data_cap;
	size_t		batch_bytes;	/* of its rows, copied or borrowed */
	BatchRow   *rows;
	int			nrows;
	int			next;
	int			batch_rows;		/* rows the next batch may take */
	/* while a batch is read (locks held) */
	Reader	   *rd;
	IqIterStamp *stamps;		/* what each iterator saw (iter_pool.c) */
	int		   *heap;			/* indexes into rd, first in the cursor's order on top */
	int			heap_len;
	bool		standby_ok;		/* standby replicas may answer */
	bool		reverse;		/* descending key order */
	IqReadStatus status;		/* IQ_READ_OK, _MOVED or _ERROR */
	char	   *error;			/* why, when not OK */
};

/* ---- readers ---- */

static inline bool
rd_valid(const Reader *r)
{
	return r->snap ? r->pos < r->snap->nrows : rocksdb_iter_valid(r->it);
}

static inline const char *
rd_key(const Reader *r, size_t *len)
{
	if (r->snap)
	{
		const IqSnapRow *row = &r->snap->rows[r->pos];

		*len = row->key_len;
		return r->snap->data + row->off;
	}
	return rocksdb_iter_key(r->it, len);
}

static inline const char *
rd_value(const Reader *r, size_t *len)
{
	if (r->snap)
	{
		const IqSnapRow *row = &r->snap->rows[r->pos];

		*len = row->value_len;
		return r->snap->data + row->off + row->key_len;
	}
	return rocksdb_iter_value(r->it, len);
}

/*
 * rd_step: to the next row in the cursor's order (a snapshot's position
 * below 0 wraps to SIZE_MAX, which rd_valid refuses)
 */
static inline void
rd_step(Reader *r, bool reverse)
{
	if (r->snap)
		r->pos += reverse ? (size_t) -1 : 1;
	else if (reverse)
		rocksdb_iter_prev(r->it);
	else
		rocksdb_iter_next(r->it);
}

/* rd_seek: at the first row at or after key; the first row when key is NULL */
static void
rd_seek(Reader *r, const char *key, size_t key_len)
{
	if (r->snap)
		r->pos = key ? iq_snap_seek(r->snap, key, key_len) : 0;
	else if (key)
		rocksdb_iter_seek(r->it, key, key_len);
	else
		rocksdb_iter_seek_to_first(r->it);
}

/* rd_seek_back: at the last row at or before key; the last row when key is NULL */
static void
rd_seek_back(Reader *r, const char *key, size_t key_len)
{
	if (r->snap)
	{
		size_t		i = key ? iq_snap_seek(r->snap, key, key_len) : r->snap->nrows;

		if (i < r->snap->nrows)
		{
			size_t		kl;
			const char *k;

			r->pos = i;
			k = rd_key(r, &kl);
			if (iq_key_cmp(k, kl, key, key_len) == 0)
				return;
		}
		r->pos = i - 1;			/* SIZE_MAX when i == 0: none */
	}
	else if (key)
		rocksdb_iter_seek_for_prev(r->it, key, key_len);
	else
		rocksdb_iter_seek_to_last(r->it);
}

/* ---- the merge ---- */

/* key_cmp: the order of two readers' current keys in the cursor's order */
static int
key_cmp(const IqStoreCursor *c, const Reader *a, const Reader *b)
{
	size_t		la,
				lb;
	const char *ka = rd_key(a, &la);
	const char *kb = rd_key(b, &lb);
	int			cmp = iq_key_cmp(ka, la, kb, lb);

	return c->reverse ? -cmp : cmp;
}

/* heap_down: restore the heap (first in the cursor's order on top) below i */
static void
heap_down(IqStoreCursor *c, int i)
{
	for (;;)
	{
		int			l = 2 * i + 1,
					r = l + 1,
					m = i;

		if (l < c->heap_len && key_cmp(c, &c->rd[c->heap[l]], &c->rd[c->heap[m]]) < 0)
			m = l;
		if (r < c->heap_len && key_cmp(c, &c->rd[c->heap[r]], &c->rd[c->heap[m]]) < 0)
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
	va_list		ap;

	if (c->status != IQ_READ_OK)
		return;
	va_start(ap, fmt);
	c->error = iq_store_vmessage(fmt, ap);
	va_end(ap);
	c->status = status;
}

/*
 * iter_usable
 *		Valid and within the bound it moves towards (the upper one, or the
 *		lower in reverse); records an iterator error.
 */
static bool
iter_usable(IqStoreCursor *c, int i)
{
	const Reader *r = &c->rd[i];

	if (!rd_valid(r))
	{
		char	   *e = NULL;

		if (r->it)
			rocksdb_iter_get_error(r->it, &e);
		if (e != NULL)
		{
			cursor_fail(c, IQ_READ_ERROR, "RocksDB iterator failed on partition %d: %s",
						c->cp[i].partition, e);
			free(e);
		}
		return false;
	}
	if (c->to->key != NULL)
	{
		size_t		kl;
		const char *k = rd_key(r, &kl);
		int			cmp = iq_key_cmp(k, kl, c->to->key, c->to->len);

		/* past it: above the upper bound, or below the lower in reverse */
		if (c->reverse)
			cmp = -cmp;
		if (cmp > 0 || (cmp == 0 && !c->to->incl))
			return false;
	}
	return true;
}

/*
 * seek_past: position r past what was handed out, or at the bound the
 * cursor starts from (the lower one, or the upper in reverse)
 */
static void
seek_past(IqStoreCursor *c, Reader *r, const CursorPart *cp)
{
	const char *at = cp->started ? cp->pos : c->from->key;
	size_t		at_len = cp->started ? cp->pos_len : c->from->len;
	bool		incl = cp->started ? false : c->from->incl;

	if (c->reverse)
		rd_seek_back(r, at, at_len);
	else
		rd_seek(r, at, at_len);
	if (at != NULL && !incl && rd_valid(r))
	{
		size_t		kl;
		const char *k = rd_key(r, &kl);

		if (kl == at_len && memcmp(k, at, kl) == 0)
			rd_step(r, c->reverse);
	}
}

/* build_append: the row also into partition i's snapshot being built */
static void
build_append(CursorPart *cp, const char *k, size_t kl, const char *v, size_t vl)
{
	if (!iq_snap_build_append(cp->build, k, kl, v, vl))
	{
		iq_snap_build_discard(cp->build, false);
		cp->build = NULL;
		cp->no_build = true;
	}
}

/* row_data: where a batch row's offsets point */
static inline const char *
row_data(const IqStoreCursor *c, const BatchRow *r)
{
	return r->borrowed ? c->cp[r->part].held->data : c->data;
}

/*
 * batch_append
 *		The row under reader i into the batch: a snapshot's row by
 *		reference (the cursor keeps the snapshot until its next batch, see
 *		unlock_all), an iterator's copied.  Copying a snapshot's rows was
 *		half of a worker's CPU per row in a full scan.
 */
static bool
batch_append(IqStoreCursor *c, int i)
{
	const Reader *rd = &c->rd[i];
	size_t		kl,
				vl;
	const char *k;
	const char *v;
	BatchRow   *r;

	if (rd->snap)
	{
		const IqSnapRow *sr = &rd->snap->rows[rd->pos];

		r = &c->rows[c->nrows];
		r->key_off = sr->off;
		r->key_len = sr->key_len;
		r->value_off = sr->off + sr->key_len;
		r->value_len = sr->value_len;
		r->part = i;
		r->borrowed = true;
		c->cp[i].held = rd->snap;
		c->cp[i].last_row = c->nrows;
		c->nrows++;
		c->batch_bytes += sr->key_len + sr->value_len;
		return true;
	}
	k = rd_key(rd, &kl);
	v = rd_value(rd, &vl);

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
	c->batch_bytes += kl + vl;
	r->part = i;
	r->borrowed = false;
	c->cp[i].last_row = c->nrows;
	c->nrows++;
	if (c->cp[i].build)
		build_append(&c->cp[i], k, kl, v, vl);
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
		memcpy(cp->pos, row_data(c, r) + r->key_off, r->key_len);
		cp->pos_len = r->key_len;
		cp->started = true;
	}
	return true;
}

/* ---- one batch ---- */

/*
 * build_check
 *		Partition i's snapshot build: begun on a full read's first batch
 *		(no bounds, nothing handed out yet, no snapshot to read), given up
 *		when this batch's iterator saw another stamp than the first (a
 *		write between batches) or a snapshot is there now.
 */
static void
build_check(IqStoreCursor *c, int i)
{
	CursorPart *cp = &c->cp[i];
	const Reader *r = &c->rd[i];

	if (cp->build != NULL)
	{
		if (r->snap == NULL && iq_store_same_stamp(&cp->build->stamp, &c->stamps[i]))
			return;
		iq_snap_build_discard(cp->build, r->snap == NULL);
		cp->build = NULL;
		cp->no_build = true;
	}
	else if (!cp->no_build && !cp->started && r->snap == NULL && !c->reverse &&
			 c->lower.key == NULL && c->upper.key == NULL)
	{
		cp->build = iq_snap_build_begin(c->stamps[i]);
		cp->no_build = cp->build == NULL;
	}
}

/* reader_take: partition i's exact snapshot if there is one, else an iterator */
static void
reader_take(IqStoreCursor *c, int i, PartStore *ps)
{
	Reader	   *r = &c->rd[i];

	r->pos = 0;
	r->it = NULL;
	r->snap = iq_snap_take(ps, c->store);
	if (r->snap == NULL)
		r->it = iq_store_iter_take(ps, CF_OF(c->store), &c->stamps[i]);
}

/*
 * lock_and_seek
 *		Take the read lock of each partition not yet done and set an
 *		iterator just past what it handed out; the ones with a row within
 *		the bounds go on the heap.  A partition closed (or reopened) since
 *		the cursor opened fails the scan with IQ_READ_MOVED.
 */
static void
lock_and_seek(IqStoreCursor *c)
{
	for (int i = 0; i < c->nparts; i++)
	{
		CursorPart *cp = &c->cp[i];
		PartStore  *ps = &iq_store_parts[cp->partition];

		cp->last_row = -1;
		c->rd[i].it = NULL;
		c->rd[i].snap = NULL;
		if (cp->done)
			continue;
		pthread_rwlock_rdlock(&ps->lock);
		cp->locked = true;
		if (ps->db == NULL || ps->generation != cp->generation)
		{
			cursor_fail(c, IQ_READ_MOVED,
						"partition %d moved during the scan (closed here by a rebalance or a restart of the worker)",
						cp->partition);
			return;
		}
		reader_take(c, i, ps);
		build_check(c, i);
		seek_past(c, &c->rd[i], cp);
		if (iter_usable(c, i))
			c->heap[c->heap_len++] = i;
		else
			cp->done = true;
	}
}

/*
 * merge_rows
 *		Copy rows in the cursor's order, the heap's first reader's row first,
 *		until the batch is full or every partition is done; false when out
 *		of memory.
 */
static bool
merge_rows(IqStoreCursor *c)
{
	for (int i = c->heap_len / 2 - 1; i >= 0; i--)
		heap_down(c, i);
	while (c->heap_len > 0 && c->nrows < c->batch_rows &&
		   c->batch_bytes < IQ_STORE_BATCH_BYTES)
	{
		int			top = c->heap[0];

		if (!batch_append(c, top))
			return false;
		rd_step(&c->rd[top], c->reverse);
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
	return true;
}

/*
 * finish_builds
 *		Publish the snapshots of partitions read to their end (read locks
 *		still held: publishing reads the database's stamp); a failed batch
 *		publishes nothing.
 */
static void
finish_builds(IqStoreCursor *c, bool ok)
{
	for (int i = 0; i < c->nparts; i++)
	{
		CursorPart *cp = &c->cp[i];

		if (cp->build == NULL || (ok && !cp->done))
			continue;
		if (ok)
			iq_snap_publish(&iq_store_parts[cp->partition], c->store, cp->build);
		else
			iq_snap_build_discard(cp->build, false);
		cp->build = NULL;
		cp->no_build = true;
	}
}

/*
 * unlock_all: the batch's readers given back and its read locks released;
 * a snapshot the batch points into stays referenced (release_held)
 */
static void
unlock_all(IqStoreCursor *c)
{
	for (int i = 0; i < c->nparts; i++)
	{
		PartStore  *ps = &iq_store_parts[c->cp[i].partition];

		if (c->rd[i].it)
			iq_store_iter_give(ps, CF_OF(c->store), c->rd[i].it, c->stamps[i]);
		if (c->rd[i].snap && c->rd[i].snap != c->cp[i].held)
			iq_snap_release(ps, c->rd[i].snap);
		c->rd[i].it = NULL;
		c->rd[i].snap = NULL;
		if (c->cp[i].locked)
			pthread_rwlock_unlock(&iq_store_parts[c->cp[i].partition].lock);
		c->cp[i].locked = false;
	}
}

/*
 * grow_batch
 *		Let the next batch take twice as many rows, up to the bound; the
 *		row slots grow with it, so that a short range never allocates room
 *		for a full batch.  Out of memory, the batches stay as they are.
 */
static void
grow_batch(IqStoreCursor *c)
{
	int			n = c->batch_rows * 2 < IQ_STORE_BATCH_ROWS ?
		c->batch_rows * 2 : IQ_STORE_BATCH_ROWS;
	BatchRow   *rows = realloc(c->rows, sizeof(BatchRow) * n);

	if (rows == NULL)
		return;
	c->rows = rows;
	c->batch_rows = n;
}

/*
 * release_held
 *		The snapshots the last batch pointed into, given back (a stale one
 *		is freed by its last reader, scan_snapshot.c): before the next
 *		batch, and when the cursor goes.
 */
static void
release_held(IqStoreCursor *c)
{
	for (int i = 0; i < c->nparts; i++)
		if (c->cp[i].held)
		{
			iq_snap_release(&iq_store_parts[c->cp[i].partition], c->cp[i].held);
			c->cp[i].held = NULL;
		}
}

/*
 * cursor_fill
 *		Read the next batch under the read locks of the partitions not yet
 *		done, and release them; the batch after it may be twice as long.
 */
static void
cursor_fill(IqStoreCursor *c)
{
	bool		oom = false;

	release_held(c);
	c->nrows = 0;
	c->next = 0;
	c->data_len = 0;
	c->batch_bytes = 0;
	c->heap_len = 0;
	lock_and_seek(c);
	if (c->status == IQ_READ_OK)
		oom = !merge_rows(c);
	finish_builds(c, !oom && c->status == IQ_READ_OK);
	unlock_all(c);
	if (oom || !remember_positions(c))
		cursor_fail(c, IQ_READ_ERROR, "out of memory reading a batch of a scan");
	if (c->status != IQ_READ_OK)
		c->nrows = 0;
	if (c->batch_rows < IQ_STORE_BATCH_ROWS)
		grow_batch(c);
}

/* ---- open, next, close ---- */

/* cursor_free: everything the cursor owns; it holds no lock between calls */
static void
cursor_free(IqStoreCursor *c)
{
	if (c->cp)
		release_held(c);
	if (c->cp)
		for (int i = 0; i < c->nparts; i++)
		{
			free(c->cp[i].pos);
			iq_snap_build_discard(c->cp[i].build, false);
		}
	free(c->cp);
	free(c->rd);
	free(c->stamps);
	free(c->heap);
	free(c->rows);
	free(c->data);
	free(c->lower.key);
	free(c->upper.key);
	free(c->error);
	free(c);
}

/*
 * cursor_alloc
 *		A cursor with room for npartitions and a whole batch of rows; NULL
 *		when out of memory.
 */
static IqStoreCursor *
cursor_alloc(IqStoreId store, int npartitions)
{
	IqStoreCursor *c = calloc(1, sizeof(IqStoreCursor));
	int			alloc = npartitions > 0 ? npartitions : 1;

	if (c == NULL)
		return NULL;
	c->store = store;
	c->from = &c->lower;
	c->to = &c->upper;
	c->batch_rows = IQ_STORE_BATCH_FIRST_ROWS;
	c->cp = calloc(alloc, sizeof(CursorPart));
	c->rd = calloc(alloc, sizeof(Reader));
	c->stamps = calloc(alloc, sizeof(IqIterStamp));
	c->heap = malloc(sizeof(int) * alloc);
	c->rows = malloc(sizeof(BatchRow) * IQ_STORE_BATCH_FIRST_ROWS);
	if (!c->cp || !c->rd || !c->stamps || !c->heap || !c->rows)
	{
		cursor_free(c);
		return NULL;
	}
	return c;
}

/*
 * set_bound
 *		A malloc'd copy of a bound, never NULL for a present one (an empty
 *		key is a bound); nothing for an absent one.
 */
static bool
set_bound(Bound *dst, const char *src, size_t len, bool incl)
{
	if (src == NULL)
		return true;
	dst->key = malloc(len > 0 ? len : 1);
	if (dst->key == NULL)
		return false;
	memcpy(dst->key, src, len);
	dst->len = len;
	dst->incl = incl;
	return true;
}

/* int_cmp: qsort's ascending order of partition numbers */
static int
int_cmp(const void *a, const void *b)
{
	return *(const int *) a - *(const int *) b;
}

/*
 * take_partition
 *		Add partition p if it is held and restored now, noting its
 *		database's generation so that a batch sees it closed since.
 */
static IqReadStatus
take_partition(IqStoreCursor *c, int p, char **err)
{
	PartStore  *ps = iq_store_slot(p);
	IqReadStatus status;

	if (ps == NULL)
	{
		iq_store_set_err(err, "partition %d is not held by this instance", p);
		return IQ_READ_NOT_HELD;
	}
	pthread_rwlock_rdlock(&ps->lock);
	status = iq_store_readable_as(ps, c->standby_ok);
	if (status == IQ_READ_OK)
	{
		c->cp[c->nparts].partition = p;
		c->cp[c->nparts].generation = ps->generation;
		c->cp[c->nparts].last_row = -1;
		c->nparts++;
	}
	pthread_rwlock_unlock(&ps->lock);
	return status;
}

/*
 * take_partitions
 *		The cursor's partitions, sorted and without duplicates so that
 *		every batch takes their locks in the same order; the first one not
 *		readable ends it.
 */
static IqReadStatus
take_partitions(IqStoreCursor *c, const int *partitions, int npartitions,
				char **err)
{
	int		   *sorted = malloc(sizeof(int) * (npartitions > 0 ? npartitions : 1));
	int			n = 0;
	IqReadStatus status = IQ_READ_OK;

	if (sorted == NULL)
	{
		iq_store_set_err(err, "out of memory");
		return IQ_READ_ERROR;
	}
	memcpy(sorted, partitions, sizeof(int) * npartitions);
	qsort(sorted, npartitions, sizeof(int), int_cmp);
	for (int i = 0; i < npartitions; i++)
		if (i == 0 || sorted[i] != sorted[n - 1])
			sorted[n++] = sorted[i];
	for (int i = 0; i < n && status == IQ_READ_OK; i++)
		status = take_partition(c, sorted[i], err);
	free(sorted);
	return status;
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
	return iq_store_cursor_open_as(store, partitions, npartitions,
								   lower, lower_len, lower_incl,
								   upper, upper_len, upper_incl, false, status, err);
}

/*
 * iq_store_cursor_open_as
 *		The same, taking standby replicas kept here when standby_ok; an
 *		empty list of partitions still means the held ones only.
 */
IqStoreCursor *
iq_store_cursor_open_as(IqStoreId store, const int *partitions, int npartitions,
						const char *lower, size_t lower_len, bool lower_incl,
						const char *upper, size_t upper_len, bool upper_incl,
						bool standby_ok, IqReadStatus *status, char **err)
{
	IqStoreCursor *c;
	int			held[IQ_MAX_PARTITIONS];

	*status = IQ_READ_OK;
	if (!iq_store_initialized || store < 0 || store >= IQ_NUM_STORES)
	{
		*status = IQ_READ_NOT_HELD;
		return NULL;
	}
	if (npartitions == 0)
	{
		npartitions = iq_store_held_partitions(held, IQ_MAX_PARTITIONS);
		partitions = held;
	}
	c = cursor_alloc(store, npartitions);
	if (c != NULL)
		c->standby_ok = standby_ok;
	if (c == NULL ||
		!set_bound(&c->lower, lower, lower_len, lower_incl) ||
		!set_bound(&c->upper, upper, upper_len, upper_incl))
	{
		if (c)
			cursor_free(c);
		*status = IQ_READ_ERROR;
		iq_store_set_err(err, "out of memory");
		return NULL;
	}
	*status = take_partitions(c, partitions, npartitions, err);
	if (*status != IQ_READ_OK)
	{
		cursor_free(c);
		return NULL;
	}
	return c;
}

/*
 * iq_store_cursor_set_reverse
 *		Hand rows out in descending key order, from the upper bound down;
 *		before the first row.
 */
void
iq_store_cursor_set_reverse(IqStoreCursor *c)
{
	if (c->nrows == 0 && c->next == 0)
	{
		c->reverse = true;
		c->from = &c->upper;
		c->to = &c->lower;
	}
}

/*
 * iq_store_cursor_expect
 *		The caller will take at most rows (a LIMIT): read them in one batch
 *		when they fit one, rather than in batches growing from
 *		IQ_STORE_BATCH_FIRST_ROWS, each of which creates its iterators and
 *		seeks again (most of a short range's cost), nor read more rows than
 *		will be taken.
 */
void
iq_store_cursor_expect(IqStoreCursor *c, uint64_t rows)
{
	int			n = rows < IQ_STORE_BATCH_ROWS ? (int) rows : IQ_STORE_BATCH_ROWS;
	BatchRow   *slots;

	if (n <= c->batch_rows || c->nrows != 0 || c->next != 0)
	{
		if (n > 0 && c->nrows == 0 && c->next == 0)
			c->batch_rows = n;	/* fewer rows than a first batch: fewer slots used */
		return;
	}
	/* the row slots grow with the batch (grow_batch); out of memory, it stays */
	slots = realloc(c->rows, sizeof(BatchRow) * n);
	if (slots == NULL)
		return;
	c->rows = slots;
	c->batch_rows = n;
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
	row->key = row_data(c, r) + r->key_off;
	row->key_len = r->key_len;
	row->value = row_data(c, r) + r->value_off;
	row->value_len = r->value_len;
	row->partition = c->cp[r->part].partition;
	return true;
}

/*
 * iq_store_cursor_close
 *		Free the cursor, saying how its scan ended.
 */
IqReadStatus
iq_store_cursor_close(IqStoreCursor *c, char **err)
{
	IqReadStatus status;

	if (c == NULL)
		return IQ_READ_OK;
	status = c->status;
	if (status != IQ_READ_OK)
		iq_store_set_err(err, "%s", c->error ? c->error : "the scan failed");
	cursor_free(c);
	return status;
}

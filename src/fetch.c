/*-------------------------------------------------------------------------
 * fetch.c
 *	  Reads from the instances that hold the partitions, all at once, with
 *	  their rows merged in key byte order (see fetch.h).
 *
 * Each target gets its own request (fetch_request.c), sent over a channel
 * (channel.h): this instance's worker over its Unix socket, the others
 * over an HTTP connection upgraded to the same stream; all answers stream
 * in parallel.  Every header is read before the first row is handed out
 * (fetch_prime.c), then the merge takes the smallest head row of all.
 *
 * Whatever a fetch holds (sockets, curl handles, buffers) is malloc'd and
 * listed in active_fetches; an error or cancel (which longjmps out of these
 * files) reaches the transaction abort callback, which releases it all, so
 * the backend's pooled connections stay usable.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "utils/memutils.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "src/fetch_internal.h"

/*
 * What the end of a fetch reads of answers stopped early to pool their
 * connections: about 10,000 short rows, in at most 2 ms (a new connection
 * to another instance costs about a millisecond on loopback).
 */
#define DRAIN_MAX_BYTES (256 * 1024)
#define DRAIN_MAX_US 2000

static IqFetch *active_fetches = NULL;
static bool callbacks_registered = false;

/* free_fetch: release and forget a fetch (its request context is the caller's) */
static void
free_fetch(IqFetch *f)
{
	iq_fetch_release(f);
	if (f->prev)
		f->prev->next = f->next;
	else
		active_fetches = f->next;
	if (f->next)
		f->next->prev = f->prev;
	free(f->sources);
	free(f->positions);
	free(f->view);
	free(f);
}

/* xact_callback: a transaction ended with fetches open: free them */
static void
xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PREPARE)
		iq_fetch_cleanup_on_abort();
}

/* subxact_callback: a subtransaction aborted: free the fetches it started */
static void
subxact_callback(SubXactEvent event, SubTransactionId mySubid,
				 SubTransactionId parentSubid, void *arg)
{
	IqFetch    *f;
	IqFetch    *next;

	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	for (f = active_fetches; f != NULL; f = next)
	{
		next = f->next;
		/* ids grow: those started in it or in its children are >= */
		if (f->subid >= mySubid)
			free_fetch(f);
	}
}

/* iq_fetch_cleanup_on_abort: free every open fetch's transfers */
void
iq_fetch_cleanup_on_abort(void)
{
	while (active_fetches != NULL)
		free_fetch(active_fetches);
}

/* key_cmp: RocksDB's default order: bytes, a prefix first */
static int
key_cmp(const char *a, uint32 alen, const char *b, uint32 blen)
{
	int			c = memcmp(a, b, Min(alen, blen));

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* iq_fetch_start: send the request to all targets at once */
IqFetch *
iq_fetch_start(const IqWireRequest *req, const IqTarget *targets, int ntargets)
{
	IqFetch    *f;
	int			partition_count;
	uint64		generation;
	uint32		seq;
	IqOwnerView *view = NULL;

	if (!callbacks_registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		callbacks_registered = true;
	}
	iq_shmem_attach();
	do
	{
		seq = iq_shared_read_begin();
		partition_count = iq_shared->partition_count;
		generation = iq_shared->generation;
	} while (!iq_shared_read_ok(seq));

	/* with read_from: the view standbys are placed by, gaps filled as the caller's */
	if (iq_read_from != IQ_READ_FROM_OWNER)
	{
		view = palloc(sizeof(IqOwnerView));
		iq_ownership_read(view);
		if (iq_ownership_fill_missing(view))
		{
			partition_count = view->partition_count;
			generation = view->generation;
		}
	}

	f = calloc(1, sizeof(IqFetch));
	if (f)
	{
		/* a standby per partition may take a slot of its own */
		f->capacity = Max(ntargets, 1);
		if (iq_read_from != IQ_READ_FROM_OWNER)
		{
			f->capacity += Max(partition_count, 0);
			f->view = malloc(sizeof(IqOwnerView));
		}
		f->sources = calloc(f->capacity, sizeof(IqFetchSource));
	}
	if (f == NULL || f->sources == NULL ||
		(iq_read_from != IQ_READ_FROM_OWNER && f->view == NULL))
	{
		if (f)
		{
			free(f->sources);
			free(f->view);
			free(f);
		}
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory starting an iq_fdw read")));
	}
	f->subid = GetCurrentSubTransactionId();
	f->op = req->op;
	f->store = req->store;
	f->direction = (req->flags & IQ_FLAG_REVERSE) ? -1 : 1;
	/* listed before anything is allocated for it: an error frees it all */
	f->next = active_fetches;
	if (active_fetches)
		active_fetches->prev = f;
	active_fetches = f;

	f->reqcxt = AllocSetContextCreate(CurrentMemoryContext, "iq_fdw fetch request",
									  ALLOCSET_SMALL_SIZES);
	f->req = iq_fetch_copy_request(f->reqcxt, req);
	f->generation = generation;
	if (f->view)
		iq_fetch_standby_forget(f, view);
	iq_fetch_add_sources(f, targets, ntargets, partition_count);
	iq_fetch_start_sources(f);
	return f;
}

/* iq_fetch_any_order: hand rows out without the merge (fetch.h) */
void
iq_fetch_any_order(IqFetch *f)
{
	f->any_order = true;
}

/*
 * next_source
 *		The source whose head row goes next: the smallest key of all, or,
 *		with any_order, the next source after the previous row's that has a
 *		row (the key comparisons of the merge were a fifth of a full scan's
 *		CPU in the backend, for an order nobody asked for).  Taking the
 *		sources in turn, rather than one to its end, keeps every answer
 *		flowing: a worker whose socket is full stops producing.  NULL at
 *		the end.
 */
static IqFetchSource *
next_source(IqFetch *f, IqFetchSource *prev)
{
	IqFetchSource *best = NULL;

	if (f->any_order)
	{
		int			i = prev ? (int) (prev - f->sources) : -1;

		/* wrapped by hand: a division per row showed in the profile */
		for (int k = 0; k < f->nsources; k++)
		{
			if (++i >= f->nsources)
				i = 0;
			if (f->sources[i].has_row)
				return &f->sources[i];
		}
		return NULL;
	}
	for (int i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		if (src->has_row &&
			(best == NULL || key_cmp(src->reader.key, src->reader.key_len,
									 best->reader.key, best->reader.key_len) * f->direction < 0))
			best = src;
	}
	return best;
}

/*
 * fast_advance
 *		What iq_fetch_advance does when src's next row has arrived whole
 *		and no LIMIT share ends at it, inline (fetch_read.c does the rest).
 */
static inline bool
fast_advance(IqFetchSource *src)
{
	if (src->limit > 0 && src->rows + 1 >= src->limit)
		return false;
	if (!iq_wire_reader_row(&src->reader))
		return false;
	/* progress, as fetch_read.c counts it for iq_fdw.peer_timeout */
	src->stalled_us = 0;
	src->partial = 0;
	src->rows++;
	src->rows_total++;
	src->has_row = true;
	return true;
}

/* iq_fetch_next: the smallest head row of all sources (or any, see above) */
bool
iq_fetch_next(IqFetch *f, IqFetchRow *row)
{
	IqFetchSource *best;
	IqFetchSource *prev = f->last;

	if (f->released)
		return false;
	if (!f->primed)
		iq_fetch_prime(f);
	else if (f->last && !fast_advance(f->last))
		iq_fetch_advance(f, f->last);
	f->last = NULL;

	best = next_source(f, prev);
	if (best == NULL)
	{
		/* every answer read to its end: pool the local connection now */
		iq_fetch_release(f);
		return false;
	}

	/*
	 * The row points into best's reader, which keeps those bytes until best
	 * is advanced at the next call: no copy here, the caller makes its
	 * datums from them (one copy per row instead of two).
	 */
	row->key_len = (int) best->reader.key_len;
	row->key = (char *) best->reader.key;
	row->value_len = best->reader.value_len;
	row->value = row->value_len >= 0 ? (char *) best->reader.value : NULL;
	/* each follows its u32 length in the reader's buffer (wire.h) */
	row->header_room = true;
	f->last = best;
	return true;
}

/* iq_fetch_next_batches: how often a source was asked past its share of a LIMIT */
int64
iq_fetch_next_batches(IqFetch *f)
{
	return f->next_batches;
}

/* iq_fetch_positions: what every target reported (after the first next) */
int
iq_fetch_positions(IqFetch *f, const IqWirePosition **positions)
{
	*positions = f->positions;
	return f->npositions;
}

/*
 * iq_fetch_end: release everything; the caller is done with the rows.
 * Answers it stopped reading early are read to their end first when
 * what is left of them is short (iq_fetch_drain), so that a query with a
 * LIMIT leaves its connections pooled for the next one.
 */
void
iq_fetch_end(IqFetch *f)
{
	int64		deadline;
	int			i;

	if (f == NULL)
		return;
	deadline = iq_chan_now_us() + DRAIN_MAX_US;
	for (i = 0; i < f->nsources && !f->released; i++)
		(void) iq_fetch_drain(&f->sources[i], DRAIN_MAX_BYTES, deadline);
	MemoryContextDelete(f->reqcxt);
	free_fetch(f);
}

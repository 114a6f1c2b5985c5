/*-------------------------------------------------------------------------
 * fetch.c
 *	  Reads from the instances that hold the partitions, all at once, with
 *	  their rows merged in key byte order (see fetch.h).
 *
 * Each target gets its own request (its partitions, and for a get only the
 * keys it holds); this instance is asked over the local socket, the others
 * over an HTTP connection upgraded to the same stream (both channel.c), or
 * over POST /iq/v1/read where a peer does not offer the upgrade
 * (peer_client.c); all answers stream in parallel.  Before the first row
 * is handed out every target's header is read, so that a partition that
 * moved, is restoring, or lags beyond iq_fdw.max_lag fails (or, with
 * lag_policy = 'wait', is asked again) before the caller has seen
 * anything: a result is never partial.
 * A partition still restoring is asked again up to iq_fdw.ownership_wait.
 * An instance answering that it no longer holds a partition (ownership
 * moved between this backend's look at it and the answer) makes the whole
 * read wait, up to iq_fdw.ownership_wait, for the new ownership and be
 * asked once more of the new owners; only a second such answer fails.
 *
 * Waiting is in slices of at most 100 ms with CHECK_FOR_INTERRUPTS between
 * them, so statement_timeout and pg_cancel_backend act at once.  Whatever
 * a fetch holds (curl handles, sockets, buffers) is malloc'd and listed in
 * active_fetches; an error or cancel (which longjmps out of this file)
 * reaches the transaction abort callback, which releases it all, so the
 * backend's cached connections stay usable.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "access/xact.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "common/partitioner.h"
#include "common/settings.h"
#include "common/shmem.h"
#include "common/stores.h"
#include "src/fetch_internal.h"
#include "src/owners.h"

#define WAIT_SLICE_MS 100

struct IqFetch
{
	IqFetch    *next;			/* in active_fetches */
	IqFetch    *prev;
	SubTransactionId subid;		/* where it was started */
	MemoryContext rowcxt;		/* the caller's rows; never touched on abort */
	MemoryContext reqcxt;		/* req, to ask again; never touched on abort */
	IqWireRequest *req;			/* as the caller made it, all targets' */
	uint64		generation;		/* of the ownership when first asked */
	bool		reasked;		/* asked again after an answer NOT_HELD */
	uint8		op;
	uint8		store;
	int			nsources;
	IqFetchSource *sources;
	IqFetchSource *last;		/* gave the previous row; advance it next */
	bool		primed;
	bool		released;
	int			npositions;
	IqWirePosition *positions;
};

static IqFetch *active_fetches = NULL;
static bool callbacks_registered = false;

static void release(IqFetch *f);
static void stop_source(IqFetchSource *src);
static void drop_source(IqFetchSource *src);
static bool reask(IqFetch *f, IqFetchSource *moved);

/* iq_fetch_now_us: a monotonic clock for timeouts */
int64
iq_fetch_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* free_fetch: release and forget a fetch (its row context is the caller's) */
static void
free_fetch(IqFetch *f)
{
	release(f);
	if (f->prev)
		f->prev->next = f->next;
	else
		active_fetches = f->next;
	if (f->next)
		f->next->prev = f->prev;
	free(f->sources);
	free(f->positions);
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

/* stop_source: end a source's transfer, over whichever channel it uses */
static void
stop_source(IqFetchSource *src)
{
	if (src->sock)
		iq_chan_finish(src);
	else
		iq_peer_abort(src);
}

/* iq_fetch_cleanup_on_abort: free every open fetch's transfers */
void
iq_fetch_cleanup_on_abort(void)
{
	while (active_fetches != NULL)
		free_fetch(active_fetches);
}

/* release: stop every transfer of f and free its buffers (idempotent) */
static void
release(IqFetch *f)
{
	int			i;

	if (f->released)
		return;
	f->released = true;
	for (i = 0; i < f->nsources; i++)
		drop_source(&f->sources[i]);
}

/* drop_source: stop a source's transfer and free what it holds */
static void
drop_source(IqFetchSource *src)
{
	stop_source(src);
	iq_wire_reader_free(&src->reader);
	iq_buf_free(&src->inbox);
	iq_buf_free(&src->request);
}

/* ---------------------------------------------------------------------
 * Describing what was asked, for errors
 * ---------------------------------------------------------------------
 */

/* append_key: a key for a message, bytes that are not printable escaped */
static void
append_key(StringInfo s, const char *key, uint32 len)
{
	uint32		i;
	uint32		shown = Min(len, 64);

	appendStringInfoChar(s, '\'');
	for (i = 0; i < shown; i++)
	{
		unsigned char c = (unsigned char) key[i];

		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
			appendStringInfoChar(s, (char) c);
		else
			appendStringInfo(s, "\\x%02x", c);
	}
	if (shown < len)
		appendStringInfoString(s, "...");
	appendStringInfoChar(s, '\'');
}

/*
 * peer_text: a message from a peer or a library, fit for a report: as it
 * is when valid in the database encoding, else with bytes that are not
 * printable ASCII as \xNN (a peer may echo the bytes of a key)
 */
static char *
peer_text(const char *msg)
{
	StringInfoData buf;

	if (pg_verifymbstr(msg, strlen(msg), true))
		return pstrdup(msg);
	initStringInfo(&buf);
	for (const unsigned char *p = (const unsigned char *) msg; *p; p++)
	{
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			appendStringInfoChar(&buf, (char) *p);
		else
			appendStringInfo(&buf, "\\x%02x", *p);
	}
	return buf.data;
}

/* describe: "key '1' of store order-count (partition 2)" and the like */
static char *
describe(IqFetch *f, IqFetchSource *src)
{
	StringInfoData s;
	IqWireRequest req;
	const char *err;
	const char *store = f->store < IQ_NUM_STORES ? iq_stores[f->store].name : "?";
	int			i;

	initStringInfo(&s);
	if (src->request.data == NULL ||
		!iq_wire_decode_request(src->request.data, src->request.len, &req, &err))
	{
		appendStringInfo(&s, "store %s", store);
		return s.data;
	}
	switch (req.op)
	{
		case IQ_OP_GET:
			appendStringInfo(&s, "%s ", req.nkeys == 1 ? "key" : "keys");
			for (i = 0; i < (int) req.nkeys && i < 5; i++)
			{
				if (i > 0)
					appendStringInfoString(&s, ", ");
				append_key(&s, req.keys[i], req.key_lens[i]);
			}
			if (req.nkeys > 5)
				appendStringInfo(&s, " and %u more", req.nkeys - 5);
			appendStringInfo(&s, " of store %s", store);
			break;
		case IQ_OP_SCAN:
			if (req.flags & (IQ_FLAG_LOWER | IQ_FLAG_UPPER))
			{
				appendStringInfoString(&s, "the range ");
				if (req.flags & IQ_FLAG_LOWER)
				{
					appendStringInfoChar(&s, (req.flags & IQ_FLAG_LOWER_INCL) ? '[' : '(');
					append_key(&s, req.lower, req.lower_len);
				}
				else
					appendStringInfoString(&s, "(-inf");
				appendStringInfoString(&s, ", ");
				if (req.flags & IQ_FLAG_UPPER)
				{
					append_key(&s, req.upper, req.upper_len);
					appendStringInfoChar(&s, (req.flags & IQ_FLAG_UPPER_INCL) ? ']' : ')');
				}
				else
					appendStringInfoString(&s, "+inf)");
				appendStringInfo(&s, " of store %s", store);
			}
			else
				appendStringInfo(&s, "all keys of store %s", store);
			break;
		case IQ_OP_COUNT:
			appendStringInfo(&s, "the key count of store %s", store);
			break;
		default:
			appendStringInfo(&s, "the positions of store %s", store);
			break;
	}
	if (req.npartitions > 0)
	{
		appendStringInfo(&s, " (partition%s", req.npartitions > 1 ? "s" : "");
		for (i = 0; i < req.npartitions; i++)
			appendStringInfo(&s, "%s%u", i ? ", " : " ", req.partitions[i]);
		appendStringInfoChar(&s, ')');
	}
	iq_wire_request_free(&req);
	return s.data;
}

/* instance_name: "host:port" of a source, and "(this instance)" for local */
static char *
instance_name(IqFetchSource *src)
{
	return psprintf("%s:%d%s", src->target.host, src->target.port,
					src->target.is_local ? " (this instance)" : "");
}

/* fail_transport: the source could not be read: release all and raise */
static void
fail_transport(IqFetch *f, IqFetchSource *src)
{
	char	   *what = describe(f, src);
	char	   *who = instance_name(src);
	char	   *detail = peer_text(src->error);
	bool		timed_out = src->timed_out;
	bool		answering = src->answering;
	long		http = src->http_status;

	release(f);
	if (timed_out && !answering)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("instance %s did not answer within iq_fdw.peer_timeout (%d ms) when asked for %s",
						who, iq_peer_timeout_ms, what),
				 errdetail("%s", detail),
				 errhint("Check that the instance is running; raise iq_fdw.peer_timeout for slow networks.")));
	if (timed_out)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("instance %s stopped making progress for iq_fdw.peer_timeout (%d ms) in its answer to %s",
						who, iq_peer_timeout_ms, what),
				 errdetail("%s", detail),
				 errhint("Check the instance and the network to it; raise iq_fdw.peer_timeout for slow networks.")));
	if (http != 0 && http != 200)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("instance %s answered HTTP %ld when asked for %s",
						who, http, what),
				 errdetail("%s", detail)));
	ereport(ERROR,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("could not read %s from instance %s", what, who),
			 errdetail("%s", detail),
			 errhint("Check that the instance and its iq_fdw worker are running (iq_worker() there).")));
}

/* fail_answer: the source answered with an error status: release and raise */
static void
fail_answer(IqFetch *f, IqFetchSource *src)
{
	char	   *what = describe(f, src);
	char	   *who = instance_name(src);
	char	   *message = peer_text(src->reader.message);
	IqWireStatus status = src->reader.status;
	bool		corrupt = src->reader.corrupt;
	bool		header_seen = src->header_seen;

	release(f);
	if (corrupt)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("instance %s sent an answer this backend cannot read, when asked for %s",
						who, what),
				 errdetail("%s", message),
				 errhint("Check that every instance runs the same iq_fdw version, and that %s is an iq_fdw instance.",
						 who)));
	switch (status)
	{
		case IQ_WIRE_NOT_HELD:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("instance %s no longer holds what was asked: %s", who, what),
					 f->reasked ?
					 errdetail("%s. It was asked after ownership had changed, and ownership moved again.", message) :
					 header_seen ?
					 errdetail("%s. It moved while its answer was being read; rows already returned cannot be taken back, so the query is not asked again.",
							   message) :
					 errdetail("%s. The ownership this instance knows did not change within iq_fdw.ownership_wait = %d ms.",
							   message, iq_ownership_wait_ms),
					 errhint("Partition ownership is moving in a rebalance; retry the query, or raise iq_fdw.ownership_wait.")));
			break;
		case IQ_WIRE_RESTORING:
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("instance %s is still restoring state needed for %s", who, what),
					 errdetail("%s", message),
					 errhint("Retry when the restore is done; iq_worker() on that instance shows its progress.")));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_FDW_ERROR),
					 errmsg("instance %s failed to answer %s", who, what),
					 errdetail("%s", message)));
			break;
	}
}

/* ---------------------------------------------------------------------
 * Waiting for bytes
 * ---------------------------------------------------------------------
 */

/*
 * wait_for: until src has new bytes, is done, or timed out; cancellable.
 *
 * iq_fdw.peer_timeout bounds two things.  Until the first byte of the
 * answer: the whole call, connecting, sending and the upgrade's 101
 * included (from src->call_started, wall clock).  After it: the time this
 * backend spends waiting for src without progress (IQ_WIRE_PROGRESS_BYTES:
 * a complete frame, or 64 kB).  Only waits count, so a backend slow to ask
 * for the next row (a nested loop) never blames the peer, while a peer
 * that trickles bytes without completing rows fails once the waits for it
 * add up to peer_timeout, however often a byte arrives.
 */
static void
wait_for(IqFetchSource *src)
{
	int64		timeout = (int64) iq_peer_timeout_ms * 1000;
	int64		entered = iq_fetch_now_us();

	for (;;)
	{
		int64		now;
		int64		left;
		int			slice;

		if (src->sock)
			iq_chan_receive(src);
		iq_peer_drive(0, -1);
		now = iq_fetch_now_us();
		if (src->inbox.len > 0 || src->done)
		{
			src->stalled_us += now - entered;
			return;
		}

		if (!src->answering)
			left = src->call_started + timeout - now;
		else
			left = timeout - (src->stalled_us + (now - entered));
		if (left <= 0)
		{
			src->stalled_us += now - entered;
			if (!src->answering)
				snprintf(src->error, sizeof(src->error),
						 "no answer within %d ms of the request (connecting included)",
						 iq_peer_timeout_ms);
			else
				snprintf(src->error, sizeof(src->error),
						 "the answer stalled: %zu bytes in %d ms of waiting without a complete row (or %d kB of one)",
						 src->partial, iq_peer_timeout_ms, IQ_WIRE_PROGRESS_BYTES / 1024);
			src->failed = true;
			src->timed_out = true;
			src->done = true;
			return;
		}
		slice = (int) Min(left / 1000 + 1, WAIT_SLICE_MS);
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		iq_peer_drive(slice, src->sock ? src->conn.fd : -1);
		pgstat_report_wait_end();
		CHECK_FOR_INTERRUPTS();
	}
}

/* progress: src's answer moved on (see wait_for) */
static inline void
progress(IqFetchSource *src)
{
	src->stalled_us = 0;
	src->partial = 0;
}

/* next_event: src's next complete event, waiting for bytes as needed */
static IqWireEvent
next_event(IqFetch *f, IqFetchSource *src)
{
	for (;;)
	{
		IqWireEvent ev = iq_wire_reader_next(&src->reader);

		if (ev != IQ_EV_NEED_MORE)
		{
			progress(src);
			return ev;
		}
		if (src->inbox.len > 0)
		{
			if (!src->answering)
			{
				/* the first byte ends the first bound and starts the gaps */
				src->answering = true;
				progress(src);
			}
			src->partial += src->inbox.len;
			if (src->partial >= IQ_WIRE_PROGRESS_BYTES)
				progress(src);
			iq_wire_reader_feed(&src->reader, src->inbox.data, src->inbox.len);
			src->inbox.len = 0;
			if (!src->sock)
				iq_peer_resume(src);
			continue;
		}
		if (src->done)
		{
			if (!src->failed)
			{
				strlcpy(src->error, "the answer ended early", sizeof(src->error));
				src->failed = true;
			}
			fail_transport(f, src);
		}
		wait_for(src);
	}
}

/* advance: src's next row, or its end */
static void
advance(IqFetch *f, IqFetchSource *src)
{
	IqWireEvent ev = next_event(f, src);

	src->has_row = (ev == IQ_EV_ROW);
	if (ev == IQ_EV_END)
		src->ended = true;
	else if (ev == IQ_EV_ERROR)
	{
		if (src->reader.status == IQ_WIRE_OK)
			src->reader.status = IQ_WIRE_INTERNAL;
		fail_answer(f, src);
	}
	else if (ev == IQ_EV_HEADER)
	{
		/* a header twice is a corrupt stream */
		strlcpy(src->error, "unexpected second header in the answer", sizeof(src->error));
		src->failed = true;
		fail_transport(f, src);
	}
}

/* ---------------------------------------------------------------------
 * Starting, freshness, and the merge
 * ---------------------------------------------------------------------
 */

/* start_sources: send every source's request */
static void
start_sources(IqFetch *f)
{
	int			i;

	for (i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		iq_wire_reader_free(&src->reader);
		iq_wire_reader_init(&src->reader);
		src->inbox.len = 0;
		src->inbox.oom = false;
		src->done = src->failed = src->timed_out = src->paused = false;
		src->header_seen = src->has_row = src->ended = false;
		src->error[0] = '\0';
		src->http_status = 0;
		src->attempts = 0;
		src->call_started = iq_fetch_now_us();
		src->answering = false;
		src->stalled_us = 0;
		src->partial = 0;
		src->sock = iq_chan_serves(&src->target);
		if (src->sock)
			iq_chan_start(src);
		else
			iq_peer_start(src);
	}
}

/* restart: drop every answer in flight and ask again */
static void
restart(IqFetch *f)
{
	int			i;

	for (i = 0; i < f->nsources; i++)
		stop_source(&f->sources[i]);
	start_sources(f);
}

/* worst_lag: the position most behind, if beyond max_lag; -1 if none */
static int
worst_lag(IqFetch *f, int64 *lag_out, IqFetchSource **src_out)
{
	int			worst = -1;
	int64		worst_lag = -1;
	int			i;
	int			k;

	/* a bound on rows handed out; counts are estimates for the planner */
	if (iq_max_lag < 0 || f->op == IQ_OP_COUNT || f->op == IQ_OP_POSITIONS)
		return -1;
	for (i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		for (k = 0; k < src->reader.npositions; k++)
		{
			const IqWirePosition *p = &src->reader.positions[k];
			int64		consumed = Max(p->consumed, 0);
			int64		lag = p->end >= 0 ? Max(p->end - consumed, 0) : 0;

			if (lag > iq_max_lag && lag > worst_lag)
			{
				worst_lag = lag;
				worst = p->partition;
				*src_out = src;
			}
		}
	}
	*lag_out = worst_lag;
	return worst;
}

/* collect_positions: all sources' positions, for iq_fetch_positions */
static void
collect_positions(IqFetch *f)
{
	int			n = 0;
	int			i;

	for (i = 0; i < f->nsources; i++)
		n += f->sources[i].reader.npositions;
	free(f->positions);
	f->positions = NULL;
	f->npositions = 0;
	if (n == 0)
		return;
	f->positions = malloc(sizeof(IqWirePosition) * n);
	if (f->positions == NULL)
		return;
	for (i = 0; i < f->nsources; i++)
	{
		/* a source without positions has none allocated (memcpy from NULL) */
		if (f->sources[i].reader.npositions == 0)
			continue;
		memcpy(f->positions + f->npositions, f->sources[i].reader.positions,
			   sizeof(IqWirePosition) * f->sources[i].reader.npositions);
		f->npositions += f->sources[i].reader.npositions;
	}
}

/*
 * prime: every source's header (checked for freshness) and first row.
 * Nothing has been handed out yet, so a stale answer can still be asked
 * again (lag_policy = 'wait').
 */
static void
prime(IqFetch *f)
{
	int64		deadline = iq_fetch_now_us() + (int64) iq_max_lag_wait_ms * 1000;
	int64		restore_deadline = iq_fetch_now_us() + (int64) iq_ownership_wait_ms * 1000;
	int			i;

	for (;;)
	{
		int64		lag;
		int			partition;
		IqFetchSource *stale = NULL;

		bool		restoring = false;
		bool		reasked = false;

		for (i = 0; i < f->nsources; i++)
		{
			IqFetchSource *src = &f->sources[i];
			IqWireEvent ev = next_event(f, src);

			/*
			 * A partition restoring (or being opened after a rebalance) is
			 * waited for, up to iq_fdw.ownership_wait, like a missing owner.
			 */
			if (ev == IQ_EV_ERROR && src->reader.status == IQ_WIRE_RESTORING &&
				iq_fetch_now_us() < restore_deadline)
			{
				restoring = true;
				break;
			}
			if (ev == IQ_EV_ERROR && src->reader.status == IQ_WIRE_NOT_HELD &&
				!f->reasked && reask(f, src))
			{
				reasked = true;
				break;
			}
			if (ev == IQ_EV_ERROR)
				fail_answer(f, src);
			if (ev != IQ_EV_HEADER)
			{
				strlcpy(src->error, "the answer did not start with a header", sizeof(src->error));
				src->failed = true;
				fail_transport(f, src);
			}
			src->header_seen = true;
		}
		if (reasked)
			continue;			/* every source is new */
		if (restoring)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 50, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
			restart(f);
			continue;
		}
		partition = worst_lag(f, &lag, &stale);
		if (partition < 0)
			break;
		if (iq_lag_policy != IQ_LAG_WAIT || iq_fetch_now_us() >= deadline)
		{
			char	   *who = instance_name(stale);
			char	   *what = describe(f, stale);

			release(f);
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("partition %d at instance %s lags %lld records behind its input, more than iq_fdw.max_lag = %d",
							partition, who, (long long) lag, iq_max_lag),
					 errdetail("Asked for %s.%s", what,
							   iq_lag_policy == IQ_LAG_WAIT ?
							   psprintf(" Waited iq_fdw.max_lag_wait = %d ms.", iq_max_lag_wait_ms) : ""),
					 errhint("Retry later, raise iq_fdw.max_lag, or SET iq_fdw.lag_policy = 'wait'.")));
		}
		/* wait a little for the worker to catch up, then ask again */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(50, Max((deadline - iq_fetch_now_us()) / 1000, 1)),
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		restart(f);
	}
	collect_positions(f);
	for (i = 0; i < f->nsources; i++)
		advance(f, &f->sources[i]);
	f->primed = true;
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

/* target_request: the request for one target; false if it has nothing to ask */
static bool
target_request(const IqWireRequest *req, const IqTarget *t, int partition_count,
			   IqBuf *out, bool *asked)
{
	IqWireRequest r = *req;
	uint16_t	parts[IQ_MAX_PARTITIONS];
	const char **keys = NULL;
	uint32_t   *lens = NULL;
	int			i;

	r.npartitions = t->npartitions;
	for (i = 0; i < t->npartitions; i++)
		parts[i] = t->partitions[i];
	r.partitions = parts;
	if (req->op == IQ_OP_GET)
	{
		uint32		k;

		r.nkeys = 0;
		keys = palloc(sizeof(char *) * Max(req->nkeys, 1));
		lens = palloc(sizeof(uint32_t) * Max(req->nkeys, 1));
		for (k = 0; k < req->nkeys; k++)
		{
			int			p = iq_partition_for_key(iq_partitioner, req->keys[k],
												 req->key_lens[k], partition_count);

			for (i = 0; i < t->npartitions; i++)
				if (t->partitions[i] == p)
					break;
			if (i == t->npartitions)
				continue;
			keys[r.nkeys] = req->keys[k];
			lens[r.nkeys] = req->key_lens[k];
			r.nkeys++;
			asked[k] = true;
		}
		r.keys = keys;
		r.key_lens = lens;
		if (r.nkeys == 0)
		{
			pfree(keys);
			pfree(lens);
			return false;
		}
	}
	iq_buf_init(out);
	iq_wire_encode_request(&r, out);
	if (keys)
	{
		pfree(keys);
		pfree(lens);
	}
	if (out->oom)
	{
		iq_buf_free(out);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory encoding an iq_fdw request")));
	}
	return true;
}

/* copy_bytes: len bytes into cxt (NULL stays NULL) */
static const char *
copy_bytes(MemoryContext cxt, const char *p, uint32 len)
{
	char	   *c;

	if (p == NULL)
		return NULL;
	c = MemoryContextAlloc(cxt, Max(len, 1));
	memcpy(c, p, len);
	return c;
}

/* copy_request: a deep copy of the caller's request, to ask it again */
static IqWireRequest *
copy_request(MemoryContext cxt, const IqWireRequest *req)
{
	IqWireRequest *r = MemoryContextAlloc(cxt, sizeof(IqWireRequest));

	*r = *req;
	r->npartitions = 0;			/* filled in per target */
	r->partitions = NULL;
	if (req->nkeys > 0)
	{
		r->keys = MemoryContextAlloc(cxt, sizeof(char *) * req->nkeys);
		r->key_lens = MemoryContextAlloc(cxt, sizeof(uint32_t) * req->nkeys);
		for (uint32 k = 0; k < req->nkeys; k++)
		{
			r->keys[k] = copy_bytes(cxt, req->keys[k], req->key_lens[k]);
			r->key_lens[k] = req->key_lens[k];
		}
	}
	r->lower = copy_bytes(cxt, req->lower, req->lower_len);
	r->upper = copy_bytes(cxt, req->upper, req->upper_len);
	return r;
}

/*
 * add_sources: one source per target that has something to ask, its
 * request encoded (not sent).  Every key of a get must find its target.
 */
static void
add_sources(IqFetch *f, const IqTarget *targets, int ntargets, int partition_count)
{
	const IqWireRequest *req = f->req;
	bool	   *asked = NULL;
	int			i;

	if (req->op == IQ_OP_GET)
		asked = palloc0(sizeof(bool) * Max(req->nkeys, 1));
	for (i = 0; i < ntargets; i++)
	{
		IqFetchSource *src = &f->sources[f->nsources];

		src->conn.fd = -1;
		iq_buf_init(&src->inbox);
		iq_wire_reader_init(&src->reader);
		memcpy(&src->target, &targets[i], sizeof(IqTarget));
		if (!target_request(req, &targets[i], partition_count, &src->request, asked))
		{
			iq_wire_reader_free(&src->reader);
			continue;
		}
		f->nsources++;
	}
	if (asked)
	{
		uint32		k;

		for (k = 0; k < req->nkeys; k++)
			if (!asked[k])
				elog(ERROR, "iq_fdw: no target holds the partition of a key asked (partition count %d)",
					 partition_count);
		pfree(asked);
	}
}

/*
 * reask: an instance answered NOT_HELD: wait for the ownership to change
 * (up to iq_fdw.ownership_wait) and send the whole request again to the
 * new owners of the same partitions.  False, with every source as it was,
 * if it did not change in time.
 *
 * Nothing has been handed out yet (we are priming), so asking every
 * target again, not only the one that moved, keeps the result one
 * consistent read.
 */
static bool
reask(IqFetch *f, IqFetchSource *moved)
{
	IqOwnerView *o = palloc(sizeof(IqOwnerView));
	IqTarget   *asked = palloc(sizeof(IqTarget) * Max(f->nsources, 1));
	bool		needed[IQ_MAX_PARTITIONS] = {0};
	IqTarget   *targets;
	IqFetchSource *sources;
	int			ntargets;
	int			i;

	for (i = 0; i < f->nsources; i++)
	{
		asked[i] = f->sources[i].target;
		for (int k = 0; k < asked[i].npartitions; k++)
			needed[asked[i].partitions[k]] = true;
	}
	ereport(DEBUG1,
			(errmsg_internal("instance %s answered \"%s\"; waiting up to iq_fdw.ownership_wait = %d ms for the new owner",
							 instance_name(moved), moved->reader.message, iq_ownership_wait_ms)));
	iq_ownership_read(o);
	if (!iq_ownership_wait_change(o, f->generation, needed, asked, f->nsources))
		return false;
	targets = iq_ownership_targets(o, needed, &ntargets);
	ereport(DEBUG1,
			(errmsg_internal("ownership generation " UINT64_FORMAT " (was " UINT64_FORMAT "): asking again",
							 o->generation, f->generation)));
	sources = calloc(Max(ntargets, 1), sizeof(IqFetchSource));
	if (sources == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory asking an iq_fdw read again")));
	for (i = 0; i < f->nsources; i++)
		drop_source(&f->sources[i]);
	free(f->sources);
	f->sources = sources;
	f->nsources = 0;
	f->last = NULL;
	f->reasked = true;
	f->generation = o->generation;
	add_sources(f, targets, ntargets, o->partition_count);
	start_sources(f);
	return true;
}

/* iq_fetch_start: send the request to all targets at once */
IqFetch *
iq_fetch_start(const IqWireRequest *req, const IqTarget *targets, int ntargets)
{
	IqFetch    *f;
	int			partition_count;
	uint64		generation;

	if (!callbacks_registered)
	{
		RegisterXactCallback(xact_callback, NULL);
		RegisterSubXactCallback(subxact_callback, NULL);
		callbacks_registered = true;
	}
	iq_shmem_attach();
	LWLockAcquire(iq_shared->lock, LW_SHARED);
	partition_count = iq_shared->partition_count;
	generation = iq_shared->generation;
	LWLockRelease(iq_shared->lock);

	f = calloc(1, sizeof(IqFetch));
	if (f)
		f->sources = calloc(Max(ntargets, 1), sizeof(IqFetchSource));
	if (f == NULL || f->sources == NULL)
	{
		if (f)
			free(f);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory starting an iq_fdw read")));
	}
	f->subid = GetCurrentSubTransactionId();
	f->op = req->op;
	f->store = req->store;
	f->rowcxt = AllocSetContextCreate(CurrentMemoryContext, "iq_fdw fetch rows",
									  ALLOCSET_SMALL_SIZES);
	/* listed before anything is allocated for it: an error frees it all */
	f->next = active_fetches;
	if (active_fetches)
		active_fetches->prev = f;
	active_fetches = f;

	f->reqcxt = AllocSetContextCreate(CurrentMemoryContext, "iq_fdw fetch request",
									  ALLOCSET_SMALL_SIZES);
	f->req = copy_request(f->reqcxt, req);
	f->generation = generation;
	add_sources(f, targets, ntargets, partition_count);
	start_sources(f);
	return f;
}

/* iq_fetch_next: the smallest head row of all sources */
bool
iq_fetch_next(IqFetch *f, IqFetchRow *row)
{
	IqFetchSource *best = NULL;
	MemoryContext old;
	int			i;

	if (f->released)
		return false;
	if (!f->primed)
		prime(f);
	else if (f->last)
		advance(f, f->last);
	f->last = NULL;

	for (i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		if (src->has_row &&
			(best == NULL || key_cmp(src->reader.key, src->reader.key_len,
									 best->reader.key, best->reader.key_len) < 0))
			best = src;
	}
	if (best == NULL)
	{
		/* every answer read to its end: pool the local connection now */
		release(f);
		return false;
	}

	MemoryContextReset(f->rowcxt);
	old = MemoryContextSwitchTo(f->rowcxt);
	row->key_len = (int) best->reader.key_len;
	row->key = palloc(row->key_len + 1);
	memcpy(row->key, best->reader.key, row->key_len);
	row->key[row->key_len] = '\0';
	row->value_len = best->reader.value_len;
	if (row->value_len >= 0)
	{
		row->value = palloc(row->value_len + 1);
		memcpy(row->value, best->reader.value, row->value_len);
		row->value[row->value_len] = '\0';
	}
	else
		row->value = NULL;
	MemoryContextSwitchTo(old);
	f->last = best;
	return true;
}

/* iq_fetch_positions: what every target reported (after the first next) */
int
iq_fetch_positions(IqFetch *f, const IqWirePosition **positions)
{
	*positions = f->positions;
	return f->npositions;
}

/* iq_fetch_end: release everything; the caller is done with the rows */
void
iq_fetch_end(IqFetch *f)
{
	if (f == NULL)
		return;
	MemoryContextDelete(f->rowcxt);
	MemoryContextDelete(f->reqcxt);
	free_fetch(f);
}

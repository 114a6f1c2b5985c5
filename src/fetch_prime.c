/*-------------------------------------------------------------------------
 * fetch_prime.c
 *	  Before the first row is handed out, every target's header is read, so
 *	  that a partition that moved, is restoring, or lags beyond
 *	  iq_fdw.max_lag fails (or is waited for and asked again) before the
 *	  caller has seen anything: a result is never partial.
 *
 * A partition still restoring is asked again up to iq_fdw.ownership_wait;
 * one that moved, or whose owner cannot be reached, is asked of its new
 * owner, within iq_fdw.ownership_wait (fetch_reask.c); one that
 * lags fails, or with lag_policy = 'wait' is asked again up to
 * iq_fdw.max_lag_wait.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"

#include "common/settings.h"
#include "src/fetch_internal.h"

#define RETRY_PAUSE_MS 50

/* What reading every source's header came to. */
typedef enum HeadersRead
{
	HEADERS_READ,				/* every source answered with a header */
	HEADERS_RESTORING,			/* a partition is still restoring: ask again */
	HEADERS_REASKED				/* a partition moved, or its owner is gone: new
								 * sources were asked */
} HeadersRead;

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

/* read_headers: every source's header, or why to ask again; raises the rest */
static HeadersRead
read_headers(IqFetch *f, int64 restore_deadline)
{
	int			i;

	for (i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];
		IqWireEvent ev;

		/* a free slot, or a standby whose header fetch_standby.c read */
		if (src->unused || src->header_seen)
			continue;
		ev = iq_fetch_next_event(f, src);

		/*
		 * A standby asked again (the read restarted) is held to its bound
		 * again; refused, the next standby of its partition is asked, and
		 * when none qualifies the owners are, as after a refusal.
		 */
		if (src->target.standby)
		{
			if (iq_fetch_standby_accept(f, src, ev))
			{
				src->header_seen = true;
				continue;
			}
			if (iq_fetch_try_standbys(f, src))
				continue;
			if (iq_fetch_await_owner(f, src))
				return HEADERS_REASKED;
			iq_fetch_fail_standby(f, src);
		}

		/* iq_fdw.read_from: the owner cannot answer: its standbys, at once */
		if (iq_fetch_owner_cannot_answer(src, ev) && iq_fetch_try_standbys(f, src))
			continue;

		/* its owner is gone: wait for its partitions to move */
		if (ev == IQ_EV_ERROR && src->chan.failed && src->chan.unreachable)
		{
			if (iq_fetch_await_owner(f, src))
				return HEADERS_REASKED;
			iq_fetch_fail_unreachable(f, src);
		}

		/*
		 * A partition restoring (or being opened after a rebalance) is
		 * waited for, up to iq_fdw.ownership_wait, like a missing owner.
		 */
		if (ev == IQ_EV_ERROR && src->reader.status == IQ_WIRE_RESTORING &&
			iq_chan_now_us() < restore_deadline)
			return HEADERS_RESTORING;
		if (ev == IQ_EV_ERROR && src->reader.status == IQ_WIRE_NOT_HELD &&
			iq_fetch_reask(f, src))
			return HEADERS_REASKED;
		/* a transport failure read_from let through to here */
		if (ev == IQ_EV_ERROR && src->chan.failed)
			iq_fetch_fail_transport(f, src);
		if (ev == IQ_EV_ERROR)
			iq_fetch_fail_answer(f, src);
		if (ev != IQ_EV_HEADER)
		{
			strlcpy(src->chan.error, "The answer did not start with a header.",
					sizeof(src->chan.error));
			src->chan.failed = true;
			iq_fetch_fail_transport(f, src);
		}
		src->header_seen = true;
	}
	return HEADERS_READ;
}

/* fail_lag: partition of stale lags beyond iq_fdw.max_lag: release and raise */
static void
fail_lag(IqFetch *f, IqFetchSource *stale, int partition, int64 lag)
{
	char	   *who = iq_fetch_instance(stale);
	char	   *what = iq_fetch_describe(f, stale);

	iq_fetch_release(f);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("partition %d at instance %s lags %lld records behind its input, more than iq_fdw.max_lag allows",
					partition, who, (long long) lag),
			 iq_lag_policy == IQ_LAG_WAIT ?
			 errdetail("Asked for %s. iq_fdw.max_lag is %d; waited iq_fdw.max_lag_wait = %d ms.",
					   what, iq_max_lag, iq_max_lag_wait_ms) :
			 errdetail("Asked for %s. iq_fdw.max_lag is %d.", what, iq_max_lag),
			 errhint("Retry later, raise iq_fdw.max_lag, or SET iq_fdw.lag_policy = 'wait'.")));
}

/* pause_and_restart: wait up to ms (for a worker to catch up), then ask again */
static void
pause_and_restart(IqFetch *f, long ms)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 ms, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	iq_fetch_restart(f);
}

/*
 * iq_fetch_prime: every source's header (checked for freshness) and first
 * row.  Nothing has been handed out yet, so a stale answer can still be
 * asked again (lag_policy = 'wait').
 */
void
iq_fetch_prime(IqFetch *f)
{
	int64		deadline = iq_chan_now_us() + (int64) iq_max_lag_wait_ms * 1000;
	int64		restore_deadline = iq_chan_now_us() + (int64) iq_ownership_wait_ms * 1000;
	int			i;

	for (;;)
	{
		HeadersRead read = read_headers(f, restore_deadline);
		IqFetchSource *stale = NULL;
		int64		lag;
		int			partition;

		if (read == HEADERS_REASKED)
			continue;			/* every source is new */
		if (read == HEADERS_RESTORING)
		{
			pause_and_restart(f, RETRY_PAUSE_MS);
			continue;
		}
		partition = worst_lag(f, &lag, &stale);
		if (partition < 0)
			break;
		if (iq_lag_policy != IQ_LAG_WAIT || iq_chan_now_us() >= deadline)
			fail_lag(f, stale, partition, lag);
		/* wait a little for the worker to catch up, then ask again */
		pause_and_restart(f, Min(RETRY_PAUSE_MS, Max((deadline - iq_chan_now_us()) / 1000, 1)));
	}
	collect_positions(f);
	for (i = 0; i < f->nsources; i++)
		if (!f->sources[i].unused)
			iq_fetch_advance(f, &f->sources[i]);
	f->primed = true;
}

/*-------------------------------------------------------------------------
 * fetch_standby.c
 *	  With iq_fdw.read_from = owner_or_standby or nearest: a partition
 *	  whose owner cannot answer (refused, reset, timed out, NOT_HELD,
 *	  RESTORING) is asked of the instances that keep a standby replica of
 *	  it, at once, in placement order (common/standby.h), with
 *	  IQ_FLAG_STANDBY.
 *
 * The point is an answer within a second of an owner's death, where
 * waiting for the group to move its partitions takes its session timeout.
 * So no iq_fdw.ownership_wait comes first; that wait, and the error of
 * today, come only when no standby qualifies.  A standby's answer is used
 * only within a bound on its lag: iq_fdw.max_lag when set, else
 * iq_fdw.standby_max_lag; a standby is never read unbounded.  Each
 * partition gets a source of its own (a standby's lag is a partition's),
 * in a free slot of the fetch's sources: a slot in flight never moves
 * (curl holds pointers into it).  Why each standby was refused is kept
 * for the error's detail.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/settings.h"
#include "common/standby.h"
#include "lib/stringinfo.h"
#include "src/fetch_internal.h"

/* bound: the largest lag a standby may have, and the setting it comes from */
static int64
bound(const char **setting)
{
	if (iq_max_lag >= 0)
	{
		*setting = "iq_fdw.max_lag";
		return iq_max_lag;
	}
	*setting = "iq_fdw.standby_max_lag";
	return iq_standby_max_lag;
}

/* note: why a standby was refused, for the error's detail (once each) */
static void note(IqFetch *f, const char *fmt,...) pg_attribute_printf(2, 3);

static void
note(IqFetch *f, const char *fmt,...)
{
	char		line[512];
	va_list		ap;
	size_t		len = strlen(f->notes);

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (strstr(f->notes, line) != NULL)
		return;
	snprintf(f->notes + len, sizeof(f->notes) - len, "%s%s", len ? "; " : "", line);
}

/* member_of: the index in f's view of the instance t names; -1 if none */
static int
member_of(IqFetch *f, const IqTarget *t)
{
	for (int m = 0; m < f->view->nmembers; m++)
		if (f->view->members[m].port == t->port &&
			strcmp(f->view->members[m].host, t->host) == 0)
			return m;
	return -1;
}

/*
 * iq_fetch_standby_forget: a new ownership o to place standbys by; none
 * tried yet (the notes stay: they explain the final error)
 */
void
iq_fetch_standby_forget(IqFetch *f, const IqOwnerView *o)
{
	memcpy(f->view, o, sizeof(IqOwnerView));
	memset(f->tried, 0, sizeof(f->tried));
}

/*
 * iq_fetch_owner_cannot_answer: whether src's failure (event ev before its
 * header) is one a standby may stand in for: the instance is gone, stalls,
 * or does not hold the partition now.  A certificate or a refusal to be
 * read is not: that is the cluster's configuration, and fails as before.
 */
bool
iq_fetch_owner_cannot_answer(IqFetchSource *src, IqWireEvent ev)
{
	if (iq_read_from == IQ_READ_FROM_OWNER || ev != IQ_EV_ERROR)
		return false;
	if (src->chan.failed)
		return !src->chan.tls_failed && src->chan.refused_status != 401 &&
			src->chan.refused_status != 403;
	return !src->reader.corrupt &&
		(src->reader.status == IQ_WIRE_NOT_HELD ||
		 src->reader.status == IQ_WIRE_RESTORING);
}

/*
 * iq_fetch_standby_accept: whether a standby's answer (event ev) can be
 * used: a header whose partition lags within the bound.  If not, why is
 * noted.  Sets src->lag.
 */
bool
iq_fetch_standby_accept(IqFetch *f, IqFetchSource *src, IqWireEvent ev)
{
	const char *setting;
	int64		max = bound(&setting);
	int			p = src->target.npartitions > 0 ? src->target.partitions[0] : -1;
	const char *who = psprintf("%s:%d", src->target.host, src->target.port);

	if (ev == IQ_EV_ERROR && src->chan.failed)
	{
		if (src->chan.timed_out)
			note(f, "standby at %s did not answer for partition %d within iq_fdw.peer_timeout = %d ms",
				 who, p, iq_peer_timeout_ms);
		else
			note(f, "standby at %s could not be read for partition %d: %s",
				 who, p, src->chan.error);
		return false;
	}
	if (ev == IQ_EV_ERROR)
	{
		if (src->reader.status == IQ_WIRE_NOT_HELD)
			note(f, "standby at %s keeps no standby of partition %d", who, p);
		else if (src->reader.status == IQ_WIRE_BAD_REQUEST)
			note(f, "instance %s does not answer from standbys (an older release?): %s",
				 who, src->reader.message);
		else if (src->reader.status == IQ_WIRE_RESTORING)
			note(f, "standby at %s is still restoring partition %d", who, p);
		else
			note(f, "standby at %s answered for partition %d: %s",
				 who, p, src->reader.message);
		return false;
	}
	if (ev != IQ_EV_HEADER)
	{
		note(f, "standby at %s did not start its answer with a header", who);
		return false;
	}
	src->lag = 0;
	for (int k = 0; k < src->reader.npositions; k++)
	{
		const IqWirePosition *pos = &src->reader.positions[k];
		int64		lag;

		/* a standby that cannot tell its lag is not read: no bound holds */
		if (pos->end < 0)
		{
			note(f, "standby at %s does not know the end of partition %d", who,
				 pos->partition);
			return false;
		}
		lag = Max(pos->end - Max(pos->consumed, 0), 0);
		if (lag > max)
		{
			note(f, "standby at %s lags %lld records, more than %s = %lld",
				 who, (long long) lag, setting, (long long) max);
			return false;
		}
		src->lag = Max(src->lag, lag);
	}
	return true;
}

/* take_slot: a free slot of f->sources; -1 if none (cannot happen) */
static int
take_slot(IqFetch *f)
{
	for (int i = 0; i < f->nsources; i++)
		if (f->sources[i].unused)
			return i;
	if (f->nsources < f->capacity)
		return f->nsources++;
	return -1;
}

/* free_slot: drop what slot i holds; it may be taken again */
static void
free_slot(IqFetch *f, int i)
{
	iq_fetch_drop_source(&f->sources[i]);
	f->sources[i].unused = true;
}

/* next_standby: p's most preferred standby not asked yet; -1 if none */
static int
next_standby(IqFetch *f, int p)
{
	int			out[IQ_MAX_MEMBERS];
	int			n = iq_standby_members(f->view->members, f->view->nmembers,
									   f->view->owner, f->view->partition_count,
									   p, iq_standby_replicas, out);

	for (int k = 0; k < n; k++)
		if (!(f->tried[p] & (UINT64CONST(1) << out[k])))
			return out[k];
	return -1;
}

/*
 * iq_fetch_try_standbys: failed (an owner, or a standby, before its
 * header) cannot answer: ask the standbys of each of its partitions, all
 * partitions at once, the next standby of a partition when one is refused.
 * True when every partition has a standby's answer within the bound: failed
 * is then dropped, its slot free, the standbys' headers read.  False, with
 * failed as it was and nothing else left asked, when some partition has
 * none (no standby configured, or each refused: noted).
 */
bool
iq_fetch_try_standbys(IqFetch *f, IqFetchSource *failed)
{
	int			pending[IQ_MAX_PARTITIONS];
	int			npending = 0;
	int			mine[IQ_MAX_PARTITIONS];	/* slots of accepted standbys */
	int			nmine = 0;
	int			self;
	bool	   *asked;
	bool		ok = true;

	if (f->view == NULL || iq_read_from == IQ_READ_FROM_OWNER)
		return false;
	self = member_of(f, &failed->target);
	asked = palloc0(sizeof(bool) * Max(f->req->nkeys, 1));
	for (int i = 0; i < failed->target.npartitions; i++)
	{
		int			p = failed->target.partitions[i];

		if (self >= 0)
			f->tried[p] |= UINT64CONST(1) << self;
		pending[npending++] = p;
	}

	while (ok && npending > 0)
	{
		int			round[IQ_MAX_PARTITIONS];	/* slot per pending, -1 none */
		int			nround = npending;
		bool		remote = false;

		/*
		 * Every entry -1 before any is taken: when a partition has no
		 * standby left the loop below stops early, and the slots taken so
		 * far are freed by scanning all of round.  An entry left as the
		 * stack had it named an arbitrary slot there: freeing a source
		 * still in flight (its partitions then silently missing from the
		 * result, or lost from a read asked again), or far out of the array.
		 */
		for (int i = 0; i < nround; i++)
			round[i] = -1;

		/* the next standby of every partition still pending, all at once */
		for (int i = 0; i < nround; i++)
		{
			int			p = pending[i];
			int			m = next_standby(f, p);
			IqTarget	t;

			if (m < 0 || (round[i] = take_slot(f)) < 0)
			{
				ok = false;
				break;
			}
			f->tried[p] |= UINT64CONST(1) << m;
			memset(&t, 0, sizeof(t));
			strlcpy(t.host, f->view->members[m].host, IQ_HOST_LEN);
			t.port = f->view->members[m].port;
			t.is_local = f->view->members[m].is_self;
			t.standby = true;
			t.npartitions = 1;
			t.partitions[0] = (uint16) p;
			if (!iq_fetch_init_source(f, &f->sources[round[i]], &t,
									  f->view->partition_count, asked))
			{
				/* no key of the read is in p: nothing to ask */
				f->sources[round[i]].unused = true;
				round[i] = -1;
				continue;
			}
			f->sources[round[i]].unused = false;
			remote |= !t.is_local;
		}
		if (!ok)
		{
			for (int i = 0; i < nround; i++)
				if (round[i] >= 0)
					free_slot(f, round[i]);
			break;
		}
		if (remote)
			iq_chan_tls_prepare();
		for (int i = 0; i < nround; i++)
			if (round[i] >= 0)
				iq_fetch_start_source(&f->sources[round[i]]);

		/* their headers: the refused partitions go round again */
		npending = 0;
		for (int i = 0; i < nround; i++)
		{
			IqFetchSource *src;

			if (round[i] < 0)
				continue;
			src = &f->sources[round[i]];
			if (iq_fetch_standby_accept(f, src, iq_fetch_next_event(f, src)))
			{
				src->header_seen = true;
				mine[nmine++] = round[i];
				continue;
			}
			free_slot(f, round[i]);
			pending[npending++] = src->target.partitions[0];
		}
	}

	if (!ok)
	{
		for (int i = 0; i < nmine; i++)
			free_slot(f, mine[i]);
		return false;
	}
	ereport(DEBUG1,
			(errmsg_internal("instance %s cannot answer; %d standby source%s answer for it",
							 iq_fetch_instance(failed), nmine, nmine == 1 ? "" : "s")));
	iq_fetch_drop_source(failed);
	failed->unused = true;
	return true;
}

/*
 * iq_fetch_fail_standby: src, a standby, was refused, no other standby of
 * its partition qualifies, and its owner did not become readable within
 * iq_fdw.ownership_wait: release and raise, naming the standbys tried.
 */
void
iq_fetch_fail_standby(IqFetch *f, IqFetchSource *src)
{
	char	   *what = iq_fetch_describe(f, src);
	char	   *notes = pstrdup(f->notes);

	iq_fetch_release(f);
	ereport(ERROR,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("could not read %s: its owner cannot answer and no standby replica qualifies",
					what),
			 errdetail("Standbys tried: %s%s The owner did not answer within iq_fdw.ownership_wait = %d ms.",
					   notes, notes[0] && notes[strlen(notes) - 1] != '.' ? "." : "",
					   iq_ownership_wait_ms),
			 errhint("Retry later, or raise iq_fdw.standby_max_lag (or iq_fdw.max_lag).")));
}

/* iq_fetch_partition_source: the target that answered for p */
const IqTarget *
iq_fetch_partition_source(IqFetch *f, int p, int64 *lag)
{
	for (int i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		if (src->unused || !src->header_seen)
			continue;
		for (int k = 0; k < src->target.npartitions; k++)
			if (src->target.partitions[k] == p)
			{
				*lag = src->lag;
				return &src->target;
			}
	}
	return NULL;
}

/* iq_fetch_standby_summary: the answers standbys gave, for EXPLAIN ANALYZE */
char *
iq_fetch_standby_summary(IqFetch *f)
{
	StringInfoData s;

	initStringInfo(&s);
	for (int i = 0; i < f->nsources; i++)
	{
		IqFetchSource *src = &f->sources[i];

		if (src->unused || !src->header_seen || !src->target.standby)
			continue;
		appendStringInfo(&s, "%spartition%s", s.len ? ", " : "",
						 src->target.npartitions > 1 ? "s" : "");
		for (int k = 0; k < src->target.npartitions; k++)
			appendStringInfo(&s, "%s%d", k ? ", " : " ", src->target.partitions[k]);
		appendStringInfo(&s, " from %s:%d%s, lag %lld",
						 src->target.host, src->target.port,
						 src->target.is_local ? " (local)" : "",
						 (long long) src->lag);
	}
	if (s.len == 0)
	{
		pfree(s.data);
		return NULL;
	}
	return s.data;
}

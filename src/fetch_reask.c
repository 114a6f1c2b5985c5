/*-------------------------------------------------------------------------
 * fetch_reask.c
 *	  Asking again after a partition moved, or while its owner is gone.
 *
 * An instance answered that it no longer holds a partition (ownership moved
 * between this backend's look at it and the answer, or it is back from a
 * crash and not yet holding): the whole read waits for the new ownership,
 * or RETRY_MS, and is asked again of the owners, as often as a partition
 * moves (a rebalance may move one twice), until iq_fdw.ownership_wait has
 * passed since the first (fetch_prime.c).
 *
 * An instance could not be reached (connection refused, or closed before
 * any byte of the answer: it is stopping, or stopped): the read waits for
 * its partitions to move to another instance, as they do at once after a
 * clean stop and after the group's session timeout otherwise, asking again
 * every RETRY_MS meanwhile (a crash-restarted instance comes
 * back with the same partitions: static membership).  All of it within
 * iq_fdw.ownership_wait of the first refusal.  A connection that timed out
 * is not waited for again: it has had iq_fdw.peer_timeout already.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "common/settings.h"
#include "src/fetch_internal.h"
#include "src/owners.h"

/* how often an owner whose partitions did not move is asked again */
#define RETRY_MS	250

/*
 * needed_partitions
 *		What every source was asked for: into needed[], and the owners
 *		asked into asked[] (a standby is not one: the owner it stood in for
 *		is, its slot kept); returns how many.
 */
static int
needed_partitions(IqFetch *f, IqTarget *asked, bool *needed)
{
	int			nasked = 0;

	for (int i = 0; i < f->nsources; i++)
	{
		const IqTarget *t = &f->sources[i].target;

		for (int k = 0; k < t->npartitions; k++)
			needed[t->partitions[k]] = true;
		if (!t->standby)
			asked[nasked++] = *t;
	}
	return nasked;
}

/*
 * ask_anew
 *		Drop every source and send the whole request again to the owners
 *		of the needed partitions in view o.
 *
 * Nothing has been handed out yet (we are priming), so asking every
 * target again, not only the one that moved, keeps the result one
 * consistent read.
 */
static void
ask_anew(IqFetch *f, IqOwnerView *o, const bool *needed)
{
	int			ntargets;
	IqTarget   *targets = iq_ownership_targets(o, needed, &ntargets);
	IqFetchSource *sources;
	int			capacity = Max(ntargets, 1);

	if (f->view)
		capacity += o->partition_count;
	ereport(DEBUG1,
			(errmsg_internal("ownership generation " UINT64_FORMAT " (was " UINT64_FORMAT "): asking again",
							 o->generation, f->generation)));
	sources = calloc(capacity, sizeof(IqFetchSource));
	if (sources == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory asking an iq_fdw read again")));
	for (int i = 0; i < f->nsources; i++)
		iq_fetch_drop_source(&f->sources[i]);
	free(f->sources);
	f->sources = sources;
	f->capacity = capacity;
	f->nsources = 0;
	f->last = NULL;
	f->generation = o->generation;
	if (f->view)
		iq_fetch_standby_forget(f, o);
	iq_fetch_add_sources(f, targets, ntargets, o->partition_count);
	iq_fetch_start_sources(f);
}

/*
 * wait_left
 *		How long the read may still wait for ownership to settle, in ms:
 *		iq_fdw.ownership_wait from the first partition that moved or owner
 *		that went; 0 when that is over.
 */
static int
wait_left(IqFetch *f)
{
	int64		now = iq_chan_now_us();
	int64		left;

	if (f->moving_since == 0)
		f->moving_since = now;
	left = f->moving_since + (int64) iq_ownership_wait_ms * 1000 - now;
	return left <= 0 ? 0 : (int) Min(left / 1000 + 1, INT_MAX);
}

/*
 * ask_when_settled
 *		Wait for the needed partitions to move, or RETRY_MS with an owner
 *		for each, then ask anew; false once iq_fdw.ownership_wait has passed
 *		since the first partition of this read moved or owner went.
 *
 * Asking the same owner again matters: an instance killed and restarted
 * comes back as the same static member, holding the same partitions after
 * its restore, and the ownership this backend sees never changes.
 */
static bool
ask_when_settled(IqFetch *f, const bool *needed, const IqTarget *asked, int nasked)
{
	IqOwnerView *o = palloc(sizeof(IqOwnerView));

	for (;;)
	{
		int			left = wait_left(f);

		if (left == 0)
			return false;
		iq_ownership_read(o);
		if (iq_ownership_wait_change(o, f->generation, Min(left, RETRY_MS),
									 needed, asked, nasked) ||
			iq_ownership_complete(o, needed))
			break;
	}
	ask_anew(f, o, needed);
	return true;
}

/*
 * iq_fetch_reask: an instance answered NOT_HELD: wait for the ownership to
 * change, or a while, and send the whole request again to the owners of
 * the same partitions.  In a rebalance a partition may move more than once
 * (away from an instance that stops, then between the others), so this
 * may happen again, all within iq_fdw.ownership_wait of the first.  False,
 * with every source as it was, if that did not settle in time.
 */
bool
iq_fetch_reask(IqFetch *f, IqFetchSource *moved)
{
	IqTarget   *asked = palloc(sizeof(IqTarget) * Max(f->nsources, 1));
	bool		needed[IQ_MAX_PARTITIONS] = {0};
	int			nasked = needed_partitions(f, asked, needed);

	ereport(DEBUG1,
			(errmsg_internal("instance %s answered \"%s\"; waiting up to iq_fdw.ownership_wait = %d ms for the new owner",
							 iq_fetch_instance(moved), moved->reader.message, iq_ownership_wait_ms)));
	if (!ask_when_settled(f, needed, asked, nasked))
		return false;
	f->reasked = true;
	return true;
}

/*
 * iq_fetch_await_owner: instance gone could not be reached: wait for its
 * partitions to move, or a while, and ask the owners again; false, with
 * every source as it was, once iq_fdw.ownership_wait has passed since the
 * first partition of this read moved or owner went.
 */
bool
iq_fetch_await_owner(IqFetch *f, IqFetchSource *gone)
{
	IqTarget   *asked = palloc(sizeof(IqTarget) * Max(f->nsources, 1));
	bool		needed[IQ_MAX_PARTITIONS] = {0};

	ereport(DEBUG1,
			(errmsg_internal("instance %s cannot be reached (%s); waiting up to iq_fdw.ownership_wait = %d ms for its partitions to move",
							 iq_fetch_instance(gone), gone->chan.error, iq_ownership_wait_ms)));
	return ask_when_settled(f, needed, asked, needed_partitions(f, asked, needed));
}

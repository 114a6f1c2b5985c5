/*-------------------------------------------------------------------------
 * fetch_reask.c
 *	  Asking again after a partition moved: an instance answered that it
 *	  no longer holds a partition (ownership moved between this backend's
 *	  look at it and the answer), so the whole read waits, up to
 *	  iq_fdw.ownership_wait, for the new ownership and is asked once more
 *	  of the new owners; only a second such answer fails (fetch_prime.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/settings.h"
#include "src/fetch_internal.h"
#include "src/owners.h"

/*
 * iq_fetch_reask: an instance answered NOT_HELD: wait for the ownership to
 * change (up to iq_fdw.ownership_wait) and send the whole request again to
 * the new owners of the same partitions.  False, with every source as it
 * was, if it did not change in time.
 *
 * Nothing has been handed out yet (we are priming), so asking every
 * target again, not only the one that moved, keeps the result one
 * consistent read.
 */
bool
iq_fetch_reask(IqFetch *f, IqFetchSource *moved)
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
							 iq_fetch_instance(moved), moved->reader.message, iq_ownership_wait_ms)));
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
		iq_fetch_drop_source(&f->sources[i]);
	free(f->sources);
	f->sources = sources;
	f->nsources = 0;
	f->last = NULL;
	f->reasked = true;
	f->generation = o->generation;
	iq_fetch_add_sources(f, targets, ntargets, o->partition_count);
	iq_fetch_start_sources(f);
	return true;
}

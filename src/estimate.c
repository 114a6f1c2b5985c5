/*-------------------------------------------------------------------------
 * estimate.c
 *	  Row estimates for the planner, from the stores' approximate counts.
 *
 * Planning must stay cheap and must not fail because a peer is down, so
 * only this instance's worker is asked (over the local channel), and its
 * count is scaled by the share of partitions it holds.  Answers are cached
 * per backend for a few seconds, and dropped when ownership changes.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "common/stores.h"
#include "src/fetch.h"
#include "src/option.h"
#include "src/owners.h"
#include "src/plan.h"

#define IQ_ESTIMATE_TTL_MS	10000

typedef struct IqEstimate
{
	bool		valid;
	double		rows;
	TimestampTz at;
	uint64		generation;
} IqEstimate;

static IqEstimate estimates[IQ_NUM_STORES];

static double count_local(IqOwnerView *o, const IqStoreInfo *store);

/*
 * iq_estimate_store_rows
 *		Approximate rows of the table's store; negative when not known (the
 *		option use_remote_estimate is off, or the worker is not serving).
 */
double
iq_estimate_store_rows(const IqTableInfo *info)
{
	IqEstimate *e = &estimates[info->store->id];
	IqOwnerView *o;
	double		rows;

	if (!info->use_remote_estimate)
		return -1;

	o = palloc(sizeof(IqOwnerView));
	iq_ownership_read(o);
	if (e->valid && e->generation == o->generation &&
		!TimestampDifferenceExceeds(e->at, GetCurrentTimestamp(), IQ_ESTIMATE_TTL_MS))
	{
		pfree(o);
		return e->rows;
	}

	rows = count_local(o, info->store);
	if (rows >= 0)
	{
		e->valid = true;
		e->rows = rows;
		e->at = GetCurrentTimestamp();
		e->generation = o->generation;
	}
	pfree(o);
	return rows;
}

/*
 * count_local
 *		This instance's count of a store, scaled to all partitions; -1 when
 *		it holds none, or some are still restoring.
 */
static double
count_local(IqOwnerView *o, const IqStoreInfo *store)
{
	bool		needed[IQ_MAX_PARTITIONS] = {0};
	int			nlocal = 0;
	bool		restoring = false;
	IqTarget   *targets;
	int			ntargets;
	IqWireRequest req;
	IqFetch    *fetch;
	IqFetchRow	row;
	double		total = 0;
	uint32		seq;

	if (o->state != IQ_WORKER_RUNNING || o->partition_count <= 0)
		return -1;

	do
	{
		seq = iq_shared_read_begin();
		nlocal = 0;
		/* not serving yet: do not ask */
		restoring = iq_shared->local_socket[0] == '\0';
		for (int p = 0; p < o->partition_count; p++)
		{
			int			m = o->owner[p];

			needed[p] = m >= 0 && m < o->nmembers && o->members[m].is_self;
			if (!needed[p])
				continue;
			nlocal++;
			restoring |= iq_shared->partitions[p].restoring;
		}
	} while (!iq_shared_read_ok(seq));
	if (nlocal == 0 || restoring)
		return -1;

	targets = iq_ownership_targets(o, needed, &ntargets);
	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_COUNT;
	req.store = (uint8_t) store->id;

	fetch = iq_fetch_start(&req, targets, ntargets);
	while (iq_fetch_next(fetch, &row))
	{
		if (row.value_len == 8)
			total += (double) iq_decode_int64((const unsigned char *) row.value);
	}
	iq_fetch_end(fetch);
	pfree(targets);

	return total * o->partition_count / nlocal;
}

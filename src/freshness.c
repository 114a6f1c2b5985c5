/*-------------------------------------------------------------------------
 * freshness.c
 *	  iq_freshness(): how current every partition's state is, asked of the
 *	  instance that owns it.
 *
 * Users read it to see how stale an answer may be before they pick an
 * iq_fdw.max_lag; so it must answer even when partitions are beyond that
 * bound, which is why the bound is lifted for its own read.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"

#include "common/settings.h"
#include "common/stores.h"
#include "src/fetch.h"
#include "src/owners.h"

PG_FUNCTION_INFO_V1(iq_freshness);

/*
 * iq_freshness
 *		One row per partition: owner, consumed offset, end offset, lag; and
 *		(0.4) the source: with iq_fdw.read_from not owner, a partition
 *		whose owner cannot answer has its standby's row.  Filled to the
 *		width the SQL declaration has: a 0.3 database has no source.
 */
Datum
iq_freshness(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	IqOwnerView *o = palloc(sizeof(IqOwnerView));
	IqTarget   *targets;
	int			ntargets;
	IqWireRequest req;
	IqFetch    *fetch;
	IqFetchRow	row;
	const IqWirePosition *positions;
	int			npositions;
	int			saved_max_lag = iq_max_lag;

	InitMaterializedSRF(fcinfo, 0);

	iq_ownership_wait(o, NULL, false, "order-count", "the positions of all partitions");
	targets = iq_ownership_targets(o, NULL, &ntargets);

	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_POSITIONS;
	req.store = IQ_STORE_ORDER_COUNT;

	iq_max_lag = -1;
	PG_TRY();
	{
		fetch = iq_fetch_start(&req, targets, ntargets);
		while (iq_fetch_next(fetch, &row))
			;
		npositions = iq_fetch_positions(fetch, &positions);
		for (int i = 0; i < npositions; i++)
		{
			const IqWirePosition *p = &positions[i];
			int			m = p->partition < IQ_MAX_PARTITIONS ? o->owner[p->partition] : -1;
			Datum		values[7];
			bool		nulls[7] = {0};
			int64		standby_lag;
			const IqTarget *from = iq_fetch_partition_source(fetch, p->partition,
															 &standby_lag);

			/* a standby's row names the standby (iq_fdw.read_from) */
			if (from != NULL && from->standby)
			{
				values[0] = CStringGetTextDatum(from->host);
				values[1] = Int32GetDatum(from->port);
			}
			else if (m >= 0 && m < o->nmembers)
			{
				values[0] = CStringGetTextDatum(o->members[m].host);
				values[1] = Int32GetDatum(o->members[m].port);
			}
			else
				nulls[0] = nulls[1] = true;
			values[2] = Int32GetDatum(p->partition);
			values[3] = Int64GetDatum(p->consumed);
			values[4] = Int64GetDatum(p->end);
			nulls[4] = p->end < 0;
			values[5] = Int64GetDatum(p->end >= 0 ? Max(p->end - Max(p->consumed, 0), 0) : 0);
			nulls[5] = p->end < 0;
			/* source came with 0.4, last: the width the declaration has */
			values[6] = CStringGetTextDatum(from != NULL && from->standby ? "standby" : "owner");
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
		iq_fetch_end(fetch);
	}
	PG_FINALLY();
	{
		iq_max_lag = saved_max_lag;
	}
	PG_END_TRY();

	return (Datum) 0;
}

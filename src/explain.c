/*-------------------------------------------------------------------------
 * explain.c
 *	  EXPLAIN of a foreign scan: the store, what it is asked, and where.
 *
 * Which instance owns a partition changes with the consumer group, and the
 * partition count is known only once the worker has met the topics, so
 * the partitions of constant keys and their owners are shown only with
 * VERBOSE and COSTS or ANALYZE, as postgres_fdw keeps what varies between
 * runs out of EXPLAIN (COSTS OFF).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/explain.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

#include "src/iq_fdw.h"
#include "src/owners.h"
#include "src/plan.h"
#include "src/quals.h"
#include "src/scan.h"

static void explain_partitions(List *keys, bool bytea_keys, ExplainState *es);

/*
 * iqExplainForeignScan
 *		Store, key lookup / key range / full scan, pushed LIMIT; with
 *		VERBOSE the partitions of constant keys and their owners.
 */
void
iqExplainForeignScan(ForeignScanState *node, ExplainState *es)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	List	   *priv = plan->fdw_private;
	IqScanKind	kind = intVal(list_nth(priv, IQ_PRIV_KIND));
	const char *pushed = strVal(list_nth(priv, IQ_PRIV_PUSHED));
	const char *limit = strVal(list_nth(priv, IQ_PRIV_LIMIT));
	IqScanState *s = (IqScanState *) node->fdw_state;

	ExplainPropertyText("Store",
						iq_stores[intVal(list_nth(priv, IQ_PRIV_STORE))].name, es);
	if (kind == IQ_SCAN_POINT)
		ExplainPropertyText("Key Lookup", pushed, es);
	else if (kind == IQ_SCAN_RANGE)
		ExplainPropertyText("Key Range", pushed, es);
	else
		ExplainPropertyText("Full Scan", "all partitions", es);
	if (intVal(list_nth(priv, IQ_PRIV_ORDERED)) == IQ_ORDER_DESC)
		ExplainPropertyText("Key Order", "descending", es);
	if (limit[0] != '\0')
		ExplainPropertyText("Limit", limit, es);

	if (es->verbose && (es->costs || es->analyze) && kind == IQ_SCAN_POINT)
		explain_partitions((List *) list_nth(priv, IQ_PRIV_CONST_KEYS),
						   intVal(list_nth(priv, IQ_PRIV_KEY_TYPE)) == BYTEAOID, es);

	if (es->analyze && s != NULL && s->instances.len > 0)
		ExplainPropertyText("Instances Asked", s->instances.data, es);
	if (es->analyze && s != NULL && s->cache_hits > 0)
		ExplainPropertyInteger("Value Cache Hits", NULL, s->cache_hits, es);
	/* a source whose share of the LIMIT ran out was asked for more */
	if (es->analyze && s != NULL)
	{
		int64		batches = s->next_batches +
			(s->fetch ? iq_fetch_next_batches(s->fetch) : 0);

		if (batches > 0)
			ExplainPropertyInteger("Next Batches", NULL, batches, es);
	}
	/* iq_fdw.read_from: answers a standby gave, when an owner could not */
	if (es->analyze && s != NULL && s->standby_reads > 0)
		ExplainPropertyText("Standby Reads",
							s->standby_reads == 1 ? s->standby_last :
							psprintf("%lld reads, the last: %s",
									 (long long) s->standby_reads, s->standby_last),
							es);
}

/*
 * explain_partitions
 *		Partitions of constant keys (bytea ones in their output form), and
 *		their owners as of now.
 */
static void
explain_partitions(List *keys, bool bytea_keys, ExplainState *es)
{
	IqOwnerView *o;
	bool		needed[IQ_MAX_PARTITIONS] = {0};
	StringInfoData buf;
	ListCell   *lc;

	if (keys == NIL)
		return;
	o = palloc(sizeof(IqOwnerView));
	iq_ownership_read(o);
	if (o->partition_count <= 0)
		return;

	foreach(lc, keys)
	{
		const char *key = strVal(lfirst(lc));
		int			len = strlen(key);
		int			p;

		if (bytea_keys)
		{
			bytea	   *b = DatumGetByteaPP(DirectFunctionCall1(byteain,
																CStringGetDatum(key)));

			key = VARDATA_ANY(b);
			len = VARSIZE_ANY_EXHDR(b);
		}
		p = iq_ownership_partition(o, key, len);

		if (p >= 0 && p < IQ_MAX_PARTITIONS)
			needed[p] = true;
	}

	initStringInfo(&buf);
	for (int p = 0; p < o->partition_count; p++)
		if (needed[p])
			appendStringInfo(&buf, "%s%d", buf.len ? ", " : "", p);
	ExplainPropertyText("Partitions", buf.data, es);

	/* with ANALYZE, the instances actually asked are shown instead */
	if (es->analyze)
		return;
	resetStringInfo(&buf);
	for (int p = 0; p < o->partition_count; p++)
	{
		int			m = o->owner[p];

		if (!needed[p])
			continue;
		if (m >= 0 && m < o->nmembers)
			appendStringInfo(&buf, "%s%s:%d (partition %d%s)", buf.len ? ", " : "",
							 o->members[m].host, o->members[m].port, p,
							 o->members[m].is_self ? ", local" : "");
		else
			appendStringInfo(&buf, "%snone (partition %d)", buf.len ? ", " : "", p);
	}
	ExplainPropertyText("Instances", buf.data, es);
}

/*-------------------------------------------------------------------------
 * scan.c
 *	  Executing a scan of a store: evaluate what was pushed down, route it
 *	  to the owners of the partitions, and turn their rows into tuples.
 *
 * A read starts at the first row rather than in BeginForeignScan, since
 * the parameters of a parameterized scan are only set then; a rescan
 * (a new outer row) ends it and starts another.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "iq_fdw.h"
#include "owners.h"
#include "plan.h"
#include "scan.h"

/* A key or bound, copied out of the expression that produced it. */
typedef struct IqKey
{
	char	   *data;
	int			len;
} IqKey;

/* What one read asks, from the evaluated expressions. */
typedef struct IqAsk
{
	IqKey	   *keys;			/* point lookups: sorted, distinct */
	int			nkeys;
	bool		has_lower;
	IqKey		lower;
	bool		lower_incl;
	bool		has_upper;
	IqKey		upper;
	bool		upper_incl;
	uint32		limit;			/* 0 = none */
	bool		empty;			/* no row can match: ask nobody */
} IqAsk;

static void start_read(ForeignScanState *node, IqScanState *s);
static void evaluate(ForeignScanState *node, IqScanState *s, IqAsk *ask);
static void add_keys_from_array(IqAsk *ask, Datum array, int *cap);
static void add_key(IqAsk *ask, Datum text, int *cap);
static int	key_cmp(const IqKey *a, const IqKey *b);
static int	key_qsort_cmp(const void *a, const void *b);
static char *describe_ask(IqScanState *s, IqAsk *ask);
static Datum key_datum(IqScanState *s, IqFetchRow *row);
static Datum value_datum(IqScanState *s, IqFetchRow *row);


/*
 * iqBeginForeignScan
 *		Prepare the expressions; no instance is asked yet.
 */
void
iqBeginForeignScan(ForeignScanState *node, int eflags)
{
	ForeignScan *plan = (ForeignScan *) node->ss.ps.plan;
	IqScanState *s;

	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	s = palloc0(sizeof(IqScanState));
	s->store = &iq_stores[intVal(list_nth(plan->fdw_private, IQ_PRIV_STORE))];
	s->kind = intVal(list_nth(plan->fdw_private, IQ_PRIV_KIND));
	s->roles = (List *) list_nth(plan->fdw_private, IQ_PRIV_ROLES);
	s->key_attno = intVal(list_nth(plan->fdw_private, IQ_PRIV_KEY_ATTNO));
	s->value_attno = intVal(list_nth(plan->fdw_private, IQ_PRIV_VALUE_ATTNO));
	s->value_type = intVal(list_nth(plan->fdw_private, IQ_PRIV_VALUE_TYPE));
	s->expr_states = ExecInitExprList(plan->fdw_exprs, (PlanState *) node);
	s->batch_cxt = AllocSetContextCreate(node->ss.ps.state->es_query_cxt,
										 "iq_fdw read", ALLOCSET_DEFAULT_SIZES);
	initStringInfo(&s->instances);
	node->fdw_state = s;
}

/*
 * iqIterateForeignScan
 *		The next row, in key order for scans.
 */
TupleTableSlot *
iqIterateForeignScan(ForeignScanState *node)
{
	IqScanState *s = (IqScanState *) node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;
	IqFetchRow	row;

	if (!s->started)
		start_read(node, s);

	ExecClearTuple(slot);
	if (s->fetch == NULL || !iq_fetch_next(s->fetch, &row))
		return slot;

	memset(slot->tts_isnull, true, sizeof(bool) * slot->tts_tupleDescriptor->natts);
	if (s->key_attno != InvalidAttrNumber)
	{
		slot->tts_values[s->key_attno - 1] = key_datum(s, &row);
		slot->tts_isnull[s->key_attno - 1] = false;
	}
	if (s->value_attno != InvalidAttrNumber && row.value_len >= 0)
	{
		slot->tts_values[s->value_attno - 1] = value_datum(s, &row);
		slot->tts_isnull[s->value_attno - 1] = false;
	}
	return ExecStoreVirtualTuple(slot);
}

/*
 * iqReScanForeignScan
 *		End the current read; the next row starts one with the parameters
 *		as they are then.
 */
void
iqReScanForeignScan(ForeignScanState *node)
{
	IqScanState *s = (IqScanState *) node->fdw_state;

	if (s->fetch)
		iq_fetch_end(s->fetch);
	s->fetch = NULL;
	MemoryContextReset(s->batch_cxt);
	s->started = false;
}

/*
 * iqEndForeignScan
 *		Free the read's transfers; memory goes with the query.
 */
void
iqEndForeignScan(ForeignScanState *node)
{
	IqScanState *s = (IqScanState *) node->fdw_state;

	if (s == NULL)
		return;
	if (s->fetch)
		iq_fetch_end(s->fetch);
	s->fetch = NULL;
}

/*
 * start_read
 *		Evaluate the pushed-down expressions, find the owners of the
 *		partitions needed (waiting a bounded time for missing ones), and
 *		start the request on all of them at once.
 */
static void
start_read(ForeignScanState *node, IqScanState *s)
{
	MemoryContext old = MemoryContextSwitchTo(s->batch_cxt);
	IqAsk		ask;
	IqOwnership *o;
	bool	   *needed = NULL;
	IqTarget   *targets;
	int			ntargets;
	IqWireRequest *req;
	char	   *what;

	s->started = true;
	s->reads++;
	evaluate(node, s, &ask);
	if (ask.empty)
	{
		s->empty_reads++;
		MemoryContextSwitchTo(old);
		return;
	}
	what = describe_ask(s, &ask);

	o = palloc(sizeof(IqOwnership));
	iq_ownership_read(o);
	if (s->kind == IQ_SCAN_POINT)
	{
		iq_ownership_wait(o, NULL, true, s->store->name, what);
		needed = palloc0(sizeof(bool) * IQ_MAX_PARTITIONS);
		for (int i = 0; i < ask.nkeys; i++)
		{
			int			p = iq_ownership_partition(o, ask.keys[i].data, ask.keys[i].len);

			if (p < 0 || p >= IQ_MAX_PARTITIONS)
				elog(ERROR, "partition %d out of range for a key of store \"%s\"",
					 p, s->store->name);
			needed[p] = true;
		}
	}
	iq_ownership_wait(o, needed, false, s->store->name, what);
	targets = iq_ownership_targets(o, needed, &ntargets);

	resetStringInfo(&s->instances);
	for (int t = 0; t < ntargets; t++)
	{
		appendStringInfo(&s->instances, "%s%s:%d (partition%s",
						 t ? ", " : "", targets[t].host, targets[t].port,
						 targets[t].npartitions > 1 ? "s" : "");
		for (int i = 0; i < targets[t].npartitions; i++)
			appendStringInfo(&s->instances, "%s%d", i ? ", " : " ",
							 targets[t].partitions[i]);
		appendStringInfoString(&s->instances, targets[t].is_local ? ", local)" : ")");
	}

	req = palloc0(sizeof(IqWireRequest));
	req->op = (s->kind == IQ_SCAN_POINT) ? IQ_OP_GET : IQ_OP_SCAN;
	req->store = (uint8_t) s->store->id;
	req->limit = ask.limit;
	if (s->kind == IQ_SCAN_POINT)
	{
		req->nkeys = ask.nkeys;
		req->keys = palloc(sizeof(char *) * ask.nkeys);
		req->key_lens = palloc(sizeof(uint32_t) * ask.nkeys);
		for (int i = 0; i < ask.nkeys; i++)
		{
			req->keys[i] = ask.keys[i].data;
			req->key_lens[i] = ask.keys[i].len;
		}
	}
	if (ask.has_lower)
	{
		req->flags |= IQ_FLAG_LOWER | (ask.lower_incl ? IQ_FLAG_LOWER_INCL : 0);
		req->lower = ask.lower.data;
		req->lower_len = ask.lower.len;
	}
	if (ask.has_upper)
	{
		req->flags |= IQ_FLAG_UPPER | (ask.upper_incl ? IQ_FLAG_UPPER_INCL : 0);
		req->upper = ask.upper.data;
		req->upper_len = ask.upper.len;
	}

	s->fetch = iq_fetch_start(req, targets, ntargets);
	MemoryContextSwitchTo(old);
}

/*
 * evaluate
 *		The keys, the tightest bounds and the limit, from fdw_exprs.  A null
 *		key or bound matches nothing (the comparison is never true).
 */
static void
evaluate(ForeignScanState *node, IqScanState *s, IqAsk *ask)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	ListCell   *lc1;
	ListCell   *lc2;
	int			cap = 0;
	int64		limit = -1;
	int64		offset = 0;

	memset(ask, 0, sizeof(*ask));
	forboth(lc1, s->expr_states, lc2, s->roles)
	{
		ExprState  *state = (ExprState *) lfirst(lc1);
		IqExprRole	role = lfirst_int(lc2);
		IqKey		bound;
		bool		isnull;
		Datum		d;
		MemoryContext old;

		old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
		d = ExecEvalExpr(state, econtext, &isnull);
		MemoryContextSwitchTo(old);

		if (role == IQ_EXPR_LIMIT || role == IQ_EXPR_OFFSET)
		{
			if (role == IQ_EXPR_LIMIT)
				limit = isnull ? -1 : DatumGetInt64(d);
			else
				offset = isnull ? 0 : DatumGetInt64(d);
			continue;
		}
		if (isnull)
		{
			if (role != IQ_EXPR_KEYS)
				ask->empty = true;
			else if (s->kind == IQ_SCAN_POINT)
				ask->empty = true;
			continue;
		}
		if (role == IQ_EXPR_KEY)
		{
			add_key(ask, d, &cap);
			continue;
		}
		if (role == IQ_EXPR_KEYS)
		{
			add_keys_from_array(ask, d, &cap);
			continue;
		}

		{
			text	   *t = DatumGetTextPP(d);

			bound.len = VARSIZE_ANY_EXHDR(t);
			bound.data = pnstrdup(VARDATA_ANY(t), bound.len);
		}
		if (role == IQ_EXPR_LOWER || role == IQ_EXPR_LOWER_INCL)
		{
			bool		incl = (role == IQ_EXPR_LOWER_INCL);
			int			c = ask->has_lower ? key_cmp(&bound, &ask->lower) : 1;

			if (c > 0 || (c == 0 && !incl))
			{
				ask->lower = bound;
				ask->lower_incl = (c > 0) ? incl : false;
				ask->has_lower = true;
			}
		}
		else
		{
			bool		incl = (role == IQ_EXPR_UPPER_INCL);
			int			c = ask->has_upper ? key_cmp(&bound, &ask->upper) : -1;

			if (c < 0 || (c == 0 && !incl))
			{
				ask->upper = bound;
				ask->upper_incl = (c < 0) ? incl : false;
				ask->has_upper = true;
			}
		}
	}

	if (s->kind == IQ_SCAN_POINT && !ask->empty)
	{
		int			n = 0;

		/* each key once: IN ('1', '1') is one row */
		if (ask->nkeys > 1)
			qsort(ask->keys, ask->nkeys, sizeof(IqKey), key_qsort_cmp);
		for (int i = 0; i < ask->nkeys; i++)
			if (n == 0 || key_cmp(&ask->keys[i], &ask->keys[n - 1]) != 0)
				ask->keys[n++] = ask->keys[i];
		ask->nkeys = n;
		if (n == 0)
			ask->empty = true;
	}
	if (ask->has_lower && ask->has_upper)
	{
		int			c = key_cmp(&ask->lower, &ask->upper);

		if (c > 0 || (c == 0 && !(ask->lower_incl && ask->upper_incl)))
			ask->empty = true;
	}
	if (limit >= 0 && offset >= 0 && limit + offset <= PG_UINT32_MAX &&
		limit + offset > 0)
		ask->limit = (uint32) (limit + offset);
}

/*
 * add_key
 *		Copy one text key.
 */
static void
add_key(IqAsk *ask, Datum d, int *cap)
{
	text	   *t = DatumGetTextPP(d);

	if (ask->nkeys >= *cap)
	{
		*cap = Max(8, *cap * 2);
		ask->keys = ask->keys ? repalloc(ask->keys, sizeof(IqKey) * *cap)
			: palloc(sizeof(IqKey) * *cap);
	}
	ask->keys[ask->nkeys].len = VARSIZE_ANY_EXHDR(t);
	ask->keys[ask->nkeys].data = pnstrdup(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	ask->nkeys++;
}

/*
 * add_keys_from_array
 *		Every non-null element of a text (or varchar) array.
 */
static void
add_keys_from_array(IqAsk *ask, Datum array, int *cap)
{
	ArrayType  *arr = DatumGetArrayTypeP(array);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			add_key(ask, elems[i], cap);
}

/*
 * key_cmp
 *		Byte order, as RocksDB's default comparator.
 */
static int
key_cmp(const IqKey *a, const IqKey *b)
{
	int			c = memcmp(a->data, b->data, Min(a->len, b->len));

	if (c != 0)
		return c;
	return (a->len > b->len) - (a->len < b->len);
}

static int
key_qsort_cmp(const void *a, const void *b)
{
	return key_cmp((const IqKey *) a, (const IqKey *) b);
}

/*
 * describe_ask
 *		What a read needs, for errors: "key '2'", "keys '1', '2' and 3
 *		more", "key range ['1', '5']", "a full scan".
 */
static char *
describe_ask(IqScanState *s, IqAsk *ask)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (s->kind == IQ_SCAN_POINT)
	{
		appendStringInfoString(&buf, ask->nkeys == 1 ? "key " : "keys ");
		for (int i = 0; i < ask->nkeys && i < 3; i++)
			appendStringInfo(&buf, "%s%s", i ? ", " : "",
							 iq_printable_key(ask->keys[i].data, ask->keys[i].len));
		if (ask->nkeys > 3)
			appendStringInfo(&buf, " and %d more", ask->nkeys - 3);
	}
	else if (ask->has_lower || ask->has_upper)
		appendStringInfo(&buf, "key range %s%s, %s%s",
						 ask->has_lower && ask->lower_incl ? "[" : "(",
						 ask->has_lower ? iq_printable_key(ask->lower.data, ask->lower.len) : "",
						 ask->has_upper ? iq_printable_key(ask->upper.data, ask->upper.len) : "",
						 ask->has_upper && ask->upper_incl ? "]" : ")");
	else
		appendStringInfoString(&buf, "a full scan");
	return buf.data;
}

/*
 * iq_printable_key
 *		A key for a message: quoted, with bytes that are not printable ASCII
 *		as \xNN, so a broken key cannot break the message.
 */
char *
iq_printable_key(const char *key, int len)
{
	StringInfoData buf;
	int			shown = Min(len, 200);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '\'');
	for (int i = 0; i < shown; i++)
	{
		unsigned char c = (unsigned char) key[i];

		if (c == '\'' || c == '\\')
			appendStringInfo(&buf, "%c%c", c, c);
		else if (c >= 0x20 && c < 0x7f)
			appendStringInfoChar(&buf, c);
		else
			appendStringInfo(&buf, "\\x%02x", c);
	}
	appendStringInfoChar(&buf, '\'');
	if (shown < len)
		appendStringInfo(&buf, "... (%d bytes)", len);
	return buf.data;
}

/*
 * key_datum
 *		A key as text: it must be valid in the database encoding.
 */
static Datum
key_datum(IqScanState *s, IqFetchRow *row)
{
	if (!pg_verifymbstr(row->key, row->key_len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("key %s of store \"%s\" is not valid %s",
						iq_printable_key(row->key, row->key_len),
						s->store->name, GetDatabaseEncodingName()),
				 errhint("The producer of the topic wrote keys in another encoding.")));
	return PointerGetDatum(cstring_to_text_with_len(row->key, row->key_len));
}

/*
 * value_datum
 *		A value in the column's type: counts are 8-byte big-endian longs,
 *		customers are strings (or raw bytes into bytea).
 */
static Datum
value_datum(IqScanState *s, IqFetchRow *row)
{
	if (s->store->value_kind == IQ_VALUE_INT64)
	{
		int64		v;

		if (row->value_len != 8)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("value of key %s in store \"%s\" has %d bytes, not an 8-byte count",
							iq_printable_key(row->key, row->key_len),
							s->store->name, row->value_len),
					 errhint("Something other than the stream worker wrote to the changelog topic.")));
		v = iq_decode_int64((const unsigned char *) row->value);
		switch (s->value_type)
		{
			case INT8OID:
				return Int64GetDatum(v);
			case NUMERICOID:
				return DirectFunctionCall1(int8_numeric, Int64GetDatum(v));
			default:
				return CStringGetTextDatum(psprintf(INT64_FORMAT, v));
		}
	}

	if (s->value_type == BYTEAOID)
	{
		bytea	   *b = palloc(VARHDRSZ + row->value_len);

		SET_VARSIZE(b, VARHDRSZ + row->value_len);
		memcpy(VARDATA(b), row->value, row->value_len);
		return PointerGetDatum(b);
	}
	if (!pg_verifymbstr(row->value, row->value_len, true))
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("value of key %s in store \"%s\" is not valid %s",
						iq_printable_key(row->key, row->key_len),
						s->store->name, GetDatabaseEncodingName()),
				 errhint("Declare the column as bytea to read the bytes as they are.")));
	return PointerGetDatum(cstring_to_text_with_len(row->value, row->value_len));
}

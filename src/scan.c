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

#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "common/utf8.h"
#include "src/ask.h"
#include "src/iq_fdw.h"
#include "src/owners.h"
#include "src/plan.h"
#include "src/scan.h"

static void start_read(ForeignScanState *node, IqScanState *s);
static bool read_cached(IqScanState *s, IqAsk *ask, IqTarget *targets, int ntargets);
static void note_standby_reads(IqScanState *s);
static Datum key_datum(IqScanState *s, IqFetchRow *row);
static Datum value_datum(IqScanState *s, IqFetchRow *row);
static Datum bytes_datum(IqDatumBuf *buf, char *data, int len, bool in_place);
static text *text_or_replaced(IqScanState *s, IqFetchRow *row, bool is_key);


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
	s->key_type = intVal(list_nth(plan->fdw_private, IQ_PRIV_KEY_TYPE));
	s->invalid_utf8 = intVal(list_nth(plan->fdw_private, IQ_PRIV_INVALID_UTF8));
	s->order = intVal(list_nth(plan->fdw_private, IQ_PRIV_ORDERED));
	s->expr_states = ExecInitExprList(plan->fdw_exprs, (PlanState *) node);
	s->batch_cxt = AllocSetContextCreate(node->ss.ps.state->es_query_cxt,
										 "iq_fdw read", ALLOCSET_DEFAULT_SIZES);
	s->key_buf.cxt = s->value_buf.cxt = CurrentMemoryContext;
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
	if (s->cached_row)
	{
		s->cached_row = false;
		s->at_end = true;
		row.key = (char *) s->cached_key;
		row.key_len = (int) s->cached_key_len;
		row.value = s->cached_value;
		row.value_len = (int) s->cached_value_len;
		row.header_room = false;
	}
	else if (s->fetch == NULL || s->at_end || !iq_fetch_next(s->fetch, &row))
	{
		note_standby_reads(s);
		s->at_end = true;
		return slot;
	}
	note_standby_reads(s);

	/* a loop, not memset: a call per row for two columns showed */
	for (int i = 0; i < slot->tts_tupleDescriptor->natts; i++)
		slot->tts_isnull[i] = true;
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

	/*
	 * Every key has its row: read the end of the answer now (the datums are
	 * copies), so that an executor that stops at one row (SELECT INTO,
	 * EXISTS) still leaves the connection reusable.
	 */
	if (s->fetch != NULL && s->rows_left > 0 && --s->rows_left == 0)
	{
		if (iq_fetch_next(s->fetch, &row))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_ERROR),
					 errmsg("store \"%s\" returned more rows than the keys asked for",
							s->store->name),
					 errdetail("An extra row has key %s.",
							   iq_printable_key(row.key, row.key_len))));
		s->at_end = true;
	}
	return ExecStoreVirtualTuple(slot);
}

/* end_read: end the read under way, keeping its figures for EXPLAIN ANALYZE */
static void
end_read(IqScanState *s)
{
	if (s->fetch == NULL)
		return;
	s->next_batches += iq_fetch_next_batches(s->fetch);
	iq_fetch_end(s->fetch);
	s->fetch = NULL;
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

	end_read(s);
	MemoryContextReset(s->batch_cxt);
	s->started = false;
	s->cached_row = false;
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
	end_read(s);
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
	IqOwnerView *o;
	bool	   *needed = NULL;
	IqTarget   *targets;
	int			ntargets;
	IqWireRequest *req;
	char	   *what;

	s->started = true;
	s->at_end = false;
	s->cached_row = false;
	s->standby_noted = false;
	s->reads++;
	iq_ask_evaluate(node->ss.ps.ps_ExprContext, s->kind, s->expr_states,
					s->roles,
					s->key_type != BYTEAOID && s->invalid_utf8 == IQ_INVALID_UTF8_REPLACE,
					&ask);
	if (ask.empty)
	{
		s->empty_reads++;
		MemoryContextSwitchTo(old);
		return;
	}
	what = iq_ask_describe(s->kind, &ask);

	o = palloc(sizeof(IqOwnerView));
	iq_ownership_read(o);
	(void) iq_ownership_fill_missing(o);
	if (s->kind == IQ_SCAN_POINT && !ask.scan_all)
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
	targets = iq_ownership_nearest(o, targets, &ntargets);
	if (s->kind == IQ_SCAN_POINT && !ask.scan_all &&
		read_cached(s, &ask, targets, ntargets))
	{
		MemoryContextSwitchTo(old);
		return;
	}

	resetStringInfo(&s->instances);
	for (int t = 0; t < ntargets; t++)
	{
		appendStringInfo(&s->instances, "%s%s:%d (partition%s",
						 t ? ", " : "", targets[t].host, targets[t].port,
						 targets[t].npartitions > 1 ? "s" : "");
		for (int i = 0; i < targets[t].npartitions; i++)
			appendStringInfo(&s->instances, "%s%d", i ? ", " : " ",
							 targets[t].partitions[i]);
		appendStringInfoString(&s->instances, targets[t].is_local ?
							   (targets[t].standby ? ", local standby)" : ", local)") : ")");
	}

	req = palloc0(sizeof(IqWireRequest));
	req->op = (s->kind == IQ_SCAN_POINT && !ask.scan_all) ? IQ_OP_GET : IQ_OP_SCAN;
	req->store = (uint8_t) s->store->id;
	req->limit = ask.limit;
	if (req->op == IQ_OP_GET)
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

	if (s->order == IQ_ORDER_DESC && req->op == IQ_OP_SCAN)
		req->flags |= IQ_FLAG_REVERSE;

	s->rows_left = (req->op == IQ_OP_GET) ? ask.nkeys : -1;
	s->fetch = iq_fetch_start(req, targets, ntargets);
	if (s->order == IQ_ORDER_NONE)
		iq_fetch_any_order(s->fetch);
	MemoryContextSwitchTo(old);
}

/*
 * note_standby_reads
 *		Once the read's answers have begun (its first row or end: every
 *		header is read then), what standbys answered, for EXPLAIN ANALYZE.
 */
static void
note_standby_reads(IqScanState *s)
{
	char	   *summary;

	if (s->standby_noted || s->fetch == NULL)
		return;
	s->standby_noted = true;
	summary = iq_fetch_standby_summary(s->fetch);
	if (summary == NULL)
		return;
	s->standby_reads++;
	s->standby_last = MemoryContextStrdup(GetMemoryChunkContext(s), summary);
}

/*
 * read_cached
 *		A lookup of one key of this instance, answered from the value cache
 *		when it is there; true if so.  Not with max_lag set: the cache does
 *		not know the partition's lag, the worker's answer does.
 */
static bool
read_cached(IqScanState *s, IqAsk *ask, IqTarget *targets, int ntargets)
{
	IqVcResult	r;

	if (iq_value_cache == NULL || iq_max_lag >= 0 || ask->nkeys != 1 ||
		ntargets != 1 || !targets[0].is_local || targets[0].standby ||
		targets[0].npartitions != 1)
		return false;
	r = iq_vc_lookup(iq_value_cache, s->store->id, targets[0].partitions[0],
					 ask->keys[0].data, ask->keys[0].len,
					 s->cached_value, &s->cached_value_len);
	if (r == IQ_VC_MISS)
		return false;
	s->cache_hits++;
	s->cached_row = (r == IQ_VC_FOUND);
	s->at_end = !s->cached_row;
	s->cached_key = ask->keys[0].data;
	s->cached_key_len = ask->keys[0].len;
	resetStringInfo(&s->instances);
	appendStringInfo(&s->instances, "%s:%d (partition %d, local, value cache)",
					 targets[0].host, targets[0].port, targets[0].partitions[0]);
	return true;
}

/*
 * in_place
 *		Whether a row's datums may lie in the fetch's buffer: a scan's, not
 *		a lookup's, which reads on to the answer's end (moving the buffer)
 *		before its row is used.
 */
static inline bool
in_place(IqScanState *s, IqFetchRow *row)
{
	return row->header_room && s->rows_left < 0;
}

/*
 * key_datum
 *		A key in the column's type: bytea as stored, text with what is not
 *		valid in the database encoding replaced or refused (invalid_utf8).
 */
static Datum
key_datum(IqScanState *s, IqFetchRow *row)
{
	if (s->key_type == BYTEAOID)
		return bytes_datum(&s->key_buf, row->key, row->key_len, in_place(s, row));
	return PointerGetDatum(text_or_replaced(s, row, true));
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
		return bytes_datum(&s->value_buf, row->value, row->value_len, in_place(s, row));
	return PointerGetDatum(text_or_replaced(s, row, false));
}

/*
 * bytes_datum
 *		A varlena of the bytes as they are, valid until the next row: with
 *		in_place, where they lie, behind a 1-byte header written over the
 *		byte before them (IqFetchRow.header_room) when they are short
 *		enough for one, as a heap tuple holds short values; otherwise a
 *		copy in buf (see IqDatumBuf), which grows in the scan's context.
 */
static Datum
bytes_datum(IqDatumBuf *buf, char *data, int len, bool in_place)
{
	Size		need = VARHDRSZ + (Size) len;
	struct varlena *v;

	if (in_place && len <= (int) (VARATT_SHORT_MAX - VARHDRSZ_SHORT))
	{
		SET_VARSIZE_SHORT(data - 1, len + VARHDRSZ_SHORT);
		return PointerGetDatum(data - 1);
	}

	if (need > buf->cap)
	{
		Size		cap = Max(buf->cap * 2, 64);

		while (cap < need)
			cap *= 2;
		if (buf->data)
			pfree(buf->data);
		buf->data = MemoryContextAlloc(buf->cxt, cap);
		buf->cap = cap;
	}
	v = (struct varlena *) buf->data;
	SET_VARSIZE(v, need);
	memcpy(VARDATA(v), data, len);
	return PointerGetDatum(v);
}

/*
 * text_or_replaced
 *		A row's key or value as text.  Bytes that are not valid in the
 *		database encoding (not UTF-8, or NUL, which text cannot hold) fail
 *		the scan with invalid_utf8 'error'; with 'replace', in a UTF8
 *		database, each maximal ill-formed subpart and each NUL becomes
 *		U+FFFD, as Kafka Streams' StringDeserializer shows them (utf8.h).
 *		Other encodings have no such character: their bytes must be valid.
 */
static text *
text_or_replaced(IqScanState *s, IqFetchRow *row, bool is_key)
{
	char	   *data = is_key ? row->key : row->value;
	int			len = is_key ? row->key_len : row->value_len;
	char	   *fixed;
	size_t		fixed_len;

	if (iq_ascii_text(data, len) || pg_verifymbstr(data, len, true))
		return (text *) DatumGetPointer(bytes_datum(is_key ? &s->key_buf : &s->value_buf,
													data, len, in_place(s, row)));

	if (s->invalid_utf8 == IQ_INVALID_UTF8_ERROR ||
		GetDatabaseEncoding() != PG_UTF8)
	{
		if (is_key)
			ereport(ERROR,
					(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
					 errmsg("key %s of store \"%s\" is not valid %s",
							iq_printable_key(data, len),
							s->store->name, GetDatabaseEncodingName()),
					 GetDatabaseEncoding() == PG_UTF8
					 ? errhint("Declare the key column as bytea to read the bytes as they are, or set the foreign table's option invalid_utf8 to 'replace' to read them as U+FFFD.")
					 : errhint("Declare the key column as bytea to read the bytes as they are.")));
		ereport(ERROR,
				(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
				 errmsg("value of key %s in store \"%s\" is not valid %s",
						iq_printable_key(row->key, row->key_len),
						s->store->name, GetDatabaseEncodingName()),
				 GetDatabaseEncoding() == PG_UTF8
				 ? errhint("Declare the column as bytea to read the bytes as they are, or set the foreign table's option invalid_utf8 to 'replace' to read them as U+FFFD.")
				 : errhint("Declare the column as bytea to read the bytes as they are.")));
	}

	fixed = palloc(IQ_UTF8_REPLACED_MAX((size_t) len));
	fixed_len = iq_utf8_replace(data, len, fixed, false);
	if (!pg_verifymbstr(fixed, fixed_len, true))
		elog(ERROR, "replacing what is not UTF-8 in a %s of store \"%s\" left it invalid",
			 is_key ? "key" : "value", s->store->name);
	return cstring_to_text_with_len(fixed, fixed_len);
}

/*-------------------------------------------------------------------------
 * scan.h
 *	  Run-time state of a foreign scan, shared by scan.c and explain.c.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_SCAN_H
#define IQ_SCAN_H

#include "lib/stringinfo.h"
#include "nodes/execnodes.h"

#include "common/stores.h"
#include "common/value_cache.h"
#include "src/fetch.h"
#include "src/option.h"
#include "src/plan.h"
#include "src/quals.h"

/*
 * A varlena the scan rewrites for every row: a row's datums live until the
 * next row is asked for (the per-tuple context's lifetime, which ExecScan
 * resets at each call), so one buffer per column serves every row without
 * a palloc each.
 */
typedef struct IqDatumBuf
{
	MemoryContext cxt;			/* the query's: where data grows */
	char	   *data;
	Size		cap;
} IqDatumBuf;

typedef struct IqScanState
{
	const IqStoreInfo *store;
	IqScanKind	kind;
	List	   *roles;			/* IqExprRole per fdw_exprs item */
	List	   *expr_states;	/* ExprState per fdw_exprs item */
	AttrNumber	key_attno;
	AttrNumber	value_attno;
	Oid			key_type;
	Oid			value_type;
	IqInvalidUtf8 invalid_utf8;	/* for text columns */
	IqKeyOrder	order;			/* the order of rows the plan relies on */

	MemoryContext batch_cxt;	/* one read: keys, targets, the fetch */
	IqDatumBuf	key_buf;		/* the current row's key datum */
	IqDatumBuf	value_buf;		/* the current row's value datum */
	IqFetch    *fetch;			/* NULL before the first row or if empty */
	bool		started;
	bool		at_end;			/* the answer was read to its end */
	int64		rows_left;		/* point lookups: keys without a row yet */

	/* a lookup answered from the value cache: its row, not yet returned */
	bool		cached_row;
	const char *cached_key;
	size_t		cached_key_len;
	char		cached_value[IQ_VC_DATA];
	size_t		cached_value_len;

	/* for EXPLAIN ANALYZE */
	int64		reads;			/* reads started (once per rescan) */
	int64		empty_reads;	/* reads that needed no instance */
	int64		cache_hits;		/* reads answered from the value cache */
	StringInfoData instances;	/* the targets of the last read */
	bool		standby_noted;	/* the current read's standbys counted */
	int64		standby_reads;	/* reads some standby answered for */
	int64		next_batches;	/* of reads ended: iq_fetch_next_batches */
	char	   *standby_last;	/* the last such: iq_fetch_standby_summary */
} IqScanState;

#endif							/* IQ_SCAN_H */

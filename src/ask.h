/*-------------------------------------------------------------------------
 * ask.h
 *	  What one read asks the store: keys, a key range, a row limit.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_ASK_H
#define IQ_ASK_H

#include "nodes/execnodes.h"

#include "src/quals.h"

/* A key or bound, copied out of the expression that produced it. */
typedef struct IqKey
{
	char	   *data;
	int			len;
} IqKey;

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
	bool		scan_all;		/* point keys no stored key stands for:
								 * read every row, the filter picks */
} IqAsk;

/*
 * Evaluate the plan's fdw_exprs (their ExprStates, with their IqExprRole)
 * into *ask, in the current memory context.  replaced: the key column is
 * text showing U+FFFD for bytes that are not UTF-8 (IQ_KEY_REPLACED), so
 * an upper bound is widened and a key holding U+FFFD means scan_all.
 */
extern void iq_ask_evaluate(ExprContext *econtext, IqScanKind kind,
							List *expr_states, List *roles, bool replaced,
							IqAsk *ask);

/* What a read needs, for errors: "key '2'", "key range ['1', '5']" ... */
extern char *iq_ask_describe(IqScanKind kind, IqAsk *ask);

/* A key for a message: quoted, unprintable bytes as \xNN. */
extern char *iq_printable_key(const char *key, int len);

#endif							/* IQ_ASK_H */

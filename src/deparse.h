/*-------------------------------------------------------------------------
 * deparse.h
 *	  The pushed-down conditions as text, for EXPLAIN.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_DEPARSE_H
#define IQ_DEPARSE_H

#include "nodes/pathnodes.h"

#include "src/option.h"
#include "src/quals.h"

/* The other side of a condition: a literal, $n, rel.col, an expression. */
extern char *iq_deparse_arg(PlannerInfo *root, Expr *arg);

/* The store's request as a condition on the key ("" for a full scan). */
extern char *iq_deparse_pushed(PlannerInfo *root, const IqTableInfo *info,
							   IqKeyQuals *q);

/* Constant point keys as String nodes (nulls left out), else NIL. */
extern List *iq_const_keys(IqKeyQuals *q);

#endif							/* IQ_DEPARSE_H */

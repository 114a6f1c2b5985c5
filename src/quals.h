/*-------------------------------------------------------------------------
 * quals.h
 *	  Which conditions on a foreign table's key the store can answer.
 *
 * The one place where the conditions sent to the store are chosen (as
 * postgres_fdw's classifyConditions): an equality or IN list becomes point
 * lookups at the owners of the keys' partitions, comparisons become one key
 * range, and anything else stays with PostgreSQL.  Whether the scan's key
 * order serves an ORDER BY, and whether a LIMIT goes to the store, is
 * decided in plan.c.  Every condition is also kept as a local filter, so a
 * wrong narrowing can never change a result.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_QUALS_H
#define IQ_QUALS_H

#include "nodes/pathnodes.h"

#include "src/option.h"

typedef enum IqScanKind
{
	IQ_SCAN_FULL = 0,			/* every row of every partition */
	IQ_SCAN_POINT,				/* the given keys, at their owners */
	IQ_SCAN_RANGE				/* a key range, on every owner */
} IqScanKind;

typedef struct IqKeyQuals
{
	IqScanKind	kind;
	Expr	   *point;			/* POINT: one key, or an array of keys */
	bool		point_is_array;
	List	   *lower;			/* RANGE: lower bounds (Exprs) */
	List	   *lower_incl;		/* IntList aligned with lower, 1 = inclusive */
	List	   *upper;
	List	   *upper_incl;
	List	   *pushed;			/* RestrictInfos the store answers exactly */
	List	   *local_only;		/* RestrictInfos only PostgreSQL answers */
} IqKeyQuals;

/* Classify a list of RestrictInfos on baserel. */
extern void iq_classify_quals(PlannerInfo *root, RelOptInfo *baserel,
							  const IqTableInfo *info, List *clauses,
							  IqKeyQuals *out);

/*
 * Is rinfo "key = <expression without this relation>", usable as a point
 * lookup?  Used for join clauses (parameterized paths).
 */
extern bool iq_is_key_equality(PlannerInfo *root, RelOptInfo *baserel,
							   const IqTableInfo *info, RestrictInfo *rinfo);

/* Is expr the key column of baserel (through a binary-compatible cast)? */
extern bool iq_is_key_var(RelOptInfo *baserel, const IqTableInfo *info, Expr *expr);

/* The non-null elements of an array of keys (key = ANY(array), IN lists). */
extern Datum *iq_array_keys(Datum array, int *nkeys);

#endif							/* IQ_QUALS_H */

/*-------------------------------------------------------------------------
 * plan.c
 *	  Planning a scan of a store: sizes, paths (plain and parameterized)
 *	  and the ForeignScan.
 *
 * Which conditions the store answers is decided in quals.c; here they
 * become costs, the ordering the scan guarantees (and so whether an ORDER
 * BY needs a Sort), whether a LIMIT is sent to the store, and the plan's
 * fdw_exprs and fdw_private (see plan.h).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "catalog/pg_opfamily.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"

#include "common/compat.h"
#include "src/deparse.h"
#include "src/iq_fdw.h"
#include "src/option.h"
#include "src/plan.h"
#include "src/quals.h"

/*
 * Costs, in the planner's units (a sequential page read is 1): a request
 * to an instance is a round trip of tens of microseconds locally and a
 * fraction of a millisecond to a peer; a row is decoded and copied.
 */
#define IQ_REQUEST_COST		3.0
#define IQ_ROW_COST			0.01
#define IQ_DEFAULT_ROWS		1000.0
#define IQ_DEFAULT_ARRAY_KEYS 10.0

/* Planning state of a foreign relation (baserel->fdw_private). */
typedef struct IqRelInfo
{
	IqTableInfo table;
	IqKeyQuals	quals;			/* from the restriction clauses */
	double		store_rows;
	double		fetched_rows;	/* rows the store sends */
} IqRelInfo;

static double fetched_rows(PlannerInfo *root, RelOptInfo *baserel,
						   IqRelInfo *ri, IqKeyQuals *q);
static void scan_cost(RelOptInfo *baserel, double rows,
					  Cost *startup, Cost *total);
static IqKeyOrder key_order_of(List *pathkeys);
static List *key_order_pathkeys(PlannerInfo *root, RelOptInfo *baserel,
								IqRelInfo *ri);
static bool ec_member_is_key(PlannerInfo *root, RelOptInfo *rel,
							 EquivalenceClass *ec, EquivalenceMember *em,
							 void *arg);
static void add_parameterized_paths(PlannerInfo *root, RelOptInfo *baserel,
									IqRelInfo *ri);
static bool limit_is_safe(PlannerInfo *root, RelOptInfo *baserel,
						  const IqTableInfo *info, IqKeyQuals *q,
						  ForeignPath *path);

/*
 * iqGetForeignRelSize
 *		Read the table's mapping, classify its conditions, estimate rows.
 */
void
iqGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	IqRelInfo  *ri = palloc0(sizeof(IqRelInfo));
	Selectivity local_sel;

	baserel->fdw_private = ri;
	iq_get_table_info(foreigntableid, &ri->table);

	ri->store_rows = iq_estimate_store_rows(&ri->table);
	if (ri->store_rows < 0)
		ri->store_rows = IQ_DEFAULT_ROWS;

	iq_classify_quals(root, baserel, &ri->table, baserel->baserestrictinfo,
					  &ri->quals);
	ri->fetched_rows = fetched_rows(root, baserel, ri, &ri->quals);

	local_sel = clauselist_selectivity(root, ri->quals.local_only,
									   baserel->relid, JOIN_INNER, NULL);
	baserel->tuples = ri->store_rows;
	baserel->rows = clamp_row_est(ri->fetched_rows * local_sel);
}

/*
 * fetched_rows
 *		Rows the store sends for a classification: keys are unique, so a
 *		lookup returns at most one row per key.
 */
static double
fetched_rows(PlannerInfo *root, RelOptInfo *baserel, IqRelInfo *ri,
			 IqKeyQuals *q)
{
	double		rows = ri->store_rows;

	if (q->kind == IQ_SCAN_POINT)
	{
		rows = 1;
		if (q->point_is_array)
		{
			rows = IQ_DEFAULT_ARRAY_KEYS;
			if (IsA(q->point, Const) && !((Const *) q->point)->constisnull)
			{
				ArrayType  *arr = DatumGetArrayTypeP(((Const *) q->point)->constvalue);

				rows = ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr));
			}
		}
		rows = Min(rows, ri->store_rows);
	}
	else if (q->kind == IQ_SCAN_RANGE)
		rows *= clauselist_selectivity(root, q->pushed, baserel->relid,
									   JOIN_INNER, NULL);
	return clamp_row_est(rows);
}

/*
 * scan_cost
 *		A request per instance (in parallel, so paid about once), a cost per
 *		row sent, and the local recheck of every condition.
 */
static void
scan_cost(RelOptInfo *baserel, double rows, Cost *startup, Cost *total)
{
	*startup = IQ_REQUEST_COST + baserel->baserestrictcost.startup;
	*total = *startup +
		rows * (IQ_ROW_COST + cpu_tuple_cost + baserel->baserestrictcost.per_tuple);
}

/*
 * iqGetForeignPaths
 *		One plain path, sorted by key when a scan returns keys in the order
 *		PostgreSQL wants; and one per join clause that can drive a lookup.
 */
void
iqGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	IqRelInfo  *ri = (IqRelInfo *) baserel->fdw_private;
	Cost		startup;
	Cost		total;
	List	   *pathkeys = NIL;

	scan_cost(baserel, ri->fetched_rows, &startup, &total);

	/* scans merge rows in key byte order; point lookups promise nothing */
	if (ri->quals.kind != IQ_SCAN_POINT)
		pathkeys = key_order_pathkeys(root, baserel, ri);

	add_path(baserel, (Path *)
			 iq_create_foreignscan_path(root, baserel, NULL, baserel->rows,
										startup, total, pathkeys,
										baserel->lateral_relids, NULL, NIL));

	if (ri->quals.kind != IQ_SCAN_POINT)
		add_parameterized_paths(root, baserel, ri);
}

/*
 * key_order_pathkeys
 *		The query's leading pathkey if it is "key ASC" or "key DESC" in an
 *		order that is the store's byte order: a bytea key, or text under a
 *		collation that orders as bytes, unless keys may show U+FFFD in place
 *		of their bytes (their text sorts elsewhere).  The store's order, or
 *		its reverse (RocksDB reads backwards as well), then needs no Sort.
 */
static List *
key_order_pathkeys(PlannerInfo *root, RelOptInfo *baserel, IqRelInfo *ri)
{
	PathKey    *pk;
	EquivalenceClass *ec;
	ListCell   *lc;

	if (root->query_pathkeys == NIL || ri->table.key_attno == InvalidAttrNumber)
		return NIL;
	pk = linitial_node(PathKey, root->query_pathkeys);
	ec = pk->pk_eclass;
	if ((pk->pk_strategy != BTLessStrategyNumber &&
		 pk->pk_strategy != BTGreaterStrategyNumber) || ec->ec_has_volatile)
		return NIL;
	if (ri->table.key_is_bytea)
	{
		if (pk->pk_opfamily != BYTEA_BTREE_FAM_OID)
			return NIL;
	}
	else if (pk->pk_opfamily != TEXT_BTREE_FAM_OID ||
			 IQ_KEY_REPLACED(&ri->table) ||
			 !OidIsValid(ec->ec_collation) || !lc_collate_is_c(ec->ec_collation))
		return NIL;

	/* keys are never null, so NULLS FIRST or LAST is the same order */
	foreach(lc, ec->ec_members)
	{
		EquivalenceMember *em = (EquivalenceMember *) lfirst(lc);

		if (bms_equal(em->em_relids, baserel->relids) &&
			iq_is_key_var(baserel, &ri->table, em->em_expr))
			return list_make1(pk);
	}
	return NIL;
}

/* key_order_of: what a path's pathkeys (key_order_pathkeys' or none) ask */
static IqKeyOrder
key_order_of(List *pathkeys)
{
	if (pathkeys == NIL)
		return IQ_ORDER_NONE;
	return linitial_node(PathKey, pathkeys)->pk_strategy == BTGreaterStrategyNumber ?
		IQ_ORDER_DESC : IQ_ORDER_ASC;
}

/*
 * ec_member_is_key
 *		generate_implied_equalities_for_column's test: our key column.
 */
static bool
ec_member_is_key(PlannerInfo *root, RelOptInfo *rel, EquivalenceClass *ec,
				 EquivalenceMember *em, void *arg)
{
	return iq_is_key_var(rel, (IqTableInfo *) arg, em->em_expr);
}

/*
 * add_parameterized_paths
 *		For "key = other.col", a path that looks up one key per outer row,
 *		as postgres_fdw does for its join clauses and equivalence classes.
 */
static void
add_parameterized_paths(PlannerInfo *root, RelOptInfo *baserel, IqRelInfo *ri)
{
	List	   *candidates = NIL;
	List	   *ppis = NIL;
	ListCell   *lc;

	if (ri->table.key_attno == InvalidAttrNumber)
		return;

	foreach(lc, baserel->joininfo)
		candidates = lappend(candidates, lfirst(lc));
	if (baserel->has_eclass_joins)
		candidates = list_concat(candidates,
								 generate_implied_equalities_for_column(root, baserel,
																		ec_member_is_key,
																		&ri->table,
																		baserel->lateral_referencers));

	foreach(lc, candidates)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		Relids		required_outer;

		if (!join_clause_is_movable_to(rinfo, baserel) ||
			!iq_is_key_equality(root, baserel, &ri->table, rinfo))
			continue;
		required_outer = bms_union(rinfo->clause_relids, baserel->lateral_relids);
		required_outer = bms_del_member(required_outer, baserel->relid);
		if (bms_is_empty(required_outer))
			continue;
		ppis = list_append_unique_ptr(ppis,
									  get_baserel_parampathinfo(root, baserel,
																required_outer));
	}

	foreach(lc, ppis)
	{
		ParamPathInfo *ppi = (ParamPathInfo *) lfirst(lc);
		Cost		startup;
		Cost		total;

		/* one key per outer row: at most one row */
		scan_cost(baserel, 1, &startup, &total);
		add_path(baserel, (Path *)
				 iq_create_foreignscan_path(root, baserel, NULL, 1,
											startup, total, NIL,
											ppi->ppi_req_outer, NULL, NIL));
	}
}

/*
 * iqGetForeignPlan
 *		Classify the clauses of the chosen path (a parameterized path adds
 *		its join clauses), keep them all as the local filter, and hand the
 *		pushed-down expressions to the executor in fdw_exprs.
 */
ForeignScan *
iqGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid,
				 ForeignPath *best_path, List *tlist, List *scan_clauses,
				 Plan *outer_plan)
{
	IqRelInfo  *ri = (IqRelInfo *) baserel->fdw_private;
	IqKeyQuals	q;
	List	   *local_exprs = extract_actual_clauses(scan_clauses, false);
	List	   *fdw_exprs = NIL;
	List	   *roles = NIL;
	List	   *fdw_private;
	char	   *limit_text = "";
	ListCell   *lc1;
	ListCell   *lc2;

	iq_classify_quals(root, baserel, &ri->table, scan_clauses, &q);

	if (q.kind == IQ_SCAN_POINT)
	{
		fdw_exprs = list_make1(q.point);
		roles = list_make1_int(q.point_is_array ? IQ_EXPR_KEYS : IQ_EXPR_KEY);
	}
	forboth(lc1, q.lower, lc2, q.lower_incl)
	{
		fdw_exprs = lappend(fdw_exprs, lfirst(lc1));
		roles = lappend_int(roles, lfirst_int(lc2) ? IQ_EXPR_LOWER_INCL : IQ_EXPR_LOWER);
	}
	forboth(lc1, q.upper, lc2, q.upper_incl)
	{
		fdw_exprs = lappend(fdw_exprs, lfirst(lc1));
		roles = lappend_int(roles, lfirst_int(lc2) ? IQ_EXPR_UPPER_INCL : IQ_EXPR_UPPER);
	}

	if (q.kind != IQ_SCAN_POINT && limit_is_safe(root, baserel, &ri->table, &q, best_path))
	{
		Node	   *count = root->parse->limitCount;
		Node	   *offset = root->parse->limitOffset;

		fdw_exprs = lappend(fdw_exprs, count);
		roles = lappend_int(roles, IQ_EXPR_LIMIT);
		limit_text = iq_deparse_arg(root, (Expr *) count);
		if (offset)
		{
			fdw_exprs = lappend(fdw_exprs, offset);
			roles = lappend_int(roles, IQ_EXPR_OFFSET);
			limit_text = psprintf("%s + %s (offset)", limit_text,
								  iq_deparse_arg(root, (Expr *) offset));
		}
	}

	fdw_private = list_make5(makeInteger(ri->table.store->id),
							 makeInteger(q.kind),
							 roles,
							 makeInteger(ri->table.key_attno),
							 makeInteger(ri->table.value_attno));
	fdw_private = lappend(fdw_private, makeInteger(ri->table.value_type));
	fdw_private = lappend(fdw_private, makeString(iq_deparse_pushed(root, &ri->table, &q)));
	fdw_private = lappend(fdw_private, makeString(limit_text));
	fdw_private = lappend(fdw_private, iq_const_keys(&q));
	fdw_private = lappend(fdw_private, makeInteger(ri->table.key_type));
	fdw_private = lappend(fdw_private, makeInteger(ri->table.invalid_utf8));
	/* without pathkeys nothing above relies on key order: no merge needed */
	fdw_private = lappend(fdw_private, makeInteger(key_order_of(best_path->path.pathkeys)));
	Assert(list_length(fdw_private) == IQ_PRIV_COUNT);

	return make_foreignscan(tlist, local_exprs, baserel->relid, fdw_exprs,
							fdw_private, NIL, NIL, outer_plan);
}

/*
 * limit_is_safe
 *		May the store stop after LIMIT (+ OFFSET) rows?  Only when this scan
 *		alone feeds the Limit, row for row: one relation, every condition
 *		answered exactly by the store, nothing that adds or removes rows
 *		in between, and either no ORDER BY or one this scan's order meets.
 *		A range on a text key showing replaced keys is not exact: the store
 *		sends rows the local filter may drop (quals.c).
 */
static bool
limit_is_safe(PlannerInfo *root, RelOptInfo *baserel, const IqTableInfo *info,
			  IqKeyQuals *q, ForeignPath *path)
{
	Query	   *parse = root->parse;

	if (parse->limitCount == NULL || parse->limitOption != LIMIT_OPTION_COUNT)
		return false;
	if (!IsA(parse->limitCount, Const) &&
		!(IsA(parse->limitCount, Param) &&
		  ((Param *) parse->limitCount)->paramkind == PARAM_EXTERN))
		return false;
	if (parse->limitOffset &&
		!IsA(parse->limitOffset, Const) &&
		!(IsA(parse->limitOffset, Param) &&
		  ((Param *) parse->limitOffset)->paramkind == PARAM_EXTERN))
		return false;
	if (baserel->reloptkind != RELOPT_BASEREL ||
		bms_membership(root->all_baserels) != BMS_SINGLETON)
		return false;
	if (parse->groupClause || parse->groupingSets || parse->hasAggs ||
		parse->hasWindowFuncs || parse->distinctClause || parse->havingQual ||
		parse->setOperations || parse->hasTargetSRFs || parse->rowMarks)
		return false;
	if (q->local_only != NIL || path->path.param_info != NULL)
		return false;
	if (q->kind == IQ_SCAN_RANGE && IQ_KEY_REPLACED(info))
		return false;
	if (root->sort_pathkeys != NIL &&
		!pathkeys_contained_in(root->sort_pathkeys, path->path.pathkeys))
		return false;
	return true;
}

/*-------------------------------------------------------------------------
 * quals.c
 *	  Classification of conditions on the key: what the store answers.
 *
 * RocksDB compares keys as bytes.  An equality is the same comparison for
 * any deterministic collation; an order comparison only under the "C"
 * collation (or the pattern operators ~<~, which compare bytes), and
 * always on a bytea key.  What does not fit stays a local filter; what
 * fits stays one too, as a recheck.
 *
 * A text key that shows keys which are not UTF-8 with U+FFFD in their
 * place (invalid_utf8 'replace') no longer sorts as the store: a replaced
 * byte, NUL included, may sort below or above its U+FFFD.  A lower bound
 * could then leave out a row whose text is inside the range, so only
 * upper bounds go to the store, and ask.c widens them at run time
 * (IQ_KEY_REPLACED); an equality with a key holding U+FFFD reads every
 * partition at run time, since no one stored key can be named for it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/stratnum.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_opfamily.h"
#include "catalog/pg_type.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"

#include "src/quals.h"

/* What one clause can do for the store. */
typedef enum IqClauseRole
{
	IQ_ROLE_NONE = 0,
	IQ_ROLE_EQ,					/* key = arg */
	IQ_ROLE_ANY,				/* key = ANY (arg) */
	IQ_ROLE_LOWER,				/* key > arg, key >= arg */
	IQ_ROLE_UPPER				/* key < arg, key <= arg */
} IqClauseRole;

static IqClauseRole classify_clause(PlannerInfo *root, RelOptInfo *baserel,
									const IqTableInfo *info, Expr *clause,
									Expr **arg, bool *inclusive);
static bool usable_arg(PlannerInfo *root, RelOptInfo *baserel, Expr *arg);
static bool text_op_strategy(Oid opno, Oid inputcollid, int *strategy);
static bool key_op_strategy(const IqTableInfo *info, Oid opno, Oid inputcollid,
							int *strategy);

/*
 * iq_is_key_var
 *		A Var of baserel's key column, possibly relabelled (varchar to text).
 */
bool
iq_is_key_var(RelOptInfo *baserel, const IqTableInfo *info, Expr *expr)
{
	Var		   *var;

	while (expr && IsA(expr, RelabelType))
		expr = ((RelabelType *) expr)->arg;
	if (expr == NULL || !IsA(expr, Var) || info->key_attno == InvalidAttrNumber)
		return false;
	var = (Var *) expr;
	return var->varno == (int) baserel->relid &&
		var->varattno == info->key_attno &&
		var->varlevelsup == 0;
}

/*
 * usable_arg
 *		The other side of a key condition: evaluated once per scan (or per
 *		rescan), so it must not read this relation nor change while it runs.
 */
static bool
usable_arg(PlannerInfo *root, RelOptInfo *baserel, Expr *arg)
{
	if (contain_volatile_functions((Node *) arg))
		return false;
	if (bms_is_member(baserel->relid, pull_varnos(root, (Node *) arg)))
		return false;
	if (contain_agg_clause((Node *) arg) || contain_window_function((Node *) arg))
		return false;
	return true;
}

/*
 * text_op_strategy
 *		The btree strategy of a text-by-text operator, if comparing with it
 *		under inputcollid is comparing bytes, as the store does.
 */
static bool
text_op_strategy(Oid opno, Oid inputcollid, int *strategy)
{
	Oid			lefttype;
	Oid			righttype;

	if (op_in_opfamily(opno, TEXT_PATTERN_BTREE_FAM_OID))
	{
		/* ~<~ and friends, and =: bytewise whatever the collation */
		get_op_opfamily_properties(opno, TEXT_PATTERN_BTREE_FAM_OID, false,
								   strategy, &lefttype, &righttype);
		if (*strategy == BTEqualStrategyNumber &&
			OidIsValid(inputcollid) && !get_collation_isdeterministic(inputcollid))
			return false;
		return lefttype == TEXTOID && righttype == TEXTOID;
	}
	if (!op_in_opfamily(opno, TEXT_BTREE_FAM_OID))
		return false;
	get_op_opfamily_properties(opno, TEXT_BTREE_FAM_OID, false,
							   strategy, &lefttype, &righttype);
	if (lefttype != TEXTOID || righttype != TEXTOID || !OidIsValid(inputcollid))
		return false;
	if (*strategy == BTEqualStrategyNumber)
		return get_collation_isdeterministic(inputcollid);
	return lc_collate_is_c(inputcollid);
}

/*
 * key_op_strategy
 *		text_op_strategy for the table's key type: a bytea key compares
 *		bytes with bytea's own operators, whatever the collation.
 */
static bool
key_op_strategy(const IqTableInfo *info, Oid opno, Oid inputcollid,
				int *strategy)
{
	Oid			lefttype;
	Oid			righttype;

	if (!info->key_is_bytea)
		return text_op_strategy(opno, inputcollid, strategy);
	if (!op_in_opfamily(opno, BYTEA_BTREE_FAM_OID))
		return false;
	get_op_opfamily_properties(opno, BYTEA_BTREE_FAM_OID, false,
							   strategy, &lefttype, &righttype);
	return lefttype == BYTEAOID && righttype == BYTEAOID;
}

/*
 * classify_clause
 *		The role a clause can play for the store, and its other side.
 */
static IqClauseRole
classify_clause(PlannerInfo *root, RelOptInfo *baserel,
				const IqTableInfo *info, Expr *clause,
				Expr **arg, bool *inclusive)
{
	int			strategy;

	*inclusive = false;
	if (IsA(clause, OpExpr))
	{
		OpExpr	   *op = (OpExpr *) clause;
		Oid			opno = op->opno;
		Expr	   *left;
		Expr	   *right;

		if (list_length(op->args) != 2)
			return IQ_ROLE_NONE;
		left = linitial(op->args);
		right = lsecond(op->args);
		if (!iq_is_key_var(baserel, info, left))
		{
			/* 'a' < key is key > 'a' */
			if (!iq_is_key_var(baserel, info, right))
				return IQ_ROLE_NONE;
			opno = get_commutator(opno);
			if (!OidIsValid(opno))
				return IQ_ROLE_NONE;
			right = left;
		}
		if (!key_op_strategy(info, opno, op->inputcollid, &strategy) ||
			!usable_arg(root, baserel, right))
			return IQ_ROLE_NONE;

		*arg = right;
		switch (strategy)
		{
			case BTEqualStrategyNumber:
				return IQ_ROLE_EQ;
			case BTGreaterEqualStrategyNumber:
				*inclusive = true;
				/* FALLTHROUGH */
			case BTGreaterStrategyNumber:
				/* see the file header */
				return IQ_KEY_REPLACED(info) ? IQ_ROLE_NONE : IQ_ROLE_LOWER;
			case BTLessEqualStrategyNumber:
				*inclusive = true;
				/* FALLTHROUGH */
			case BTLessStrategyNumber:
				return IQ_ROLE_UPPER;
		}
		return IQ_ROLE_NONE;
	}

	if (IsA(clause, ScalarArrayOpExpr))
	{
		ScalarArrayOpExpr *saop = (ScalarArrayOpExpr *) clause;
		Expr	   *array;
		Oid			elemtype;

		if (!saop->useOr || list_length(saop->args) != 2 ||
			!iq_is_key_var(baserel, info, linitial(saop->args)))
			return IQ_ROLE_NONE;
		array = lsecond(saop->args);
		elemtype = get_element_type(exprType((Node *) array));
		if (info->key_is_bytea ? elemtype != BYTEAOID :
			(elemtype != TEXTOID && elemtype != VARCHAROID))
			return IQ_ROLE_NONE;
		if (!key_op_strategy(info, saop->opno, saop->inputcollid, &strategy) ||
			strategy != BTEqualStrategyNumber ||
			!usable_arg(root, baserel, array))
			return IQ_ROLE_NONE;
		*arg = array;
		return IQ_ROLE_ANY;
	}

	return IQ_ROLE_NONE;
}

/*
 * iq_classify_quals
 *		Choose what the store is asked: one equality (or else one IN list)
 *		as point lookups, else every bound as one range, else everything.
 */
void
iq_classify_quals(PlannerInfo *root, RelOptInfo *baserel,
				  const IqTableInfo *info, List *clauses, IqKeyQuals *out)
{
	RestrictInfo *eq = NULL;
	Expr	   *eq_arg = NULL;
	RestrictInfo *any = NULL;
	Expr	   *any_arg = NULL;
	List	   *bounds = NIL;
	ListCell   *lc;

	memset(out, 0, sizeof(*out));
	out->kind = IQ_SCAN_FULL;

	foreach(lc, clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);
		Expr	   *arg = NULL;
		bool		incl;

		if (rinfo->pseudoconstant)
			continue;
		switch (classify_clause(root, baserel, info, rinfo->clause, &arg, &incl))
		{
			case IQ_ROLE_EQ:
				if (eq == NULL)
				{
					eq = rinfo;
					eq_arg = arg;
				}
				break;
			case IQ_ROLE_ANY:
				if (any == NULL)
				{
					any = rinfo;
					any_arg = arg;
				}
				break;
			case IQ_ROLE_LOWER:
				out->lower = lappend(out->lower, arg);
				out->lower_incl = lappend_int(out->lower_incl, incl);
				bounds = lappend(bounds, rinfo);
				break;
			case IQ_ROLE_UPPER:
				out->upper = lappend(out->upper, arg);
				out->upper_incl = lappend_int(out->upper_incl, incl);
				bounds = lappend(bounds, rinfo);
				break;
			case IQ_ROLE_NONE:
				break;
		}
	}

	if (eq || any)
	{
		out->kind = IQ_SCAN_POINT;
		out->point = eq ? eq_arg : any_arg;
		out->point_is_array = (eq == NULL);
		out->pushed = list_make1(eq ? eq : any);
		out->lower = out->lower_incl = out->upper = out->upper_incl = NIL;
	}
	else if (bounds != NIL)
	{
		out->kind = IQ_SCAN_RANGE;
		out->pushed = bounds;
	}

	foreach(lc, clauses)
	{
		RestrictInfo *rinfo = lfirst_node(RestrictInfo, lc);

		if (!rinfo->pseudoconstant && !list_member_ptr(out->pushed, rinfo))
			out->local_only = lappend(out->local_only, rinfo);
	}
}

/*
 * iq_is_key_equality
 *		A join clause "key = other.col" that can drive one lookup per outer
 *		row.
 */
bool
iq_is_key_equality(PlannerInfo *root, RelOptInfo *baserel,
				   const IqTableInfo *info, RestrictInfo *rinfo)
{
	Expr	   *arg;
	bool		incl;

	return !rinfo->pseudoconstant &&
		classify_clause(root, baserel, info, rinfo->clause, &arg, &incl) == IQ_ROLE_EQ;
}

/*
 * iq_array_keys
 *		Non-null elements of a key array: a null never equals a key, so it
 *		is never asked for.
 */
Datum *
iq_array_keys(Datum array, int *nkeys)
{
	ArrayType  *arr = DatumGetArrayTypeP(array);
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			kept = 0;
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(ARR_ELEMTYPE(arr), &typlen, &typbyval, &typalign);
	deconstruct_array(arr, ARR_ELEMTYPE(arr), typlen, typbyval, typalign,
					  &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (!nulls[i])
			elems[kept++] = elems[i];
	*nkeys = kept;
	return elems;
}

/*-------------------------------------------------------------------------
 * deparse.c
 *	  What a scan asks the store, as text for EXPLAIN, made at plan time
 *	  while the planner can still name the columns of other relations.
 *
 * ruleutils cannot name a Var of another relation or an executor Param
 * without the finished plan, which an FDW's EXPLAIN callback does not get,
 * so those are named here from the planner's range table.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "lib/stringinfo.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/optimizer.h"
#include "parser/parsetree.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/ruleutils.h"

#include "src/deparse.h"
#include "src/quals.h"

static bool contain_param(Node *node, void *context);
static char *const_key_string(Datum key, Oid type);
static char *bytea_hex(Datum d);

/*
 * iq_deparse_arg
 *		The other side of a pushed-down condition, for EXPLAIN: a literal, a
 *		parameter, a column of another relation, or an expression.
 */
char *
iq_deparse_arg(PlannerInfo *root, Expr *arg)
{
	while (IsA(arg, RelabelType))
		arg = ((RelabelType *) arg)->arg;

	if (IsA(arg, Const))
	{
		Const	   *c = (Const *) arg;
		Oid			typout;
		bool		isvarlena;

		if (c->constisnull)
			return "NULL";
		if (c->consttype == INT8OID)
			return psprintf(INT64_FORMAT, DatumGetInt64(c->constvalue));
		if (c->consttype == BYTEAOID)	/* '\x..': hex digits, nothing to quote */
			return psprintf("'%s'", bytea_hex(c->constvalue));
		getTypeOutputInfo(c->consttype, &typout, &isvarlena);
		return quote_literal_cstr(OidOutputFunctionCall(typout, c->constvalue));
	}
	if (IsA(arg, Param) && ((Param *) arg)->paramkind == PARAM_EXTERN)
		return psprintf("$%d", ((Param *) arg)->paramid);
	if (IsA(arg, Param))
		return "(outer value)";
	if (IsA(arg, Var) && ((Var *) arg)->varlevelsup == 0)
	{
		Var		   *var = (Var *) arg;
		RangeTblEntry *rte = planner_rt_fetch(var->varno, root);

		return psprintf("%s.%s", quote_identifier(rte->eref->aliasname),
						quote_identifier(get_rte_attribute_name(rte, var->varattno)));
	}
	/* ruleutils needs a plan to name Vars and executor Params */
	if (!contain_var_clause((Node *) arg) && !contain_param((Node *) arg, NULL))
		return deparse_expression((Node *) arg, NIL, false, false);
	return "(expression)";
}

/*
 * iq_deparse_pushed
 *		What the store is asked, as a condition on the key column.
 */
char *
iq_deparse_pushed(PlannerInfo *root, const IqTableInfo *info, IqKeyQuals *q)
{
	StringInfoData buf;
	const char *key;
	ListCell   *lc1;
	ListCell   *lc2;

	if (q->kind == IQ_SCAN_FULL)
		return "";
	key = quote_identifier(get_attname(info->relid, info->key_attno, false));
	initStringInfo(&buf);

	if (q->kind == IQ_SCAN_POINT && !q->point_is_array)
		appendStringInfo(&buf, "%s = %s", key, iq_deparse_arg(root, q->point));
	else if (q->kind == IQ_SCAN_POINT)
	{
		List	   *keys = iq_const_keys(q);

		if (keys == NIL && !IsA(q->point, Const))
			appendStringInfo(&buf, "%s = ANY (%s)", key, iq_deparse_arg(root, q->point));
		else
		{
			appendStringInfo(&buf, "%s IN (", key);
			foreach(lc1, keys)
				appendStringInfo(&buf, "%s%s", foreach_current_index(lc1) ? ", " : "",
								 info->key_is_bytea
								 ? psprintf("'%s'", strVal(lfirst(lc1)))
								 : quote_literal_cstr(strVal(lfirst(lc1))));
			appendStringInfoChar(&buf, ')');
		}
	}
	else
	{
		forboth(lc1, q->lower, lc2, q->lower_incl)
			appendStringInfo(&buf, "%s%s %s %s", buf.len ? " AND " : "", key,
							 lfirst_int(lc2) ? ">=" : ">",
							 iq_deparse_arg(root, lfirst(lc1)));
		forboth(lc1, q->upper, lc2, q->upper_incl)
			appendStringInfo(&buf, "%s%s %s %s", buf.len ? " AND " : "", key,
							 lfirst_int(lc2) ? "<=" : "<",
							 iq_deparse_arg(root, lfirst(lc1)));
	}
	return buf.data;
}

/*
 * iq_const_keys
 *		The keys of a point lookup when all are constants (String nodes,
 *		nulls left out), so EXPLAIN can name their partitions: text as it
 *		is, bytea in its output form ('\x...'), since a String holds no NUL.
 */
List *
iq_const_keys(IqKeyQuals *q)
{
	Const	   *c;
	List	   *keys = NIL;
	Datum	   *elems;
	int			n;

	if (q->kind != IQ_SCAN_POINT || !IsA(q->point, Const))
		return NIL;
	c = (Const *) q->point;
	if (c->constisnull)
		return NIL;
	if (!q->point_is_array)
	{
		elems = &c->constvalue;
		n = 1;
	}
	else
		elems = iq_array_keys(c->constvalue, &n);

	for (int i = 0; i < n; i++)
		keys = lappend(keys, makeString(const_key_string(elems[i], q->point_is_array
														 ? get_element_type(c->consttype)
														 : c->consttype)));
	return keys;
}

/*
 * const_key_string
 *		One constant key for iq_const_keys.
 */
static char *
const_key_string(Datum key, Oid type)
{
	if (type == BYTEAOID)
		return bytea_hex(key);
	return TextDatumGetCString(key);
}

/*
 * bytea_hex
 *		A bytea in hex form, \x..., whatever bytea_output says: plans must
 *		not depend on a setting, and the form needs no quoting.
 */
static char *
bytea_hex(Datum d)
{
	bytea	   *b = DatumGetByteaPP(d);
	int			len = VARSIZE_ANY_EXHDR(b);
	char	   *out = palloc(len * 2 + 3);

	out[0] = '\\';
	out[1] = 'x';
	out[hex_encode(VARDATA_ANY(b), len, out + 2) + 2] = '\0';
	return out;
}

/*
 * contain_param
 *		Does an expression use a parameter of any kind?
 */
static bool
contain_param(Node *node, void *context)
{
	if (node == NULL)
		return false;
	if (IsA(node, Param))
		return true;
	return expression_tree_walker(node, contain_param, context);
}

/*-------------------------------------------------------------------------
 * plan.h
 *	  What the planner hands the executor and EXPLAIN in a ForeignScan.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_PLAN_H
#define IQ_PLAN_H

/* fdw_private of the ForeignScan, a List indexed by: */
typedef enum IqPrivateIndex
{
	IQ_PRIV_STORE = 0,			/* Integer: IqStoreId */
	IQ_PRIV_KIND,				/* Integer: IqScanKind */
	IQ_PRIV_ROLES,				/* IntList: IqExprRole of each fdw_exprs item */
	IQ_PRIV_KEY_ATTNO,			/* Integer: 0 if no key column */
	IQ_PRIV_VALUE_ATTNO,		/* Integer: 0 if no value column */
	IQ_PRIV_VALUE_TYPE,			/* Integer: type Oid of the value column */
	IQ_PRIV_PUSHED,				/* String: the pushed-down condition, or "" */
	IQ_PRIV_LIMIT,				/* String: the pushed-down limit, or "" */
	IQ_PRIV_CONST_KEYS,			/* List of String: constant point keys, or NIL */
	IQ_PRIV_KEY_TYPE,			/* Integer: type Oid of the key column */
	IQ_PRIV_INVALID_UTF8,		/* Integer: IqInvalidUtf8 of the table */
	IQ_PRIV_ORDERED,			/* Integer: IqKeyOrder the plan relies on */
	IQ_PRIV_COUNT
} IqPrivateIndex;

/* The order of rows a scan's plan relies on. */
typedef enum IqKeyOrder
{
	IQ_ORDER_NONE = 0,			/* any: no merge by key */
	IQ_ORDER_ASC,				/* key byte order */
	IQ_ORDER_DESC				/* descending: the stores read backwards */
} IqKeyOrder;

/* Role of each expression in fdw_exprs, evaluated when the scan starts. */
typedef enum IqExprRole
{
	IQ_EXPR_KEY = 0,			/* one key */
	IQ_EXPR_KEYS,				/* an array of keys */
	IQ_EXPR_LOWER,				/* key > it */
	IQ_EXPR_LOWER_INCL,			/* key >= it */
	IQ_EXPR_UPPER,				/* key < it */
	IQ_EXPR_UPPER_INCL,			/* key <= it */
	IQ_EXPR_LIMIT,				/* rows needed by the LIMIT above ... */
	IQ_EXPR_OFFSET				/* ... plus its OFFSET */
} IqExprRole;

/* in estimate.c: approximate rows of a store; negative when unknown */
struct IqTableInfo;
extern double iq_estimate_store_rows(const struct IqTableInfo *info);

#endif							/* IQ_PLAN_H */

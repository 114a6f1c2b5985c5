/*-------------------------------------------------------------------------
 * option.c
 *	  Validation of iq_fdw's options, and the meaning of a foreign table's
 *	  columns for the store behind it.
 *
 * The validator sees only option lists, never the table's columns, so the
 * column types are checked on first use (planning), with the same care.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "access/table.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/pg_locale.h"
#include "utils/rel.h"
#include "utils/varlena.h"

#include "src/option.h"

PG_FUNCTION_INFO_V1(iq_fdw_validator);

/* An option and the catalog of the object it belongs to. */
typedef struct IqOption
{
	const char *name;
	Oid			context;
} IqOption;

static const IqOption valid_options[] = {
	{"use_remote_estimate", ForeignServerRelationId},
	{"invalid_utf8", ForeignServerRelationId},
	{"store", ForeignTableRelationId},
	{"use_remote_estimate", ForeignTableRelationId},
	{"invalid_utf8", ForeignTableRelationId},
	{"field", AttributeRelationId},
	{NULL, InvalidOid}
};

static const char *nearest_name(const char *name, const char **candidates, int n);
static void check_option(DefElem *def, Oid context);
static void check_store_name(const char *name);
static IqInvalidUtf8 parse_invalid_utf8(DefElem *def);
static const char *valid_store_list(void);
static void check_key_column(IqTableInfo *info, Relation rel, Form_pg_attribute att);
static void check_value_column(IqTableInfo *info, Relation rel, Form_pg_attribute att);

/*
 * iq_fdw_validator
 *		Check the options of an iq_fdw object as they will be stored.
 *
 * Called with the complete list after CREATE or ALTER, so a required option
 * is checked here too.
 */
Datum
iq_fdw_validator(PG_FUNCTION_ARGS)
{
	List	   *options = untransformRelOptions(PG_GETARG_DATUM(0));
	Oid			catalog = PG_GETARG_OID(1);
	bool		have_store = false;
	ListCell   *lc;

	foreach(lc, options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		check_option(def, catalog);
		if (strcmp(def->defname, "store") == 0)
			have_store = true;
	}

	if (catalog == ForeignTableRelationId && !have_store)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_DYNAMIC_PARAMETER_VALUE_NEEDED),
				 errmsg("an iq_fdw foreign table needs the option \"store\""),
				 errhint("Add OPTIONS (store '<name>'); the stores are: %s.",
						 valid_store_list())));

	PG_RETURN_VOID();
}

/*
 * check_option
 *		One option: known in this context, and a value that makes sense.
 */
static void
check_option(DefElem *def, Oid context)
{
	const char *names[lengthof(valid_options)];
	int			n = 0;
	bool		known = false;

	for (const IqOption *opt = valid_options; opt->name; opt++)
	{
		if (opt->context != context)
			continue;
		names[n++] = opt->name;
		if (strcmp(opt->name, def->defname) == 0)
			known = true;
	}

	if (!known)
	{
		const char *nearest = nearest_name(def->defname, names, n);
		StringInfoData valid;

		initStringInfo(&valid);
		for (int i = 0; i < n; i++)
			appendStringInfo(&valid, "%s%s", i ? ", " : "", names[i]);

		if (nearest)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("Perhaps you meant the option \"%s\".", nearest)));
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", def->defname),
				 n > 0
				 ? errhint("Valid options in this context are: %s.", valid.data)
				 : errhint("There are no valid options in this context.")));
	}

	if (strcmp(def->defname, "store") == 0)
		check_store_name(defGetString(def));
	else if (strcmp(def->defname, "use_remote_estimate") == 0)
		(void) defGetBoolean(def);
	else if (strcmp(def->defname, "invalid_utf8") == 0)
		(void) parse_invalid_utf8(def);
	else if (strcmp(def->defname, "field") == 0)
	{
		const char *field = defGetString(def);

		if (strcmp(field, "key") != 0 && strcmp(field, "value") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"field\": \"%s\"", field),
					 errhint("A column is either the store's \"key\" or its \"value\".")));
	}
}

/*
 * check_store_name
 *		The store must be one of the topology's, named as in the seed.
 */
static void
check_store_name(const char *name)
{
	const char *names[IQ_NUM_STORES];
	const char *nearest;

	if (iq_store_by_name(name) != NULL)
		return;

	for (int i = 0; i < IQ_NUM_STORES; i++)
		names[i] = iq_stores[i].name;
	nearest = nearest_name(name, names, IQ_NUM_STORES);

	ereport(ERROR,
			(errcode(ERRCODE_FDW_TABLE_NOT_FOUND),
			 errmsg("unknown store \"%s\"", name),
			 nearest
			 ? errhint("Perhaps you meant the store \"%s\".", nearest)
			 : errhint("The stores are: %s.", valid_store_list())));
}

/*
 * parse_invalid_utf8
 *		'replace' (the default) or 'error'.
 */
static IqInvalidUtf8
parse_invalid_utf8(DefElem *def)
{
	static const char *const values[] = {"replace", "error"};
	const char *value = defGetString(def);
	const char *nearest;

	if (strcmp(value, "replace") == 0)
		return IQ_INVALID_UTF8_REPLACE;
	if (strcmp(value, "error") == 0)
		return IQ_INVALID_UTF8_ERROR;

	nearest = nearest_name(value, (const char **) values, lengthof(values));
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
			 errmsg("invalid value for option \"invalid_utf8\": \"%s\"", value),
			 nearest
			 ? errhint("Perhaps you meant \"%s\".", nearest)
			 : errhint("Valid values are \"replace\" (the default: U+FFFD in place of bytes that are not UTF-8) and \"error\".")));
	return IQ_INVALID_UTF8_REPLACE;		/* not reached */
}

/*
 * valid_store_list
 *		The store names for a hint.
 */
static const char *
valid_store_list(void)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; i < IQ_NUM_STORES; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", iq_stores[i].name);
	return buf.data;
}

/*
 * nearest_name
 *		The candidate closest to a misspelt name, or NULL if none is close:
 *		two edits, or a third of the name, as a typo would be.
 */
static const char *
nearest_name(const char *name, const char **candidates, int n)
{
	const char *best = NULL;
	int			best_d = Max(2, (int) strlen(name) / 3) + 1;

	for (int i = 0; i < n; i++)
	{
		int			d = varstr_levenshtein(name, strlen(name),
										   candidates[i], strlen(candidates[i]),
										   1, 1, 1, true);

		if (d < best_d)
		{
			best = candidates[i];
			best_d = d;
		}
	}
	return best;
}

/*
 * iq_get_table_info
 *		The store of a foreign table and the columns that hold its key and
 *		value, with their types checked against what the store holds.
 *
 * A column is the key if named "key" (or OPTIONS (field 'key')), the value
 * if named "value" or as the store's value ("count"), or with OPTIONS
 * (field 'value').  Any other column is a mistake worth an error.
 */
void
iq_get_table_info(Oid relid, IqTableInfo *info)
{
	ForeignTable *table = GetForeignTable(relid);
	ForeignServer *server = GetForeignServer(table->serverid);
	Relation	rel;
	TupleDesc	tupdesc;
	ListCell   *lc;

	memset(info, 0, sizeof(*info));
	info->relid = relid;
	info->use_remote_estimate = true;

	foreach(lc, server->options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (strcmp(def->defname, "use_remote_estimate") == 0)
			info->use_remote_estimate = defGetBoolean(def);
		else if (strcmp(def->defname, "invalid_utf8") == 0)
			info->invalid_utf8 = parse_invalid_utf8(def);
	}
	foreach(lc, table->options)
	{
		DefElem    *def = (DefElem *) lfirst(lc);

		if (strcmp(def->defname, "store") == 0)
			info->store = iq_store_by_name(defGetString(def));
		else if (strcmp(def->defname, "use_remote_estimate") == 0)
			info->use_remote_estimate = defGetBoolean(def);
		else if (strcmp(def->defname, "invalid_utf8") == 0)
			info->invalid_utf8 = parse_invalid_utf8(def);
	}
	if (info->store == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_DYNAMIC_PARAMETER_VALUE_NEEDED),
				 errmsg("foreign table \"%s\" names no known store",
						get_rel_name(relid)),
				 errhint("Set OPTIONS (store '<name>'); the stores are: %s.",
						 valid_store_list())));

	rel = table_open(relid, AccessShareLock);
	tupdesc = RelationGetDescr(rel);
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		const char *field = NULL;
		const char *name = NameStr(att->attname);

		if (att->attisdropped)
			continue;
		foreach(lc, GetForeignColumnOptions(relid, att->attnum))
		{
			DefElem    *def = (DefElem *) lfirst(lc);

			if (strcmp(def->defname, "field") == 0)
				field = defGetString(def);
		}
		if (field == NULL)
		{
			if (strcmp(name, "key") == 0)
				field = "key";
			else if (strcmp(name, "value") == 0 ||
					 strcmp(name, info->store->value_column) == 0)
				field = "value";
			else
				ereport(ERROR,
						(errcode(ERRCODE_FDW_COLUMN_NAME_NOT_FOUND),
						 errmsg("column \"%s\" of foreign table \"%s\" is not a field of store \"%s\"",
								name, RelationGetRelationName(rel),
								info->store->name),
						 errhint("Name the columns key and %s, or set the column option field to 'key' or 'value'.",
								 info->store->value_column)));
		}

		if (strcmp(field, "key") == 0)
			check_key_column(info, rel, att);
		else
			check_value_column(info, rel, att);
	}
	table_close(rel, AccessShareLock);
}

/*
 * check_key_column
 *		Keys are strings: text or varchar, or bytea for the bytes as they
 *		are.  Only a "C" collation orders text as the store does, which
 *		range pushdown needs; bytea always does.
 */
static void
check_key_column(IqTableInfo *info, Relation rel, Form_pg_attribute att)
{
	if (info->key_attno != InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INCONSISTENT_DESCRIPTOR_INFORMATION),
				 errmsg("foreign table \"%s\" has more than one key column",
						RelationGetRelationName(rel)),
				 errhint("Keep one column named key, or with the option field 'key'.")));
	if (att->atttypid != TEXTOID && att->atttypid != VARCHAROID &&
		att->atttypid != BYTEAOID)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("key column \"%s\" of foreign table \"%s\" has type %s, but the keys of store \"%s\" are strings",
						NameStr(att->attname), RelationGetRelationName(rel),
						format_type_be(att->atttypid), info->store->name),
				 errhint("Declare the key column as text COLLATE \"C\" (or bytea for the raw bytes).")));

	info->key_attno = att->attnum;
	info->key_type = att->atttypid;
	info->key_collation = att->attcollation;
	info->key_is_bytea = (att->atttypid == BYTEAOID);
	info->key_is_c = info->key_is_bytea ||
		(OidIsValid(att->attcollation) && lc_collate_is_c(att->attcollation));
}

/*
 * check_value_column
 *		The value column must hold every value the store can have: counts
 *		are 8-byte longs, customers are strings.
 */
static void
check_value_column(IqTableInfo *info, Relation rel, Form_pg_attribute att)
{
	Oid			type = att->atttypid;
	bool		ok;

	if (info->value_attno != InvalidAttrNumber)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INCONSISTENT_DESCRIPTOR_INFORMATION),
				 errmsg("foreign table \"%s\" has more than one value column",
						RelationGetRelationName(rel)),
				 errhint("Keep one column named %s, or with the option field 'value'.",
						 info->store->value_column)));

	if (info->store->value_kind == IQ_VALUE_INT64)
		ok = (type == INT8OID || type == NUMERICOID ||
			  type == TEXTOID || type == VARCHAROID);
	else
		ok = (type == TEXTOID || type == VARCHAROID || type == BYTEAOID);

	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("column \"%s\" of foreign table \"%s\" has type %s, which cannot hold the values of store \"%s\"",
						NameStr(att->attname), RelationGetRelationName(rel),
						format_type_be(type), info->store->name),
				 info->store->value_kind == IQ_VALUE_INT64
				 ? errdetail("The store holds 8-byte counts.")
				 : errdetail("The store holds strings."),
				 info->store->value_kind == IQ_VALUE_INT64
				 ? errhint("Declare the column as bigint (or numeric or text).")
				 : errhint("Declare the column as text (or varchar or bytea).")));

	info->value_attno = att->attnum;
	info->value_type = type;
}

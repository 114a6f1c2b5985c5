/*-------------------------------------------------------------------------
 * import.c
 *	  IMPORT FOREIGN SCHEMA: one foreign table per store, as in the seed.
 *
 * The remote schema name is not looked at: every instance holds the same
 * stores.  Keys get the "C" collation so that key ranges can be pushed
 * down (RocksDB orders keys as bytes).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"

#include "common/stores.h"
#include "src/iq_fdw.h"

static bool wanted(ImportForeignSchemaStmt *stmt, const char *table);

/*
 * iqImportForeignSchema
 *		CREATE FOREIGN TABLE statements for the stores LIMIT TO / EXCEPT let
 *		through; core puts them in the local schema.
 */
List *
iqImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
	ForeignServer *server = GetForeignServer(serverOid);
	List	   *commands = NIL;

	for (int i = 0; i < IQ_NUM_STORES; i++)
	{
		const IqStoreInfo *store = &iq_stores[i];
		StringInfoData buf;

		if (!wanted(stmt, store->table_name))
			continue;

		initStringInfo(&buf);
		appendStringInfo(&buf,
						 "CREATE FOREIGN TABLE %s (key text COLLATE \"C\", %s %s) SERVER %s OPTIONS (store %s)",
						 quote_identifier(store->table_name),
						 quote_identifier(store->value_column),
						 store->value_kind == IQ_VALUE_INT64 ? "bigint" : "text",
						 quote_identifier(server->servername),
						 quote_literal_cstr(store->name));
		commands = lappend(commands, buf.data);
	}
	return commands;
}

/*
 * wanted
 *		LIMIT TO and EXCEPT name local tables.
 */
static bool
wanted(ImportForeignSchemaStmt *stmt, const char *table)
{
	ListCell   *lc;
	bool		listed = false;

	foreach(lc, stmt->table_list)
	{
		RangeVar   *rv = (RangeVar *) lfirst(lc);

		if (strcmp(rv->relname, table) == 0)
			listed = true;
	}
	switch (stmt->list_type)
	{
		case FDW_IMPORT_SCHEMA_LIMIT_TO:
			return listed;
		case FDW_IMPORT_SCHEMA_EXCEPT:
			return !listed;
		case FDW_IMPORT_SCHEMA_ALL:
			break;
	}
	return true;
}

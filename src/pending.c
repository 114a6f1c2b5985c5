/*
 * pending.c: TEMPORARY weak definitions of the contract functions, so the
 * library loads while the modules that implement them are being written in
 * parallel.  Every real definition overrides these.  Deleted before release.
 */
#include "postgres.h"

#include "iq_fdw.h"
#include "fetch.h"
#include "servers.h"
#include "store.h"
#include "ownership.h"

#define PENDING(what) ereport(ERROR, (errcode(ERRCODE_FEATURE_NOT_SUPPORTED), errmsg("iq_fdw: %s is not built yet", what)))

__attribute__((weak)) void iqGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid) { PENDING("planning"); }
__attribute__((weak)) void iqGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid) { PENDING("planning"); }
__attribute__((weak)) ForeignScan *iqGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid, ForeignPath *best_path, List *tlist, List *scan_clauses, Plan *outer_plan) { PENDING("planning"); return NULL; }
__attribute__((weak)) void iqBeginForeignScan(ForeignScanState *node, int eflags) { PENDING("scan"); }
__attribute__((weak)) TupleTableSlot *iqIterateForeignScan(ForeignScanState *node) { PENDING("scan"); return NULL; }
__attribute__((weak)) void iqReScanForeignScan(ForeignScanState *node) { PENDING("scan"); }
__attribute__((weak)) void iqEndForeignScan(ForeignScanState *node) { }
__attribute__((weak)) void iqExplainForeignScan(ForeignScanState *node, ExplainState *es) { }
__attribute__((weak)) List *iqImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid) { PENDING("import"); return NIL; }

extern PGDLLEXPORT Datum iq_fdw_validator(PG_FUNCTION_ARGS);
__attribute__((weak)) const Pg_finfo_record *pg_finfo_iq_fdw_validator(void);
__attribute__((weak)) const Pg_finfo_record *pg_finfo_iq_fdw_validator(void) { static const Pg_finfo_record r = {1}; return &r; }
__attribute__((weak)) Datum iq_fdw_validator(PG_FUNCTION_ARGS) { PG_RETURN_VOID(); }

__attribute__((weak)) IqFetch *iq_fetch_start(const IqWireRequest *req, const IqTarget *targets, int ntargets) { PENDING("fetch"); return NULL; }
__attribute__((weak)) bool iq_fetch_next(IqFetch *fetch, IqFetchRow *row) { return false; }
__attribute__((weak)) int iq_fetch_positions(IqFetch *fetch, const IqWirePosition **positions) { return 0; }
__attribute__((weak)) void iq_fetch_end(IqFetch *fetch) { }
__attribute__((weak)) void iq_fetch_cleanup_on_abort(void) { }

__attribute__((weak)) bool iq_http_start(const IqServerConfig *config, char **err) { *err = strdup("HTTP server not built yet"); return false; }
__attribute__((weak)) void iq_http_stop(void) { }
__attribute__((weak)) bool iq_local_server_start(const IqServerConfig *config, char **err) { *err = strdup("local server not built yet"); return false; }
__attribute__((weak)) void iq_local_server_stop(void) { }

__attribute__((weak)) void iq_ownership_snapshot(IqOwnership *out) { memset(out, 0, sizeof(*out)); out->self = -1; }
__attribute__((weak)) int iq_store_held_partitions(int *partitions, int max) { return 0; }
__attribute__((weak)) int iq_store_partition_count(void) { return 0; }
__attribute__((weak)) IqReadStatus iq_store_get(IqStoreId store, int partition, const char *key, size_t key_len, char **value, size_t *value_len, char **err) { return IQ_READ_NOT_HELD; }
__attribute__((weak)) IqStoreCursor *iq_store_cursor_open(IqStoreId store, const int *partitions, int npartitions, const char *lower, size_t lower_len, bool lower_incl, const char *upper, size_t upper_len, bool upper_incl, IqReadStatus *status, char **err) { *status = IQ_READ_NOT_HELD; return NULL; }
__attribute__((weak)) bool iq_store_cursor_next(IqStoreCursor *cursor, IqStoreRow *row) { return false; }
__attribute__((weak)) IqReadStatus iq_store_cursor_close(IqStoreCursor *cursor, char **err) { return IQ_READ_OK; }
__attribute__((weak)) uint64_t iq_store_approximate_count(IqStoreId store, const int *partitions, int npartitions) { return 0; }
__attribute__((weak)) bool iq_store_position(int partition, IqPartitionPosition *pos) { return false; }

/*-------------------------------------------------------------------------
 * iq_fdw.c
 *	  Entry points of iq_fdw: module load (settings, shared memory, the
 *	  stream worker) and the foreign data wrapper's routine table.
 *
 * The callbacks themselves live in src/: planning in plan.c, execution in
 * scan.c, EXPLAIN in explain.c, options in option.c, IMPORT FOREIGN SCHEMA
 * in import.c.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "foreign/fdwapi.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "src/iq_fdw.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(iq_fdw_handler);

static void register_worker(void);

/*
 * _PG_init
 *		Refuse to load outside shared_preload_libraries: the worker and the
 *		shared segment can only be set up by the postmaster.
 */
void
_PG_init(void)
{
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("iq_fdw must be loaded via shared_preload_libraries"),
				 errhint("Add iq_fdw to shared_preload_libraries in postgresql.conf and restart the server.")));

	iq_define_settings();
	iq_shmem_request();
	register_worker();
}

/*
 * register_worker
 *		One supervisor per instance, restarted by the postmaster; it runs
 *		the stream engine in a process of its own (worker/supervisor.c).
 */
static void
register_worker(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 5;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "iq_fdw");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "iq_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "iq_fdw supervisor");
	snprintf(worker.bgw_type, BGW_MAXLEN, "iq_fdw supervisor");
	RegisterBackgroundWorker(&worker);
}

/*
 * iq_fdw_handler
 *		The routine table of the foreign data wrapper.
 */
Datum
iq_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	/* planning (plan.c) */
	routine->GetForeignRelSize = iqGetForeignRelSize;
	routine->GetForeignPaths = iqGetForeignPaths;
	routine->GetForeignPlan = iqGetForeignPlan;

	/* execution (scan.c) */
	routine->BeginForeignScan = iqBeginForeignScan;
	routine->IterateForeignScan = iqIterateForeignScan;
	routine->ReScanForeignScan = iqReScanForeignScan;
	routine->EndForeignScan = iqEndForeignScan;

	/* EXPLAIN (explain.c) */
	routine->ExplainForeignScan = iqExplainForeignScan;

	/* IMPORT FOREIGN SCHEMA (import.c) */
	routine->ImportForeignSchema = iqImportForeignSchema;

	PG_RETURN_POINTER(routine);
}

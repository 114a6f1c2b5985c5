/*-------------------------------------------------------------------------
 * iq_fdw.h
 *	  The foreign data wrapper's modules, as a table of contents.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FDW_H
#define IQ_FDW_H

#include "foreign/fdwapi.h"
#include "commands/explain.h"
#include "nodes/pathnodes.h"

/* in plan.c */
extern void iqGetForeignRelSize(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid);
extern void iqGetForeignPaths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid);
extern ForeignScan *iqGetForeignPlan(PlannerInfo *root, RelOptInfo *baserel,
									 Oid foreigntableid, ForeignPath *best_path,
									 List *tlist, List *scan_clauses, Plan *outer_plan);

/* in scan.c */
extern void iqBeginForeignScan(ForeignScanState *node, int eflags);
extern TupleTableSlot *iqIterateForeignScan(ForeignScanState *node);
extern void iqReScanForeignScan(ForeignScanState *node);
extern void iqEndForeignScan(ForeignScanState *node);

/* in explain.c */
extern void iqExplainForeignScan(ForeignScanState *node, ExplainState *es);

/* in import.c */
extern List *iqImportForeignSchema(ImportForeignSchemaStmt *stmt, Oid serverOid);

#endif							/* IQ_FDW_H */

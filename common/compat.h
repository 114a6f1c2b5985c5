/*-------------------------------------------------------------------------
 * compat.h
 *	  What differs between the PostgreSQL major versions iq_fdw builds
 *	  against (15 and 17), in one place: the rest of the code calls the
 *	  names below and never tests PG_VERSION_NUM itself.
 *
 * Differences between versions of librdkafka or RocksDB are not here: each
 * is tested in the one file that configures the library.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_COMPAT_H
#define IQ_COMPAT_H

#include "optimizer/pathnode.h"

/*
 * iq_create_foreignscan_path: create_foreignscan_path for a scan of a base
 * relation.  PostgreSQL 17 added fdw_restrictinfo (the clauses a join or
 * upper path enforces remotely); a base relation's scan has none.
 */
#if PG_VERSION_NUM >= 170000
#define iq_create_foreignscan_path(root, rel, target, rows, startup, total, \
								   pathkeys, required_outer, outerpath, private) \
	create_foreignscan_path((root), (rel), (target), (rows), (startup), (total), \
							(pathkeys), (required_outer), (outerpath), NIL, (private))
#else
#define iq_create_foreignscan_path(root, rel, target, rows, startup, total, \
								   pathkeys, required_outer, outerpath, private) \
	create_foreignscan_path((root), (rel), (target), (rows), (startup), (total), \
							(pathkeys), (required_outer), (outerpath), (private))
#endif

/*
 * The memory of a GUC check hook's "extra": PostgreSQL 16 moved GUC memory
 * into a context of its own (guc_malloc, freed with pfree), before it was
 * malloc'd and free()d.
 */
#if PG_VERSION_NUM >= 160000
#define iq_guc_malloc(size) guc_malloc(LOG, (size))
#else
#define iq_guc_malloc(size) malloc(size)
#endif

#endif							/* IQ_COMPAT_H */

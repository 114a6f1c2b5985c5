/*-------------------------------------------------------------------------
 * fetch.h
 *	  Backend side of reads: ask the instances that hold the partitions
 *	  (this one over its local socket, others over an HTTP connection
 *	  upgraded to the same stream), in parallel, and hand back their rows
 *	  merged in key order.
 *
 * Every remote call has iq_fdw.peer_timeout (for connecting and the first
 * byte of the answer, then for the longest wait without progress: a
 * complete row, or 64 kB; see wait_for in fetch_read.c) and answers query
 * cancel (statement_timeout, pg_cancel_backend) within a fraction of a second;
 * a target that cannot be read fails the whole fetch with an error naming
 * the instance and the partitions, keys or range it was asked for: a
 * result is never silently partial.  Partitions beyond iq_fdw.max_lag fail
 * (or wait, per iq_fdw.lag_policy).  Connections are kept per backend and
 * reused across queries.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FETCH_H
#define IQ_FETCH_H

#include "common/shmem.h"
#include "common/wire.h"

/* One instance to ask, and for which partitions. */
typedef struct IqTarget
{
	char		host[IQ_HOST_LEN];
	int			port;
	bool		is_local;		/* use the local socket */
	bool		standby;		/* a standby replica it keeps: IQ_FLAG_STANDBY */
	int			npartitions;
	uint16		partitions[IQ_MAX_PARTITIONS];
} IqTarget;

/*
 * A row: its bytes lie in the fetch's receive buffer, valid until the next
 * iq_fetch_next or iq_fetch_end (copy what must outlive that); not
 * NUL-terminated.
 */
typedef struct IqFetchRow
{
	char	   *key;
	int			key_len;
	char	   *value;
	int			value_len;		/* -1 for null */

	/*
	 * The byte before key and before value is the caller's to overwrite
	 * until the next row (the last of its length on the wire, read by now):
	 * room for a short varlena header, so a datum needs no copy.
	 */
	bool		header_room;
} IqFetchRow;

typedef struct IqFetch IqFetch;

/*
 * Start the request on all targets at once.  req's partitions are filled
 * in per target; for IQ_OP_GET, each target is sent only the keys whose
 * partition it holds.
 */
extern IqFetch *iq_fetch_start(const IqWireRequest *req,
							   const IqTarget *targets, int ntargets);

/* Next row in key order over all targets; false at the end. */
extern bool iq_fetch_next(IqFetch *fetch, IqFetchRow *row);

/*
 * The caller needs no order (a scan whose plan promised none): rows are
 * handed out a source at a time, without comparing keys.
 */
extern void iq_fetch_any_order(IqFetch *fetch);

/* Positions reported by all targets (valid once the first row or end is seen). */
extern int	iq_fetch_positions(IqFetch *fetch, const IqWirePosition **positions);

extern void iq_fetch_end(IqFetch *fetch);

/*
 * Where partition p's answer came from (valid once the first row or end is
 * seen): the target, standby set when it was a standby replica, with its
 * lag in *lag; NULL if no source answered for p.
 */
extern const IqTarget *iq_fetch_partition_source(IqFetch *fetch, int p, int64 *lag);

/* "partition 2 from localhost:5402, lag 0, ..." of the answers standbys gave; NULL if none */
extern char *iq_fetch_standby_summary(IqFetch *fetch);

/* Next batches asked of sources whose share of a LIMIT ran out (fetch_request.c) */
extern int64 iq_fetch_next_batches(IqFetch *fetch);

/* Abort hook: frees transfers of a fetch interrupted by an error. */
extern void iq_fetch_cleanup_on_abort(void);

#endif							/* IQ_FETCH_H */

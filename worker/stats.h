/*-------------------------------------------------------------------------
 * stats.h
 *	  The worker's per-partition progress, published to shared memory
 *	  (stats.c).  Main thread of the worker only.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_STATS_H
#define IQ_WORKER_STATS_H

#include "common/shmem.h"

extern void iq_stats_publish(void);
extern void iq_stats_assigned(IqPartitionStats *stats);
extern void iq_stats_clear(void);

#endif							/* IQ_WORKER_STATS_H */

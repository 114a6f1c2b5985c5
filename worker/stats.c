/*-------------------------------------------------------------------------
 * stats.c
 *	  Publish the worker's per-partition progress to shared memory.
 *
 * Called by the main thread once per batch (and during restores), so the
 * LWLock is taken a few times a second, not per record.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker.h"

/*
 * iq_stats_publish
 *		Copy every partition's counters into iq_shared.
 */
void
iq_stats_publish(void)
{
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	iq_shared->partition_count = iq_w->partition_count;
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (p < iq_w->partition_count)
			iq_shared->partitions[p] = part->stats;
		else
			memset(&iq_shared->partitions[p], 0, sizeof(IqPartitionStats));
	}
	LWLockRelease(iq_shared->lock);
}

/*
 * iq_stats_clear
 *		Nothing held: on teardown of the pipeline and at exit.
 */
void
iq_stats_clear(void)
{
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		iq_w->parts[p].assigned = false;
		iq_w->parts[p].stats.assigned = false;
		iq_w->parts[p].stats.restoring = false;
	}
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		iq_shared->partitions[p].assigned = false;
		iq_shared->partitions[p].restoring = false;
	}
	LWLockRelease(iq_shared->lock);
}

/*-------------------------------------------------------------------------
 * stats.c
 *	  Publish the worker's per-partition progress to shared memory.
 *
 * Called by the main thread once per batch (and during restores), so the
 * seqlock is written a few times a second, not per record.
 *
 * Counters of what was processed and dropped belong to the worker's
 * lifetime, not to one assignment: a rebalance that moves a partition away
 * and back (or revokes and assigns it again) keeps them, so a rate read
 * from two samples is never thrown off by a rebalance in between.  Only a
 * restart of the worker (server restart, crash, a worker setting changed)
 * starts them from zero.  Offsets and restore progress describe the
 * current assignment and start over with it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/state.h"
#include "worker/stats.h"

/*
 * iq_stats_publish
 *		Copy every partition's counters, and the restore under way, into
 *		iq_shared.
 */
void
iq_stats_publish(void)
{
	iq_shared_write_begin();
	iq_shared->partition_count = iq_w->partition_count;
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (p < iq_w->partition_count)
			iq_shared->partitions[p] = part->stats;
		else
			memset(&iq_shared->partitions[p], 0, sizeof(IqPartitionStats));
	}
	iq_shared->restore = iq_w->restore;
	iq_shared_write_end();
}

/*
 * iq_stats_assigned
 *		A partition (re)assigned: its positions and restore progress start
 *		over, its counters go on.
 */
void
iq_stats_assigned(IqPartitionStats *ps)
{
	ps->assigned = true;
	ps->restoring = true;
	ps->customer_offset = 0;
	ps->customer_end = 0;
	ps->order_offset = 0;
	ps->order_end = 0;
	ps->changelog_offset = 0;
	ps->restored_records = 0;
	ps->restore_total = 0;
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
		iq_w->parts[p].stats.standby = false;
	}
	iq_shared_write_begin();
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		iq_shared->partitions[p].assigned = false;
		iq_shared->partitions[p].restoring = false;
		iq_shared->partitions[p].standby = false;
	}
	iq_w->restore.running = false;
	iq_shared->restore.running = false;
	iq_shared_write_end();
}

/*-------------------------------------------------------------------------
 * owners.c
 *	  Partition ownership as a backend sees it.
 *
 * The worker publishes the consumer group's assignment in shared memory;
 * a read copies it once (under LW_SHARED) and routes from the copy.  A
 * partition without an owner (a rebalance, or no instance running) is
 * waited for a bounded time, then the query fails: a read never skips a
 * partition silently.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "utils/timestamp.h"

#include "common/partitioner.h"
#include "common/settings.h"
#include "src/owners.h"

/* Between two looks at the shared state while waiting for an owner. */
#define IQ_OWNERSHIP_POLL_MS	20

static int	first_missing(const IqOwnerView *o, const bool *needed,
						  bool count_only);

/*
 * iq_ownership_read
 *		Copy what routing needs from the shared segment.
 */
void
iq_ownership_read(IqOwnerView *o)
{
	uint32		seq;

	iq_shmem_attach();
	do
	{
		seq = iq_shared_read_begin();
		o->generation = iq_shared->generation;
		o->state = iq_shared->state;
		memcpy(o->message, iq_shared->message, IQ_MESSAGE_LEN);
		o->partition_count = Max(0, Min(iq_shared->partition_count, IQ_MAX_PARTITIONS));
		o->nmembers = Max(0, Min(iq_shared->nmembers, IQ_MAX_MEMBERS));
		memcpy(o->members, iq_shared->members, sizeof(IqMember) * o->nmembers);
		memcpy(o->owner, iq_shared->owner, sizeof(int16) * IQ_MAX_PARTITIONS);
	} while (!iq_shared_read_ok(seq));
	o->message[IQ_MESSAGE_LEN - 1] = '\0';
	for (int m = 0; m < o->nmembers; m++)
		o->members[m].host[IQ_HOST_LEN - 1] = '\0';
}

/*
 * first_missing
 *		The first needed partition with no usable owner; -1 if none, and
 *		IQ_MAX_PARTITIONS when even the partition count is unknown.
 */
static int
first_missing(const IqOwnerView *o, const bool *needed, bool count_only)
{
	if (o->partition_count <= 0)
		return IQ_MAX_PARTITIONS;
	if (count_only)
		return -1;
	for (int p = 0; p < o->partition_count; p++)
	{
		int			m = o->owner[p];

		if (needed && !needed[p])
			continue;
		if (m < 0 || m >= o->nmembers || o->members[m].host[0] == '\0')
			return p;
	}
	return -1;
}

/*
 * iq_ownership_wait
 *		Wait, interruptibly, until every needed partition has an owner.
 *
 * needed is indexed by partition under the partition count of *o; if the
 * count changes while waiting the caller's partitions would be wrong, so
 * that is an error too (topics are not repartitioned under a running
 * application).  A count of none is no change: the worker is starting
 * again (killed, its pipeline rebuilt) and knows no partitions yet.
 */
void
iq_ownership_wait(IqOwnerView *o, const bool *needed, bool count_only,
				  const char *store, const char *what)
{
	TimestampTz start = GetCurrentTimestamp();
	int			count = o->partition_count;
	int			missing;

	while ((missing = first_missing(o, needed, count_only)) >= 0)
	{
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(),
									   iq_ownership_wait_ms))
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IQ_OWNERSHIP_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		iq_ownership_read(o);
		/* none is a worker starting again: it learns the same count back */
		if (needed && count > 0 && o->partition_count > 0 &&
			o->partition_count != count)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
					 errmsg("the partition count of store \"%s\" changed from %d to %d during a read",
							store, count, o->partition_count),
					 errhint("Run the query again.")));
	}

	if (missing == IQ_MAX_PARTITIONS && o->state == IQ_WORKER_RESTARTING)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("cannot read store \"%s\": the stream engine of this instance is restarting",
						store),
				 errdetail("%s; waited %d ms.", o->message, iq_ownership_wait_ms),
				 errhint("Its supervisor starts it again by itself; SELECT * FROM iq_worker() shows its restarts and how the last one ended.")));
	if (missing == IQ_MAX_PARTITIONS)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("cannot read store \"%s\": the stream worker of this instance knows no partitions",
						store),
				 errdetail("The worker is %s%s%s; waited %d ms.",
						   iq_worker_state_name(o->state),
						   o->message[0] ? ": " : "", o->message,
						   iq_ownership_wait_ms),
				 errhint("Check SELECT * FROM iq_worker(); the worker may be starting, or unable to reach Kafka.")));
	if (missing >= 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("no instance owns partition %d of store \"%s\", needed for %s",
						missing, store, what),
				 errdetail("Waited %d ms for an owner; the worker of this instance is %s%s%s.",
						   iq_ownership_wait_ms, iq_worker_state_name(o->state),
						   o->message[0] ? ": " : "", o->message),
				 errhint("The consumer group is rebalancing, or no instance of the application runs; see iq_instances(), or raise iq_fdw.ownership_wait.")));
}

/*
 * owner_differs
 *		Whether the view routes some needed partition to another instance
 *		than the one asked for it.
 */
static bool
owner_differs(const IqOwnerView *o, const bool *needed,
			  const IqTarget *asked, int nasked)
{
	for (int t = 0; t < nasked; t++)
		for (int i = 0; i < asked[t].npartitions; i++)
		{
			int			p = asked[t].partitions[i];
			int			m = o->owner[p];

			if (!needed[p] || m < 0 || m >= o->nmembers)
				continue;
			if (strcmp(o->members[m].host, asked[t].host) != 0 ||
				o->members[m].port != asked[t].port)
				return true;
		}
	return false;
}

/*
 * iq_ownership_wait_change
 *		After an instance answered that it no longer holds what it was
 *		asked, or could not be reached: wait, up to wait_ms, for a view
 *		that routes differently, with an owner for every needed partition.
 *
 * "Differently" is another owner for one of the partitions asked, or a
 * new generation (the group settled again, possibly on the same owner,
 * which then holds the partition once more).  False if nothing changed in
 * time; the caller then fails with the owner's answer.
 */
bool
iq_ownership_wait_change(IqOwnerView *o, uint64 asked_generation, int wait_ms,
						 const bool *needed, const IqTarget *asked, int nasked)
{
	TimestampTz start = GetCurrentTimestamp();
	int			count = o->partition_count;

	for (;;)
	{
		if ((o->generation != asked_generation ||
			 owner_differs(o, needed, asked, nasked)) &&
			first_missing(o, needed, false) < 0)
			return true;
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(), wait_ms))
			return false;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 IQ_OWNERSHIP_POLL_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		iq_ownership_read(o);
		if (count == 0)
			count = o->partition_count; /* the worker was starting again */
		else if (o->partition_count > 0 && o->partition_count != count)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
					 errmsg("the partition count changed from %d to %d during a read",
							count, o->partition_count),
					 errhint("Run the query again.")));
	}
}

/*
 * iq_ownership_complete
 *		Every needed partition has an owner in o.
 */
bool
iq_ownership_complete(const IqOwnerView *o, const bool *needed)
{
	return first_missing(o, needed, false) < 0;
}

/*
 * iq_ownership_partition
 *		A key's partition, as the producers compute it.
 */
int
iq_ownership_partition(const IqOwnerView *o, const char *key, int len)
{
	return iq_partition_for_key(iq_partitioner, key, len, o->partition_count);
}

/*
 * iq_ownership_targets
 *		Group the needed partitions by owner: one target per instance.
 */
IqTarget *
iq_ownership_targets(const IqOwnerView *o, const bool *needed, int *ntargets)
{
	IqTarget   *targets = palloc0(sizeof(IqTarget) * Max(o->nmembers, 1));
	int			slot[IQ_MAX_MEMBERS];
	int			n = 0;

	for (int m = 0; m < IQ_MAX_MEMBERS; m++)
		slot[m] = -1;

	for (int p = 0; p < o->partition_count; p++)
	{
		int			m = o->owner[p];
		IqTarget   *t;

		if (needed && !needed[p])
			continue;
		Assert(m >= 0 && m < o->nmembers);
		if (slot[m] < 0)
		{
			slot[m] = n++;
			t = &targets[slot[m]];
			strlcpy(t->host, o->members[m].host, IQ_HOST_LEN);
			t->port = o->members[m].port;
			t->is_local = o->members[m].is_self;
		}
		t = &targets[slot[m]];
		t->partitions[t->npartitions++] = (uint16) p;
	}
	*ntargets = n;
	return targets;
}

/*
 * local_standbys
 *		Which partitions this instance's engine keeps a standby of whose
 *		order lag is within bound, as its shared statistics say now.
 */
static void
local_standbys(int partition_count, int64 bound, bool *out)
{
	uint32		seq;

	do
	{
		seq = iq_shared_read_begin();
		for (int p = 0; p < partition_count; p++)
		{
			const IqPartitionStats *ps = &iq_shared->partitions[p];

			out[p] = ps->standby && !ps->assigned && ps->order_end >= 0 &&
				ps->order_end - Max(ps->order_offset, 0) <= bound;
		}
	} while (!iq_shared_read_ok(seq));
}

/*
 * iq_ownership_nearest
 *		Read a partition from this instance's own standby when it has one
 *		within the bound: no network hop.  Should it answer otherwise after
 *		all, fetch_standby.c asks the partition's other standbys, then the
 *		owners.
 */
IqTarget *
iq_ownership_nearest(const IqOwnerView *o, IqTarget *targets, int *ntargets)
{
	bool		here[IQ_MAX_PARTITIONS] = {0};
	IqTarget   *out;
	IqTarget   *mine;
	int			self = -1;
	int			n = 0;

	if (iq_read_from != IQ_READ_FROM_NEAREST)
		return targets;
	for (int m = 0; m < o->nmembers; m++)
		if (o->members[m].is_self)
			self = m;
	if (self < 0)
		return targets;
	local_standbys(o->partition_count,
				   iq_max_lag >= 0 ? iq_max_lag : iq_standby_max_lag, here);

	out = palloc0(sizeof(IqTarget) * (*ntargets + 1));
	mine = &out[0];
	strlcpy(mine->host, o->members[self].host, IQ_HOST_LEN);
	mine->port = o->members[self].port;
	mine->is_local = true;
	mine->standby = true;
	n = 1;
	for (int t = 0; t < *ntargets; t++)
	{
		IqTarget   *copy = &out[n];

		*copy = targets[t];
		copy->npartitions = 0;
		for (int i = 0; i < targets[t].npartitions; i++)
		{
			int			p = targets[t].partitions[i];

			if (!targets[t].is_local && here[p])
				mine->partitions[mine->npartitions++] = (uint16) p;
			else
				copy->partitions[copy->npartitions++] = (uint16) p;
		}
		if (copy->npartitions > 0)
			n++;
	}
	if (mine->npartitions == 0)
		return targets;
	*ntargets = n;
	return out;
}

/*-------------------------------------------------------------------------
 * stats_view.c
 *	  The worker's state and per-partition numbers, as iq_stats() reads
 *	  them from shared memory, in the plain-C form GET /metrics renders.
 *
 * Like ownership_view.c, the one kind of file of the server's that
 * includes PostgreSQL's headers, and only to copy fields.  The copy takes
 * the seqlock of IqShared as its readers do, but without
 * iq_shared_read_begin's wait, which may check for interrupts: a server
 * thread spins, yields, and after a bounded number of tries keeps the
 * last copy, whose partitions may mix two moments (the engine's main
 * thread writes for microseconds at a time; a frozen one must not freeze
 * the scrape).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sched.h>

#include "common/settings.h"
#include "common/shmem.h"
#include "common/value_cache.h"
#include "worker/serve/http/http_internal.h"

#define COPY_TRIES	1000

StaticAssertDecl(IQ_HTTP_STATES == IQ_WORKER_RESTARTING + 1, "worker states differ");

/* TimestampTz counts microseconds from 2000-01-01; Unix time from 1970 */
#define PG_EPOCH_UNIX	946684800.0

/* copy_shared: the partitions iq_stats() shows (assigned or standby), and the state */
static void
copy_shared(IqHttpWorkerView *out)
{
	static __thread IqPartitionStats parts[IQ_MAX_PARTITIONS];
	IqWorkerState state = IQ_WORKER_STOPPED;
	TimestampTz since = 0;
	bool		ok = false;

	for (int tries = 0; tries < COPY_TRIES && !ok; tries++)
	{
		uint32		seq = pg_atomic_read_u32(&iq_shared->seq);

		if (seq & 1)
		{
			sched_yield();
			continue;
		}
		pg_read_barrier();
		state = iq_shared->state;
		since = iq_shared->state_since;
		memcpy(parts, iq_shared->partitions, sizeof(parts));
		pg_read_barrier();
		ok = pg_atomic_read_u32(&iq_shared->seq) == seq;
	}
	/* not ok: the engine wrote all along; the last copy is shown anyway */
	out->state = state;
	out->state_since = since / 1000000.0 + PG_EPOCH_UNIX;
	out->npartitions = 0;
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		const IqPartitionStats *ps = &parts[p];
		IqHttpPartitionStats *o;

		if (!ps->assigned && !ps->standby)
			continue;
		o = &out->partitions[out->npartitions++];
		o->partition = p;
		o->assigned = ps->assigned;
		o->restoring = ps->restoring;
		o->standby = ps->standby && !ps->assigned;
		o->customer_offset = ps->customer_offset;
		o->customer_end = ps->customer_end;
		o->order_offset = ps->order_offset;
		o->order_end = ps->order_end;
		o->changelog_offset = ps->changelog_offset;
		o->records_processed = ps->records_processed;
		o->orders_joined = ps->orders_joined;
		o->orders_without_customer = ps->orders_without_customer;
		o->dropped_null_key = ps->dropped_null_key;
		o->dropped_malformed = ps->dropped_malformed;
		o->dropped_unprocessable = ps->dropped_unprocessable;
		o->wrong_partition = ps->wrong_partition;
		o->restored_records = ps->restored_records;
		o->restore_total = ps->restore_total;
		o->state_rebuilds = ps->state_rebuilds;
		o->standby_applied = ps->standby_applied;
	}
}

/* iq_http_worker_view: what GET /metrics shows of shared memory and settings */
void
iq_http_worker_view(IqHttpWorkerView *out)
{
	copy_shared(out);
	for (int s = 0; s < IQ_HTTP_STATES; s++)
		out->state_names[s] = iq_worker_state_name((IqWorkerState) s);
	out->value_cache = iq_value_cache != NULL;
	if (iq_value_cache != NULL)
		iq_vc_counts(iq_value_cache, &out->value_cache_hits, &out->value_cache_misses);
	/* an int the main thread sets at a reload: a torn read cannot happen */
	out->memory_budget = (int64_t) iq_memory_budget_mb * 1024 * 1024;
}

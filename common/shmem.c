/*-------------------------------------------------------------------------
 * shmem.c
 *	  The shared segment between the worker and the backends.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <time.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "common/value_cache.h"

IqShared   *iq_shared = NULL;
IqValueCache *iq_value_cache = NULL;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;

static void
iq_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(IqShared)));
	RequestAddinShmemSpace(iq_vc_shmem_size(iq_value_cache_mb));
	RequestNamedLWLockTranche("iq_fdw", 1);
}

static void
iq_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	/*
	 * After a crash the postmaster builds a new segment: the pointer it kept
	 * (and children inherit) is stale, so attach afresh.
	 */
	iq_shared = NULL;
	iq_value_cache = NULL;
	iq_shmem_attach();
}

/*
 * iq_shmem_request
 *		Ask for our segment; only possible from shared_preload_libraries.
 */
void
iq_shmem_request(void)
{
	/* PostgreSQL 15 and later take requests in a hook of their own */
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = iq_shmem_request_hook;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = iq_shmem_startup;
}

void
iq_shmem_attach(void)
{
	bool		found;
	size_t		cache_size = iq_vc_shmem_size(iq_value_cache_mb);

	StaticAssertStmt(IQ_MAX_PARTITIONS == 256, "value_cache.c assumes 256 partitions");
	if (iq_shared != NULL)
		return;
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	if (cache_size > 0)
	{
		void	   *mem = ShmemInitStruct("iq_fdw value cache", cache_size, &found);

		iq_value_cache = found ? (IqValueCache *) TYPEALIGN(64, mem) : iq_vc_init(mem, cache_size);
	}
	iq_shared = ShmemInitStruct("iq_fdw", sizeof(IqShared), &found);
	if (!found)
	{
		memset(iq_shared, 0, sizeof(IqShared));
		iq_shared->lock = &(GetNamedLWLockTranche("iq_fdw"))->lock;
		iq_shared->state = IQ_WORKER_STOPPED;
		pg_atomic_init_u32(&iq_shared->step, 0);
		pg_atomic_init_u64(&iq_shared->progress_at, 0);
		for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
			iq_shared->owner[i] = -1;
	}
	LWLockRelease(AddinShmemInitLock);
}

const char *
iq_worker_state_name(IqWorkerState state)
{
	switch (state)
	{
		case IQ_WORKER_STOPPED:
			return "stopped";
		case IQ_WORKER_STARTING:
			return "starting";
		case IQ_WORKER_RESTORING:
			return "restoring";
		case IQ_WORKER_RUNNING:
			return "running";
		case IQ_WORKER_REBALANCING:
			return "rebalancing";
		case IQ_WORKER_ERROR:
			return "error";
	}
	return "unknown";
}

/*
 * iq_monotonic_ms
 *		CLOCK_MONOTONIC in ms: one clock for the worker and every backend,
 *		which no change of the wall clock moves.
 */
int64
iq_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * iq_worker_step_describe
 *		A step as published in iq_shared->step, in words: "closing
 *		partition 2".
 */
void
iq_worker_step_describe(uint32 step, char *buf, size_t len)
{
	int			partition = (int) (step & 0xffff) - 1;
	const char *what;

	switch ((IqWorkerStep) (step >> 16))
	{
		case IQ_STEP_IDLE:
			what = "waiting to retry";
			break;
		case IQ_STEP_POLLING:
			what = "waiting for records";
			break;
		case IQ_STEP_STARTING:
			what = "connecting to Kafka";
			break;
		case IQ_STEP_SERVERS:
			what = "starting or stopping the servers";
			break;
		case IQ_STEP_COUNTING:
			what = "counting records";
			break;
		case IQ_STEP_PRODUCING:
			what = "producing to the changelog";
			break;
		case IQ_STEP_CHANGELOG:
			what = "waiting for the changelog to be written";
			break;
		case IQ_STEP_WRITING:
			what = "writing the state of partition";
			break;
		case IQ_STEP_COMMITTING:
			what = "committing offsets";
			break;
		case IQ_STEP_ASSIGNING:
			what = "taking an assignment";
			break;
		case IQ_STEP_OPENING:
			what = "opening partition";
			break;
		case IQ_STEP_RESTORING:
			what = "restoring partition";
			break;
		case IQ_STEP_RELEASING:
			what = "releasing partition";
			break;
		case IQ_STEP_CLOSING:
			what = "closing partition";
			break;
		case IQ_STEP_STOPPING:
			what = "stopping the pipeline";
			break;
		default:
			what = "unknown step";
			break;
	}
	if (partition >= 0)
		snprintf(buf, len, "%s %d", what, partition);
	else
		snprintf(buf, len, "%s", what);
}

/*
 * iq_set_worker_state
 *		Publish the worker's state; an entry into "error" is logged once.
 */
void
iq_set_worker_state(IqWorkerState state, const char *fmt,...)
{
	char		msg[IQ_MESSAGE_LEN];
	bool		changed;

	msg[0] = '\0';
	if (fmt)
	{
		va_list		ap;

		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}

	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	changed = iq_shared->state != state || strcmp(iq_shared->message, msg) != 0;
	if (iq_shared->state != state)
		iq_shared->state_since = GetCurrentTimestamp();
	iq_shared->state = state;
	strlcpy(iq_shared->message, msg, sizeof(iq_shared->message));
	LWLockRelease(iq_shared->lock);

	if (changed && state == IQ_WORKER_ERROR)
		ereport(LOG,
				(errmsg("iq_fdw worker: %s", msg)));
	else if (changed)
		ereport(DEBUG1,
				(errmsg("iq_fdw worker is %s%s%s", iq_worker_state_name(state),
						msg[0] ? ": " : "", msg)));
}

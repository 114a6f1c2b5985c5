/*-------------------------------------------------------------------------
 * shmem.c
 *	  The shared segment between the worker and the backends.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/mman.h>
#include <time.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/shmem.h"
#include "utils/timestamp.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "common/value_cache.h"

/* a read that keeps meeting a write sleeps between tries after this many */
#define READ_SPINS			100
#define READ_SLEEP_US		100

IqShared   *iq_shared = NULL;
IqValueCache *iq_value_cache = NULL;
IqSupervisorShared *iq_supervisor = NULL;

/* the engine's segment as the postmaster mapped it, for its next one */
static void *segment = NULL;
static size_t segment_size = 0;

static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;

static void
iq_shmem_request_hook(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(IqSupervisorShared)));
	RequestNamedLWLockTranche("iq_fdw", 1);
}

/*
 * shared_init
 *		IqShared as no engine has written it yet.
 */
static void
shared_init(IqShared *s)
{
	memset(s, 0, sizeof(IqShared));
	pg_atomic_init_u32(&s->seq, 0);
	pg_atomic_init_u32(&s->step, 0);
	pg_atomic_init_u64(&s->progress_at, 0);
	s->state = IQ_WORKER_STOPPED;
	for (int i = 0; i < IQ_MAX_PARTITIONS; i++)
		s->owner[i] = -1;
}

/*
 * engine_segment_create
 *		The engine's segment: an anonymous shared mapping made by the
 *		postmaster, so that every backend, the supervisor and the engine
 *		inherit it at one address, and the engine can keep it alone when it
 *		lets go of PostgreSQL's shared memory.  After a crash of the
 *		instance every process that used the old one is gone: a new one.
 */
static void
engine_segment_create(void)
{
	size_t		cache_size = iq_vc_shmem_size(iq_value_cache_mb);
	size_t		size = MAXALIGN(sizeof(IqShared)) + cache_size;
	void	   *mem;

	if (segment != NULL)
		(void) munmap(segment, segment_size);
	segment = NULL;
	mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		ereport(FATAL,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("iq_fdw could not map its engine's shared memory segment of %zu bytes: %m", size),
				 errhint("Lower iq_fdw.value_cache (%d MB now).", iq_value_cache_mb)));
	segment = mem;
	segment_size = size;
	iq_shared = (IqShared *) mem;
	shared_init(iq_shared);
	iq_value_cache = cache_size > 0 ?
		iq_vc_init((char *) mem + MAXALIGN(sizeof(IqShared)), cache_size) : NULL;
}

static void
iq_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	StaticAssertStmt(IQ_MAX_PARTITIONS == 256, "value_cache.c assumes 256 partitions");
	engine_segment_create();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	iq_supervisor = ShmemInitStruct("iq_fdw supervisor", sizeof(IqSupervisorShared), &found);
	if (!found)
	{
		memset(iq_supervisor, 0, sizeof(IqSupervisorShared));
		iq_supervisor->lock = &(GetNamedLWLockTranche("iq_fdw"))->lock;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * iq_shmem_request
 *		Ask for our shared memory; only possible from shared_preload_libraries.
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

/*
 * iq_shmem_attach
 *		Both places are inherited from the postmaster: nothing to attach,
 *		only the check that the library was preloaded.
 */
void
iq_shmem_attach(void)
{
	if (iq_shared == NULL || iq_supervisor == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("iq_fdw's shared memory is not set up"),
				 errhint("Add iq_fdw to shared_preload_libraries in postgresql.conf and restart the server.")));
}

/*
 * iq_shared_write_begin, iq_shared_write_end
 *		The writer's half of the seqlock (as PgBackendStatus' changecount):
 *		odd from begin to end, with barriers so that a reader who sees an
 *		even count twice saw no write in between.
 */
void
iq_shared_write_begin(void)
{
	(void) pg_atomic_fetch_add_u32(&iq_shared->seq, 1);
}

void
iq_shared_write_end(void)
{
	pg_write_barrier();
	(void) pg_atomic_fetch_add_u32(&iq_shared->seq, 1);
}

/*
 * iq_shared_read_begin
 *		A count with no write under way.  A write lasts microseconds; one
 *		that never ends is an engine stopped in it (a dead one is followed by
 *		the supervisor's reset): the wait is one a cancel or
 *		statement_timeout ends.
 */
uint32
iq_shared_read_begin(void)
{
	for (int tries = 0;; tries++)
	{
		uint32		seq = pg_atomic_read_u32(&iq_shared->seq);

		if ((seq & 1) == 0)
		{
			pg_read_barrier();
			return seq;
		}
		if (tries < READ_SPINS)
			pg_spin_delay();
		else
		{
			CHECK_FOR_INTERRUPTS();
			pg_usleep(READ_SLEEP_US);
		}
	}
}

/* iq_shared_read_ok: no write overlapped what was copied since seq */
bool
iq_shared_read_ok(uint32 seq)
{
	pg_read_barrier();
	return pg_atomic_read_u32(&iq_shared->seq) == seq;
}

/*
 * iq_shared_copy
 *		All of IqShared, consistent, in palloc'd memory; its strings ended.
 */
IqShared *
iq_shared_copy(void)
{
	IqShared   *copy = palloc(sizeof(IqShared));
	uint32		seq;

	iq_shmem_attach();
	do
	{
		seq = iq_shared_read_begin();
		memcpy(copy, iq_shared, sizeof(IqShared));
	} while (!iq_shared_read_ok(seq));
	copy->message[IQ_MESSAGE_LEN - 1] = '\0';
	copy->local_socket[IQ_SOCKET_PATH_LEN - 1] = '\0';
	copy->restore.topic[IQ_TOPIC_LEN - 1] = '\0';
	copy->nmembers = Max(0, Min(copy->nmembers, IQ_MAX_MEMBERS));
	copy->partition_count = Max(0, Min(copy->partition_count, IQ_MAX_PARTITIONS));
	for (int m = 0; m < copy->nmembers; m++)
		copy->members[m].host[IQ_HOST_LEN - 1] = '\0';
	return copy;
}

/*
 * iq_shared_reset
 *		The supervisor, after its engine died and before the next starts:
 *		whatever the dead engine left (a write half done, ownership, stats,
 *		a socket no one serves) goes; the generation moves on, so no backend
 *		keeps a copy it made of the old state; every cached value is
 *		forgotten.  A write the engine left open is closed by this one: a
 *		reader who copied during either sees the count move and retries.
 */
void
iq_shared_reset(IqWorkerState state, const char *why)
{
	uint32		seq = pg_atomic_read_u32(&iq_shared->seq);
	uint64		generation = iq_shared->generation;

	if ((seq & 1) == 0)
		iq_shared_write_begin();
	{
		IqShared	fresh;

		shared_init(&fresh);
		fresh.generation = generation + 1;
		fresh.state = state;
		fresh.state_since = GetCurrentTimestamp();
		strlcpy(fresh.message, why, sizeof(fresh.message));
		/* everything but the counter itself, which readers watch */
		memcpy((char *) iq_shared + sizeof(pg_atomic_uint32),
			   (char *) &fresh + sizeof(pg_atomic_uint32),
			   sizeof(IqShared) - sizeof(pg_atomic_uint32));
	}
	iq_shared_write_end();
	iq_vc_reset(iq_value_cache);
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
		case IQ_WORKER_RESTARTING:
			return "restarting";
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

	/* the writer's own reads need no seqlock */
	changed = iq_shared->state != state || strcmp(iq_shared->message, msg) != 0;
	if (!changed)
		return;
	iq_shared_write_begin();
	if (iq_shared->state != state)
		iq_shared->state_since = GetCurrentTimestamp();
	iq_shared->state = state;
	strlcpy(iq_shared->message, msg, sizeof(iq_shared->message));
	iq_shared_write_end();

	if (state == IQ_WORKER_ERROR)
		ereport(LOG,
				(errmsg("iq_fdw worker: %s", msg)));
	else
		ereport(DEBUG1,
				(errmsg("iq_fdw worker is %s%s%s", iq_worker_state_name(state),
						msg[0] ? ": " : "", msg)));
}

/*-------------------------------------------------------------------------
 * shmem.h
 *	  What the engine publishes to every backend of its instance, and what
 *	  the supervisor records of the engine.
 *
 * Two places, on purpose (worker/README.md, "Processes"):
 *	- IqShared and the value cache live in the engine's segment, a shared
 *	  mapping of their own that the postmaster makes and every process
 *	  inherits, and the only shared memory the engine keeps after it
 *	  detaches from PostgreSQL's.  No lock a dead engine could hold: the
 *	  engine's main thread writes under a sequence counter (a seqlock) and
 *	  backends copy, then retry if a write overlapped.  The supervisor
 *	  resets the segment after the engine dies, before the next one starts.
 *	- IqSupervisorShared lives in PostgreSQL's shared memory, under an
 *	  LWLock: the supervisor writes it, backends read it, the engine never
 *	  sees it, so the record of a crash survives the crash.
 * "generation" grows on every change of ownership (and at every reset), so
 * a backend can tell that its cached copy is stale.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_SHMEM_H
#define IQ_SHMEM_H

#include "datatype/timestamp.h"
#include "port/atomics.h"
#include "storage/lwlock.h"

#define IQ_MAX_PARTITIONS	256
#define IQ_MAX_MEMBERS		64
#define IQ_HOST_LEN			256
#define IQ_MESSAGE_LEN		512
#define IQ_SOCKET_PATH_LEN	108

typedef enum IqWorkerState
{
	IQ_WORKER_STOPPED = 0,
	IQ_WORKER_STARTING,
	IQ_WORKER_RESTORING,
	IQ_WORKER_RUNNING,
	IQ_WORKER_REBALANCING,
	IQ_WORKER_ERROR,
	IQ_WORKER_RESTARTING		/* no engine: the supervisor starts one soon */
} IqWorkerState;

/*
 * What the worker's main thread is doing now, for the watchdog of
 * iq_worker(): a step that makes no progress for iq_fdw.stall_timeout while
 * there is work is shown as "stalled", naming the step.  IDLE and POLLING
 * are no work of their own: they stall only with a backlog.
 */
typedef enum IqWorkerStep
{
	IQ_STEP_IDLE = 0,			/* no pipeline: waiting to retry */
	IQ_STEP_POLLING,			/* taking records from the consumer */
	IQ_STEP_STARTING,			/* building the pipeline */
	IQ_STEP_SERVERS,			/* starting or stopping the servers */
	IQ_STEP_COUNTING,			/* joining and counting a poll */
	IQ_STEP_PRODUCING,			/* producing counts to the changelog */
	IQ_STEP_CHANGELOG,			/* waiting for the changelog to be durable */
	IQ_STEP_WRITING,			/* writing a partition's state */
	IQ_STEP_COMMITTING,			/* committing offsets */
	IQ_STEP_ASSIGNING,			/* assignment: topics, committed offsets */
	IQ_STEP_OPENING,			/* opening a partition's state */
	IQ_STEP_RESTORING,			/* restoring a partition */
	IQ_STEP_RELEASING,			/* revoking a partition */
	IQ_STEP_CLOSING,			/* closing a partition's state */
	IQ_STEP_STOPPING			/* tearing the pipeline down */
} IqWorkerStep;

/*
 * Per partition this instance holds.  Counters (records_processed to
 * wrong_partition, state_rebuilds) last as long as the worker; offsets and
 * restore progress belong to the current assignment (worker/stats.c).
 */
typedef struct IqPartitionStats
{
	bool		assigned;
	bool		restoring;
	bool		standby;		/* a standby replica kept here, not assigned */
	int64		customer_offset;	/* next offset to process */
	int64		customer_end;	/* high watermark */
	int64		order_offset;
	int64		order_end;
	int64		changelog_offset;	/* last changelog offset in the store */
	int64		records_processed;
	int64		orders_joined;
	int64		orders_without_customer;
	int64		dropped_null_key;
	int64		dropped_malformed;
	int64		dropped_unprocessable;
	int64		wrong_partition;
	int64		restored_records;	/* progress of the current restore */
	int64		restore_total;
	int64		state_rebuilds; /* local state found unusable, rebuilt */
	int64		standby_applied;	/* records a standby replica applied */
} IqPartitionStats;

/*
 * The restore under way, if any (worker/stream/restore.c), for
 * iq_worker(): one partition's topic at a time.  records and total are
 * offsets of the topic's partition (read so far, to read), so control
 * records count as read; started_ms is CLOCK_MONOTONIC (iq_monotonic_ms).
 */
#define IQ_TOPIC_LEN		250

typedef struct IqRestoreProgress
{
	bool		running;
	int			partition;
	char		topic[IQ_TOPIC_LEN];
	int64		started_ms;
	int64		records;
	int64		total;
} IqRestoreProgress;

/* A member of the consumer group that holds partitions. */
typedef struct IqMember
{
	char		host[IQ_HOST_LEN];	/* advertised endpoint */
	int			port;
	bool		is_self;
	int			npartitions;
} IqMember;

typedef struct IqShared
{
	/* odd while a write is under way: iq_shared_write_begin, _read_begin */
	pg_atomic_uint32 seq;

	/* the engine */
	IqWorkerState state;
	char		message[IQ_MESSAGE_LEN];	/* error, or what it waits for */
	TimestampTz state_since;
	char		local_socket[IQ_SOCKET_PATH_LEN];	/* "" until it listens */

	/*
	 * The watchdog: written by the worker's main thread without the lock at
	 * every step (it must cost nothing), read by backends.  step packs
	 * IqWorkerStep << 16 | (partition + 1); progress_at is CLOCK_MONOTONIC
	 * in ms (the same clock in every process), 0 before the first step.
	 */
	pg_atomic_uint32 step;
	pg_atomic_uint64 progress_at;

	/* ownership, from the consumer group */
	uint64		generation;
	int			partition_count;	/* of the input topics; 0 if unknown */
	int			nmembers;
	IqMember	members[IQ_MAX_MEMBERS];
	int16		owner[IQ_MAX_PARTITIONS];	/* member index, -1 if none */

	IqPartitionStats partitions[IQ_MAX_PARTITIONS];
	IqRestoreProgress restore;
} IqShared;

#define IQ_EXIT_LEN			128

/* The supervisor's record of its engine (worker/supervisor.c). */
typedef struct IqSupervisorShared
{
	LWLock	   *lock;
	int			supervisor_pid;
	int			engine_pid;		/* 0 while no engine runs */
	int64		engine_restarts;	/* engines started after the first */
	char		last_exit[IQ_EXIT_LEN]; /* "killed by signal 11: ..." */
	TimestampTz last_exit_at;
} IqSupervisorShared;

extern IqShared *iq_shared;
extern struct IqValueCache *iq_value_cache;	/* NULL when value_cache = 0 */
extern IqSupervisorShared *iq_supervisor;

extern void iq_shmem_request(void);		/* from _PG_init */
extern void iq_shmem_attach(void);	/* errors if not preloaded */

/*
 * The seqlock of IqShared.  One writer at a time: the engine's main thread,
 * or the supervisor while no engine runs.  Readers (backends):
 *		do { seq = iq_shared_read_begin(); ...copy...; } while (!iq_shared_read_ok(seq));
 */
extern void iq_shared_write_begin(void);
extern void iq_shared_write_end(void);
extern uint32 iq_shared_read_begin(void);
extern bool iq_shared_read_ok(uint32 seq);
extern IqShared *iq_shared_copy(void);	/* palloc'd, consistent */

/* the supervisor, with no engine running: a fresh segment for the next */
extern void iq_shared_reset(IqWorkerState state, const char *why);

/* worker side: state changes, logged and visible in iq_worker() */
extern void iq_set_worker_state(IqWorkerState state, const char *fmt,...) pg_attribute_printf(2, 3);
extern const char *iq_worker_state_name(IqWorkerState state);
extern void iq_worker_step_describe(uint32 step, char *buf, size_t len);
extern int64 iq_monotonic_ms(void);

#endif							/* IQ_SHMEM_H */

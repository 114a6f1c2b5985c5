/*-------------------------------------------------------------------------
 * shmem.h
 *	  State the worker publishes to every backend of its instance.
 *
 * One segment under one LWLock.  The worker's main thread writes (never its
 * library threads); backends copy what they need under LW_SHARED.
 * "generation" grows on every change of ownership, so a backend can tell
 * that its cached copy is stale.
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
	IQ_WORKER_ERROR
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
} IqPartitionStats;

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
	LWLock	   *lock;

	/* the worker */
	IqWorkerState state;
	char		message[IQ_MESSAGE_LEN];	/* error, or what it waits for */
	TimestampTz state_since;
	int			worker_pid;
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
} IqShared;

extern IqShared *iq_shared;
extern struct IqValueCache *iq_value_cache;	/* NULL when value_cache = 0 */

extern void iq_shmem_request(void);		/* from _PG_init */
extern void iq_shmem_attach(void);	/* idempotent; errors if not preloaded */

/* worker side: state changes, logged and visible in iq_worker() */
extern void iq_set_worker_state(IqWorkerState state, const char *fmt,...) pg_attribute_printf(2, 3);
extern const char *iq_worker_state_name(IqWorkerState state);
extern void iq_worker_step_describe(uint32 step, char *buf, size_t len);
extern int64 iq_monotonic_ms(void);

#endif							/* IQ_SHMEM_H */

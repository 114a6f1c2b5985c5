/*-------------------------------------------------------------------------
 * state.h
 *	  The worker's state and what every subsystem of it uses: the failure
 *	  that tears the pipeline down, the clock, the watchdog's step, and how
 *	  long a wait on the broker may last (state.c).  Main thread of the
 *	  worker only.
 *
 * The worker runs a "pipeline": a producer (changelog, transactions), a
 * group consumer (customer + order), a restore consumer (no group) and the
 * RocksDB stores.  Any failure it cannot ride out tears the pipeline down
 * and builds it again after a backoff; state is then taken from the local
 * checkpoint, the changelog and the group's committed offsets, so a restart
 * is always correct, only slower.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_STATE_H
#define IQ_WORKER_STATE_H

#include <signal.h>

#include <librdkafka/rdkafka.h>

#include "common/settings.h"
#include "common/shmem.h"
#include "worker/config.h"
#include "worker/memory.h"
#include "worker/store/store_admin.h"

/* The librdkafka handles, for their log queues */
typedef enum IqHandle
{
	IQ_H_CONSUMER = 0,
	IQ_H_PRODUCER,
	IQ_H_RESTORER,
	IQ_H_STANDBY,
	IQ_H_STANDBY_ENDS,
	IQ_H_CUSTOMERS,
	IQ_H_COUNT
} IqHandle;

/* What the worker knows about one partition (index = partition number). */
typedef struct IqPart
{
	bool		assigned;
	int64		customer_next;	/* next customer offset to process */
	int64		order_next;		/* next order offset to process, -1 unknown */
	int64		changelog_next; /* after the last changelog record in the store */
	int64		customer_end;
	int64		order_end;
	/* positions the group acknowledged committing; -2 unknown */
	int64		customer_committed;
	int64		order_committed;
	bool		wrong_partition_logged;
	bool		counts_restored;	/* the last restore loaded order-count records */
	IqPartitionStats stats;		/* the worker's copy, published per batch */
} IqPart;

typedef struct IqWorker
{
	IqWorkerConfig cfg;
	IqMemoryPlan mem;			/* iq_fdw.memory_budget, split (memory.c) */
	char		client_id[512];
	char		transactional_id[512];
	char		group_instance_id[256];	/* static membership (KIP-345) */

	rd_kafka_t *producer;
	rd_kafka_t *consumer;
	rd_kafka_t *restorer;
	rd_kafka_t *standby;		/* standby replicas' consumer, or NULL */
	rd_kafka_t *customers;		/* cooperative: the customer topic's consumer */
	rd_kafka_queue_t *customers_q;
	rd_kafka_queue_t *consumer_q;
	/* broker leading each partition at the last assignment (fetch_wake.c) */
	int32		order_leaders[IQ_MAX_PARTITIONS];
	int32		customer_leaders[IQ_MAX_PARTITIONS];
	rd_kafka_queue_t *log_q[IQ_H_COUNT]; /* logs of each handle (IqHandle) */
	rd_kafka_queue_t *admin_q;	/* ownership's DescribeConsumerGroups */
	int			wake_fd[2];		/* consumer queue -> WaitLatchOrSocket */

	int			partition_count;
	IqPart		parts[IQ_MAX_PARTITIONS];
	IqRestoreProgress restore;	/* published with the stats */

	/* set by callbacks, acted on by the main loop */
	bool		failed;			/* tear the pipeline down and retry */
	bool		rewind;			/* a flush met a rebalance: read it again (consumer.c) */
	char		failure[IQ_MESSAGE_LEN];
	bool		error_state;	/* in ERROR without a restart (e.g. topic missing) */
	bool		broker_error;	/* from the error callback, not yet shown */
	char		broker_reason[256];
	int64		delivery_errors;
	int64		changelog_last[IQ_MAX_PARTITIONS];	/* from delivery reports */
	bool		ownership_due;	/* describe the group now */
	bool		txn_open;
} IqWorker;

extern IqWorker *iq_w;

/*
 * Every wait on the broker is cut in slices of at most this, so that a stop
 * and the postmaster's death are noticed within it (iq_wait_slice).
 */
#define IQ_WAIT_SLICE_MS	1000

/* What a wait on the broker is for: how a stop cuts it short */
typedef enum IqWaitKind
{
	IQ_WAIT_START,				/* new work (pipeline, assignment, restore): ends at a stop */
	IQ_WAIT_FINISH,				/* writing what is counted, committing */
	IQ_WAIT_LEAVE				/* leaving the group, the stop's last wait */
} IqWaitKind;

/*
 * When to try again something that failed (the pipeline, the servers): after
 * IQ_BACKOFF_MIN_MS, twice as long after each failure in a row, up to
 * IQ_BACKOFF_MAX_MS.
 */
#define IQ_BACKOFF_MIN_MS	1000
#define IQ_BACKOFF_MAX_MS	30000

typedef struct IqBackoff
{
	int64		retry_at;		/* iq_now_ms(); 0: at once */
	int			delay_ms;		/* the next failure's wait */
} IqBackoff;

#define IQ_BACKOFF_INIT		{0, IQ_BACKOFF_MIN_MS}

/* in state.c */
extern volatile sig_atomic_t iq_got_sigterm;
extern void iq_step(IqWorkerStep step, int partition);
extern void iq_progress(void);
extern bool iq_postmaster_gone(void);
extern int	iq_wait_slice(int64 deadline, IqWaitKind kind);
extern void iq_fail(const char *fmt,...) pg_attribute_printf(1, 2);
extern int64 iq_now_ms(void);
extern bool iq_backoff_due(const IqBackoff *b, int64 now);
extern void iq_backoff_failed(IqBackoff *b, int64 now);
extern void iq_backoff_reset(IqBackoff *b);

#endif							/* IQ_WORKER_STATE_H */

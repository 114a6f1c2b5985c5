/*-------------------------------------------------------------------------
 * stream.h
 *	  The stream pipeline, as a table of contents: the group consumer, its
 *	  rebalances, the topology, write-behind, the changelog and the
 *	  restore.  Main thread of the worker only.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_STREAM_H
#define IQ_WORKER_STREAM_H

#include <librdkafka/rdkafka.h>

#include "common/settings.h"
#include "worker/state.h"

/* iq_cooperative: the group runs the cooperative protocol (consumer.c) */
static inline bool
iq_cooperative(void)
{
	return iq_w->cfg.rebalance_protocol == IQ_REBALANCE_COOPERATIVE;
}

/* librdkafka's rebalance callback */
typedef void (*IqRebalanceCb) (rd_kafka_t *rk, rd_kafka_resp_err_t err,
							   rd_kafka_topic_partition_list_t *partitions,
							   void *opaque);

/* in consumer.c */
extern bool iq_consumer_start(IqRebalanceCb rebalance_cb, char **err);
extern void iq_consumer_stop(void);
extern int	iq_consumer_poll(rd_kafka_message_t **msgs, int max, int budget_ms);
extern bool iq_consumer_commit(bool sync);
extern void iq_consumer_refresh_ends(void);
extern bool iq_consumer_caught_up(void);
extern rd_kafka_topic_partition_list_t *iq_consumer_positions(void);
extern bool iq_customers_assign(void);
extern void iq_consumer_rewind(void);

/* in rebalance.c */
extern void iq_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
							rd_kafka_topic_partition_list_t *partitions,
							void *opaque);
extern void iq_rebalance_revoke(void);

/* in topology.c */
extern void iq_topology_process(rd_kafka_message_t **msgs, int n);

/* in flush.c */
extern void iq_flush_idle(void);
extern bool iq_flush_now(void);
extern void iq_flush_discard(void);

/* in standby.c */
extern int	iq_restore_share(int whole, int floor);

/* in catch_up.c: a standby's catch-up of its backlog, in the log */
extern void iq_catch_up_begin(int partition, int64 changelog_next, int64 customer_next);
extern void iq_catch_up_tick(rd_kafka_t *rk, int partition, int64 changelog_next, int64 customer_next);
extern void iq_catch_up_end(int partition);
extern bool iq_standby_start(char **err);
extern void iq_standby_stop(void);
extern void iq_standby_tick(void);
extern void iq_standby_release(int partition);
extern bool iq_standby_kept(int partition);

/* in changelog.c */
extern bool iq_changelog_ensure_topic(int *partition_count, char **err);
extern bool iq_producer_start(char **err);
extern void iq_producer_stop(void);
extern bool iq_changelog_produce(int partition, const char *key, size_t key_len,
								 int64 count, bool mark);

/*
 * The changelog header that carries a partition's order position (the next
 * order offset, then the order partition's end, 8 bytes each, big-endian)
 * on the last record of the partition in each flush: a standby replica
 * reading the changelog knows which input its state covers.
 */
#define IQ_POSITION_HEADER	"iq.position"
/* The position a changelog record's mark carries; false if it has none. */
extern bool iq_changelog_mark(const rd_kafka_message_t *m, int64 *order_next,
							  int64 *order_end);

extern bool iq_changelog_begin(void);
extern bool iq_changelog_finish(rd_kafka_topic_partition_list_t *offsets);
extern void iq_changelog_abort(void);

/* in restore.c */
extern int64 iq_restore_report_ms(void);
extern bool iq_restorer_start(char **err);
extern void iq_restorer_stop(void);
extern bool iq_restore_open(int partition, IqCheckpoint *ck, bool *existed);
extern bool iq_restore_partition(int partition, bool existed, IqCheckpoint *ck);

#endif							/* IQ_WORKER_STREAM_H */

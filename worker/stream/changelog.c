/*-------------------------------------------------------------------------
 * changelog.c
 *	  The order-count changelog topic and the producer that writes it.
 *
 * Every count update is produced as (key, 8-byte big-endian count) to the
 * changelog partition equal to the input partition, as Kafka Streams
 * writes it, so either can restore from the other's changelog.  Under
 * at_least_once a batch waits for its delivery reports before the local
 * state and the offsets are written; under exactly_once the records and
 * the input offsets go into one Kafka transaction, and the local state is
 * written only after it committed, so the store is never ahead of the
 * changelog (which is why no wipe is needed after a crash: restoring from
 * the checkpoint replays whatever the store missed).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/kafka_conf.h"
#include "worker/state.h"
#include "worker/stream/stream.h"

#define FLUSH_TIMEOUT_MS	60000
#define TXN_TIMEOUT_MS		60000
#define INIT_TXN_TIMEOUT_MS	30000
#define ABORT_TXN_TIMEOUT_MS	10000
#define PRODUCER_STOP_FLUSH_MS	5000
#define METADATA_TIMEOUT_MS	10000
/* the broker's time to create the changelog, and ours to wait for it */
#define CREATE_TOPIC_TIMEOUT_MS	15000
#define CREATE_TOPIC_WAIT_MS	20000

/* The topics the pipeline needs, in the order they are checked */
typedef enum Topic
{
	TOPIC_CUSTOMER,
	TOPIC_ORDER,
	TOPIC_CHANGELOG,
	NTOPICS
} Topic;

/*
 * The changelog topic's handle: producing by name looks the topic up for
 * each record.  Opened at the first record, after iq_changelog_ensure_topic
 * has created the topic: a producer's handle may have the broker create a
 * missing topic with its defaults (one partition, not compacted).
 */
static rd_kafka_topic_t *changelog_rkt = NULL;

/*
 * dr_msg_cb
 *		Delivery reports, served by our own polls and flushes.
 */
static void
dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	if (msg->err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		if (iq_w->delivery_errors++ == 0)
			snprintf(iq_w->failure, sizeof(iq_w->failure),
					 "could not write changelog topic \"%s\": %s",
					 iq_w->cfg.changelog_topic, rd_kafka_err2str(msg->err));
		return;
	}
	if (msg->partition >= 0 && msg->partition < IQ_MAX_PARTITIONS &&
		msg->offset > iq_w->changelog_last[msg->partition])
		iq_w->changelog_last[msg->partition] = msg->offset;
}

/*
 * txn_call
 *		A transactional call (init, send offsets, commit, abort) in slices
 *		of iq_wait_slice, up to timeout_ms in all: librdkafka lets each of
 *		them be called again after a retriable error (init, commit and abort
 *		resume what is under way).  NULL on success; else the error, a
 *		__TIMED_OUT one when the wait ended first (its deadline, a stop, the
 *		postmaster gone).
 */
typedef enum TxnOp
{
	TXN_INIT,
	TXN_SEND_OFFSETS,
	TXN_COMMIT,
	TXN_ABORT
} TxnOp;

static rd_kafka_error_t *
txn_call(TxnOp op, int timeout_ms, const rd_kafka_topic_partition_list_t *offsets,
		 const rd_kafka_consumer_group_metadata_t *cgmd)
{
	int64		deadline = iq_now_ms() + timeout_ms;
	rd_kafka_error_t *error = NULL;
	int			slice;

	/* starting transactions is new work; finishing one is not */
	while ((slice = iq_wait_slice(deadline, op == TXN_INIT ? IQ_WAIT_START : IQ_WAIT_FINISH)) > 0)
	{
		if (error)
			rd_kafka_error_destroy(error);
		switch (op)
		{
			case TXN_INIT:
				error = rd_kafka_init_transactions(iq_w->producer, slice);
				break;
			case TXN_SEND_OFFSETS:
				error = rd_kafka_send_offsets_to_transaction(iq_w->producer, offsets, cgmd, slice);
				break;
			case TXN_COMMIT:
				error = rd_kafka_commit_transaction(iq_w->producer, slice);
				break;
			case TXN_ABORT:
				error = rd_kafka_abort_transaction(iq_w->producer, slice);
				break;
		}
		if (error == NULL || !rd_kafka_error_is_retriable(error))
			return error;
		iq_drain_logs();
	}
	if (error == NULL)
		error = rd_kafka_error_new(RD_KAFKA_RESP_ERR__TIMED_OUT,
								   iq_got_sigterm || iq_postmaster_gone() ?
								   "stopped while waiting" : "timed out");
	return error;
}

/*
 * wait_admin
 *		Wait for an admin result on q, in slices that notice a stop and the
 *		postmaster's death.
 */
static rd_kafka_event_t *
wait_admin(rd_kafka_queue_t *q, int timeout_ms)
{
	int64		deadline = iq_now_ms() + timeout_ms;
	int			slice;

	while ((slice = iq_wait_slice(deadline, IQ_WAIT_START)) > 0)
	{
		rd_kafka_event_t *ev = rd_kafka_queue_poll(q, Min(slice, 100));

		if (ev != NULL)
			return ev;
		iq_drain_logs();
	}
	return NULL;
}

/*
 * topic_partition_counts
 *		counts[i]: the partition count of topic names[i], -1 when it does
 *		not exist; false with *err when the broker does not answer.
 */
static bool
topic_partition_counts(rd_kafka_t *rk, const char *const *names, int *counts,
					   int ntopics, char **err)
{
	char		buf[1024];

	for (int i = 0; i < ntopics; i++)
	{
		const struct rd_kafka_metadata *md = NULL;
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, names[i], NULL);
		rd_kafka_resp_err_t rerr = iq_metadata(rk, rkt, &md, METADATA_TIMEOUT_MS);

		rd_kafka_topic_destroy(rkt);
		if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			iq_broker_failure(buf, sizeof(buf), rerr);
			*err = strdup(buf);
			return false;
		}
		counts[i] = -1;
		if (md->topic_cnt == 1 && md->topics[0].err == RD_KAFKA_RESP_ERR_NO_ERROR)
			counts[i] = md->topics[0].partition_cnt;
		rd_kafka_metadata_destroy(md);
	}
	return true;
}

/*
 * check_partition_counts
 *		The input topics exist, are co-partitioned within what iq_fdw
 *		supports, and an existing changelog has their partition count;
 *		false with *err naming what to fix.
 */
static bool
check_partition_counts(const char *const *names, const int *counts, char **err)
{
	char		buf[1024];

	for (int i = TOPIC_CUSTOMER; i <= TOPIC_ORDER; i++)
		if (counts[i] <= 0)
		{
			snprintf(buf, sizeof(buf), "topic \"%s\" (iq_fdw.%s_topic) does not exist; create it, or fix the setting",
					 names[i], i == TOPIC_CUSTOMER ? "customer" : "order");
			*err = strdup(buf);
			return false;
		}
	if (counts[TOPIC_CUSTOMER] != counts[TOPIC_ORDER])
		snprintf(buf, sizeof(buf), "topics \"%s\" (%d partitions) and \"%s\" (%d partitions) must have the same partition count for the join (co-partitioning)",
				 names[TOPIC_CUSTOMER], counts[TOPIC_CUSTOMER],
				 names[TOPIC_ORDER], counts[TOPIC_ORDER]);
	else if (counts[TOPIC_CUSTOMER] > IQ_MAX_PARTITIONS)
		snprintf(buf, sizeof(buf), "topic \"%s\" has %d partitions, more than the %d iq_fdw supports",
				 names[TOPIC_CUSTOMER], counts[TOPIC_CUSTOMER], IQ_MAX_PARTITIONS);
	else if (counts[TOPIC_CHANGELOG] > 0 && counts[TOPIC_CHANGELOG] != counts[TOPIC_CUSTOMER])
		snprintf(buf, sizeof(buf), "changelog topic \"%s\" has %d partitions but the input topics have %d; delete it (it is rebuilt from the inputs) or fix the topics",
				 names[TOPIC_CHANGELOG], counts[TOPIC_CHANGELOG], counts[TOPIC_CUSTOMER]);
	else
		return true;
	*err = strdup(buf);
	return false;
}

/*
 * create_changelog
 *		Create the compacted changelog topic name with partitions
 *		partitions; one created meanwhile by another member is as good.
 *		False with *err.
 */
static bool
create_changelog(rd_kafka_t *rk, const char *name, int partitions, char **err)
{
	rd_kafka_NewTopic_t *nt;
	rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
	rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
	rd_kafka_event_t *ev;
	char		errstr[256];
	char		buf[1024];
	bool		ok = true;

	rd_kafka_AdminOptions_set_request_timeout(opts, CREATE_TOPIC_TIMEOUT_MS, errstr, sizeof(errstr));
	rd_kafka_AdminOptions_set_operation_timeout(opts, CREATE_TOPIC_TIMEOUT_MS, errstr, sizeof(errstr));
	nt = rd_kafka_NewTopic_new(name, partitions, -1, errstr, sizeof(errstr));
	rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
	rd_kafka_CreateTopics(rk, &nt, 1, opts, q);
	ev = wait_admin(q, CREATE_TOPIC_WAIT_MS);
	if (ev == NULL)
	{
		snprintf(buf, sizeof(buf), "timed out creating changelog topic \"%s\"", name);
		ok = false;
	}
	else
	{
		const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
		size_t		n = 0;
		const rd_kafka_topic_result_t **tr = res ? rd_kafka_CreateTopics_result_topics(res, &n) : NULL;

		if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			snprintf(buf, sizeof(buf), "could not create changelog topic \"%s\": %s",
					 name, rd_kafka_event_error_string(ev));
			ok = false;
		}
		else if (n == 1 && rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_NO_ERROR &&
				 rd_kafka_topic_result_error(tr[0]) != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
		{
			snprintf(buf, sizeof(buf), "could not create changelog topic \"%s\": %s",
					 name, rd_kafka_topic_result_error_string(tr[0]));
			ok = false;
		}
		rd_kafka_event_destroy(ev);
	}
	rd_kafka_NewTopic_destroy(nt);
	rd_kafka_AdminOptions_destroy(opts);
	rd_kafka_queue_destroy(q);
	if (!ok)
	{
		*err = strdup(buf);
		return false;
	}
	ereport(LOG,
			(errmsg("iq_fdw worker: created changelog topic \"%s\" with %d partitions",
					name, partitions)));
	return true;
}

/*
 * iq_changelog_ensure_topic
 *		Check the input topics agree, and create the compacted changelog
 *		with their partition count if it is missing.
 */
bool
iq_changelog_ensure_topic(int *partition_count, char **err)
{
	const char *const names[NTOPICS] = {
		[TOPIC_CUSTOMER] = iq_w->cfg.customer_topic,
		[TOPIC_ORDER] = iq_w->cfg.order_topic,
		[TOPIC_CHANGELOG] = iq_w->cfg.changelog_topic
	};
	int			counts[NTOPICS];

	if (!topic_partition_counts(iq_w->producer, names, counts, NTOPICS, err) ||
		!check_partition_counts(names, counts, err))
		return false;
	if (counts[TOPIC_CHANGELOG] <= 0 &&
		!create_changelog(iq_w->producer, names[TOPIC_CHANGELOG], counts[TOPIC_CUSTOMER], err))
		return false;
	*partition_count = counts[TOPIC_CUSTOMER];
	return true;
}

/*
 * iq_producer_start
 *		The changelog producer: idempotent, transactional under exactly_once.
 */
bool
iq_producer_start(char **err)
{
	rd_kafka_conf_t *conf = iq_conf_new(err);
	char		errstr[512];
	bool		eos = iq_w->cfg.guarantee == IQ_EXACTLY_ONCE;

	if (conf == NULL)
		return false;
	/* one batch's updates are in flight at a time: its share of the budget */
	if (!iq_conf_set(conf, "enable.idempotence", "true", err) ||
		!iq_conf_set(conf, "acks", "all", err) ||
		!iq_conf_set(conf, "linger.ms", "2", err) ||
		!iq_conf_set(conf, "batch.num.messages", "10000", err) ||
		!iq_conf_set_int(conf, "queue.buffering.max.messages",
						 iq_w->mem.producer_queue_messages, err) ||
		!iq_conf_set_int(conf, "queue.buffering.max.kbytes",
						 iq_w->mem.producer_queue_kbytes, err) ||
		!iq_conf_set(conf, "compression.type", "lz4", err) ||
		!iq_conf_set(conf, "message.timeout.ms", "60000", err) ||
		(eos && !iq_conf_set(conf, "transactional.id", iq_w->transactional_id, err)) ||
		(eos && !iq_conf_set(conf, "transaction.timeout.ms", "60000", err)))
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, dr_msg_cb);
	iq_w->producer = iq_kafka_new(RD_KAFKA_PRODUCER, conf, IQ_H_PRODUCER, err);
	if (iq_w->producer == NULL)
		return false;
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		iq_w->changelog_last[p] = -1;
	iq_w->delivery_errors = 0;
	iq_w->txn_open = false;
	if (eos)
	{
		rd_kafka_error_t *error = txn_call(TXN_INIT, INIT_TXN_TIMEOUT_MS, NULL, NULL);

		if (error != NULL)
		{
			/* a broker that refused our credentials: that, not a timeout */
			rd_kafka_poll(iq_w->producer, 0);
			if (iq_w->broker_error)
				iq_broker_failure(errstr, sizeof(errstr), rd_kafka_error_code(error));
			else
				snprintf(errstr, sizeof(errstr),
						 "could not initialize Kafka transactions (iq_fdw.processing_guarantee = exactly_once, transactional.id \"%s\"): %s",
						 iq_w->transactional_id, rd_kafka_error_string(error));
			rd_kafka_error_destroy(error);
			*err = strdup(errstr);
			return false;
		}
	}
	return true;
}

/*
 * iq_producer_stop
 *		Abort an open transaction, deliver what is queued within a bound,
 *		and drop the producer.
 */
void
iq_producer_stop(void)
{
	if (iq_w->producer == NULL)
		return;
	if (iq_w->txn_open)
		iq_changelog_abort();
	{
		int64		deadline = iq_now_ms() + PRODUCER_STOP_FLUSH_MS;
		int			slice;

		while ((slice = iq_wait_slice(deadline, IQ_WAIT_FINISH)) > 0 &&
			   rd_kafka_flush(iq_w->producer, slice) == RD_KAFKA_RESP_ERR__TIMED_OUT)
			iq_drain_logs();
	}
	if (changelog_rkt != NULL)
		rd_kafka_topic_destroy(changelog_rkt);
	changelog_rkt = NULL;
	iq_log_detach(IQ_H_PRODUCER);
	rd_kafka_destroy(iq_w->producer);
	iq_w->producer = NULL;
}

/*
 * iq_changelog_begin
 *		Start a batch: a transaction under exactly_once.
 */
bool
iq_changelog_begin(void)
{
	rd_kafka_error_t *error;

	iq_w->delivery_errors = 0;
	if (iq_w->cfg.guarantee != IQ_EXACTLY_ONCE || iq_w->txn_open)
		return true;
	error = rd_kafka_begin_transaction(iq_w->producer);
	if (error != NULL)
	{
		iq_fail("could not begin a Kafka transaction: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		return false;
	}
	iq_w->txn_open = true;
	return true;
}

/*
 * iq_changelog_produce
 *		Queue one count update; waits for room when the queue is full.
 *		mark: the last record of its partition in this flush, which carries
 *		the partition's order position in a header (IQ_POSITION_HEADER) for
 *		the standby replicas that read the changelog.
 */
bool
iq_changelog_produce(int partition, const char *key, size_t key_len, int64 count,
					 bool mark)
{
	unsigned char value[8];
	unsigned char position[16];
	int64		deadline = 0;
	rd_kafka_headers_t *headers = NULL;

	iq_encode_int64(count, value);
	if (mark)
	{
		iq_encode_int64(iq_w->parts[partition].order_next, position);
		iq_encode_int64(iq_w->parts[partition].order_end, position + 8);
	}
	if (changelog_rkt == NULL &&
		(changelog_rkt = rd_kafka_topic_new(iq_w->producer, iq_w->cfg.changelog_topic,
											NULL)) == NULL)
	{
		iq_fail("could not open changelog topic \"%s\": %s", iq_w->cfg.changelog_topic,
				rd_kafka_err2str(rd_kafka_last_error()));
		return false;
	}
	for (;;)
	{
		rd_kafka_resp_err_t err;

		/* producev takes the headers when it succeeds, only then */
		if (mark && headers == NULL)
		{
			headers = rd_kafka_headers_new(1);
			rd_kafka_header_add(headers, IQ_POSITION_HEADER, -1, position, sizeof(position));
		}
		/*
		 * A non-NULL pointer keeps an empty key a key, not a null key; NULL
		 * headers are none.
		 */
		err = rd_kafka_producev(iq_w->producer,
								RD_KAFKA_V_RKT(changelog_rkt),
								RD_KAFKA_V_PARTITION(partition),
								RD_KAFKA_V_KEY(key_len ? key : "", key_len),
								RD_KAFKA_V_VALUE(value, 8),
								RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
								RD_KAFKA_V_HEADERS(headers),
								RD_KAFKA_V_END);
		if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			/* the message owns its headers now */
			if (deadline != 0)
				iq_progress();	/* the queue had room again: deliveries go on */
			return true;
		}
		if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
		{
			if (headers != NULL)
				rd_kafka_headers_destroy(headers);
			iq_fail("could not produce to changelog topic \"%s\": %s",
					iq_w->cfg.changelog_topic, rd_kafka_err2str(err));
			return false;
		}
		/* the queue is full: wait for room, as long as a flush would */
		if (deadline == 0)
			deadline = iq_now_ms() + FLUSH_TIMEOUT_MS;
		if (iq_wait_slice(deadline, IQ_WAIT_FINISH) == 0)
		{
			if (headers != NULL)
				rd_kafka_headers_destroy(headers);
			iq_fail("%s while writing changelog topic \"%s\"",
					iq_got_sigterm || iq_postmaster_gone() ? "stopped" : "timed out",
					iq_w->cfg.changelog_topic);
			return false;
		}
		rd_kafka_poll(iq_w->producer, 10);
	}
}

/*
 * rebalance_under_way
 *		Whether the group refused the transaction's offsets because it is
 *		moving partitions (cooperative: the member counts on meanwhile, with
 *		the generation it had): the transaction can be aborted and its
 *		input read again, with no teardown of the pipeline.
 */
static bool
rebalance_under_way(const rd_kafka_error_t *error)
{
	rd_kafka_resp_err_t code = rd_kafka_error_code(error);

	return iq_cooperative() && rd_kafka_error_txn_requires_abort(error) &&
		(code == RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION ||
		 code == RD_KAFKA_RESP_ERR_REBALANCE_IN_PROGRESS ||
		 code == RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
}

/*
 * iq_changelog_finish
 *		Make the batch's changelog records durable: wait for delivery
 *		(at_least_once), or send the input offsets to the transaction and
 *		commit it (exactly_once).  False leaves the pipeline failed.
 */
bool
iq_changelog_finish(rd_kafka_topic_partition_list_t *offsets)
{
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
	rd_kafka_error_t *error;
	int64		deadline;
	int			slice;
	int			left = rd_kafka_outq_len(iq_w->producer);

	/* in slices, so that a stop does not wait for a dead broker */
	iq_step(IQ_STEP_CHANGELOG, -1);
	deadline = iq_now_ms() + FLUSH_TIMEOUT_MS;
	while ((slice = iq_wait_slice(deadline, IQ_WAIT_FINISH)) > 0 &&
		   (err = rd_kafka_flush(iq_w->producer, Min(slice, 100))) == RD_KAFKA_RESP_ERR__TIMED_OUT)
	{
		int			now_left = rd_kafka_outq_len(iq_w->producer);

		/* deliveries are coming: not a stall, however long it takes */
		if (now_left < left)
			iq_progress();
		left = now_left;
		iq_drain_logs();
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("timed out writing changelog topic \"%s\" to %s (iq_fdw.bootstrap_servers)",
				iq_w->cfg.changelog_topic, iq_w->cfg.brokers);
		return false;
	}
	if (iq_w->delivery_errors > 0)
	{
		iq_fail("%s", iq_w->failure);
		return false;
	}
	if (iq_w->cfg.guarantee != IQ_EXACTLY_ONCE)
		return true;

	if (offsets->cnt > 0)
	{
		rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(iq_w->consumer);

		error = txn_call(TXN_SEND_OFFSETS, TXN_TIMEOUT_MS, offsets, cgmd);
		rd_kafka_consumer_group_metadata_destroy(cgmd);
		if (error != NULL && rebalance_under_way(error))
		{
			/* the transaction is aborted and its input read again: flush.c */
			ereport(LOG,
					(errmsg("iq_fdw worker: a flush met a rebalance of group \"%s\"; its Kafka transaction is aborted and what it held is counted again",
							iq_w->cfg.app_id),
					 errdetail_internal("%s", rd_kafka_error_string(error))));
			rd_kafka_error_destroy(error);
			iq_w->rewind = true;
			return false;
		}
		if (error != NULL)
		{
			iq_fail("could not add offsets to the Kafka transaction: %s", rd_kafka_error_string(error));
			rd_kafka_error_destroy(error);
			return false;
		}
	}
	error = txn_call(TXN_COMMIT, TXN_TIMEOUT_MS, NULL, NULL);
	if (error != NULL)
	{
		iq_fail("could not commit the Kafka transaction: %s", rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
		return false;
	}
	iq_w->txn_open = false;
	return true;
}

/*
 * iq_changelog_abort
 *		Abort the open transaction, if any (exactly_once).
 */
void
iq_changelog_abort(void)
{
	rd_kafka_error_t *error;

	if (!iq_w->txn_open || iq_w->producer == NULL)
		return;
	error = txn_call(TXN_ABORT, ABORT_TXN_TIMEOUT_MS, NULL, NULL);
	if (error != NULL)
		rd_kafka_error_destroy(error);
	iq_w->txn_open = false;
}

/*
 * iq_changelog_mark
 *		The order position the last record of a flush carries
 *		(iq_changelog_produce): the next order offset and the partition's
 *		end then.
 */
bool
iq_changelog_mark(const rd_kafka_message_t *m, int64 *order_next, int64 *order_end)
{
	rd_kafka_headers_t *hdrs = NULL;
	const void *val = NULL;
	size_t		size = 0;

	if (rd_kafka_message_headers(m, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
		rd_kafka_header_get_last(hdrs, IQ_POSITION_HEADER, &val, &size) !=
		RD_KAFKA_RESP_ERR_NO_ERROR || val == NULL || size != 16)
		return false;
	*order_next = iq_decode_int64(val);
	*order_end = iq_decode_int64((const unsigned char *) val + 8);
	return true;
}

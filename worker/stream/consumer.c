/*-------------------------------------------------------------------------
 * consumer.c
 *	  The group consumer of the customer and order topics, and what happens
 *	  when partitions are assigned or revoked.
 *
 * The range assignor gives partition p of both topics to the same member
 * when they have the same partition count: the co-partitioning the join
 * needs.  The rebalance callback runs on the worker's main thread inside a
 * poll; on assignment it opens and restores each partition's store before
 * assigning explicit offsets, so no input is processed against a store that
 * is not caught up.  Offsets are never committed by librdkafka itself:
 * flush.c commits them after the state and changelog are durable.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "miscadmin.h"

#include "worker/kafka_conf.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stream/fetch_wake.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/stream.h"

static void on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list);
static void on_revoke(rd_kafka_t *rk);

/*
 * topic_partition_count
 *		Partitions of a topic from the broker's metadata; -1 when missing.
 *		leaders[p] gets the broker leading partition p, -1 when unknown.
 */
static int
topic_partition_count(rd_kafka_t *rk, const char *topic, int32 *leaders,
					  char *why, size_t whylen)
{
	rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
	const struct rd_kafka_metadata *md = NULL;
	rd_kafka_resp_err_t err;
	int			n = -1;

	if (rkt == NULL)
	{
		snprintf(why, whylen, "%s", rd_kafka_err2str(rd_kafka_last_error()));
		return -1;
	}
	err = iq_metadata(rk, rkt, &md, 10000);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(why, whylen, "%s", rd_kafka_err2str(err));
	else if (md->topic_cnt != 1 || md->topics[0].err != RD_KAFKA_RESP_ERR_NO_ERROR)
		snprintf(why, whylen, "%s",
				 md->topic_cnt == 1 ? rd_kafka_err2str(md->topics[0].err) : "no metadata");
	else
	{
		n = md->topics[0].partition_cnt;
		for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
			leaders[p] = -1;
		for (int i = 0; i < n; i++)
		{
			const rd_kafka_metadata_partition_t *mp = &md->topics[0].partitions[i];

			if (mp->id >= 0 && mp->id < IQ_MAX_PARTITIONS)
				leaders[mp->id] = mp->leader;
		}
	}
	if (md)
		rd_kafka_metadata_destroy(md);
	rd_kafka_topic_destroy(rkt);
	return n;
}

/*
 * rebalance_cb
 *		Called inside our polls.  Never lets a PostgreSQL error unwind
 *		through librdkafka's frames: a failure becomes iq_fail().
 */
static void
rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
			 rd_kafka_topic_partition_list_t *list, void *opaque)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	PG_TRY();
	{
		if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
			on_assign(rk, list);
		else
			on_revoke(rk);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		iq_fail("rebalance failed: %s", edata->message);
		FreeErrorData(edata);
		rd_kafka_assign(rk, NULL);
	}
	PG_END_TRY();
	iq_w->ownership_due = true;
}

/*
 * note_committed
 *		What the group acknowledged committing, so that a commit of the same
 *		positions is not sent again (a stop would wait for it in vain when
 *		the broker is down).
 */
static void
note_committed(const rd_kafka_topic_partition_list_t *offsets)
{
	for (int i = 0; offsets && i < offsets->cnt; i++)
	{
		const rd_kafka_topic_partition_t *tp = &offsets->elems[i];

		if (tp->err != RD_KAFKA_RESP_ERR_NO_ERROR || tp->partition < 0 ||
			tp->partition >= IQ_MAX_PARTITIONS)
			continue;
		if (strcmp(tp->topic, iq_w->cfg.order_topic) == 0)
			iq_w->parts[tp->partition].order_committed = tp->offset;
		else if (strcmp(tp->topic, iq_w->cfg.customer_topic) == 0)
			iq_w->parts[tp->partition].customer_committed = tp->offset;
	}
}

/*
 * offset_commit_cb
 *		Results of asynchronous commits, served by our polls.
 */
static void
offset_commit_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				 rd_kafka_topic_partition_list_t *offsets, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
		note_committed(offsets);
}

/*
 * positions_committed
 *		Every assigned partition's positions are what the group has.
 */
static bool
positions_committed(void)
{
	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (!part->assigned)
			continue;
		if ((part->order_next >= 0 && part->order_next != part->order_committed) ||
			(part->customer_next >= 0 && part->customer_next != part->customer_committed))
			return false;
	}
	return true;
}

/*
 * iq_consumer_start
 *		Create the group consumer and subscribe to both topics.
 */
bool
iq_consumer_start(char **err)
{
	rd_kafka_conf_t *conf = iq_conf_new(err);
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t rerr;
	char		errstr[512];
	rd_kafka_t *rk;
	char		kbytes[32],
				messages[32],
				fetch[32];

	if (conf == NULL)
		return false;
	/* the prefetch queue is the consumer's share of iq_fdw.memory_budget */
	snprintf(kbytes, sizeof(kbytes), "%d", iq_w->mem.consumer_queue_kbytes);
	snprintf(messages, sizeof(messages), "%d", iq_w->mem.consumer_queue_messages);
	snprintf(fetch, sizeof(fetch), "%d", iq_w->mem.consumer_fetch_bytes);
	if (!iq_conf_set(conf, "group.id", iq_w->cfg.app_id, err) ||
		!iq_conf_set(conf, "partition.assignment.strategy", "range", err) ||
		!iq_conf_set(conf, "enable.auto.commit", "false", err) ||
		!iq_conf_set(conf, "enable.auto.offset.store", "false", err) ||
		!iq_conf_set(conf, "auto.offset.reset", "earliest", err) ||
		!iq_conf_set(conf, "isolation.level", "read_committed", err) ||
		/* restores run inside the rebalance callback */
		!iq_conf_set(conf, "max.poll.interval.ms", "900000", err) ||
		!iq_conf_set(conf, "session.timeout.ms", "10000", err) ||
		!iq_conf_set(conf, "heartbeat.interval.ms", "2000", err) ||
		!iq_conf_set(conf, "fetch.wait.max.ms", "50", err) ||
		!iq_conf_set(conf, "queued.max.messages.kbytes", kbytes, err) ||
		!iq_conf_set(conf, "queued.min.messages", messages, err) ||
		!iq_conf_set(conf, "fetch.max.bytes", fetch, err) ||
		!iq_conf_set(conf, "max.partition.fetch.bytes", fetch, err) ||
		/* or librdkafka raises fetch.max.bytes to it */
		!iq_conf_set(conf, "message.max.bytes", fetch, err) ||
		/* a failed fetch is retried soon (a full queue is fetch_wake.c's) */
		!iq_conf_set(conf, "fetch.error.backoff.ms", "20", err) ||
		!iq_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", err))
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);

	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		*err = strdup(errstr);
		return false;
	}
	iq_w->consumer = rk;
	iq_log_attach(rk, IQ_H_CONSUMER);
	rd_kafka_poll_set_consumer(rk);
	iq_w->consumer_q = rd_kafka_queue_get_consumer(rk);
	rd_kafka_queue_io_event_enable(iq_w->consumer_q, iq_w->wake_fd[1], "1", 1);

	topics = rd_kafka_topic_partition_list_new(2);
	rd_kafka_topic_partition_list_add(topics, iq_w->cfg.customer_topic, RD_KAFKA_PARTITION_UA);
	rd_kafka_topic_partition_list_add(topics, iq_w->cfg.order_topic, RD_KAFKA_PARTITION_UA);
	rerr = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (rerr != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		*err = strdup(rd_kafka_err2str(rerr));
		return false;
	}
	return true;
}

/*
 * iq_consumer_stop
 *		Commit what is done, leave the group, free the handle.
 */
void
iq_consumer_stop(void)
{
	rd_kafka_t *rk = iq_w->consumer;
	rd_kafka_queue_t *q;
	rd_kafka_error_t *error;
	int64		deadline;

	if (rk == NULL)
		return;
	on_revoke(rk);				/* commits what is done unless we failed */

	/* close on a queue we serve, so a dead coordinator cannot hang us */
	q = rd_kafka_queue_new(rk);
	error = rd_kafka_consumer_close_queue(rk, q);
	if (error != NULL)
		rd_kafka_error_destroy(error);
	else
	{
		int			slice;

		deadline = iq_now_ms() + 10000;
		while (!rd_kafka_consumer_closed(rk) &&
			   (slice = iq_wait_slice(deadline, IQ_WAIT_LEAVE)) > 0)
		{
			rd_kafka_event_t *ev = rd_kafka_queue_poll(q, Min(slice, 100));

			if (ev == NULL)
				continue;
			if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
				rd_kafka_assign(rk, NULL);
			rd_kafka_event_destroy(ev);
		}
	}
	rd_kafka_queue_destroy(q);
	if (iq_w->consumer_q)
	{
		rd_kafka_queue_io_event_enable(iq_w->consumer_q, -1, NULL, 0);
		rd_kafka_queue_destroy(iq_w->consumer_q);
	}
	iq_w->consumer_q = NULL;
	if (iq_w->admin_q)
		rd_kafka_queue_destroy(iq_w->admin_q);
	iq_w->admin_q = NULL;
	iq_log_detach(IQ_H_CONSUMER);
	rd_kafka_destroy_flags(rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	iq_w->consumer = NULL;
}

/*
 * wake_fetchers
 *		Wake the broker thread of every leader of our partitions (see
 *		fetch_wake.c), once per broker.
 */
static void
wake_fetchers(void)
{
	int32		woken[2 * IQ_MAX_PARTITIONS];
	int			nwoken = 0;

	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (!part->assigned)
			continue;
		for (int t = 0; t < 2; t++)
		{
			const char *topic = t == 0 ? iq_w->cfg.order_topic : iq_w->cfg.customer_topic;
			int32		leader = t == 0 ? iq_w->order_leaders[p] : iq_w->customer_leaders[p];
			bool		seen = false;

			for (int i = 0; i < nwoken && !seen; i++)
				seen = woken[i] == leader;
			if (seen)
				continue;
			if (leader >= 0)
				woken[nwoken++] = leader;
			iq_wake_fetcher(iq_w->consumer, topic, p);
		}
	}
}

/*
 * iq_consumer_poll
 *		Up to max records, for at most budget_ms; 0 when nothing is there.
 */
int
iq_consumer_poll(rd_kafka_message_t **msgs, int max, int budget_ms)
{
	int			n = 0;
	int64		deadline = iq_now_ms() + budget_ms;
	char		buf[256];
	IqQueueWatch watch;

	/* the wake-up pipe is level-triggered for us: empty it first */
	while (read(iq_w->wake_fd[0], buf, sizeof(buf)) > 0)
		;
	iq_queue_watch_begin(&watch, iq_w->consumer_q, iq_w->mem.consumer_queue_messages,
						 iq_w->mem.consumer_queue_kbytes);
	while (n < max && !iq_w->failed)
	{
		ssize_t		got = rd_kafka_consume_batch_queue(iq_w->consumer_q, 0,
													   msgs + n, max - n);

		if (got <= 0)
			break;
		iq_queue_watch_took(&watch, msgs + n, got);
		n += got;
		if (iq_now_ms() >= deadline)
			break;
	}
	/* fetching resumes while this batch is processed, not a second later */
	if (iq_queue_watch_reopened(&watch, iq_w->consumer_q))
		wake_fetchers();
	return n;
}

/*
 * iq_consumer_positions
 *		Next offsets of every assigned partition of both topics.
 */
rd_kafka_topic_partition_list_t *
iq_consumer_positions(void)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count + 1);

	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (!part->assigned)
			continue;
		if (part->order_next >= 0)
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.order_topic, p)->offset = part->order_next;
		if (part->customer_next >= 0)
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.customer_topic, p)->offset = part->customer_next;
	}
	return list;
}

/*
 * iq_consumer_commit
 *		Commit the positions of processed records (at_least_once).
 *
 * Asynchronous in the steady state; synchronous, bounded by a timeout, on
 * revoke and shutdown.
 */
bool
iq_consumer_commit(bool sync)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_queue_t *q = NULL;
	bool		ok = true;

	if (iq_w->consumer == NULL || iq_w->cfg.guarantee == IQ_EXACTLY_ONCE ||
		positions_committed())
		return true;
	iq_step(IQ_STEP_COMMITTING, -1);
	list = iq_consumer_positions();
	if (list->cnt == 0)
	{
		rd_kafka_topic_partition_list_destroy(list);
		return true;
	}
	/* without a queue of ours, rd_kafka_commit_queue would wait for the broker */
	if (!sync)
		rd_kafka_commit(iq_w->consumer, list, 1);
	else
	{
		rd_kafka_event_t *ev = NULL;
		int64		deadline = iq_now_ms() + 10000;
		int			slice;

		q = rd_kafka_queue_new(iq_w->consumer);
		rd_kafka_commit_queue(iq_w->consumer, list, q, NULL, NULL);
		while (ev == NULL && (slice = iq_wait_slice(deadline, IQ_WAIT_FINISH)) > 0)
			ev = rd_kafka_queue_poll(q, slice);

		if (ev != NULL && rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR)
			note_committed(rd_kafka_event_topic_partition_list(ev));
		else
		{
			ereport(LOG,
					(errmsg("iq_fdw worker: could not commit offsets of group \"%s\"",
							iq_w->cfg.app_id),
					 errdetail("%s", ev ? rd_kafka_event_error_string(ev) : "timed out")));
			ok = false;
		}
		if (ev)
			rd_kafka_event_destroy(ev);
		rd_kafka_queue_destroy(q);
	}
	rd_kafka_topic_partition_list_destroy(list);
	return ok;
}

/*
 * iq_consumer_refresh_ends
 *		High watermarks from the last fetches (no network round trip).
 */
void
iq_consumer_refresh_ends(void)
{
	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];
		int64_t		lo,
					hi;

		if (!part->assigned)
			continue;
		if (rd_kafka_get_watermark_offsets(iq_w->consumer, iq_w->cfg.order_topic, p,
										   &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
			part->order_end = hi;
		if (rd_kafka_get_watermark_offsets(iq_w->consumer, iq_w->cfg.customer_topic, p,
										   &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR && hi >= 0)
			part->customer_end = hi;
		part->stats.order_end = part->order_end;
		part->stats.customer_end = part->customer_end;
		/* readers see what is written, not what is counted */
		iq_store_set_position(p, part->stats.order_offset, part->order_end);
	}
}

/*
 * iq_consumer_caught_up
 *		Every assigned partition read up to the end its last fetch reported,
 *		give or take one offset: a transaction's commit marker takes an
 *		offset but is never a record, so an input whose last write was a
 *		transaction would otherwise look one record behind for good
 *		(librdkafka's position may step over the marker: it is taken when
 *		ahead).  A partition nothing was read from yet does not count.
 */
bool
iq_consumer_caught_up(void)
{
	rd_kafka_topic_partition_list_t *list;
	bool		caught_up = true;

	iq_consumer_refresh_ends();
	list = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count + 1);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (iq_w->parts[p].assigned)
		{
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.order_topic, p);
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.customer_topic, p);
		}
	(void) rd_kafka_position(iq_w->consumer, list);
	for (int i = 0; i < list->cnt && caught_up; i++)
	{
		const rd_kafka_topic_partition_t *tp = &list->elems[i];
		IqPart	   *part = &iq_w->parts[tp->partition];
		bool		is_order = strcmp(tp->topic, iq_w->cfg.order_topic) == 0;
		int64		next = is_order ? part->order_next : part->customer_next;
		int64		end = is_order ? part->order_end : part->customer_end;

		if (tp->err == RD_KAFKA_RESP_ERR_NO_ERROR && tp->offset > next)
			next = tp->offset;
		if (next >= 0 && next < end - 1)
			caught_up = false;
	}
	rd_kafka_topic_partition_list_destroy(list);
	return caught_up;
}

/*
 * on_assign
 *		Check co-partitioning, open and restore each partition, then assign
 *		explicit offsets.
 */
static void
on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list)
{
	char		why[256] = "";
	int			nc,
				no;
	bool		mine[IQ_MAX_PARTITIONS];
	bool		mine_customer[IQ_MAX_PARTITIONS];
	int64		local_order_next[IQ_MAX_PARTITIONS];
	rd_kafka_topic_partition_list_t *committed;
	rd_kafka_topic_partition_list_t *assign;
	rd_kafka_resp_err_t err;

	iq_cache_clear();			/* restores below change the state under it */
	iq_step(IQ_STEP_ASSIGNING, -1);
	iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions assigned, checking topics");
	nc = topic_partition_count(rk, iq_w->cfg.customer_topic, iq_w->customer_leaders,
							   why, sizeof(why));
	no = topic_partition_count(rk, iq_w->cfg.order_topic, iq_w->order_leaders,
							   why, sizeof(why));
	if (nc <= 0 || no <= 0)
	{
		iq_fail("topic \"%s\" (iq_fdw.%s_topic) is not readable: %s",
				nc <= 0 ? iq_w->cfg.customer_topic : iq_w->cfg.order_topic,
				nc <= 0 ? "customer" : "order", why);
		rd_kafka_assign(rk, NULL);
		return;
	}
	if (nc != no || nc != iq_w->partition_count)
	{
		iq_fail("topics \"%s\" (%d partitions), \"%s\" (%d partitions) and \"%s\" (%d partitions) must have the same partition count for the join (co-partitioning)",
				iq_w->cfg.customer_topic, nc, iq_w->cfg.order_topic, no,
				iq_w->cfg.changelog_topic, iq_w->partition_count);
		rd_kafka_assign(rk, NULL);
		return;
	}

	memset(mine, 0, sizeof(mine));
	memset(mine_customer, 0, sizeof(mine_customer));
	for (int i = 0; i < list->cnt; i++)
	{
		int			p = list->elems[i].partition;

		if (p < 0 || p >= iq_w->partition_count)
			continue;
		if (strcmp(list->elems[i].topic, iq_w->cfg.order_topic) == 0)
			mine[p] = true;
		else
			mine_customer[p] = true;
	}

	/*
	 * The range assignor keeps partition p of both topics together only when
	 * every member subscribes to the same two topics.
	 */
	if (memcmp(mine, mine_customer, sizeof(mine)) != 0)
	{
		iq_fail("the group \"%s\" gave this instance different partitions of \"%s\" and \"%s\": another member of iq_fdw.application_id uses other topics; every instance must have the same iq_fdw.customer_topic and iq_fdw.order_topic",
				iq_w->cfg.app_id, iq_w->cfg.customer_topic, iq_w->cfg.order_topic);
		rd_kafka_assign(rk, NULL);
		return;
	}
	/* what we held and no longer hold is closed: another member owns it now */
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (!mine[p] && iq_store_is_open(p))
		{
			iq_step(IQ_STEP_CLOSING, p);
			iq_store_close(p);
		}

	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqCheckpoint ck;
		uint64_t	generation;
		bool		existed = false;
		bool		counts_empty;
		bool		customers_empty;
		IqPart	   *part = &iq_w->parts[p];

		if (!mine[p])
			continue;
		iq_stats_assigned(&part->stats);
		part->wrong_partition_logged = false;
		part->counts_restored = false;
		part->order_next = -1;
		part->order_end = -1;
		part->customer_end = -1;
		part->order_committed = -2;
		part->customer_committed = -2;
		iq_step(IQ_STEP_OPENING, p);
		if (!iq_restore_open(p, &ck, &existed))
		{
			rd_kafka_assign(rk, NULL);
			return;
		}
		iq_store_set_held(p, true, true);
		/* a store that exists but holds nothing is as good as a new one */
		counts_empty = !existed || iq_store_is_empty(p, IQ_STORE_ORDER_COUNT);
		customers_empty = !existed || iq_store_is_empty(p, IQ_STORE_CUSTOMER);
		generation = iq_cache_generation();
		if (!iq_restore_partition(p, existed, &ck))
		{
			rd_kafka_assign(rk, NULL);
			return;
		}
		part->customer_next = ck.customer_next;
		part->changelog_next = ck.changelog_next;
		local_order_next[p] = ck.order_next;
		/* a still empty count store: the (empty) cache knows all of it */
		if (counts_empty && !part->counts_restored)
			iq_cache_set_complete(p);
		/* an empty store whose every customer went through the cache */
		if (customers_empty && iq_cache_generation() == generation)
			iq_cache_set_customers_complete(p);
		part->stats.restoring = false;
		part->stats.customer_offset = ck.customer_next;
		part->stats.changelog_offset = ck.changelog_next - 1;
	}

	/*
	 * The group's committed order offsets are the authority for the stream;
	 * its customer offsets only tell what a commit need not send again.
	 */
	committed = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p])
			rd_kafka_topic_partition_list_add(committed, iq_w->cfg.order_topic, p);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p])
			rd_kafka_topic_partition_list_add(committed, iq_w->cfg.customer_topic, p);
	iq_step(IQ_STEP_ASSIGNING, -1);
	{
		int64		deadline = iq_now_ms() + 30000;
		int			slice;

		/* in slices: a stop or the postmaster's death ends the wait */
		err = RD_KAFKA_RESP_ERR__TIMED_OUT;
		while ((slice = iq_wait_slice(deadline, IQ_WAIT_START)) > 0 &&
			   (err = rd_kafka_committed(rk, committed, slice)) == RD_KAFKA_RESP_ERR__TIMED_OUT)
			iq_drain_logs();
	}
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not read the committed offsets of group \"%s\" (iq_fdw.application_id): %s",
				iq_w->cfg.app_id, rd_kafka_err2str(err));
		rd_kafka_topic_partition_list_destroy(committed);
		rd_kafka_assign(rk, NULL);
		return;
	}

	assign = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count);
	for (int i = 0; i < committed->cnt; i++)
	{
		int			p = committed->elems[i].partition;
		IqPart	   *part = &iq_w->parts[p];
		int64		off = committed->elems[i].offset;

		if (strcmp(committed->elems[i].topic, iq_w->cfg.order_topic) != 0)
		{
			part->customer_committed = off;
			continue;
		}

		/*
		 * The local checkpoint can be ahead of the group's commit only when
		 * an at_least_once worker stopped between writing its state (after
		 * the changelog) and committing: those records are counted already.
		 */
		part->order_committed = off;
		if (local_order_next[p] > off)
			off = local_order_next[p];
		part->order_next = off >= 0 ? off : -1;
		part->stats.order_offset = part->order_next;
		rd_kafka_topic_partition_list_add(assign, iq_w->cfg.order_topic, p)->offset =
			off >= 0 ? off : RD_KAFKA_OFFSET_BEGINNING;
		rd_kafka_topic_partition_list_add(assign, iq_w->cfg.customer_topic, p)->offset =
			part->customer_next >= 0 ? part->customer_next : RD_KAFKA_OFFSET_BEGINNING;
		part->assigned = true;
		iq_store_set_held(p, true, false);
	}
	rd_kafka_topic_partition_list_destroy(committed);
	err = rd_kafka_assign(rk, assign);
	rd_kafka_topic_partition_list_destroy(assign);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not assign partitions: %s", rd_kafka_err2str(err));
		return;
	}
	iq_stats_publish();
	iq_memory_release();		/* what the restores freed */
	iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
}

/*
 * on_revoke
 *		Commit what was processed and stop reading; stores stay open until
 *		the next assignment tells whether we keep them.
 */
static void
on_revoke(rd_kafka_t *rk)
{
	bool		any = false;
	bool		lost = rd_kafka_assignment_lost(rk);

	/*
	 * What is counted but not written goes before the partitions do, unless
	 * they are gone already (session timed out, group fenced): another
	 * member may be restoring them now, and whatever we wrote to their
	 * changelog would land after its restore.  Their records are counted
	 * again from the last commit, by whoever owns them.
	 */
	if (lost)
		ereport(LOG,
				(errmsg("iq_fdw worker: the partitions of group \"%s\" were lost before they were revoked; what was counted since the last commit is dropped",
						iq_w->cfg.app_id),
				 errhint("Their new owner counts those records again.  A worker that stalls longer than the group's session or poll timeout loses its partitions this way.")));
	if (!iq_w->failed && !lost)
		iq_flush_now();
	iq_cache_clear();
	iq_flush_discard();
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		any |= iq_w->parts[p].assigned;
	if (any && !iq_w->failed && !lost)
		iq_consumer_commit(true);
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (iq_store_is_open(p))
		{
			iq_step(IQ_STEP_RELEASING, p);
			iq_store_set_held(p, false, false);
		}
		part->assigned = false;
		part->stats.assigned = false;
	}
	rd_kafka_assign(rk, NULL);
	iq_stats_publish();
	if (!iq_w->failed && !iq_got_sigterm)
		iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions revoked");
}

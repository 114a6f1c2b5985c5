/*-------------------------------------------------------------------------
 * consumer.c
 *	  The group consumer of the customer and order topics: created and
 *	  subscribed, polled, its positions committed, closed.
 *
 * What happens when partitions are assigned or revoked is rebalance.c's,
 * whose callback the main loop hands to iq_consumer_start.  Offsets are
 * never committed by librdkafka itself: flush.c commits them after the
 * state and changelog are durable.
 *
 * With iq_fdw.rebalance_protocol = cooperative the group runs
 * cooperative-sticky over the order topic alone, and a second consumer
 * with no group reads customer partition p exactly while the group gives
 * this instance order partition p (iq_customers_assign): co-partitioning
 * by construction, whatever the sticky assignor decides.  Its records join
 * the same polls, ahead of the orders taken with them; its positions are
 * committed with the group's as before (the coordinator takes offsets of
 * any partition from a member of the current generation), and the store's
 * checkpoint stays the authority for them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <unistd.h>

#include "common/settings.h"
#include "worker/kafka_conf.h"
#include "worker/state.h"
#include "worker/stream/fetch_wake.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/stream.h"

/* the longest a synchronous commit (on revoke, on stop) waits for the broker */
#define COMMIT_TIMEOUT_MS	10000
/* the longest leaving the group waits, within a stop's deadline */
#define CLOSE_TIMEOUT_MS	10000
/*
 * the longest the LeaveGroup may take to be sent, within CLOSE_TIMEOUT_MS:
 * at once when the group knows us, but never when the partitions were lost
 * already (librdkafka then revokes nothing, and so never leaves)
 */
#define LEAVE_TIMEOUT_MS	2000
/* the longest a seek back after an aborted transaction waits */
#define SEEK_TIMEOUT_MS		5000
/* fetch.wait.max.ms: records reach the poll soon after they are written */
#define FETCH_WAIT_MS		50

/*
 * consumer_share
 *		The group consumer's bound of its share of the budget; with the
 *		customer consumer beside it, three quarters (it one quarter).
 */
static int
consumer_share(int whole, bool customers)
{
	if (!iq_cooperative())
		return whole;
	return customers ? Max(whole / 4, 1) : whole - whole / 4;
}

/*
 * customers_start
 *		The customer topic's consumer of the cooperative protocol: no group
 *		to join, fed through the main loop's wake-up pipe like the group's.
 */
static bool
customers_start(char **err)
{
	char		group[600];
	rd_kafka_conf_t *conf;

	snprintf(group, sizeof(group), "%s-customers", iq_w->cfg.app_id);
	conf = iq_consumer_conf_new(group, FETCH_WAIT_MS,
								Max(consumer_share(iq_w->mem.consumer_queue_kbytes, true), 256),
								Max(consumer_share(iq_w->mem.consumer_queue_messages, true), 1000),
								Max(consumer_share(iq_w->mem.consumer_fetch_bytes, true), 16 * 1024),
								err);
	if (conf == NULL)
		return false;
	iq_w->customers = iq_kafka_new(RD_KAFKA_CONSUMER, conf, IQ_H_CUSTOMERS, err);
	if (iq_w->customers == NULL)
		return false;
	rd_kafka_poll_set_consumer(iq_w->customers);
	iq_w->customers_q = rd_kafka_queue_get_consumer(iq_w->customers);
	rd_kafka_queue_io_event_enable(iq_w->customers_q, iq_w->wake_fd[1], "1", 1);
	return true;
}

/* customers_stop: nothing of a group to leave */
static void
customers_stop(void)
{
	if (iq_w->customers_q)
	{
		rd_kafka_queue_io_event_enable(iq_w->customers_q, -1, NULL, 0);
		rd_kafka_queue_destroy(iq_w->customers_q);
		iq_w->customers_q = NULL;
	}
	if (iq_w->customers == NULL)
		return;
	rd_kafka_assign(iq_w->customers, NULL);
	iq_log_detach(IQ_H_CUSTOMERS);
	rd_kafka_destroy_flags(iq_w->customers, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	iq_w->customers = NULL;
}

/*
 * iq_customers_assign
 *		Cooperative: read customer partition p for every order partition
 *		assigned, from the store's position; false after iq_fail().
 */
bool
iq_customers_assign(void)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	if (iq_w->customers == NULL)
		return true;
	list = rd_kafka_topic_partition_list_new(iq_w->partition_count + 1);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (iq_w->parts[p].assigned)
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.customer_topic, p)->offset =
				iq_w->parts[p].customer_next >= 0 ? iq_w->parts[p].customer_next :
				RD_KAFKA_OFFSET_BEGINNING;
	err = rd_kafka_assign(iq_w->customers, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not read topic \"%s\" (iq_fdw.customer_topic): %s",
				iq_w->cfg.customer_topic, rd_kafka_err2str(err));
		return false;
	}
	return true;
}

/* customer_handle: the consumer that reads the customer topic */
static rd_kafka_t *
customer_handle(void)
{
	return iq_w->customers ? iq_w->customers : iq_w->consumer;
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
iq_consumer_start(IqRebalanceCb rebalance_cb, char **err)
{
	rd_kafka_conf_t *conf;
	rd_kafka_topic_partition_list_t *topics;
	rd_kafka_resp_err_t rerr;
	rd_kafka_t *rk;

	/* the prefetch queue is the consumer's share of iq_fdw.memory_budget */
	conf = iq_consumer_conf_new(iq_w->cfg.app_id, FETCH_WAIT_MS,
								consumer_share(iq_w->mem.consumer_queue_kbytes, false),
								consumer_share(iq_w->mem.consumer_queue_messages, false),
								consumer_share(iq_w->mem.consumer_fetch_bytes, false), err);
	if (conf == NULL)
		return false;
	if (!iq_conf_set(conf, "partition.assignment.strategy",
					 iq_cooperative() ? "cooperative-sticky" : "range", err) ||
		/* restores run inside the rebalance callback */
		!iq_conf_set(conf, "max.poll.interval.ms", "900000", err) ||
		!iq_conf_set_int(conf, "session.timeout.ms", IQ_GROUP_SESSION_TIMEOUT_MS, err) ||
		!iq_conf_set_int(conf, "heartbeat.interval.ms", IQ_GROUP_HEARTBEAT_MS, err) ||
		!iq_conf_set(conf, "group.instance.id", iq_w->group_instance_id, err) ||
		!iq_conf_set(conf, "topic.metadata.refresh.interval.ms", "10000", err))
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
	rd_kafka_conf_set_offset_commit_cb(conf, offset_commit_cb);

	rk = iq_kafka_new(RD_KAFKA_CONSUMER, conf, IQ_H_CONSUMER, err);
	if (rk == NULL)
		return false;
	iq_w->consumer = rk;
	rd_kafka_poll_set_consumer(rk);
	iq_w->consumer_q = rd_kafka_queue_get_consumer(rk);
	rd_kafka_queue_io_event_enable(iq_w->consumer_q, iq_w->wake_fd[1], "1", 1);

	if (iq_cooperative() && !customers_start(err))
		return false;
	topics = rd_kafka_topic_partition_list_new(2);
	/* cooperative: the customer topic is read beside the group */
	if (!iq_cooperative())
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
 * release_handle
 *		Free the consumer's queues and the handle, without a close (done
 *		already, or impossible).
 */
static void
release_handle(rd_kafka_t *rk)
{
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
	customers_stop();
}

/*
 * still_member
 *		Whether librdkafka still has a member id in the group: it forgets
 *		it as it sends the LeaveGroup.
 */
static bool
still_member(rd_kafka_t *rk)
{
	char	   *id = rd_kafka_memberid(rk);
	bool		member = id != NULL && id[0] != '\0';

	if (id)
		rd_kafka_mem_free(rk, id);
	return member;
}

/*
 * leave_group
 *		Say to the group that we go, so that the others are given our
 *		partitions at once rather than after the session timeout.
 *
 * A static member (group.instance.id) sends no LeaveGroup when it closes
 * (KIP-345; librdkafka's rd_kafka_cgrp_leave_maybe skips it once the
 * handle terminates), but it does when it unsubscribes.  So: unsubscribe,
 * serve the revocation that follows (our partitions are given up already:
 * iq_rebalance_revoke), until the LeaveGroup is on its way; the close then
 * waits for its answer.  Bounded by LEAVE_TIMEOUT_MS and the stop's
 * deadline: a broker that is down gets no LeaveGroup, and the others wait
 * for the session timeout.
 */
static void
leave_group(rd_kafka_t *rk, int64 deadline)
{
	int			slice;

	if (rd_kafka_unsubscribe(rk) != RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	deadline = Min(deadline, iq_now_ms() + LEAVE_TIMEOUT_MS);
	while (still_member(rk) && (slice = iq_wait_slice(deadline, IQ_WAIT_LEAVE)) > 0)
	{
		rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, Min(slice, 20));

		if (msg)
			rd_kafka_message_destroy(msg);
	}
}

/*
 * iq_consumer_stop
 *		Leave the group, free the handle (iq_rebalance_revoke has given
 *		the partitions up first).
 */
void
iq_consumer_stop(void)
{
	rd_kafka_t *rk = iq_w->consumer;
	rd_kafka_queue_t *q;
	rd_kafka_error_t *error;
	int64		deadline = iq_now_ms() + CLOSE_TIMEOUT_MS;

	if (rk == NULL)
	{
		customers_stop();		/* a start that failed half way */
		return;
	}

	/*
	 * A failed pipeline's consumer, or one librdkafka failed for good
	 * (fenced, say), neither leaves nor closes: after a broker outage
	 * longer than the session timeout, librdkafka 2.0 never answered the
	 * assign of the close's revocation, and the worker froze for good (the
	 * fault suite's broker bounce).  Nothing is lost: the pipeline that
	 * follows joins as the same static member, which replaces this one at
	 * once; a worker that stops for good is forgotten at the session
	 * timeout.
	 */
	if (iq_w->failed ||
		rd_kafka_fatal_error(rk, NULL, 0) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		release_handle(rk);
		return;
	}
	leave_group(rk, deadline);
	/* close on a queue we serve, so a dead coordinator cannot hang us */
	q = rd_kafka_queue_new(rk);
	error = rd_kafka_consumer_close_queue(rk, q);
	if (error != NULL)
		rd_kafka_error_destroy(error);
	else
	{
		int			slice;

		while (!rd_kafka_consumer_closed(rk) &&
			   (slice = iq_wait_slice(deadline, IQ_WAIT_LEAVE)) > 0)
		{
			rd_kafka_event_t *ev = rd_kafka_queue_poll(q, Min(slice, 100));

			if (ev == NULL)
				continue;
			if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
			{
				if (iq_cooperative())
				{
					rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, rd_kafka_event_topic_partition_list(ev));

					if (e)
						rd_kafka_error_destroy(e);
				}
				else
					rd_kafka_assign(rk, NULL);
			}
			rd_kafka_event_destroy(ev);
		}
	}
	rd_kafka_queue_destroy(q);
	release_handle(rk);
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
			iq_wake_fetcher(t == 0 ? iq_w->consumer : customer_handle(), topic, p);
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
	iq_queue_watch_begin(&watch, !iq_fetch_queue_backoff(), iq_w->consumer_q,
						 iq_w->mem.consumer_queue_messages,
						 iq_w->mem.consumer_queue_kbytes);
	/* cooperative: the customers that came, ahead of the orders taken with them */
	if (iq_w->customers_q != NULL)
	{
		ssize_t		got = rd_kafka_consume_batch_queue(iq_w->customers_q, 0, msgs, max / 4 + 1);

		if (got > 0)
			n = (int) got;
	}
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
		int64		deadline = iq_now_ms() + CLOSE_TIMEOUT_MS;
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
					 ev ? errdetail_internal("%s", rd_kafka_event_error_string(ev)) :
					 errdetail("The group coordinator did not answer before the commit's deadline.")));
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
		if (rd_kafka_get_watermark_offsets(customer_handle(), iq_w->cfg.customer_topic, p,
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
	rd_kafka_topic_partition_list_t *customers = NULL;
	bool		caught_up = true;

	iq_consumer_refresh_ends();
	list = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count + 1);
	if (iq_w->customers)
		customers = rd_kafka_topic_partition_list_new(iq_w->partition_count + 1);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (iq_w->parts[p].assigned)
		{
			rd_kafka_topic_partition_list_add(list, iq_w->cfg.order_topic, p);
			rd_kafka_topic_partition_list_add(customers ? customers : list,
											  iq_w->cfg.customer_topic, p);
		}
	(void) rd_kafka_position(iq_w->consumer, list);
	if (customers)
	{
		/* the customer consumer's positions, judged with the orders' */
		(void) rd_kafka_position(iq_w->customers, customers);
		for (int i = 0; i < customers->cnt; i++)
		{
			rd_kafka_topic_partition_t *tp = &customers->elems[i];

			rd_kafka_topic_partition_list_add(list, tp->topic, tp->partition)->offset = tp->offset;
			list->elems[list->cnt - 1].err = tp->err;
		}
		rd_kafka_topic_partition_list_destroy(customers);
	}
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
 * iq_consumer_rewind
 *		A flush's transaction was aborted (a rebalance under way, changelog.c):
 *		nothing of it reached the stores, so every assigned partition is read
 *		again from what its store holds, and the counts not yet written go.
 */
void
iq_consumer_rewind(void)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_error_t *error;

	iq_cache_clear();
	iq_flush_discard();
	list = rd_kafka_topic_partition_list_new(iq_w->partition_count + 1);
	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];

		if (!part->assigned)
			continue;
		part->order_next = part->stats.order_offset;
		part->customer_next = part->stats.customer_offset;
		rd_kafka_topic_partition_list_add(list, iq_w->cfg.order_topic, p)->offset =
			part->order_next >= 0 ? part->order_next : RD_KAFKA_OFFSET_BEGINNING;
	}
	error = rd_kafka_seek_partitions(iq_w->consumer, list, SEEK_TIMEOUT_MS);
	if (error != NULL)
	{
		iq_fail("could not read the order topic again after an aborted transaction: %s",
				rd_kafka_error_string(error));
		rd_kafka_error_destroy(error);
	}
	else
	{
		for (int i = 0; i < list->cnt; i++)
			if (list->elems[i].err != RD_KAFKA_RESP_ERR_NO_ERROR)
			{
				iq_fail("could not read partition %d of the order topic again after an aborted transaction: %s",
						list->elems[i].partition, rd_kafka_err2str(list->elems[i].err));
				break;
			}
	}
	rd_kafka_topic_partition_list_destroy(list);
	if (!iq_w->failed)
		(void) iq_customers_assign();
}

/*-------------------------------------------------------------------------
 * rebalance.c
 *	  What happens when the group assigns partitions to this instance or
 *	  takes them back: the rebalance callback of the group consumer.
 *
 * The range assignor gives partition p of both topics to the same member
 * when they have the same partition count: the co-partitioning the join
 * needs.  With iq_fdw.rebalance_protocol = cooperative the group assigns
 * order partitions alone, incrementally (cooperative-sticky): an assignment
 * adds partitions and a revocation takes some away while the others go on
 * being counted, and the customer consumer follows (consumer.c).  The callback runs on the worker's main thread inside a poll; on
 * assignment it checks the topics, opens and restores each partition's
 * store, then assigns explicit offsets, so no input is processed against a
 * store that is not caught up.  On revocation what is counted is written
 * and committed first, unless the partitions are lost already.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "worker/kafka_conf.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/stream.h"

/* the longest the group's committed offsets are waited for */
#define COMMITTED_TIMEOUT_MS	30000
/* the longest a topic's partition count is waited for */
#define METADATA_TIMEOUT_MS		10000

static void on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list);
static void on_revoke(rd_kafka_t *rk, bool unassign);
static void on_assign_incremental(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list);
static void on_revoke_incremental(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list);

/*
 * iq_rebalance_cb
 *		The group consumer's rebalance callback (iq_consumer_start), called
 *		inside our polls.  Never lets a PostgreSQL error unwind through
 *		librdkafka's frames: a failure becomes iq_fail().
 */
void
iq_rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
				rd_kafka_topic_partition_list_t *list, void *opaque)
{
	MemoryContext oldcxt = CurrentMemoryContext;

	if (message_level_is_interesting(DEBUG1))
	{
		StringInfoData buf;

		initStringInfo(&buf);
		for (int i = 0; i < list->cnt; i++)
			appendStringInfo(&buf, "%s%s[%d]", i ? ", " : "", list->elems[i].topic,
							 list->elems[i].partition);
		ereport(DEBUG1,
				(errmsg_internal("iq_fdw worker: %s rebalance: %s %s%s",
								 rd_kafka_rebalance_protocol(rk),
								 err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS ? "assign" : "revoke",
								 buf.data,
								 rd_kafka_assignment_lost(rk) ? " (lost)" : "")));
		pfree(buf.data);
	}
	PG_TRY();
	{
		if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS)
		{
			if (iq_cooperative())
				on_assign_incremental(rk, list);
			else
				on_assign(rk, list);
		}
		else if (iq_cooperative())
			on_revoke_incremental(rk, list);
		else
			on_revoke(rk, true);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		iq_fail("rebalance failed: %s", edata->message);
		FreeErrorData(edata);
		/* cooperative: the pipeline's teardown drops the consumer */
		if (!iq_cooperative())
			rd_kafka_assign(rk, NULL);
	}
	PG_END_TRY();
	iq_w->ownership_due = true;
}

/*
 * iq_rebalance_revoke
 *		Give the partitions up as a revocation would, before the group
 *		consumer leaves the group: what is done is committed unless the
 *		pipeline failed.
 */
void
iq_rebalance_revoke(void)
{
	/* a failed pipeline's consumer is dropped, not closed: iq_consumer_stop */
	if (iq_w->consumer != NULL)
		on_revoke(iq_w->consumer, !iq_w->failed);
}

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
	err = iq_metadata(rk, rkt, &md, METADATA_TIMEOUT_MS);
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
 * topics_joinable
 *		Both input topics readable, with the changelog's partition count
 *		(their leaders noted for fetch_wake.c); false after iq_fail().
 */
static bool
topics_joinable(rd_kafka_t *rk)
{
	char		why[256] = "";
	int			nc,
				no;

	nc = topic_partition_count(rk, iq_w->cfg.customer_topic, iq_w->customer_leaders,
							   why, sizeof(why));
	no = topic_partition_count(rk, iq_w->cfg.order_topic, iq_w->order_leaders,
							   why, sizeof(why));
	if (nc <= 0 || no <= 0)
	{
		iq_fail("topic \"%s\" (iq_fdw.%s_topic) is not readable: %s",
				nc <= 0 ? iq_w->cfg.customer_topic : iq_w->cfg.order_topic,
				nc <= 0 ? "customer" : "order", why);
		return false;
	}
	if (nc != no || nc != iq_w->partition_count)
	{
		iq_fail("topics \"%s\" (%d partitions), \"%s\" (%d partitions) and \"%s\" (%d partitions) must have the same partition count for the join (co-partitioning)",
				iq_w->cfg.customer_topic, nc, iq_w->cfg.order_topic, no,
				iq_w->cfg.changelog_topic, iq_w->partition_count);
		return false;
	}
	return true;
}

/*
 * partitions_of
 *		mine[p]: whether the assignment in list holds partition p; false
 *		after iq_fail() when it holds p of one topic without the other.
 *
 * The range assignor keeps partition p of both topics together only when
 * every member subscribes to the same two topics.
 */
static bool
partitions_of(const rd_kafka_topic_partition_list_t *list, bool *mine)
{
	bool		mine_customer[IQ_MAX_PARTITIONS];

	memset(mine, 0, sizeof(bool) * IQ_MAX_PARTITIONS);
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
	if (memcmp(mine, mine_customer, sizeof(mine_customer)) != 0)
	{
		iq_fail("the group \"%s\" gave this instance different partitions of \"%s\" and \"%s\": another member of iq_fdw.application_id uses other topics; every instance must have the same iq_fdw.customer_topic and iq_fdw.order_topic",
				iq_w->cfg.app_id, iq_w->cfg.customer_topic, iq_w->cfg.order_topic);
		return false;
	}
	return true;
}

/*
 * close_released
 *		What we held and no longer hold is closed: another member owns it
 *		now.
 */
static void
close_released(const bool *mine)
{
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (!mine[p] && iq_store_is_open(p) && !iq_standby_kept(p))
		{
			iq_step(IQ_STEP_CLOSING, p);
			iq_store_close(p);
		}
}

/*
 * restore_one
 *		Open partition p's store and bring it up to date; *order_next gets
 *		the order offset of its checkpoint.  False after iq_fail().
 */
static bool
restore_one(int p, int64 *order_next)
{
	IqCheckpoint ck;
	uint64_t	generation;
	bool		existed = false;
	bool		counts_empty;
	bool		customers_empty;
	IqPart	   *part = &iq_w->parts[p];

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
		return false;
	iq_store_set_held(p, true, true);
	/* a store that exists but holds nothing is as good as a new one */
	counts_empty = !existed || iq_store_is_empty(p, IQ_STORE_ORDER_COUNT);
	customers_empty = !existed || iq_store_is_empty(p, IQ_STORE_CUSTOMER);
	generation = iq_cache_generation();
	if (!iq_restore_partition(p, existed, &ck))
		return false;
	part->customer_next = ck.customer_next;
	part->changelog_next = ck.changelog_next;
	*order_next = ck.order_next;
	/* a still empty count store: the (empty) cache knows all of it */
	if (counts_empty && !part->counts_restored)
		iq_cache_set_complete(p);
	/* an empty store whose every customer went through the cache */
	if (customers_empty && iq_cache_generation() == generation)
		iq_cache_set_customers_complete(p);
	part->stats.restoring = false;
	part->stats.customer_offset = ck.customer_next;
	part->stats.changelog_offset = ck.changelog_next - 1;
	return true;
}

/*
 * group_committed
 *		The group's committed offsets of our partitions, order topic first;
 *		NULL after iq_fail().
 *
 * The group's committed order offsets are the authority for the stream;
 * its customer offsets only tell what a commit need not send again.
 */
static rd_kafka_topic_partition_list_t *
group_committed(rd_kafka_t *rk, const bool *mine)
{
	rd_kafka_topic_partition_list_t *committed;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
	int64		deadline;
	int			slice;

	committed = rd_kafka_topic_partition_list_new(2 * iq_w->partition_count);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p])
			rd_kafka_topic_partition_list_add(committed, iq_w->cfg.order_topic, p);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p])
			rd_kafka_topic_partition_list_add(committed, iq_w->cfg.customer_topic, p);
	iq_step(IQ_STEP_ASSIGNING, -1);

	/* in slices: a stop or the postmaster's death ends the wait */
	deadline = iq_now_ms() + COMMITTED_TIMEOUT_MS;
	while ((slice = iq_wait_slice(deadline, IQ_WAIT_START)) > 0 &&
		   (err = rd_kafka_committed(rk, committed, slice)) == RD_KAFKA_RESP_ERR__TIMED_OUT)
		iq_drain_logs();
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not read the committed offsets of group \"%s\" (iq_fdw.application_id): %s",
				iq_w->cfg.app_id, rd_kafka_err2str(err));
		rd_kafka_topic_partition_list_destroy(committed);
		return NULL;
	}
	return committed;
}

/*
 * assign_from
 *		Assign our partitions from where the group committed, or from the
 *		local checkpoint when it is ahead; takes committed.  False after
 *		iq_fail().
 */
static bool
assign_from(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *committed,
			const int64 *local_order_next)
{
	rd_kafka_topic_partition_list_t *assign;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;

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
		/* cooperative: customers are the customer consumer's (consumer.c) */
		if (!iq_cooperative())
			rd_kafka_topic_partition_list_add(assign, iq_w->cfg.customer_topic, p)->offset =
				part->customer_next >= 0 ? part->customer_next : RD_KAFKA_OFFSET_BEGINNING;
		part->assigned = true;
		iq_store_set_held(p, true, false);
	}
	rd_kafka_topic_partition_list_destroy(committed);
	if (iq_cooperative())
	{
		rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, assign);

		if (error != NULL)
		{
			err = rd_kafka_error_code(error);
			rd_kafka_error_destroy(error);
		}
	}
	else
		err = rd_kafka_assign(rk, assign);
	rd_kafka_topic_partition_list_destroy(assign);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not assign partitions: %s", rd_kafka_err2str(err));
		return false;
	}
	return iq_customers_assign();
}

/*
 * on_assign
 *		Check co-partitioning, open and restore each partition, then assign
 *		explicit offsets.  On a failure nothing is assigned.
 */
static void
on_assign(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list)
{
	bool		mine[IQ_MAX_PARTITIONS];
	int64		local_order_next[IQ_MAX_PARTITIONS];
	rd_kafka_topic_partition_list_t *committed = NULL;

	iq_cache_clear();			/* restores below change the state under it */
	iq_step(IQ_STEP_ASSIGNING, -1);
	iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions assigned, checking topics");
	if (!topics_joinable(rk) || !partitions_of(list, mine))
	{
		rd_kafka_assign(rk, NULL);
		return;
	}
	close_released(mine);
	/* a standby kept here becomes the owner's store, its restore short */
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p])
			iq_standby_release(p);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (mine[p] && !restore_one(p, &local_order_next[p]))
		{
			rd_kafka_assign(rk, NULL);
			return;
		}
	committed = group_committed(rk, mine);
	if (committed == NULL)
	{
		rd_kafka_assign(rk, NULL);
		return;
	}
	if (!assign_from(rk, committed, local_order_next))
		return;
	iq_stats_publish();
	iq_memory_release();		/* what the restores freed */
	iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
}

/*
 * write_before_revoke
 *		What is counted but not written goes before partitions do, unless
 *		they are gone already (session timed out, group fenced): another
 *		member may be restoring them now, and whatever we wrote to their
 *		changelog would land after its restore.  Their records are counted
 *		again from the last commit, by whoever owns them.
 */
static void
write_before_revoke(rd_kafka_t *rk)
{
	bool		any = false;
	bool		lost = rd_kafka_assignment_lost(rk);

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
}

/*
 * on_revoke
 *		Commit what was processed and stop reading; stores stay open until
 *		the next assignment tells whether we keep them.  unassign: tell
 *		librdkafka too (not for a consumer about to be dropped).
 */
static void
on_revoke(rd_kafka_t *rk, bool unassign)
{
	write_before_revoke(rk);
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
	/* cooperative: revoked by the group's own callback as the consumer leaves */
	if (unassign && !iq_cooperative())
		rd_kafka_assign(rk, NULL);
	iq_stats_publish();
	if (!iq_w->failed && !iq_got_sigterm)
		iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions revoked");
}

/*
 * on_assign_incremental
 *		Cooperative: partitions added to those held, which go on being
 *		counted but for the time the added ones are restored.  What is
 *		counted is written first, as the restores clear the key cache.
 */
static void
on_assign_incremental(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list)
{
	bool		added[IQ_MAX_PARTITIONS];
	bool		kept[IQ_MAX_PARTITIONS];
	int64		local_order_next[IQ_MAX_PARTITIONS];
	rd_kafka_topic_partition_list_t *committed;
	bool		any = false;

	memset(added, 0, sizeof(added));
	for (int i = 0; i < list->cnt; i++)
	{
		int			p = list->elems[i].partition;

		if (p >= 0 && p < IQ_MAX_PARTITIONS &&
			strcmp(list->elems[i].topic, iq_w->cfg.order_topic) == 0)
			added[p] = any = true;
	}
	iq_step(IQ_STEP_ASSIGNING, -1);
	if (!any)
	{
		rd_kafka_error_t *error = rd_kafka_incremental_assign(rk, list);

		if (error != NULL)
			rd_kafka_error_destroy(error);
		return;
	}
	iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions added, checking topics");
	if (!topics_joinable(rk))
		return;
	/* a flush that met the rebalance is read again: not a failure */
	if (!iq_flush_now() && iq_w->failed)
		return;
	iq_cache_clear();
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		kept[p] = added[p] || iq_w->parts[p].assigned;
	close_released(kept);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (added[p])
			iq_standby_release(p);
	for (int p = 0; p < iq_w->partition_count; p++)
		if (added[p] && !restore_one(p, &local_order_next[p]))
			return;
	committed = group_committed(rk, added);
	if (committed == NULL || !assign_from(rk, committed, local_order_next))
		return;
	iq_stats_publish();
	iq_memory_release();
	iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
}

/*
 * on_revoke_incremental
 *		Cooperative: partitions taken away; what is counted is written and
 *		committed first unless they are lost, and the rest go on.
 */
static void
on_revoke_incremental(rd_kafka_t *rk, rd_kafka_topic_partition_list_t *list)
{
	bool		any = false;
	rd_kafka_error_t *error;

	write_before_revoke(rk);
	for (int i = 0; i < list->cnt; i++)
	{
		int			p = list->elems[i].partition;
		IqPart	   *part;

		if (p < 0 || p >= IQ_MAX_PARTITIONS ||
			strcmp(list->elems[i].topic, iq_w->cfg.order_topic) != 0)
			continue;
		part = &iq_w->parts[p];
		if (iq_store_is_open(p))
		{
			iq_step(IQ_STEP_RELEASING, p);
			iq_store_set_held(p, false, false);
		}
		part->assigned = false;
		part->stats.assigned = false;
	}
	error = rd_kafka_incremental_unassign(rk, list);
	if (error != NULL)
		rd_kafka_error_destroy(error);
	(void) iq_customers_assign();
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		any |= iq_w->parts[p].assigned;
	iq_stats_publish();
	if (!iq_w->failed && !iq_got_sigterm)
	{
		if (any)
			iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
		else
			iq_set_worker_state(IQ_WORKER_REBALANCING, "partitions revoked");
	}
}

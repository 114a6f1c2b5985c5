/*-------------------------------------------------------------------------
 * flush.c
 *	  Write-behind: what the polls counted into the key cache, made
 *	  durable at once, each dirty key written once.
 *
 * A flush comes when the worker has caught up, so an idle pipeline's state
 * is always current; under a backlog, once per iq_fdw.commit_interval or
 * when the cache fills with dirty counts, so that a key updated many times
 * is written once, as Kafka Streams' record cache does; with a poll whose
 * entries the cache does not hold (customers: the cache keeps no values);
 * and before a revocation or a stop.  Its writes go in the order that keeps
 * the local state equal to what is committed (see flush).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/counters.h"
#include "worker/state.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/key_order.h"
#include "worker/stream/poll_table.h"
#include "worker/stream/stream.h"

/*
 * What the next flush makes durable: the input consumed since the last one
 * (its counts are the cache's dirty entries), per partition.
 */
static bool pending_input[IQ_MAX_PARTITIONS];
static bool any_pending = false;
static int64 pending_since = 0;
static int64 last_counted = 0;	/* when the last poll with records was counted */

/* no record for this long: the backlog is gone, write what is counted */
#define IDLE_FLUSH_MS	100

/* dirty_key: IqKeyAt over positions in the cache's dirty list */
static const char *
dirty_key(const void *ctx, int i, size_t *len)
{
	const IqCacheEntry *ce = iq_cache_dirty_entry(((const uint32 *) ctx)[i]);

	*len = ce->key_len;
	return iq_cache_entry_key(ce);
}

/*
 * The order a flush writes the dirty counts in: by partition, then by key
 * bytes, since RocksDB's memtable inserts keys that arrive in order several
 * times faster than scattered ones.  Sorted while the broker acknowledges
 * the changelog; the write batches are built only once it has, one at a
 * time.
 */
typedef struct WritePlan
{
	uint32	   *grouped;		/* positions in the dirty list, by partition */
	int			start[IQ_MAX_PARTITIONS + 1];
	uint32_t   *order[IQ_MAX_PARTITIONS];	/* within a group; NULL: as is */
} WritePlan;

/*
 * plan_writes
 *		Group the dirty list by partition (a counting sort), then order each
 *		group by a radix sort of its keys (key_order.c), a fraction of a
 *		qsort's cost.
 */
static void
plan_writes(WritePlan *w)
{
	size_t		ndirty = iq_cache_dirty_count();
	int			nparts = iq_w->partition_count;
	int			fill[IQ_MAX_PARTITIONS];

	memset(w->start, 0, sizeof(w->start));
	memset(w->order, 0, sizeof(w->order));
	w->grouped = palloc(sizeof(uint32) * (ndirty + 1));
	for (size_t i = 0; i < ndirty; i++)
		w->start[iq_cache_dirty_entry(i)->partition + 1]++;
	for (int p = 0; p < nparts; p++)
	{
		w->start[p + 1] += w->start[p];
		fill[p] = w->start[p];
	}
	for (size_t i = 0; i < ndirty; i++)
		w->grouped[fill[iq_cache_dirty_entry(i)->partition]++] = (uint32) i;
	for (int p = 0; p < nparts; p++)
	{
		int			len = w->start[p + 1] - w->start[p];

		if (len < 2)
			continue;
		w->order[p] = iq_key_order(len, dirty_key, w->grouped + w->start[p], NULL);
		if (w->order[p] == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory ordering the %d keys of partition %d to write", len, p)));
	}
}

static void
free_plan(WritePlan *w)
{
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		free(w->order[p]);
	if (w->grouped)
		pfree(w->grouped);
}

/*
 * A partition's writes go in batches of at most a poll's worth of keys:
 * RocksDB puts a whole batch into the memtable, so one of a cache's worth
 * would overrun the memtables' share of iq_fdw.memory_budget.  Only the
 * last batch carries the checkpoint; a crash between them leaves values
 * newer than the checkpoint, which the restore from the changelog
 * overwrites anyway.
 */
typedef struct PartitionWriter
{
	int			partition;
	int			in_batch;
	IqStoreBatch *batch;
} PartitionWriter;

/*
 * writer_batch
 *		The batch the next put goes to: the current one, or a new one once
 *		the current is full and written.  NULL when the write failed.
 */
static IqStoreBatch *
writer_batch(PartitionWriter *w)
{
	if (w->batch != NULL && w->in_batch == iq_w->mem.batch_max)
	{
		char	   *err = NULL;
		bool		written = iq_store_batch_commit(w->batch, &err);

		w->batch = NULL;
		if (!written)
		{
			iq_fail("could not write the state of partition %d under iq_fdw.state_dir: %s",
					w->partition, err ? err : "?");
			free(err);
			return NULL;
		}
		iq_progress();			/* a long flush is no stall while it writes */
	}
	if (w->batch == NULL)
	{
		w->batch = iq_store_batch_begin(w->partition);
		w->in_batch = 0;
	}
	w->in_batch++;
	return w->batch;
}

static bool
put_count(PartitionWriter *w, const char *key, size_t len, int64 count)
{
	IqStoreBatch *b = writer_batch(w);
	unsigned char v[8];

	if (b == NULL)
		return false;
	iq_encode_int64(count, v);
	iq_store_batch_put(b, IQ_STORE_ORDER_COUNT, key, len, (const char *) v, 8);
	return true;
}

static bool
put_entry(PartitionWriter *w, const Entry *e)
{
	IqStoreBatch *b;

	if (e->is_order)
		return put_count(w, e->key, e->key_len, e->count);
	if ((b = writer_batch(w)) == NULL)
		return false;
	if (e->value == NULL)
		iq_store_batch_delete(b, IQ_STORE_CUSTOMER, e->key, e->key_len);
	else
		iq_store_batch_put(b, IQ_STORE_CUSTOMER, e->key, e->key_len, e->value, e->value_len);
	return true;
}

/*
 * write_partition
 *		Partition p's dirty counts in key order, then the through entries of
 *		the poll in hand t, then the checkpoint.
 */
static bool
write_partition(int p, const WritePlan *plan, Table *t)
{
	PartitionWriter w = {p, 0, NULL};
	IqPart	   *part = &iq_w->parts[p];
	const uint32 *group = plan->grouped + plan->start[p];
	int			len = plan->start[p + 1] - plan->start[p];
	IqCheckpoint ck;
	char	   *err = NULL;
	bool		written;

	iq_step(IQ_STEP_WRITING, p);
	for (int i = 0; i < len; i++)
	{
		const IqCacheEntry *ce = iq_cache_dirty_entry(group[plan->order[p] ? plan->order[p][i] : (uint32_t) i]);

		if (!put_count(&w, iq_cache_entry_key(ce), ce->key_len, ce->count))
			return false;
	}
	for (int i = 0; t != NULL && i < t->size; i++)
	{
		Entry	   *e = &t->slots[i];

		if (e->hash != 0 && e->through && e->partition == p && !put_entry(&w, e))
			return false;
	}

	if (iq_w->changelog_last[p] >= 0)
		part->changelog_next = iq_w->changelog_last[p] + 1;
	ck.customer_next = part->customer_next;
	ck.order_next = part->order_next;
	ck.changelog_next = part->changelog_next;
	if (w.batch == NULL)
		w.batch = iq_store_batch_begin(p);
	iq_store_batch_checkpoint(w.batch, &ck);
	written = iq_store_batch_commit(w.batch, &err);
	if (!written)
	{
		iq_fail("could not write the state of partition %d under iq_fdw.state_dir: %s",
				p, err ? err : "?");
		free(err);
		return false;
	}
	part->stats.customer_offset = part->customer_next;
	part->stats.order_offset = part->order_next;
	part->stats.changelog_offset = part->changelog_next - 1;
	return true;
}

/*
 * produce_changelog
 *		The new count of every key the flush writes.
 */
static bool
produce_changelog(Table *t, uint64 *produced)
{
	size_t		ndirty = iq_cache_dirty_count();
	/* the last record of each partition, which carries its position */
	int64		last_dirty[IQ_MAX_PARTITIONS];
	int			last_slot[IQ_MAX_PARTITIONS];

	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		last_dirty[p] = -1;
		last_slot[p] = -1;
	}
	for (size_t i = 0; i < ndirty; i++)
		last_dirty[iq_cache_dirty_entry(i)->partition] = (int64) i;
	for (int i = 0; t != NULL && i < t->size; i++)
		if (t->slots[i].hash != 0 && t->slots[i].through && t->slots[i].is_order)
			last_slot[t->slots[i].partition] = i;

	for (size_t i = 0; i < ndirty; i++)
	{
		const IqCacheEntry *ce = iq_cache_dirty_entry(i);
		bool		mark = last_slot[ce->partition] < 0 &&
			last_dirty[ce->partition] == (int64) i;

		if (!iq_changelog_produce(ce->partition, iq_cache_entry_key(ce), ce->key_len,
								  ce->count, mark))
			return false;
		(*produced)++;
	}
	for (int i = 0; t != NULL && i < t->size; i++)
	{
		Entry	   *e = &t->slots[i];

		if (e->hash == 0 || !e->through || !e->is_order)
			continue;
		if (!iq_changelog_produce(e->partition, e->key, e->key_len, e->count,
								  last_slot[e->partition] == i))
			return false;
		(*produced)++;
	}
	return true;
}

/*
 * flush
 *		Make everything consumed since the last flush durable, in the order
 *		that keeps the local state equal to what is committed: changelog
 *		records (and, under exactly_once, the input offsets in the same
 *		transaction), then RocksDB write batches per partition holding the
 *		new values, the last of them the checkpoint, then (at_least_once)
 *		the consumer offsets.  t is the poll in hand, whose through entries
 *		are written too; NULL when there is none.  False leaves the pipeline
 *		failed.
 */
static bool
flush(Table *t)
{
	rd_kafka_topic_partition_list_t *positions = NULL;
	WritePlan	plan = {0};
	bool		ok = false;
	uint64		produced = 0;
	double		started = iq_counters_now();

	if (!any_pending)
		return true;
	if (iq_w->failed)
		return false;

	/*
	 * A worker that stalled past the group's session timeout (a frozen
	 * process) has lost its partitions, whether or not our polls have
	 * served the revocation yet: a flush now would land in the changelog
	 * after the new owner's writes and outlive them.  What is pending waits
	 * for on_revoke, which drops it.
	 */
	if (iq_w->consumer && rd_kafka_assignment_lost(iq_w->consumer))
		return false;

	/* 1. the changelog (and offsets, in one transaction under exactly_once) */
	iq_step(IQ_STEP_PRODUCING, -1);
	if (!iq_changelog_begin() || !produce_changelog(t, &produced))
		goto done;
	positions = iq_consumer_positions();

	/* 2. the local state: sorted while the broker acknowledges the changelog */
	plan_writes(&plan);
	if (!iq_changelog_finish(positions))
		goto done;
	for (int p = 0; p < iq_w->partition_count; p++)
		if (pending_input[p] && !write_partition(p, &plan, t))
			goto done;

	/* 3. the offsets (at_least_once; exactly_once committed them above) */
	iq_consumer_commit(false);

	/* 4. what is now committed, for the next polls */
	iq_cache_flushed();
	for (int i = 0; t != NULL && i < t->size; i++)
	{
		Entry	   *e = &t->slots[i];
		IqCacheEntry *ce;

		if (e->hash == 0 || !e->through ||
			(ce = iq_cache_upsert(e->partition, e->key, e->key_len)) == NULL)
			continue;
		if (e->is_order)
		{
			ce->has_count = true;
			ce->count = e->count;
			ce->customer = e->joined ? IQ_CUSTOMER_PRESENT : IQ_CUSTOMER_ABSENT;
		}
		else
			ce->customer = e->value ? IQ_CUSTOMER_PRESENT : IQ_CUSTOMER_ABSENT;
	}
	iq_flush_discard();
	ok = true;
	/* for GET /metrics: only flushes that made their records durable */
	iq_count_flush(iq_counters_now() - started, produced);

done:
	free_plan(&plan);
	if (positions)
		rd_kafka_topic_partition_list_destroy(positions);
	if (iq_w->failed || iq_w->rewind)
		iq_changelog_abort();
	if (iq_w->rewind && !iq_w->failed)
		iq_consumer_rewind();
	iq_w->rewind = false;
	return ok;
}

/*
 * flush_due
 *		Write-behind while there is a backlog: a key updated again before
 *		the flush is written once.  Due when the worker has caught up (so
 *		an idle pipeline's state is current), when the commit interval has
 *		passed since the oldest unwritten record, or when one more poll
 *		might not fit in the cache beside the dirty counts.
 */
static bool
flush_due(void)
{
	return iq_consumer_caught_up() ||
		iq_now_ms() - pending_since >= iq_w->cfg.commit_interval_ms ||
		!iq_cache_dirty_room_for(iq_w->mem.batch_max);
}

/*
 * iq_flush_note_input
 */
void
iq_flush_note_input(int partition)
{
	if (!any_pending)
		pending_since = iq_now_ms();
	pending_input[partition] = true;
	any_pending = true;
}

/*
 * iq_flush_after_poll
 */
void
iq_flush_after_poll(Table *t)
{
	last_counted = iq_now_ms();
	if (!iq_w->failed && (t != NULL || flush_due()))
		flush(t);
}

/*
 * iq_flush_idle
 *		A poll found nothing: write what is counted unless more of a backlog
 *		is surely on its way (a fetch in flight).
 */
void
iq_flush_idle(void)
{
	if (any_pending && !iq_w->failed &&
		(flush_due() || iq_now_ms() - last_counted >= IDLE_FLUSH_MS))
		flush(NULL);
}

/*
 * iq_flush_now
 *		Write what is pending now (a revocation, a stop).
 */
bool
iq_flush_now(void)
{
	return flush(NULL);
}

/*
 * iq_flush_discard
 *		Forget what is pending: written, or dropped with the cache's dirty
 *		counts when the pipeline fails (its records are consumed again).
 */
void
iq_flush_discard(void)
{
	memset(pending_input, 0, sizeof(pending_input));
	any_pending = false;
	pending_since = 0;
}

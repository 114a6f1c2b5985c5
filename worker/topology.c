/*-------------------------------------------------------------------------
 * topology.c
 *	  The seed's topology on a batch of records: customer -> customer
 *	  store; order LEFT JOIN customer -> group by key -> count.
 *
 * A poll is aggregated in memory first (one entry per partition and key);
 * its new counts then go into the key cache as dirty entries.  A flush
 * makes every dirty count durable at once, in the order that keeps the
 * local state equal to what is committed (see flush).  Flushes come when
 * the worker has caught up, so an idle pipeline's state is always current;
 * under a backlog, once per iq_fdw.commit_interval or when the cache fills
 * with dirty counts, so that a key updated many times is written once, as
 * Kafka Streams' record cache does.  Customers are written by the flush of
 * their own poll: the cache keeps no values.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "cache.h"
#include "key_order.h"
#include "partitioner.h"
#include "settings.h"
#include "worker.h"

typedef struct Entry
{
	uint32		hash;			/* 0 = empty slot */
	int			partition;
	const char *key;			/* points into a message of the batch */
	size_t		key_len;
	bool		is_order;
	int64		count;			/* order: the new count */
	bool		joined;			/* order: a customer exists */
	const char *value;			/* customer: new value, NULL = tombstone */
	size_t		value_len;
	bool		through;		/* written by this poll's flush, not the cache's */
} Entry;

typedef struct Table
{
	Entry	   *slots;
	int			size;			/* power of two */
	int			used;
} Table;

static uint32
hash_key(int partition, bool is_order, const char *key, size_t len)
{
	uint32		h = 2166136261u ^ (uint32) partition ^ (is_order ? 0x9e3779b9u : 0);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char) key[i]) * 16777619u;
	return h ? h : 1;
}

/*
 * lookup
 *		The entry of (partition, kind, key), inserted empty if missing.
 */
static Entry *
lookup(Table *t, int partition, bool is_order, const char *key, size_t len, bool *found)
{
	uint32		h = hash_key(partition, is_order, key, len);
	int			i = h & (t->size - 1);

	for (;;)
	{
		Entry	   *e = &t->slots[i];

		if (e->hash == 0)
		{
			e->hash = h;
			e->partition = partition;
			e->is_order = is_order;
			e->key = key;
			e->key_len = len;
			t->used++;
			*found = false;
			return e;
		}
		if (e->hash == h && e->partition == partition && e->is_order == is_order &&
			e->key_len == len && memcmp(e->key, key, len) == 0)
		{
			*found = true;
			return e;
		}
		i = (i + 1) & (t->size - 1);
	}
}

/*
 * customer_exists
 *		The join's lookup: this batch's updates first, then the cache
 *		entry ce (may be NULL), then the store.
 */
static bool
customer_exists(Table *t, int p, const char *key, size_t len, IqCacheEntry *ce)
{
	uint32		h = hash_key(p, false, key, len);
	int			i = h & (t->size - 1);
	char	   *v = NULL;
	size_t		vlen;
	IqReadStatus st;

	for (;;)
	{
		Entry	   *e = &t->slots[i];

		if (e->hash == 0)
			break;
		if (e->hash == h && e->partition == p && !e->is_order &&
			e->key_len == len && memcmp(e->key, key, len) == 0)
			return e->value != NULL;
		i = (i + 1) & (t->size - 1);
	}
	if (ce != NULL && ce->customer != IQ_CUSTOMER_UNKNOWN)
		return ce->customer == IQ_CUSTOMER_PRESENT;
	if (iq_cache_knows_no_customer(p, key, len))
		return false;
	st = iq_store_get_raw(IQ_STORE_CUSTOMER, p, key, len, &v, &vlen, NULL);
	free(v);
	return st == IQ_READ_OK;
}

/*
 * base_count
 *		The stored count of a key before this batch; ce is its cache entry.
 */
static int64
base_count(int p, const char *key, size_t len, IqCacheEntry *ce)
{
	char	   *v = NULL;
	size_t		vlen = 0;
	char	   *err = NULL;
	int64		n = 0;
	IqReadStatus st;

	if (ce != NULL && ce->has_count)
		return ce->count;
	if (iq_cache_knows_no_count(p, key, len))
		return 0;
	st = iq_store_get_raw(IQ_STORE_ORDER_COUNT, p, key, len, &v, &vlen, &err);

	if (st == IQ_READ_OK && vlen == 8)
		n = iq_decode_int64((const unsigned char *) v);
	else if (st == IQ_READ_ERROR)
	{
		iq_fail("could not read the count of a key in partition %d: %s", p, err ? err : "?");
		free(err);
	}
	free(v);
	return n;
}

/*
 * note_wrong_partition
 *		A key found where the configured partitioner would not put it.
 */
static void
note_wrong_partition(IqPart *part, int p, int expected, const char *topic,
					 const char *key, size_t len)
{
	part->stats.wrong_partition++;
	if (part->wrong_partition_logged)
		return;
	part->wrong_partition_logged = true;
	ereport(LOG,
			(errmsg("iq_fdw worker: a record of topic \"%s\" with key \"%.*s\" is in partition %d, but the key belongs to partition %d",
					topic, (int) Min(len, 64), key, p, expected),
			 errdetail("Further such records of partition %d are counted in iq_stats without being logged.", p),
			 errhint("The producer partitions keys differently from iq_fdw.partitioner (%s); lookups of such keys go to the wrong instance. Use the same partitioner in the producer and in iq_fdw.partitioner.",
					 iq_w->cfg.partitioner == IQ_PARTITIONER_MURMUR2 ? "murmur2" : "crc32")));
}

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

	for (int i = 0; i < len; i++)
	{
		const IqCacheEntry *ce = iq_cache_dirty_entry(group[plan->order[p] ? plan->order[p][i] : i]);

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
produce_changelog(Table *t)
{
	size_t		ndirty = iq_cache_dirty_count();

	for (size_t i = 0; i < ndirty; i++)
	{
		const IqCacheEntry *ce = iq_cache_dirty_entry(i);

		if (!iq_changelog_produce(ce->partition, iq_cache_entry_key(ce), ce->key_len, ce->count))
			return false;
	}
	for (int i = 0; t != NULL && i < t->size; i++)
	{
		Entry	   *e = &t->slots[i];

		if (e->hash != 0 && e->through && e->is_order &&
			!iq_changelog_produce(e->partition, e->key, e->key_len, e->count))
			return false;
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

	if (!any_pending)
		return true;
	if (iq_w->failed)
		return false;

	/* 1. the changelog (and offsets, in one transaction under exactly_once) */
	if (!iq_changelog_begin() || !produce_changelog(t))
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
	iq_topology_discard();
	ok = true;

done:
	free_plan(&plan);
	if (positions)
		rd_kafka_topic_partition_list_destroy(positions);
	if (iq_w->failed)
		iq_changelog_abort();
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

/* how many records ahead of the one aggregated its cache lookup is loaded */
#define PREFETCH_DISTANCE 8

/*
 * prefetch
 *		iq_cache_prefetch's stage for a consumed record, if it has a key.
 */
static inline void
prefetch(const rd_kafka_message_t *m, int stage)
{
	if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR && m->key != NULL &&
		m->partition >= 0 && m->partition < iq_w->partition_count)
		iq_cache_prefetch(m->partition, m->key, m->key_len, stage);
}

/*
 * count_into_cache
 *		The poll's new counts become dirty entries of the cache.  Entries
 *		the cache cannot hold, and customers (the cache keeps no values),
 *		are marked through: written by a flush of this poll.  True when
 *		there is any.
 */
static bool
count_into_cache(Table *t)
{
	bool		through = false;

	for (int i = 0; i < t->size; i++)
	{
		Entry	   *e = &t->slots[i];
		IqCacheEntry *ce;

		for (int stage = 0; stage < 2; stage++)
		{
			int			ahead = i + (2 - stage) * PREFETCH_DISTANCE;

			if (ahead < t->size && t->slots[ahead].hash != 0)
				iq_cache_prefetch(t->slots[ahead].partition, t->slots[ahead].key,
								  t->slots[ahead].key_len, stage);
		}
		if (e->hash == 0)
			continue;
		if (!e->is_order || (ce = iq_cache_upsert(e->partition, e->key, e->key_len)) == NULL)
		{
			e->through = true;
			through = true;
			continue;
		}
		ce->has_count = true;
		ce->count = e->count;
		ce->customer = e->joined ? IQ_CUSTOMER_PRESENT : IQ_CUSTOMER_ABSENT;
		iq_cache_set_dirty(ce);
	}
	return through;
}

static void
release_poll(rd_kafka_message_t **msgs, int n, Table *t)
{
	for (int i = 0; i < n; i++)
		rd_kafka_message_destroy(msgs[i]);
	t->slots = NULL;
}

/*
 * table_slots
 *		Empty slots for a poll's table.  Kept from poll to poll: a fresh
 *		allocation of this size is a fresh mapping, and faulting its pages
 *		in was a tenth of the ingest's main thread (perf).
 */
static Entry *
table_slots(int size)
{
	static Entry *slots = NULL;
	static int	allocated = 0;

	if (size > allocated)
	{
		free(slots);
		slots = malloc(sizeof(Entry) * size);
		allocated = slots ? size : 0;
		if (slots == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory for a table of %d keys", size)));
	}
	memset(slots, 0, sizeof(Entry) * size);
	return slots;
}

/*
 * iq_topology_process
 *		Count a poll of consumed messages and destroy them; flush when due.
 */
void
iq_topology_process(rd_kafka_message_t **msgs, int n)
{
	Table		t;
	bool		through;

	t.size = 1024;
	while (t.size < 2 * n)
		t.size <<= 1;
	t.used = 0;
	t.slots = table_slots(t.size);

	for (int i = 0; i < n && !iq_w->failed; i++)
	{
		rd_kafka_message_t *m = msgs[i];
		int			p = m->partition;
		IqPart	   *part;
		const char *topic;
		bool		is_order;
		bool		found;
		int			expected;
		Entry	   *e;

		if (i + 2 * PREFETCH_DISTANCE < n)
			prefetch(msgs[i + 2 * PREFETCH_DISTANCE], 0);
		if (i + PREFETCH_DISTANCE < n)
			prefetch(msgs[i + PREFETCH_DISTANCE], 1);
		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
				continue;
			/* a missing topic and the like: visible, retried by librdkafka */
			iq_w->error_state = true;
			iq_set_worker_state(IQ_WORKER_ERROR, "consumer: %s%s%s",
								m->rkt ? rd_kafka_topic_name(m->rkt) : "",
								m->rkt ? ": " : "", rd_kafka_message_errstr(m));
			continue;
		}
		if (p < 0 || p >= iq_w->partition_count || m->rkt == NULL)
			continue;
		part = &iq_w->parts[p];
		if (!part->assigned)
			continue;			/* revoked during the poll */
		topic = rd_kafka_topic_name(m->rkt);
		is_order = strcmp(topic, iq_w->cfg.order_topic) == 0;
		if (!is_order && strcmp(topic, iq_w->cfg.customer_topic) != 0)
			continue;
		/* a record seen again after a seek: already in the state */
		if (is_order ? (part->order_next >= 0 && m->offset < part->order_next)
			: (part->customer_next >= 0 && m->offset < part->customer_next))
			continue;
		if (is_order)
			part->order_next = m->offset + 1;
		else
			part->customer_next = m->offset + 1;
		if (!any_pending)
			pending_since = iq_now_ms();
		pending_input[p] = true;
		any_pending = true;

		if (m->key == NULL)
		{
			part->stats.dropped_null_key++;
			continue;
		}
		expected = iq_partition_for_key(iq_w->cfg.partitioner, m->key, m->key_len,
										iq_w->partition_count);
		if (expected != p)
			note_wrong_partition(part, p, expected, topic, m->key, m->key_len);

		e = lookup(&t, p, is_order, m->key, m->key_len, &found);
		if (!is_order)
		{
			Entry	   *o;
			bool		ofound;

			e->value = m->payload;	/* NULL: tombstone */
			e->value_len = m->len;
			/* an order of this key later in the batch joins the new state */
			o = lookup(&t, p, true, m->key, m->key_len, &ofound);
			if (ofound)
				o->joined = m->payload != NULL;
			else
			{
				o->hash = 0;	/* undo the probe's insert */
				t.used--;
			}
		}
		else
		{
			if (!found)
			{
				/* one probe of the cache serves both questions */
				IqCacheEntry *ce = iq_cache_find(p, m->key, m->key_len);

				e->count = base_count(p, m->key, m->key_len, ce);
				e->joined = customer_exists(&t, p, m->key, m->key_len, ce);
			}
			e->count++;
			if (e->joined)
				part->stats.orders_joined++;
			else
				part->stats.orders_without_customer++;
		}
		part->stats.records_processed++;
	}

	/*
	 * Through entries point into the messages; without them the messages
	 * go before a flush needs the memory they held.
	 */
	last_counted = iq_now_ms();
	through = !iq_w->failed && count_into_cache(&t);
	if (!through)
		release_poll(msgs, n, &t);
	if (!iq_w->failed && (through || flush_due()))
		flush(through ? &t : NULL);
	if (through)
		release_poll(msgs, n, &t);
}

/*
 * iq_topology_idle
 *		A poll found nothing: write what is counted unless more of a backlog
 *		is surely on its way (a fetch in flight).
 */
void
iq_topology_idle(void)
{
	if (any_pending && !iq_w->failed &&
		(flush_due() || iq_now_ms() - last_counted >= IDLE_FLUSH_MS))
		flush(NULL);
}

/*
 * iq_topology_flush
 *		Write what is pending now (a revocation, a stop).
 */
bool
iq_topology_flush(void)
{
	return flush(NULL);
}

/*
 * iq_topology_discard
 *		Forget what is pending: written, or dropped with the cache's dirty
 *		counts when the pipeline fails (its records are consumed again).
 */
void
iq_topology_discard(void)
{
	memset(pending_input, 0, sizeof(pending_input));
	any_pending = false;
	pending_since = 0;
}

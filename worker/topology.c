/*-------------------------------------------------------------------------
 * topology.c
 *	  The seed's topology on a batch of records: customer -> customer
 *	  store; order LEFT JOIN customer -> group by key -> count.
 *
 * A batch is aggregated in memory first (one entry per partition and key),
 * then made durable in the order that keeps the local state equal to what
 * is committed: changelog records (and, under exactly_once, the input
 * offsets in the same transaction), then one RocksDB write batch per
 * partition holding the new values and the checkpoint, then (at_least_once)
 * the consumer offsets.  The write batches are built while the broker
 * acknowledges the changelog, and written only after it has.
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

/* entry_key: IqKeyAt over an array of entries */
static const char *
entry_key(const void *ctx, int i, size_t *len)
{
	const Entry *e = ((Entry *const *) ctx)[i];

	*len = e->key_len;
	return e->key;
}

/*
 * sort_entries
 *		The table's entries by partition, store, then key bytes: RocksDB's
 *		memtable inserts keys that arrive in order several times faster
 *		than scattered ones.  Grouped first, then each group by a radix
 *		sort of its keys (key_order.c), a fraction of a qsort's cost.
 */
static Entry **
sort_entries(Table *t, int *nsorted)
{
	int			ngroups = 2 * iq_w->partition_count;
	int		   *start = palloc0(sizeof(int) * (ngroups + 1));
	int		   *fill = palloc(sizeof(int) * ngroups);
	Entry	  **grouped;
	Entry	  **sorted;
	int			n;

#define GROUP_OF(e) (2 * (e)->partition + ((e)->is_order ? 1 : 0))
	for (int i = 0; i < t->size; i++)
		if (t->slots[i].hash != 0)
			start[GROUP_OF(&t->slots[i]) + 1]++;
	for (int g = 0; g < ngroups; g++)
	{
		start[g + 1] += start[g];
		fill[g] = start[g];
	}
	n = start[ngroups];
	grouped = palloc(sizeof(Entry *) * (n + 1));
	sorted = palloc(sizeof(Entry *) * (n + 1));
	for (int i = 0; i < t->size; i++)
		if (t->slots[i].hash != 0)
			grouped[fill[GROUP_OF(&t->slots[i])]++] = &t->slots[i];
#undef GROUP_OF

	for (int g = 0; g < ngroups; g++)
	{
		Entry	  **group = grouped + start[g];
		int			len = start[g + 1] - start[g];
		uint32_t   *order = len > 1 ? iq_key_order(len, entry_key, group, NULL) : NULL;

		if (len > 1 && order == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory ordering a batch of %d keys", len)));
		for (int i = 0; i < len; i++)
			sorted[start[g] + i] = group[order ? order[i] : i];
		free(order);
	}
	pfree(start);
	pfree(fill);
	pfree(grouped);
	*nsorted = n;
	return sorted;
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
 * iq_topology_process
 *		Process and destroy a batch of consumed messages.
 */
void
iq_topology_process(rd_kafka_message_t **msgs, int n)
{
	Table		t;
	bool		touched[IQ_MAX_PARTITIONS];
	bool		any_output = false;
	bool		any_input = false;
	rd_kafka_topic_partition_list_t *positions = NULL;
	Entry	  **sorted = NULL;
	int			nsorted = 0;
	IqStoreBatch *batches[IQ_MAX_PARTITIONS] = {0};

	t.size = 1024;
	while (t.size < 2 * n)
		t.size <<= 1;
	t.used = 0;
	t.slots = palloc0(sizeof(Entry) * t.size);
	memset(touched, 0, sizeof(touched));

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
		touched[p] = true;
		any_input = true;

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
			any_output = true;
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
			any_output = true;
		}
		part->stats.records_processed++;
	}

	if (iq_w->failed || !any_input)
		goto done;

	/* 1. the changelog (and offsets, in one transaction under exactly_once) */
	if (!iq_changelog_begin())
		goto done;
	for (int i = 0; i < t.size && any_output; i++)
	{
		Entry	   *e = &t.slots[i];

		if (e->hash != 0 && e->is_order &&
			!iq_changelog_produce(e->partition, e->key, e->key_len, e->count))
			goto done;
	}
	positions = iq_consumer_positions();

	/*
	 * 2. the local state, one write batch per partition: built while the
	 * broker acknowledges the changelog, written only once it has
	 */
	sorted = sort_entries(&t, &nsorted);
	for (int p = 0, next = 0; p < iq_w->partition_count; p++)
	{
		IqStoreBatch *b;

		if (!touched[p])
			continue;
		b = batches[p] = iq_store_batch_begin(p);
		while (next < nsorted && sorted[next]->partition < p)
			next++;
		for (; next < nsorted && sorted[next]->partition == p; next++)
		{
			Entry	   *e = sorted[next];
			unsigned char v[8];

			if (e->is_order)
			{
				iq_encode_int64(e->count, v);
				iq_store_batch_put(b, IQ_STORE_ORDER_COUNT, e->key, e->key_len,
								   (const char *) v, 8);
			}
			else if (e->value == NULL)
				iq_store_batch_delete(b, IQ_STORE_CUSTOMER, e->key, e->key_len);
			else
				iq_store_batch_put(b, IQ_STORE_CUSTOMER, e->key, e->key_len,
								   e->value, e->value_len);
		}
	}
	if (!iq_changelog_finish(positions))
		goto done;
	for (int p = 0; p < iq_w->partition_count; p++)
	{
		IqPart	   *part = &iq_w->parts[p];
		IqCheckpoint ck;
		char	   *err = NULL;
		bool		written;

		if (!touched[p])
			continue;
		if (iq_w->changelog_last[p] >= 0)
			part->changelog_next = iq_w->changelog_last[p] + 1;
		ck.customer_next = part->customer_next;
		ck.order_next = part->order_next;
		ck.changelog_next = part->changelog_next;
		iq_store_batch_checkpoint(batches[p], &ck);
		written = iq_store_batch_commit(batches[p], &err);
		batches[p] = NULL;
		if (!written)
		{
			iq_fail("could not write the state of partition %d under iq_fdw.state_dir: %s",
					p, err ? err : "?");
			free(err);
			goto done;
		}
		part->stats.customer_offset = part->customer_next;
		part->stats.order_offset = part->order_next;
		part->stats.changelog_offset = part->changelog_next - 1;
	}

	/* 3. the offsets (at_least_once; exactly_once committed them above) */
	iq_consumer_commit(false);

	/* 4. what is now committed, for the next batches */
	for (int i = 0; i < t.size; i++)
	{
		Entry	   *e = &t.slots[i];
		IqCacheEntry *ce;

		for (int stage = 0; stage < 2; stage++)
		{
			int			ahead = i + (2 - stage) * PREFETCH_DISTANCE;

			if (ahead < t.size && t.slots[ahead].hash != 0)
				iq_cache_prefetch(t.slots[ahead].partition, t.slots[ahead].key,
								  t.slots[ahead].key_len, stage);
		}

		if (e->hash == 0 || (ce = iq_cache_upsert(e->partition, e->key, e->key_len)) == NULL)
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

done:
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (batches[p] != NULL)
			iq_store_batch_discard(batches[p]);
	if (positions)
		rd_kafka_topic_partition_list_destroy(positions);
	if (iq_w->failed)
		iq_changelog_abort();
	for (int i = 0; i < n; i++)
		rd_kafka_message_destroy(msgs[i]);
	if (sorted)
		pfree(sorted);
	pfree(t.slots);
}

/*-------------------------------------------------------------------------
 * topology.c
 *	  The seed's topology on a batch of records: customer -> customer
 *	  store; order LEFT JOIN customer -> group by key -> count.
 *
 * A poll is aggregated in memory first (one entry per partition and key);
 * its new counts then go into the key cache as dirty entries, which
 * flush.c writes.  Customers are written by the flush of their own poll:
 * the cache keeps no values.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/partitioner.h"
#include "common/settings.h"
#include "common/wire.h"
#include "worker/state.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/poll_table.h"
#include "worker/stream/stream.h"

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
	char		shown[4 * 64 + 4];

	part->stats.wrong_partition++;
	if (part->wrong_partition_logged)
		return;
	part->wrong_partition_logged = true;
	/* a key is bytes from the producer: escaped, never raw, in the log */
	iq_wire_escape(shown, sizeof(shown), key, len);
	ereport(LOG,
			(errmsg("iq_fdw worker: a record of topic \"%s\" with key \"%s\" is in partition %d, but the key belongs to partition %d",
					topic, shown, p, expected),
			 errdetail("iq_fdw.partitioner is %s.  Further such records of partition %d are counted in iq_stats without being logged.",
					   iq_w->cfg.partitioner == IQ_PARTITIONER_MURMUR2 ? "murmur2" : "crc32", p),
			 errhint("The producer partitions keys differently from iq_fdw.partitioner; lookups of such keys go to the wrong instance. Use the same partitioner in the producer and in iq_fdw.partitioner.")));
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
 * take_record
 *		The partition a consumed record counts in, with its topic and kind;
 *		NULL when it does not count: an error (shown, and retried by
 *		librdkafka; a fatal one rebuilds the pipeline), a partition revoked
 *		during the poll, a topic not ours,
 *		or a record seen again after a seek (already in the state).  A
 *		record that counts moves its partition's position past it.
 */
static IqPart *
take_record(const rd_kafka_message_t *m, const char **topic, bool *is_order)
{
	int			p = m->partition;
	IqPart	   *part;

	if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			return NULL;
		/*
		 * librdkafka never recovers a handle from a fatal error (librdkafka
		 * 2.0 fences a static member that rejoined after its session timed
		 * out while the broker was away): only a new consumer goes on.
		 */
		if (m->err == RD_KAFKA_RESP_ERR__FATAL)
		{
			iq_fail("consumer: %s", rd_kafka_message_errstr(m));
			return NULL;
		}
		/* a missing topic and the like: visible, retried by librdkafka */
		iq_w->error_state = true;
		iq_set_worker_state(IQ_WORKER_ERROR, "consumer: %s%s%s",
							m->rkt ? rd_kafka_topic_name(m->rkt) : "",
							m->rkt ? ": " : "", rd_kafka_message_errstr(m));
		return NULL;
	}
	if (p < 0 || p >= iq_w->partition_count || m->rkt == NULL)
		return NULL;
	part = &iq_w->parts[p];
	if (!part->assigned)
		return NULL;			/* revoked during the poll */
	*topic = rd_kafka_topic_name(m->rkt);
	*is_order = strcmp(*topic, iq_w->cfg.order_topic) == 0;
	if (!*is_order && strcmp(*topic, iq_w->cfg.customer_topic) != 0)
		return NULL;
	/* a record seen again after a seek: already in the state */
	if (*is_order ? (part->order_next >= 0 && m->offset < part->order_next)
		: (part->customer_next >= 0 && m->offset < part->customer_next))
		return NULL;
	if (*is_order)
		part->order_next = m->offset + 1;
	else
		part->customer_next = m->offset + 1;
	iq_flush_note_input(p);
	return part;
}

/*
 * count_customer
 *		A customer record (a NULL payload is a tombstone) into the poll's
 *		table: an order of this key later in the poll joins the new state.
 */
static void
count_customer(Table *t, int p, const rd_kafka_message_t *m)
{
	bool		found;
	Entry	   *e = lookup(t, p, false, m->key, m->key_len, &found);
	Entry	   *o;

	e->value = m->payload;
	e->value_len = m->len;
	o = lookup(t, p, true, m->key, m->key_len, &found);
	if (found)
		o->joined = m->payload != NULL;
	else
	{
		o->hash = 0;			/* undo the probe's insert */
		t->used--;
	}
}

/*
 * count_order
 *		An order record: its key's count in the poll's table goes up, from
 *		what the cache or the store has when the poll first meets the key.
 */
static void
count_order(Table *t, int p, IqPart *part, const rd_kafka_message_t *m)
{
	bool		found;
	Entry	   *e = lookup(t, p, true, m->key, m->key_len, &found);

	if (!found)
	{
		/* one probe of the cache serves both questions */
		IqCacheEntry *ce = iq_cache_find(p, m->key, m->key_len);

		e->count = base_count(p, m->key, m->key_len, ce);
		e->joined = customer_exists(t, p, m->key, m->key_len, ce);
	}
	e->count++;
	if (e->joined)
		part->stats.orders_joined++;
	else
		part->stats.orders_without_customer++;
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
		const char *topic = NULL;
		bool		is_order = false;
		IqPart	   *part;
		int			expected;

		if (i + 2 * PREFETCH_DISTANCE < n)
			prefetch(msgs[i + 2 * PREFETCH_DISTANCE], 0);
		if (i + PREFETCH_DISTANCE < n)
			prefetch(msgs[i + PREFETCH_DISTANCE], 1);
		part = take_record(m, &topic, &is_order);
		if (part == NULL)
			continue;
		if (m->key == NULL)
		{
			part->stats.dropped_null_key++;
			continue;
		}
		expected = iq_partition_for_key(iq_w->cfg.partitioner, m->key, m->key_len,
										iq_w->partition_count);
		if (expected != m->partition)
			note_wrong_partition(part, m->partition, expected, topic, m->key, m->key_len);
		if (is_order)
			count_order(&t, m->partition, part, m);
		else
			count_customer(&t, m->partition, m);
		part->stats.records_processed++;
	}

	/*
	 * Through entries point into the messages; without them the messages
	 * go before a flush needs the memory they held.
	 */
	through = !iq_w->failed && count_into_cache(&t);
	if (!through)
		release_poll(msgs, n, &t);
	iq_flush_after_poll(through ? &t : NULL);
	if (through)
		release_poll(msgs, n, &t);
}

/*-------------------------------------------------------------------------
 * key_cache.c
 *	  What the worker knows of recently seen keys: their count and whether
 *	  a customer exists, so a batch need not ask RocksDB for them again.
 *
 * It holds committed state, and counts not yet written (dirty): while the
 * worker has a backlog, topology.c counts into the cache and flush.c
 * writes a key once per commit interval rather than once per poll
 * (write-behind, as Kafka Streams' record cache).  A dirty entry is never
 * evicted; flush.c writes them all before the cache could fill with them.  The cache is
 * emptied whenever the state may change under it (assignment, revocation,
 * restore, teardown); dirty counts dropped that way were never committed,
 * so their records are consumed again.
 *
 * Bounded in bytes (its share of iq_fdw.memory_budget, memory.c): a fixed
 * array of slots, chained from a bucket array, keys up to 24 bytes inline.
 * When it is full a CLOCK hand evicts one key: a key used since the hand
 * last passed gets a second chance, so keys that come back stay while keys
 * seen once go first.
 *
 * Evicted keys go into a bloom filter (the other half of the share), so a
 * partition the cache knows completely stays known: a miss whose key the
 * filter has never seen is a key with no count (or no customer), and only
 * the filter's false positives and keys evicted before cost a RocksDB get.
 * Without it, every new key of a key set larger than the cache cost two
 * gets and ingest fell tenfold.  As the filter fills its false positives
 * grow and more misses go to RocksDB, which is slower, never wrong.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/shmem.h"
#include "worker/stream/key_cache.h"

static IqCacheEntry *slots = NULL;
static uint32 *buckets = NULL;	/* slot index + 1, 0 = empty */
static size_t nbuckets = 0;		/* power of two */
static size_t capacity = 0;		/* slots */
static size_t used = 0;			/* slots [0, used) are filled */
static size_t hand = 0;
static size_t long_bytes = 0;	/* malloc'd keys */
static size_t long_limit = 0;
static uint32 *dirty = NULL;	/* slot indexes of dirty entries */
static size_t ndirty = 0;
static size_t dirty_long_bytes = 0;	/* long keys of dirty entries */

/* evicted counts and present customers; bits, a power of two */
#define FILTER_PROBES	4
static uint64 *filter = NULL;
static size_t filter_bits = 0;

/*
 * A partition whose order-count store was empty when the cache was last
 * emptied, and every count of which has gone through the cache since and
 * is still in it: a miss then means "no count yet", and RocksDB need not
 * be asked.  Likewise for customers present.  Lost on a clear, and for
 * the partition of an entry that is evicted.
 */
static bool complete[IQ_MAX_PARTITIONS];
static bool customers_complete[IQ_MAX_PARTITIONS];
static uint64_t generation = 0;

static uint32
hash_key(int partition, const char *key, size_t len)
{
	uint32		h = 2166136261u ^ (uint32) partition;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char) key[i]) * 16777619u;
	return h ? h : 1;
}

/*
 * filter_hash
 *		A second hash of the key, independent of hash_key, for the filter.
 */
static uint64
filter_hash(int partition, bool is_count, const char *key, size_t len)
{
	uint64		h = 0xcbf29ce484222325ULL ^ ((uint64) partition << 1) ^ (is_count ? 1 : 0);

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char) key[i]) * 0x100000001b3ULL;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	return h;
}

static void
filter_add(int partition, bool is_count, const char *key, size_t len)
{
	uint64		h = filter_hash(partition, is_count, key, len);
	uint64		step = (h >> 32) | 1;

	for (int i = 0; i < FILTER_PROBES; i++, h += step)
	{
		size_t		bit = h & (filter_bits - 1);

		filter[bit >> 6] |= (uint64) 1 << (bit & 63);
	}
}

static bool
filter_may_contain(int partition, bool is_count, const char *key, size_t len)
{
	uint64		h = filter_hash(partition, is_count, key, len);
	uint64		step = (h >> 32) | 1;

	if (filter == NULL)
		return true;
	for (int i = 0; i < FILTER_PROBES; i++, h += step)
	{
		size_t		bit = h & (filter_bits - 1);

		if ((filter[bit >> 6] & ((uint64) 1 << (bit & 63))) == 0)
			return false;
	}
	return true;
}

static inline const char *
entry_key(const IqCacheEntry *e)
{
	return e->key_len > IQ_CACHE_KEY_INLINE ? e->k.long_key : e->k.inline_key;
}

static void
lose_all(void)
{
	memset(complete, 0, sizeof(complete));
	memset(customers_complete, 0, sizeof(customers_complete));
	generation++;
}

/*
 * iq_cache_init
 *		Half of max_bytes for the filter of evicted keys, the rest for slots
 *		and buckets, of which a sixteenth may hold keys too long to be
 *		inline.
 */
void
iq_cache_init(size_t max_bytes)
{
	size_t		per_slot;

	iq_cache_clear();
	free(slots);
	free(buckets);
	free(filter);
	free(dirty);
	slots = NULL;
	buckets = NULL;
	dirty = NULL;
	filter_bits = 64 * 8;
	while (filter_bits * 2 <= max_bytes / 2 * 8)
		filter_bits *= 2;
	filter = calloc(filter_bits / 64, sizeof(uint64));
	if (filter == NULL)
		filter_bits = 0;
	max_bytes -= filter_bits / 8;
	long_limit = max_bytes / 16;
	max_bytes -= long_limit;
	/*
	 * a slot, one or two bucket entries (buckets are a power of two) and its
	 * place in the dirty list
	 */
	per_slot = sizeof(IqCacheEntry) + 3 * sizeof(uint32);
	capacity = Max(max_bytes / per_slot, 1024);
	nbuckets = 1;
	while (nbuckets < capacity)
		nbuckets <<= 1;
	slots = malloc(capacity * sizeof(IqCacheEntry));
	buckets = calloc(nbuckets, sizeof(uint32));
	dirty = malloc(capacity * sizeof(uint32));
	if (slots == NULL || buckets == NULL || dirty == NULL)
	{
		free(slots);
		free(buckets);
		free(dirty);
		slots = NULL;
		buckets = NULL;
		dirty = NULL;
		capacity = nbuckets = 0;	/* no cache: every lookup goes to RocksDB */
	}
	used = hand = 0;
}

void
iq_cache_clear(void)
{
	lose_all();
	for (size_t i = 0; i < used; i++)
		if (slots[i].key_len > IQ_CACHE_KEY_INLINE)
			free(slots[i].k.long_key);
	if (buckets != NULL)
		memset(buckets, 0, nbuckets * sizeof(uint32));
	/* completeness is gone: what was evicted no longer matters */
	if (filter != NULL)
		memset(filter, 0, filter_bits / 8);
	used = hand = 0;
	ndirty = 0;
	dirty_long_bytes = 0;
	long_bytes = 0;
}

IqCacheEntry *
iq_cache_find(int partition, const char *key, size_t len)
{
	uint32		h;

	if (used == 0)
		return NULL;
	h = hash_key(partition, key, len);
	for (uint32 i = buckets[h & (nbuckets - 1)]; i != 0; i = slots[i - 1].next)
	{
		IqCacheEntry *e = &slots[i - 1];

		if (e->hash == h && e->partition == partition && e->key_len == len &&
			memcmp(entry_key(e), key, len) == 0)
		{
			e->referenced = 1;
			return e;
		}
	}
	return NULL;
}

/*
 * iq_cache_prefetch
 *		The cache is far larger than the CPU's, so each find waits for two
 *		memory loads, the bucket and then the slot (perf: iq_cache_find was
 *		15% of the ingest's main thread).  Asked a few keys ahead in two
 *		stages, the loads of neighbouring keys overlap instead.
 */
void
iq_cache_prefetch(int partition, const char *key, size_t len, int stage)
{
	uint32		h;
	uint32		first;

	if (used == 0)
		return;
	h = hash_key(partition, key, len);
	if (stage == 0)
	{
		__builtin_prefetch(&buckets[h & (nbuckets - 1)]);
		return;
	}
	first = buckets[h & (nbuckets - 1)];
	if (first != 0)
		__builtin_prefetch(&slots[first - 1]);
}

/*
 * evict
 *		Free one slot with the CLOCK hand and return it, unlinked; NULL when
 *		every slot is dirty.
 *
 * An evicted count or present customer goes into the filter, so that a
 * miss on it is not taken for "none"; without a filter its partition loses
 * completeness.
 */
static IqCacheEntry *
evict(void)
{
	IqCacheEntry *e;
	uint32	   *link;

	if (ndirty >= used)
		return NULL;
	for (;;)
	{
		e = &slots[hand];
		hand = (hand + 1) % used;
		if (e->dirty)
			continue;
		if (!e->referenced)
			break;
		e->referenced = 0;
	}
	if (e->hash == 0)
		return e;				/* parked empty, linked nowhere */
	for (link = &buckets[e->hash & (nbuckets - 1)]; *link != (uint32) (e - slots) + 1;
		 link = &slots[*link - 1].next)
		;
	*link = e->next;
	/* whether or not completeness is set yet: a restore sets it after */
	if (e->has_count)
	{
		if (filter != NULL)
			filter_add(e->partition, true, entry_key(e), e->key_len);
		else
		{
			complete[e->partition] = false;
			generation++;
		}
	}
	if (e->customer == IQ_CUSTOMER_PRESENT)
	{
		if (filter != NULL)
			filter_add(e->partition, false, entry_key(e), e->key_len);
		else
		{
			customers_complete[e->partition] = false;
			generation++;
		}
	}
	if (e->key_len > IQ_CACHE_KEY_INLINE)
	{
		long_bytes -= e->key_len;
		free(e->k.long_key);
	}
	return e;
}

/*
 * park
 *		Leave an unlinked slot empty (hash 0): found by no lookup, taken
 *		first by the hand.
 */
static void
park(IqCacheEntry *e)
{
	e->hash = 0;
	e->next = 0;
	e->key_len = 0;
	e->partition = UINT16_MAX;
	e->has_count = false;
	e->customer = IQ_CUSTOMER_UNKNOWN;
	e->referenced = 0;
	e->dirty = 0;
}

/*
 * refuse
 *		A key the cache has no room for beside its dirty counts: its state
 *		goes to the store without it, as if it had been cached and
 *		evicted, so it goes into the filter (without one, completeness is
 *		lost).
 */
static IqCacheEntry *
refuse(int partition, const char *key, size_t len)
{
	if (filter == NULL)
	{
		lose_all();
		return NULL;
	}
	filter_add(partition, true, key, len);
	filter_add(partition, false, key, len);
	return NULL;
}

/*
 * iq_cache_upsert
 *		The entry of a key, created empty if missing (evicting another when
 *		full, never a dirty one); NULL when it cannot be cached.
 */
IqCacheEntry *
iq_cache_upsert(int partition, const char *key, size_t len)
{
	IqCacheEntry *e = iq_cache_find(partition, key, len);
	uint32		h;
	size_t		b;

	if (e != NULL)
		return e;
	if (slots == NULL || len > UINT16_MAX || partition < 0 || partition >= IQ_MAX_PARTITIONS ||
		(len > IQ_CACHE_KEY_INLINE && len > long_limit))
	{
		lose_all();
		return NULL;
	}
	/* a long key's room can only come from keys that are not dirty */
	if (len > IQ_CACHE_KEY_INLINE && dirty_long_bytes + len > long_limit)
		return refuse(partition, key, len);
	if (len > IQ_CACHE_KEY_INLINE)
		while (long_bytes + len > long_limit && used > 0)
		{
			/* evict until a long key fits; the freed slot is reused below */
			e = evict();
			if (e == NULL || long_bytes + len <= long_limit)
				break;
			park(e);
			e = NULL;
		}
	if (e == NULL)
		e = used < capacity ? &slots[used++] : evict();
	if (e == NULL || (len > IQ_CACHE_KEY_INLINE && long_bytes + len > long_limit))
	{
		/* every slot (or every long key's) is a dirty count */
		if (e != NULL)
			park(e);
		return refuse(partition, key, len);
	}

	if (len > IQ_CACHE_KEY_INLINE)
	{
		e->k.long_key = malloc(len);
		if (e->k.long_key == NULL)
		{
			park(e);
			lose_all();
			return NULL;
		}
		memcpy(e->k.long_key, key, len);
		long_bytes += len;
	}
	else if (len > 0)
		memcpy(e->k.inline_key, key, len);
	h = hash_key(partition, key, len);
	b = h & (nbuckets - 1);
	e->hash = h;
	e->key_len = (uint16) len;
	e->partition = (uint16) partition;
	e->has_count = false;
	e->count = 0;
	e->customer = IQ_CUSTOMER_UNKNOWN;
	e->referenced = 0;
	e->dirty = 0;
	e->next = buckets[b];
	buckets[b] = (uint32) (e - slots) + 1;
	return e;
}

void
iq_cache_set_dirty(IqCacheEntry *e)
{
	if (e->dirty)
		return;
	e->dirty = 1;
	dirty[ndirty++] = (uint32) (e - slots);
	if (e->key_len > IQ_CACHE_KEY_INLINE)
		dirty_long_bytes += e->key_len;
}

size_t
iq_cache_dirty_count(void)
{
	return ndirty;
}

const IqCacheEntry *
iq_cache_dirty_entry(size_t i)
{
	return &slots[dirty[i]];
}

const char *
iq_cache_entry_key(const IqCacheEntry *e)
{
	return entry_key(e);
}

/*
 * iq_cache_flushed
 *		Every dirty count is written: they are committed state now.
 */
void
iq_cache_flushed(void)
{
	for (size_t i = 0; i < ndirty; i++)
		slots[dirty[i]].dirty = 0;
	ndirty = 0;
	dirty_long_bytes = 0;
}

/*
 * iq_cache_dirty_room_for
 *		Whether n more dirty keys would surely fit beside the dirty ones:
 *		slots for all of them, and half the long keys' room still free.
 */
bool
iq_cache_dirty_room_for(size_t n)
{
	return ndirty + n <= capacity && dirty_long_bytes <= long_limit / 2;
}

void
iq_cache_set_complete(int partition)
{
	if (slots != NULL && partition >= 0 && partition < IQ_MAX_PARTITIONS)
		complete[partition] = true;
}

/*
 * iq_cache_knows_no_count
 *		True when a key missing from the cache surely has no count: its
 *		partition is complete and the key was never evicted.
 */
bool
iq_cache_knows_no_count(int partition, const char *key, size_t len)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS && complete[partition] &&
		!filter_may_contain(partition, true, key, len);
}

uint64_t
iq_cache_generation(void)
{
	return generation;
}

void
iq_cache_set_customers_complete(int partition)
{
	if (slots != NULL && partition >= 0 && partition < IQ_MAX_PARTITIONS)
		customers_complete[partition] = true;
}

/*
 * iq_cache_knows_no_customer
 *		The same for customers: a key missing from the cache surely has none.
 */
bool
iq_cache_knows_no_customer(int partition, const char *key, size_t len)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS && customers_complete[partition] &&
		!filter_may_contain(partition, false, key, len);
}

/*-------------------------------------------------------------------------
 * cache.c
 *	  What the worker knows of recently seen keys: their count and whether
 *	  a customer exists, so a batch need not ask RocksDB for them again.
 *
 * It only ever holds committed state: topology.c fills it after a batch's
 * state is written, and it is emptied whenever that state may change under
 * it (assignment, revocation, restore, teardown).  Bounded by entries (set
 * from iq_fdw.memory_budget); when full it is emptied rather than evicted
 * key by key, which is cheap and keeps the code obvious.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "cache.h"
#include "shmem.h"

static IqCacheEntry *slots = NULL;
static size_t nslots = 0;		/* power of two */
static size_t used = 0;
static size_t limit = 0;

/*
 * A partition whose order-count store was empty when the cache was last
 * emptied, and every count of which has gone through the cache since: a
 * miss then means "no count yet", and RocksDB need not be asked.  Lost on
 * any clear.  (Customers are restored without the cache: not covered.)
 */
static bool complete[IQ_MAX_PARTITIONS];
static bool customers_complete[IQ_MAX_PARTITIONS];
static uint64_t clears = 0;		/* grows on every clear */

static uint32
hash_key(int partition, const char *key, size_t len)
{
	uint32		h = 2166136261u ^ (uint32) partition;

	for (size_t i = 0; i < len; i++)
		h = (h ^ (unsigned char) key[i]) * 16777619u;
	return h ? h : 1;
}

/*
 * iq_cache_init
 *		Room for max_entries keys (at least a thousand).
 */
void
iq_cache_init(size_t max_entries)
{
	iq_cache_clear();
	free(slots);
	if (max_entries < 1024)
		max_entries = 1024;
	nslots = 1;
	while (nslots < max_entries + max_entries / 2)
		nslots <<= 1;
	limit = max_entries;
	slots = calloc(nslots, sizeof(IqCacheEntry));
	if (slots == NULL)
		nslots = limit = 0;		/* no cache: every lookup goes to RocksDB */
	used = 0;
}

void
iq_cache_clear(void)
{
	memset(complete, 0, sizeof(complete));
	memset(customers_complete, 0, sizeof(customers_complete));
	clears++;
	if (slots == NULL || used == 0)
		return;
	for (size_t i = 0; i < nslots; i++)
		if (slots[i].hash != 0)
			free(slots[i].key);
	memset(slots, 0, sizeof(IqCacheEntry) * nslots);
	used = 0;
}

IqCacheEntry *
iq_cache_find(int partition, const char *key, size_t len)
{
	uint32		h;
	size_t		i;

	if (slots == NULL || used == 0)
		return NULL;
	h = hash_key(partition, key, len);
	for (i = h & (nslots - 1);; i = (i + 1) & (nslots - 1))
	{
		IqCacheEntry *e = &slots[i];

		if (e->hash == 0)
			return NULL;
		if (e->hash == h && e->partition == partition && e->key_len == len &&
			memcmp(e->key, key, len) == 0)
			return e;
	}
}

/*
 * iq_cache_upsert
 *		The entry of a key, created empty if missing; NULL without a cache.
 */
IqCacheEntry *
iq_cache_upsert(int partition, const char *key, size_t len)
{
	IqCacheEntry *e = iq_cache_find(partition, key, len);
	uint32		h;
	size_t		i;

	if (e != NULL)
		return e;
	if (slots == NULL)
	{
		memset(complete, 0, sizeof(complete));
		memset(customers_complete, 0, sizeof(customers_complete));
		clears++;
		return NULL;
	}
	if (used >= limit)
		iq_cache_clear();
	h = hash_key(partition, key, len);
	for (i = h & (nslots - 1); slots[i].hash != 0; i = (i + 1) & (nslots - 1))
		;
	e = &slots[i];
	e->key = malloc(len > 0 ? len : 1);
	if (e->key == NULL)
	{
		memset(complete, 0, sizeof(complete));
		memset(customers_complete, 0, sizeof(customers_complete));
		clears++;
		return NULL;
	}
	memcpy(e->key, key, len);
	e->hash = h;
	e->partition = partition;
	e->key_len = len;
	e->has_count = false;
	e->count = 0;
	e->customer = IQ_CUSTOMER_UNKNOWN;
	used++;
	return e;
}

void
iq_cache_set_complete(int partition)
{
	if (slots != NULL && partition >= 0 && partition < IQ_MAX_PARTITIONS)
		complete[partition] = true;
}

bool
iq_cache_is_complete(int partition)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS && complete[partition];
}

uint64_t
iq_cache_generation(void)
{
	return clears;
}

void
iq_cache_set_customers_complete(int partition)
{
	if (slots != NULL && partition >= 0 && partition < IQ_MAX_PARTITIONS)
		customers_complete[partition] = true;
}

bool
iq_cache_customers_complete(int partition)
{
	return partition >= 0 && partition < IQ_MAX_PARTITIONS && customers_complete[partition];
}

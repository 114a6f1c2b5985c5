/*-------------------------------------------------------------------------
 * value_cache.c
 *	  The shared-memory cache of point-lookup answers (see value_cache.h).
 *
 * A set-associative table of fixed 128-byte slots: a key hashes to a set
 * of VC_WAYS slots, filled round robin when full.  Slots hold small keys
 * and values only (counts, names); anything larger is simply not cached.
 * Readers never write, so a hot key costs them no cache-line contention.
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <string.h>

#include "common/value_cache.h"

#define VC_WAYS				4
#define VC_MAX_PARTITIONS	256	/* IQ_MAX_PARTITIONS, checked in shmem.c */

enum
{
	SLOT_EMPTY = 0,
	SLOT_FOUND,
	SLOT_ABSENT
};

typedef struct Slot
{
	uint32_t	seq;			/* odd while a writer is in the slot */
	uint32_t	hash;
	uint64_t	generation;		/* of the partition, when filled */
	uint8_t		store;
	uint8_t		state;
	uint16_t	partition;
	uint16_t	key_len;
	uint16_t	value_len;
	char		data[IQ_VC_DATA];	/* key, then value */
} Slot;

struct IqValueCache
{
	uint64_t	nsets;
	uint64_t	next_generation;
	uint32_t	victim;			/* round robin over the ways of a full set */
	uint64_t	generation[VC_MAX_PARTITIONS];	/* read by backends */
	uint64_t	writes[VC_MAX_PARTITIONS];	/* batches begun and ended */
	uint32_t	open_writes[VC_MAX_PARTITIONS];
	bool		filled[VC_MAX_PARTITIONS];	/* a slot filled this generation */
	/* for GET /metrics; apart, so that the backends' adds spare the above's lines */
	uint64_t	hits __attribute__((aligned(64)));
	uint64_t	misses;
	Slot		slots[] __attribute__((aligned(64)));
};

_Static_assert(sizeof(Slot) == 128, "a slot is two cache lines");

/* the worker's threads write one at a time; backends never lock */
static pthread_mutex_t writer = PTHREAD_MUTEX_INITIALIZER;

/*
 * The number of sets, as the postmaster made the cache: every process
 * inherits it, so that no value the engine writes into the segment (a
 * wild write of a crashing engine included) can send a reader outside it.
 */
static uint64_t local_nsets = 0;

/* FNV-1a over the store and the key */
static uint32_t
hash_key(int store, const char *key, size_t len)
{
	uint32_t	h = 2166136261u ^ (uint32_t) store;

	for (size_t i = 0; i < len; i++)
	{
		h ^= (unsigned char) key[i];
		h *= 16777619u;
	}
	return h;
}

static bool
cacheable(int partition, size_t key_len, size_t value_len)
{
	return partition >= 0 && partition < VC_MAX_PARTITIONS &&
		key_len + value_len <= IQ_VC_DATA;
}

size_t
iq_vc_shmem_size(int size_mb)
{
	size_t		nsets;

	if (size_mb <= 0)
		return 0;
	nsets = ((size_t) size_mb * 1024 * 1024) / (sizeof(Slot) * VC_WAYS);
	if (nsets == 0)
		nsets = 1;
	return sizeof(IqValueCache) + nsets * VC_WAYS * sizeof(Slot) + 64;
}

IqValueCache *
iq_vc_init(void *mem, size_t size)
{
	IqValueCache *vc;
	uintptr_t	aligned = ((uintptr_t) mem + 63) & ~(uintptr_t) 63;

	if (mem == NULL || size < sizeof(IqValueCache) + 64 + VC_WAYS * sizeof(Slot))
		return NULL;
	vc = (IqValueCache *) aligned;
	memset(vc, 0, sizeof(IqValueCache));
	vc->nsets = (size - sizeof(IqValueCache) - 64) / (sizeof(Slot) * VC_WAYS);
	local_nsets = vc->nsets;
	memset(vc->slots, 0, vc->nsets * VC_WAYS * sizeof(Slot));
	vc->next_generation = 1;
	for (int p = 0; p < VC_MAX_PARTITIONS; p++)
		vc->generation[p] = 1;
	return vc;
}

static Slot *
set_of(IqValueCache *vc, uint32_t hash)
{
	return &vc->slots[(hash % local_nsets) * VC_WAYS];
}

static bool
slot_is(const Slot *s, uint32_t hash, int store, int partition,
		const char *key, size_t key_len)
{
	return s->hash == hash && s->store == store && s->partition == partition &&
		s->key_len == key_len && memcmp(s->data, key, key_len) == 0;
}

static IqVcResult
lookup(IqValueCache *vc, int store, int partition,
	   const char *key, size_t key_len, char *value, size_t *value_len)
{
	uint32_t	hash;
	Slot	   *set;

	if (vc == NULL || !cacheable(partition, key_len, 0))
		return IQ_VC_MISS;
	hash = hash_key(store, key, key_len);
	set = set_of(vc, hash);
	for (int w = 0; w < VC_WAYS; w++)
	{
		Slot	   *s = &set[w];
		Slot		copy;
		uint32_t	seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);

		if (seq & 1)
			continue;			/* a writer is here: ask the worker */
		if (__atomic_load_n(&s->hash, __ATOMIC_RELAXED) != hash)
			continue;			/* most ways: no need to copy them */
		memcpy(&copy, s, sizeof(Slot));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != seq)
			continue;
		if (copy.state == SLOT_EMPTY ||
			copy.key_len + copy.value_len > IQ_VC_DATA ||
			!slot_is(&copy, hash, store, partition, key, key_len))
			continue;
		if (copy.generation != __atomic_load_n(&vc->generation[partition], __ATOMIC_ACQUIRE))
			return IQ_VC_MISS;
		if (copy.state == SLOT_ABSENT)
			return IQ_VC_ABSENT;
		memcpy(value, copy.data + copy.key_len, copy.value_len);
		*value_len = copy.value_len;
		return IQ_VC_FOUND;
	}
	return IQ_VC_MISS;
}

/* iq_vc_lookup: lookup, counted (a relaxed add: lookups run at tens of thousands a second) */
IqVcResult
iq_vc_lookup(IqValueCache *vc, int store, int partition,
			 const char *key, size_t key_len, char *value, size_t *value_len)
{
	IqVcResult	r;

	if (vc == NULL)
		return IQ_VC_MISS;
	r = lookup(vc, store, partition, key, key_len, value, value_len);
	__atomic_fetch_add(r == IQ_VC_MISS ? &vc->misses : &vc->hits, 1, __ATOMIC_RELAXED);
	return r;
}

void
iq_vc_counts(IqValueCache *vc, uint64_t *hits, uint64_t *misses)
{
	*hits = __atomic_load_n(&vc->hits, __ATOMIC_RELAXED);
	*misses = __atomic_load_n(&vc->misses, __ATOMIC_RELAXED);
}

/* write_slot: replace a slot's content under its sequence counter */
static void
write_slot(Slot *s, uint32_t hash, int store, int partition, uint64_t generation,
		   int state, const char *key, size_t key_len,
		   const char *value, size_t value_len)
{
	uint32_t	seq = s->seq;

	__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	s->hash = hash;
	s->store = (uint8_t) store;
	s->partition = (uint16_t) partition;
	s->generation = generation;
	s->state = (uint8_t) state;
	s->key_len = (uint16_t) key_len;
	s->value_len = (uint16_t) value_len;
	if (key_len)
		memcpy(s->data, key, key_len);
	if (value_len)
		memcpy(s->data + key_len, value, value_len);
	__atomic_store_n(&s->seq, seq + 2, __ATOMIC_RELEASE);
}

void
iq_vc_new_generation(IqValueCache *vc, int partition)
{
	if (vc == NULL)
		return;
	pthread_mutex_lock(&writer);
	for (int p = 0; p < VC_MAX_PARTITIONS; p++)
		if (partition < 0 || p == partition)
		{
			__atomic_store_n(&vc->generation[p], ++vc->next_generation, __ATOMIC_RELEASE);
			vc->filled[p] = false;
		}
	pthread_mutex_unlock(&writer);
}

/*
 * iq_vc_reset
 *		After the engine died, with no engine running (the supervisor): a
 *		slot it left half written is emptied and its counter made even
 *		again, every partition starts a new generation, so no entry filled
 *		before is ever returned, and no write is left open.
 */
void
iq_vc_reset(IqValueCache *vc)
{
	uint64_t	next = 0;

	if (vc == NULL)
		return;
	for (uint64_t i = 0; i < local_nsets * VC_WAYS; i++)
	{
		Slot	   *s = &vc->slots[i];
		uint32_t	seq = __atomic_load_n(&s->seq, __ATOMIC_RELAXED);

		/* readers skip it while odd: empty it, then let them see it */
		if (seq & 1)
		{
			memset((char *) s + sizeof(s->seq), 0, sizeof(Slot) - sizeof(s->seq));
			__atomic_store_n(&s->seq, seq + 1, __ATOMIC_RELEASE);
		}
	}
	for (int p = 0; p < VC_MAX_PARTITIONS; p++)
		next = vc->generation[p] > next ? vc->generation[p] : next;
	if (vc->next_generation > next)
		next = vc->next_generation;
	vc->next_generation = next;
	memset(vc->open_writes, 0, sizeof(vc->open_writes));
	iq_vc_new_generation(vc, -1);
}

/* count_write: a write of partition begins (opening) or ends; both move writes */
static void
count_write(IqValueCache *vc, int partition, bool opening)
{
	if (vc == NULL || partition < 0 || partition >= VC_MAX_PARTITIONS)
		return;
	pthread_mutex_lock(&writer);
	vc->writes[partition]++;
	if (opening)
		vc->open_writes[partition]++;
	else if (vc->open_writes[partition] > 0)
		vc->open_writes[partition]--;
	pthread_mutex_unlock(&writer);
}

void
iq_vc_write_begin(IqValueCache *vc, int partition)
{
	count_write(vc, partition, true);
}

void
iq_vc_write_end(IqValueCache *vc, int partition)
{
	count_write(vc, partition, false);
}

void
iq_vc_forget(IqValueCache *vc, int store, int partition,
			 const char *key, size_t key_len)
{
	uint32_t	hash;
	Slot	   *set;

	if (vc == NULL || !cacheable(partition, key_len, 0))
		return;
	/*
	 * Nothing of the partition was filled: a batch of a partition nobody
	 * reads skips the probe of every key (a cache miss each).  Read without
	 * the lock, as this is called inside write_begin .. write_end: a fill
	 * made before write_begin set the flag before that took the lock, and
	 * none can land until write_end.
	 */
	if (!__atomic_load_n(&vc->filled[partition], __ATOMIC_RELAXED))
		return;
	hash = hash_key(store, key, key_len);
	set = set_of(vc, hash);
	pthread_mutex_lock(&writer);
	for (int w = 0; w < VC_WAYS; w++)
		if (set[w].state != SLOT_EMPTY &&
			slot_is(&set[w], hash, store, partition, key, key_len))
			write_slot(&set[w], 0, 0, 0, 0, SLOT_EMPTY, NULL, 0, NULL, 0);
	pthread_mutex_unlock(&writer);
}

IqVcTicket
iq_vc_ticket(IqValueCache *vc, int partition)
{
	IqVcTicket	t = {0, 0};

	if (vc == NULL || partition < 0 || partition >= VC_MAX_PARTITIONS)
		return t;
	pthread_mutex_lock(&writer);
	t.generation = vc->generation[partition];
	t.writes = vc->open_writes[partition] ? 0 : vc->writes[partition];
	pthread_mutex_unlock(&writer);
	return t;
}

void
iq_vc_fill(IqValueCache *vc, IqVcTicket ticket, int store, int partition,
		   const char *key, size_t key_len, const char *value, size_t value_len)
{
	uint32_t	hash;
	Slot	   *set;
	Slot	   *target = NULL;

	if (vc == NULL || ticket.generation == 0 ||
		!cacheable(partition, key_len, value ? value_len : 0))
		return;
	hash = hash_key(store, key, key_len);
	set = set_of(vc, hash);
	pthread_mutex_lock(&writer);
	/* a write or a new generation since the ticket: the read may be old */
	if (vc->generation[partition] != ticket.generation ||
		vc->open_writes[partition] != 0 || vc->writes[partition] != ticket.writes)
	{
		pthread_mutex_unlock(&writer);
		return;
	}
	for (int w = 0; w < VC_WAYS && target == NULL; w++)
		if (set[w].state != SLOT_EMPTY &&
			slot_is(&set[w], hash, store, partition, key, key_len))
			target = &set[w];
	for (int w = 0; w < VC_WAYS && target == NULL; w++)
	{
		Slot	   *s = &set[w];

		if (s->state == SLOT_EMPTY || s->partition >= VC_MAX_PARTITIONS ||
			s->generation != vc->generation[s->partition])
			target = s;
	}
	if (target == NULL)
		target = &set[vc->victim++ % VC_WAYS];
	write_slot(target, hash, store, partition, ticket.generation,
			   value ? SLOT_FOUND : SLOT_ABSENT, key, key_len,
			   value, value ? value_len : 0);
	__atomic_store_n(&vc->filled[partition], true, __ATOMIC_RELAXED);
	pthread_mutex_unlock(&writer);
}

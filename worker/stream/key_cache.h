/*-------------------------------------------------------------------------
 * key_cache.h
 *	  The worker's cache of per-key state (worker main thread): committed,
 *	  or counted but not yet written (dirty).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_KEY_CACHE_H
#define IQ_KEY_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum IqCustomerKnown
{
	IQ_CUSTOMER_UNKNOWN = 0,
	IQ_CUSTOMER_PRESENT,
	IQ_CUSTOMER_ABSENT
} IqCustomerKnown;

#define IQ_CACHE_KEY_INLINE 24

/*
 * One key.  A pointer to it is valid until the next iq_cache_upsert or
 * iq_cache_clear (either may evict it).
 */
typedef struct IqCacheEntry
{
	uint32_t	hash;			/* 0 = empty slot */
	uint32_t	next;			/* next in the bucket's chain: index + 1, 0 = end */
	int64_t		count;
	uint16_t	key_len;
	uint16_t	partition;
	bool		has_count;
	uint8_t		customer;		/* IqCustomerKnown */
	uint8_t		referenced;		/* CLOCK: used since the hand last passed */
	uint8_t		dirty;			/* count not yet written: never evicted */
	union
	{
		char		inline_key[IQ_CACHE_KEY_INLINE];
		char	   *long_key;	/* malloc'd, key_len > IQ_CACHE_KEY_INLINE */
	}			k;
} IqCacheEntry;

/* Room for what fits in max_bytes (slots, buckets and long keys). */
extern void iq_cache_init(size_t max_bytes);
extern void iq_cache_clear(void);
extern IqCacheEntry *iq_cache_find(int partition, const char *key, size_t len);

/*
 * Start loading what a find of the key will read, a few keys ahead of it:
 * stage 0 its bucket, stage 1 (once the bucket is loaded) its first slot.
 */
extern void iq_cache_prefetch(int partition, const char *key, size_t len, int stage);

/* The entry of a key, created empty if missing; NULL if it cannot be cached. */
extern IqCacheEntry *iq_cache_upsert(int partition, const char *key, size_t len);

/*
 * Write-behind: a dirty entry holds a count that is not yet in the changelog
 * or the store.  It stays until iq_cache_flushed (its count is written) or
 * iq_cache_clear (its count is dropped with the pipeline's failure).
 */
extern void iq_cache_set_dirty(IqCacheEntry *e);
extern size_t iq_cache_dirty_count(void);
extern const IqCacheEntry *iq_cache_dirty_entry(size_t i);
extern const char *iq_cache_entry_key(const IqCacheEntry *e);
extern void iq_cache_flushed(void);
extern bool iq_cache_dirty_room_for(size_t n);

/*
 * The partition's order-count store holds nothing the cache has not seen
 * (kept, or evicted into its filter); then a key the cache does not know
 * surely has no count.
 */
extern void iq_cache_set_complete(int partition);
extern bool iq_cache_knows_no_count(int partition, const char *key, size_t len);

/* Every customer of the partition went through the cache (its restore). */
extern void iq_cache_set_customers_complete(int partition);
extern bool iq_cache_knows_no_customer(int partition, const char *key, size_t len);

/*
 * Grows whenever completeness may have been lost (a clear, a key that
 * could not be cached, an eviction when there is no filter): completeness
 * set after a fill holds only if it did not move.
 */
extern uint64_t iq_cache_generation(void);

#endif							/* IQ_KEY_CACHE_H */

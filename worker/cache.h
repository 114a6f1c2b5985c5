/*-------------------------------------------------------------------------
 * cache.h
 *	  The worker's cache of committed per-key state (worker main thread).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_CACHE_H
#define IQ_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum IqCustomerKnown
{
	IQ_CUSTOMER_UNKNOWN = 0,
	IQ_CUSTOMER_PRESENT,
	IQ_CUSTOMER_ABSENT
} IqCustomerKnown;

typedef struct IqCacheEntry
{
	uint32_t	hash;			/* 0 = empty slot */
	int			partition;
	char	   *key;			/* malloc'd */
	size_t		key_len;
	bool		has_count;
	int64_t		count;
	IqCustomerKnown customer;
} IqCacheEntry;

extern void iq_cache_init(size_t max_entries);
extern void iq_cache_clear(void);
extern IqCacheEntry *iq_cache_find(int partition, const char *key, size_t len);
extern IqCacheEntry *iq_cache_upsert(int partition, const char *key, size_t len);

/* The partition's order-count store holds nothing the cache does not. */
extern void iq_cache_set_complete(int partition);
extern bool iq_cache_is_complete(int partition);

/* Every customer of the partition is in the cache (filled by its restore). */
extern void iq_cache_set_customers_complete(int partition);
extern bool iq_cache_customers_complete(int partition);

/* Grows on every clear: completeness holds only if it did not move. */
extern uint64_t iq_cache_generation(void);

#endif							/* IQ_CACHE_H */

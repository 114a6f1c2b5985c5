/*-------------------------------------------------------------------------
 * key_order.h
 *	  The order RocksDB's bytewise comparator gives a set of keys, stable,
 *	  found by a radix sort (a restore sorts a million keys a second).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_KEY_ORDER_H
#define IQ_KEY_ORDER_H

#include <stddef.h>
#include <stdint.h>

/* Key number i: its bytes, and their count in *len. */
typedef const char *(*IqKeyAt) (const void *ctx, int i, size_t *len);

/*
 * The numbers 0 .. n-1 of the keys in byte order, equal keys in the order
 * of their numbers; malloc'd (free it), NULL when out of memory.  With
 * same_as_next (n bytes), same_as_next[i] tells whether the key i-th in
 * that order equals the one after it, mostly found without reading keys.
 */
extern uint32_t *iq_key_order(int n, IqKeyAt key_at, const void *ctx,
							  uint8_t *same_as_next);

#endif							/* IQ_KEY_ORDER_H */

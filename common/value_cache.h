/*-------------------------------------------------------------------------
 * value_cache.h
 *	  A shared-memory cache of point-lookup answers: the worker writes it,
 *	  backends read it without a lock and without a round trip.
 *
 * A local point lookup through the worker's socket costs two context
 * switches, which on a small machine is most of its price.  Keys read
 * recently are kept here, so that a repeated lookup costs a hash probe.
 *
 * Exactness rests on three rules, all kept by the worker:
 *	- a key written by the stream is forgotten before its batch is written
 *	  (iq_vc_forget, between iq_vc_write_begin and iq_vc_write_end), and a
 *	  read that overlapped a write of its partition does not fill (the
 *	  ticket taken before the read no longer matches);
 *	- an entry belongs to a generation of its partition, and every change
 *	  of the partition's life (opened, restored, closed, worker restart)
 *	  starts a new one (iq_vc_new_generation), so an entry never outlives
 *	  the state it was read from;
 *	- only one writer at a time (the worker serialises its threads).
 * Readers copy a slot between two reads of its sequence counter (a
 * seqlock) and discard the copy if a writer was there.
 *
 * Plain C with compiler atomics, shared by backends and the worker's
 * threads: nothing here calls PostgreSQL.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_VALUE_CACHE_H
#define IQ_VALUE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* key and value together must fit a slot's data to be cached */
#define IQ_VC_DATA		104

typedef struct IqValueCache IqValueCache;

typedef enum IqVcResult
{
	IQ_VC_MISS = 0,				/* not cached: ask the worker */
	IQ_VC_FOUND,				/* the value, as the store holds it */
	IQ_VC_ABSENT				/* the store has no such key */
} IqVcResult;

/* shared memory for size_mb megabytes (0: no cache) */
extern size_t iq_vc_shmem_size(int size_mb);
extern IqValueCache *iq_vc_init(void *mem, size_t size);

/* backends: value must have room for IQ_VC_DATA bytes */
extern IqVcResult iq_vc_lookup(IqValueCache *vc, int store, int partition,
							   const char *key, size_t key_len,
							   char *value, size_t *value_len);

/* lookups answered (found or absent) and missed since the cache was made */
extern void iq_vc_counts(IqValueCache *vc, uint64_t *hits, uint64_t *misses);

/* ---- the worker (any of its threads; writers serialise inside) ---- */

/* What a fill must still find after its read. */
typedef struct IqVcTicket
{
	uint64_t	generation;
	uint64_t	writes;
} IqVcTicket;

/* the supervisor, no engine running: what a dead engine left, undone */
extern void iq_vc_reset(IqValueCache *vc);

/* every entry of the partition (or of all, partition -1) becomes stale */
extern void iq_vc_new_generation(IqValueCache *vc, int partition);

/* around a batch written to a partition */
extern void iq_vc_write_begin(IqValueCache *vc, int partition);
extern void iq_vc_forget(IqValueCache *vc, int store, int partition,
						 const char *key, size_t key_len);
extern void iq_vc_write_end(IqValueCache *vc, int partition);

/* around a read that may fill: take the ticket before reading */
extern IqVcTicket iq_vc_ticket(IqValueCache *vc, int partition);
/* value NULL: the store has no such key */
extern void iq_vc_fill(IqValueCache *vc, IqVcTicket ticket, int store, int partition,
					   const char *key, size_t key_len,
					   const char *value, size_t value_len);

#endif							/* IQ_VALUE_CACHE_H */

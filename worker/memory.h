/*-------------------------------------------------------------------------
 * memory.h
 *	  How iq_fdw.memory_budget is split between everything sizable the
 *	  worker allocates (memory.c; the table is in worker/README.md).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_MEMORY_H
#define IQ_MEMORY_H

#include <stddef.h>

typedef struct IqMemoryPlan
{
	size_t		budget;

	/* RocksDB */
	size_t		block_cache;	/* shared LRU: data, index and filter blocks */
	size_t		memtables;		/* all partitions together */

	/* the key cache (key_cache.c) */
	size_t		key_cache;

	/* the group consumer's prefetch queue (librdkafka) */
	size_t		consumer_queue;
	int			consumer_queue_kbytes;	/* queued.max.messages.kbytes */
	int			consumer_queue_messages;	/* queued.min.messages */
	int			consumer_fetch_bytes;	/* fetch.max.bytes */

	/* a batch in hand: its records, its table, its changelog updates */
	size_t		batch;
	int			batch_max;		/* records taken per batch */
	int			producer_queue_kbytes;	/* queue.buffering.max.kbytes */
	int			producer_queue_messages;	/* queue.buffering.max.messages */

	/*
	 * A restore runs inside the assignment, before any input is assigned
	 * and with no batch in hand: it uses the two shares above for its
	 * consumer's queue and the chunk it sorts.
	 */
	int			restore_queue_kbytes;
	int			restore_queue_messages;
	int			restore_fetch_bytes;
	int			restore_chunk_records;
	size_t		restore_chunk_bytes;	/* keys and values of a chunk */
	int			restore_batch;	/* records taken per restore poll */
} IqMemoryPlan;

extern void iq_memory_plan(size_t budget_bytes, IqMemoryPlan *plan);

/* Make glibc give freed memory back, so RSS follows what is in use. */
extern void iq_memory_tune_malloc(void);
extern void iq_memory_release(void);

#endif							/* IQ_MEMORY_H */

/*-------------------------------------------------------------------------
 * memory.c
 *	  One place that splits iq_fdw.memory_budget between everything sizable
 *	  the worker allocates, so the budget bounds the worker's memory rather
 *	  than only RocksDB's.
 *
 * The shares (sixteenths of the budget):
 *
 *	 5  RocksDB block cache (data, index and filter blocks, one LRU for all)
 *	 2  RocksDB memtables, split between the partitions
 *	 4  key cache (counts and customer presence of recent keys, and the
 *		counts not yet written)
 *	 3  group consumer's prefetch queue
 *	 2  the poll in hand: its records, its table, its changelog producer
 *		queue; or, once its records are freed, a flush of the dirty counts
 *
 * A restore runs before input is assigned, with no batch in hand, so its
 * consumer queue and its chunk take the last two shares.
 *
 * librdkafka bounds its queues in payload bytes and in messages, but a
 * queued message costs a few hundred bytes besides its payload, and a small
 * record (a count is 8 bytes) costs far more queued than on the wire.  So
 * every queue is bounded both ways from an estimate of that overhead, and
 * fetches are kept small against the queue, since one fetch may overshoot
 * the bound by its whole size, and a compressed fetch of small records
 * (the changelog's) becomes some forty times its size once queued.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>
#include <malloc.h>

#include "worker/memory.h"

/* what librdkafka holds per queued message besides its payload (op, buffer share) */
#define MSG_OVERHEAD		352
/* the least a record takes in a fetch: a count in a compressed batch */
#define WIRE_RECORD_BYTES	8
/* how much more a fetched byte may cost once queued as messages */
#define FETCH_EXPANSION		(MSG_OVERHEAD / WIRE_RECORD_BYTES)
/* a record in a batch: the message, two table slots, the sort array, its changelog update */
#define BATCH_RECORD_BYTES	800
/* a restored record in a chunk: Rec, two sort items, IqKV, and its share of the arena */
#define CHUNK_RECORD_BYTES	128

#define BATCH_MIN			1000
#define BATCH_MAX			50000

static int
clamp_int(size_t v, int lo, int hi)
{
	if (v < (size_t) lo)
		return lo;
	if (v > (size_t) hi)
		return hi;
	return (int) v;
}

/*
 * iq_memory_plan
 *		Derive every bounded part of the worker from the budget.
 */
void
iq_memory_plan(size_t budget, IqMemoryPlan *m)
{
	size_t		sixteenth = budget / 16;
	size_t		restore;
	size_t		restore_queue;

	memset(m, 0, sizeof(*m));
	m->budget = budget;
	m->block_cache = 5 * sixteenth;
	m->memtables = 2 * sixteenth;
	m->key_cache = 4 * sixteenth;
	m->consumer_queue = 3 * sixteenth;
	m->batch = 2 * sixteenth;

	/* half the queue for payload, half for per-message overhead */
	m->consumer_queue_kbytes = clamp_int(m->consumer_queue / 2 / 1024, 256, 2097151);
	m->consumer_queue_messages = clamp_int(m->consumer_queue / 2 / MSG_OVERHEAD, 1000, 10000000);
	m->consumer_fetch_bytes = clamp_int(m->consumer_queue / 2 / FETCH_EXPANSION, 16 * 1024, 64 * 1024 * 1024);

	m->batch_max = clamp_int(m->batch / BATCH_RECORD_BYTES, BATCH_MIN, BATCH_MAX);
	/* a batch's updates always fit: waiting for room costs a poll each */
	m->producer_queue_messages = m->batch_max + m->batch_max / 4;
	m->producer_queue_kbytes = clamp_int(m->batch / 2 / 1024, 1024, INT_MAX);

	restore = m->consumer_queue + m->batch;
	restore_queue = restore / 2;
	m->restore_queue_kbytes = clamp_int(restore_queue / 2 / 1024, 256, 2097151);
	m->restore_queue_messages = clamp_int(restore_queue / 2 / MSG_OVERHEAD, 1000, 10000000);
	m->restore_fetch_bytes = clamp_int(restore_queue / 2 / FETCH_EXPANSION, 16 * 1024, 64 * 1024 * 1024);
	m->restore_chunk_records = clamp_int((restore - restore_queue) / CHUNK_RECORD_BYTES, 10000, 10000000);
	m->restore_chunk_bytes = (restore - restore_queue) / 2;
	m->restore_batch = clamp_int(m->restore_chunk_records / 4, 1000, 50000);
}

/*
 * iq_memory_tune_malloc
 *		Settings of glibc's allocator for this process.
 *
 * By default glibc raises its mmap threshold each time a large block is
 * freed, after which fetch buffers and memtable arenas come from the heap
 * and their pages stay resident when freed; and each thread that allocates
 * gets its own arena, which librdkafka's and RocksDB's threads multiply.
 * A fixed threshold returns large blocks to the kernel on free, and two
 * arenas keep freed memory where the next allocation finds it.
 */
void
iq_memory_tune_malloc(void)
{
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
	mallopt(M_ARENA_MAX, 2);
}

/*
 * iq_memory_release
 *		Hand the free pages inside glibc's arenas back to the kernel.
 *
 * Messages are allocated by librdkafka's threads and freed by ours, so the
 * free space is spread through the arenas rather than at their tops, where
 * glibc trims by itself: measured here, a worker that had restored 1.8 M
 * changelog records kept 225 MB of free pages resident until this was
 * called.  It costs milliseconds; the main loop calls it every few seconds
 * and after each assignment.
 */
void
iq_memory_release(void)
{
	malloc_trim(0);
}

/*-------------------------------------------------------------------------
 * fetch_wake.c
 *	  Wake librdkafka's fetcher as soon as a full consumer queue has room.
 *
 * librdkafka stops fetching a partition once the consumer queue holds
 * queued.min.messages or queued.max.messages.kbytes, and decides again only
 * when the broker thread of the partition's leader next wakes up: before
 * 2.2.0 (Debian 12 ships 2.0.2) up to a second later, since taking
 * messages off the queue does not wake it.  2.2.0 added
 * fetch.queue.backoff.ms for this, which kafka_conf.c sets when the
 * library loaded has it (iq_fetch_queue_backoff()); this file then stays
 * idle, and is needed only for older librdkafka.  A queue bounded by
 * iq_fdw.memory_budget holds a fraction of a second of work, so the worker
 * sat idle for most of every second with its partitions lagging (strace:
 * epoll_wait timing out on an empty queue; ingest at a fifth of a bare
 * consumer's rate, with the CPUs idle).
 *
 * Any request to the leader wakes its thread, which then fetches again;
 * ListOffsets is the cheapest one.  It runs on librdkafka's threads; we
 * only wait for its answer.
 *-------------------------------------------------------------------------
 */
#include "worker/stream/fetch_wake.h"

/* a wake that waits longer than this has done its job anyway: it was sent */
#define WAKE_TIMEOUT_MS		200

/* librdkafka's test: it stops fetching at either bound */
static bool
at_bound(const IqQueueWatch *w, size_t messages, double bytes_per_message)
{
	return messages >= (size_t) w->max_messages ||
		messages * bytes_per_message >= (double) w->max_bytes;
}

/*
 * iq_queue_watch_begin
 *		Before a poll takes messages: how full the queue is, against the
 *		bounds the consumer was configured with.  Not needed (librdkafka
 *		backs off by itself): the watch is idle, and never reopens.
 */
void
iq_queue_watch_begin(IqQueueWatch *w, bool needed, rd_kafka_queue_t *q,
					 int max_messages, int max_kbytes)
{
	w->needed = needed;
	w->max_messages = max_messages;
	w->max_bytes = (int64_t) max_kbytes * 1024;
	w->queued_before = needed ? rd_kafka_queue_length(q) : 0;
	w->taken = 0;
	w->taken_bytes = 0;
}

/* iq_queue_watch_took: messages the poll took (n < 0: none) */
void
iq_queue_watch_took(IqQueueWatch *w, rd_kafka_message_t **msgs, ssize_t n)
{
	for (ssize_t i = 0; w->needed && i < n; i++)
	{
		w->taken++;
		w->taken_bytes += msgs[i]->key_len + msgs[i]->len;
	}
}

/*
 * iq_queue_watch_reopened
 *		Whether the queue was at a bound when the poll began (so the fetcher
 *		has stopped) and is below both now (so it may fetch again).  Bytes
 *		are estimated from the messages taken: librdkafka does not tell.
 */
bool
iq_queue_watch_reopened(const IqQueueWatch *w, rd_kafka_queue_t *q)
{
	double		per_message;

	if (!w->needed || w->taken == 0)
		return false;
	per_message = (double) w->taken_bytes / w->taken;
	return at_bound(w, w->queued_before, per_message) &&
		!at_bound(w, rd_kafka_queue_length(q), per_message);
}

/*
 * iq_wake_fetcher
 *		Send a request to the leader of (topic, partition), waking its
 *		broker thread.
 */
void
iq_wake_fetcher(rd_kafka_t *rk, const char *topic, int partition)
{
	int64_t		lo,
				hi;

	(void) rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi,
											WAKE_TIMEOUT_MS);
}

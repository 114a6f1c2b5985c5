/*-------------------------------------------------------------------------
 * fetch_wake.h
 *	  Wake librdkafka's fetcher as soon as a full consumer queue has room
 *	  (librdkafka before 2.2.0 only).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FETCH_WAKE_H
#define IQ_FETCH_WAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <librdkafka/rdkafka.h>

/* The bounds a consumer was configured with, and what a poll saw. */
typedef struct IqQueueWatch
{
	bool		needed;			/* librdkafka lacks fetch.queue.backoff.ms */
	int			max_messages;	/* queued.min.messages */
	int64_t		max_bytes;		/* queued.max.messages.kbytes, in bytes */
	size_t		queued_before;	/* messages queued when the poll began */
	size_t		taken;			/* messages the poll took */
	size_t		taken_bytes;	/* their keys and values */
} IqQueueWatch;

extern void iq_queue_watch_begin(IqQueueWatch *w, bool needed, rd_kafka_queue_t *q,
								 int max_messages, int max_kbytes);
extern void iq_queue_watch_took(IqQueueWatch *w, rd_kafka_message_t **msgs, ssize_t n);
extern bool iq_queue_watch_reopened(const IqQueueWatch *w, rd_kafka_queue_t *q);
extern void iq_wake_fetcher(rd_kafka_t *rk, const char *topic, int partition);

#endif							/* IQ_FETCH_WAKE_H */

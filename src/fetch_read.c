/*-------------------------------------------------------------------------
 * fetch_read.c
 *	  A source's answer, event by event: bytes from its channel into its
 *	  wire reader, waiting for them within iq_fdw.peer_timeout.
 *
 * Waiting is in slices of at most 100 ms with CHECK_FOR_INTERRUPTS between
 * them, so statement_timeout and pg_cancel_backend act at once.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "pgstat.h"

#include "common/settings.h"
#include "src/fetch_internal.h"

#define WAIT_SLICE_MS 100

/* timed_out: src waited its iq_fdw.peer_timeout out; say for what */
static void
timed_out(IqFetchSource *src)
{
	IqChannel  *ch = &src->chan;

	if (!src->answering)
		strlcpy(ch->error,
				"No byte of the answer arrived within iq_fdw.peer_timeout of the request, connecting included.",
				sizeof(ch->error));
	else
		snprintf(ch->error, sizeof(ch->error),
				 "The answer stalled: %zu bytes arrived in the waits for it without a complete row (or %d kB of one).",
				 src->partial, IQ_WIRE_PROGRESS_BYTES / 1024);
	ch->failed = true;
	ch->timed_out = true;
	ch->done = true;
}

/*
 * iq_fetch_first_byte_us
 *		How long src may wait for the first byte of its answer, connecting
 *		and sending included (a TLS handshake with a stalled owner blocks
 *		the send): iq_fdw.peer_timeout, or sooner iq_fdw.standby_after for an
 *		owner whose partitions standbys can answer, since a timed-out
 *		owner's partitions go to their standbys (fetch_standby.c).
 */
int64
iq_fetch_first_byte_us(const IqFetchSource *src)
{
	int64		timeout = (int64) iq_peer_timeout_ms * 1000;

	if (iq_read_from != IQ_READ_FROM_OWNER && iq_standby_replicas != 0 &&
		!src->target.standby)
		return Min(timeout, (int64) iq_standby_after_ms * 1000);
	return timeout;
}

/*
 * wait_for: until src has new bytes, is done, or timed out; cancellable.
 *
 * iq_fdw.peer_timeout bounds two things.  Until the first byte of the
 * answer: the whole call, connecting, sending and the upgrade's 101
 * included (from src->call_started, wall clock).  After it: the time this
 * backend spends waiting for src without progress (IQ_WIRE_PROGRESS_BYTES:
 * a complete frame, or 64 kB).  Only waits count, so a backend slow to ask
 * for the next row (a nested loop) never blames the peer, while a peer
 * that trickles bytes without completing rows fails once the waits for it
 * add up to peer_timeout, however often a byte arrives.
 */
static void
wait_for(IqFetchSource *src)
{
	int64		timeout = (int64) iq_peer_timeout_ms * 1000;
	int64		first_byte = iq_fetch_first_byte_us(src);
	int64		entered = iq_chan_now_us();

	for (;;)
	{
		int64		now;
		int64		left;

		iq_chan_receive(&src->chan);
		now = iq_chan_now_us();
		if (src->chan.inbox.len > 0 || src->chan.done)
		{
			src->stalled_us += now - entered;
			return;
		}

		if (!src->answering)
			left = src->call_started + first_byte - now;
		else
			left = timeout - (src->stalled_us + (now - entered));
		if (left <= 0)
		{
			src->stalled_us += now - entered;
			timed_out(src);
			return;
		}
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		iq_chan_wait(&src->chan, (int) Min(left / 1000 + 1, WAIT_SLICE_MS));
		pgstat_report_wait_end();
		CHECK_FOR_INTERRUPTS();
	}
}

/* progress: src's answer moved on (see wait_for) */
static inline void
progress(IqFetchSource *src)
{
	src->stalled_us = 0;
	src->partial = 0;
}

/* feed: give what src's channel received to its reader */
static void
feed(IqFetchSource *src)
{
	IqBuf	   *inbox = &src->chan.inbox;

	if (!src->answering)
	{
		/* the first byte ends the first bound and starts the gaps */
		src->answering = true;
		progress(src);
	}
	src->partial += inbox->len;
	if (src->partial >= IQ_WIRE_PROGRESS_BYTES)
		progress(src);
	iq_wire_reader_feed(&src->reader, inbox->data, inbox->len);
	inbox->len = 0;
}

/* count_row: src gave a row; keep the key that ends its share (fetch_request.c) */
static void
count_row(IqFetchSource *src)
{
	src->rows++;
	src->rows_total++;
	if (src->limit > 0 && src->rows == src->limit)
	{
		free(src->last_key);
		src->last_key = malloc(Max(src->reader.key_len, 1));
		if (src->last_key == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory reading an iq_fdw scan")));
		memcpy(src->last_key, src->reader.key, src->reader.key_len);
		src->last_key_len = src->reader.key_len;
	}
}

/* iq_fetch_next_event: src's next complete event, waiting for bytes as needed */
IqWireEvent
iq_fetch_next_event(IqFetch *f, IqFetchSource *src)
{
	for (;;)
	{
		IqWireEvent ev = iq_wire_reader_next(&src->reader);

		if (ev != IQ_EV_NEED_MORE)
		{
			progress(src);
			if (ev == IQ_EV_ROW)
				count_row(src);
			return ev;
		}
		if (src->chan.inbox.len > 0)
		{
			feed(src);
			continue;
		}
		if (src->chan.done)
		{
			if (!src->chan.failed)
			{
				strlcpy(src->chan.error, "The answer ended early.", sizeof(src->chan.error));
				src->chan.failed = true;
			}

			/*
			 * Before a header: fetch_prime.c waits for an unreachable
			 * owner's partitions to move; with iq_fdw.read_from not owner
			 * it asks standbys first, whatever stopped the answer.
			 */
			if (!f->primed && !src->header_seen &&
				(src->chan.unreachable || src->target.standby ||
				 iq_read_from != IQ_READ_FROM_OWNER))
				return IQ_EV_ERROR;
			iq_fetch_fail_transport(f, src);
		}
		wait_for(src);
	}
}

/* iq_fetch_advance: src's next row, or its end */
void
iq_fetch_advance(IqFetch *f, IqFetchSource *src)
{
	IqWireEvent ev = iq_fetch_next_event(f, src);

	while (ev == IQ_EV_END && iq_fetch_wants_more(f, src))
	{
		iq_fetch_continue(f, src);
		ev = iq_fetch_next_event(f, src);
		if (ev == IQ_EV_HEADER)
		{
			src->header_seen = true;
			ev = iq_fetch_next_event(f, src);
		}
	}
	src->has_row = (ev == IQ_EV_ROW);
	if (ev == IQ_EV_END)
		src->ended = true;
	else if (ev == IQ_EV_ERROR)
	{
		if (src->reader.status == IQ_WIRE_OK)
			src->reader.status = IQ_WIRE_INTERNAL;
		iq_fetch_fail_answer(f, src);
	}
	else if (ev == IQ_EV_HEADER)
	{
		/* a header twice is a corrupt stream */
		strlcpy(src->chan.error, "The answer has a second header.", sizeof(src->chan.error));
		src->chan.failed = true;
		iq_fetch_fail_transport(f, src);
	}
}

/*
 * iq_fetch_drain
 *		Read the rest of an answer the caller stopped reading early (a
 *		LIMIT met, a merge that needed fewer rows of this source), so that
 *		its connection can go back to the pool: the next query would
 *		otherwise connect again, which costs more than a short remainder
 *		(a TCP connect and upgrade, a server thread started).  Only what
 *		arrives by deadline and at most max_bytes is read; a longer
 *		remainder (a scan without a limit) is left, and the connection
 *		closed as before.  Never raises: it runs at the end of a scan.
 *		True when the answer was read to its end.
 */
bool
iq_fetch_drain(IqFetchSource *src, size_t max_bytes, int64 deadline)
{
	IqBuf	   *inbox = &src->chan.inbox;
	size_t		taken = 0;

	if (src->unused || src->ended || !src->header_seen || src->chan.failed)
		return src->ended;
	for (;;)
	{
		IqWireEvent ev = iq_wire_reader_next(&src->reader);
		int64		left;

		if (ev == IQ_EV_ROW)
			continue;
		if (ev == IQ_EV_END)
		{
			src->ended = true;
			src->has_row = false;
			return true;
		}
		if (ev != IQ_EV_NEED_MORE)
			return false;
		if (inbox->len > 0)
		{
			taken += inbox->len;
			if (taken > max_bytes)
				return false;
			iq_wire_reader_feed(&src->reader, inbox->data, inbox->len);
			inbox->len = 0;
			continue;
		}
		left = deadline - iq_chan_now_us();
		if (src->chan.done || left <= 0)
			return false;
		iq_chan_wait(&src->chan, (int) (left / 1000 + 1));
		iq_chan_receive(&src->chan);
	}
}


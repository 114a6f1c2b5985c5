/*-------------------------------------------------------------------------
 * wire_reader.c
 *	  libFuzzer target: the incremental answer reader (common/wire.c), which a
 *	  backend runs on every answer from a worker, and the worker's gather
 *	  on every peer's.
 *
 * The input's first byte picks a chunk size; the rest is an answer, fed
 * once whole and once in chunks of that size, the chunks read with
 * iq_wire_reader_row first (the scans' inline path) and the whole with
 * iq_wire_reader_next alone.  Either way the reader must not crash, read outside its buffer or leak; must give the same events
 * with the same rows; must hand out rows that lie inside its buffer, no
 * more than IQ_WIRE_MAX_FRAME long; and must keep its messages printable.
 *-------------------------------------------------------------------------
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"

#define MAX_EVENTS 4096

typedef struct Trace
{
	int			n;
	int			ev[MAX_EVENTS];
	uint64_t	sum[MAX_EVENTS];	/* of the row, header or message */
} Trace;

/* fnv: FNV-1a over bytes, chained */
static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 1099511628211ULL;
	return h;
}

static void
check_message(const IqWireReader *r)
{
	size_t		n = strnlen(r->message, sizeof(r->message));

	if (n == sizeof(r->message))
		abort();				/* not terminated */
	for (size_t i = 0; i < n; i++)
		if ((unsigned char) r->message[i] < 0x20 || (unsigned char) r->message[i] >= 0x7f)
			abort();			/* a peer's byte unescaped */
}

/*
 * drain: events until more bytes are needed, or the end, or a failure;
 * with fast, each taken by iq_wire_reader_row when it takes it
 */
static int
drain(IqWireReader *r, Trace *t, bool fast)
{
	for (;;)
	{
		IqWireEvent ev = (fast && iq_wire_reader_row(r)) ? IQ_EV_ROW : iq_wire_reader_next(r);
		uint64_t	h = 14695981039346656037ULL;

		if (ev == IQ_EV_NEED_MORE)
			return 0;
		if (ev == IQ_EV_ROW)
		{
			const char *b = r->buf.data;

			if (r->key_len > IQ_WIRE_MAX_FRAME ||
				r->key < b || r->key + r->key_len > b + r->buf.len)
				abort();
			if (r->value_len < -1 ||
				(r->value_len >= 0 &&
				 (r->value < b || r->value + r->value_len > b + r->buf.len)))
				abort();
			h = fnv(h, r->key, r->key_len);
			h = fnv(h, &r->value_len, sizeof(r->value_len));
			if (r->value_len > 0)
				h = fnv(h, r->value, (size_t) r->value_len);
		}
		else if (ev == IQ_EV_HEADER)
		{
			if (r->npositions < 0 || r->npositions > 65535)
				abort();
			h = fnv(h, r->positions, sizeof(IqWirePosition) * r->npositions);
		}
		else
		{
			check_message(r);
			h = fnv(h, r->message, strlen(r->message));
			h = fnv(h, &r->status, sizeof(r->status));
		}
		if (t->n < MAX_EVENTS)
		{
			t->ev[t->n] = ev;
			t->sum[t->n] = h;
			t->n++;
		}
		if (ev == IQ_EV_END || ev == IQ_EV_ERROR || t->n >= MAX_EVENTS)
			return ev == IQ_EV_ERROR || t->n >= MAX_EVENTS;
	}
}

/* run: feed data in chunks of chunk bytes (0: whole), tracing the events */
static void
run(const uint8_t *data, size_t size, size_t chunk, Trace *t, bool fast)
{
	IqWireReader r;
	size_t		off = 0;
	int			stop = 0;

	t->n = 0;
	iq_wire_reader_init(&r);
	stop = drain(&r, t, fast);	/* before any feed: nothing to point into */
	while (!stop && off < size)
	{
		size_t		n = chunk ? chunk : size;

		if (n > size - off)
			n = size - off;
		iq_wire_reader_feed(&r, (const char *) data + off, n);
		off += n;
		/* a reader holds at most a frame and the chunk last fed */
		if (r.buf.len - r.pos > (size_t) IQ_WIRE_MAX_FRAME + n)
			abort();
		stop = drain(&r, t, fast);
	}
	if (!stop)
		drain(&r, t, fast);
	iq_wire_reader_free(&r);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static Trace whole;
	static Trace pieces;
	size_t		chunk;

	if (size < 1)
		return 0;
	chunk = (size_t) data[0] % 17 + 1;
	run(data + 1, size - 1, 0, &whole, false);
	run(data + 1, size - 1, chunk, &pieces, true);
	if (whole.n != pieces.n)
		abort();
	for (int i = 0; i < whole.n; i++)
		if (whole.ev[i] != pieces.ev[i] || whole.sum[i] != pieces.sum[i])
			abort();
	return 0;
}

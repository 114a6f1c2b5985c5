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
 * The input is also cut into rows (a length byte, then that many bytes,
 * split into key and value at the next byte's value), written as an
 * answer with the server's functions and read back: the reader must give
 * exactly those rows, whatever the chunks.
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

/* round_trip: rows cut from data, written as an answer, read back alike */
static void
round_trip(const uint8_t *data, size_t size, size_t chunk)
{
	IqBuf		out;
	IqWireReader r;
	size_t		off = 0;
	size_t		fed = 0;
	int			rows = 0;
	int			read = 0;
	uint64_t	want = 14695981039346656037ULL;
	uint64_t	got = 14695981039346656037ULL;
	IqWireEvent ev = IQ_EV_NEED_MORE;

	iq_buf_init(&out);
	iq_wire_response_header(&out, 0, NULL);
	while (off + 2 <= size)
	{
		size_t		n = data[off];
		size_t		k = data[off + 1];
		int32_t		vlen;

		off += 2;
		if (n > size - off)
			n = size - off;
		if (k > n)
			k = n;
		vlen = (k == n && n % 2) ? -1 : (int32_t) (n - k);
		iq_wire_response_row(&out, (const char *) data + off, (uint32_t) k,
							 (const char *) data + off + k, vlen);
		want = fnv(want, data + off, k);
		want = fnv(want, &vlen, sizeof(vlen));
		if (vlen > 0)
			want = fnv(want, data + off + k, (size_t) vlen);
		off += n;
		rows++;
	}
	iq_wire_response_end(&out, IQ_WIRE_OK, "");
	if (out.oom)
		abort();
	iq_wire_reader_init(&r);
	while (ev != IQ_EV_END)
	{
		ev = iq_wire_reader_row(&r) ? IQ_EV_ROW : iq_wire_reader_next(&r);
		if (ev == IQ_EV_ROW)
		{
			got = fnv(got, r.key, r.key_len);
			got = fnv(got, &r.value_len, sizeof(r.value_len));
			if (r.value_len > 0)
				got = fnv(got, r.value, (size_t) r.value_len);
			read++;
		}
		else if (ev == IQ_EV_NEED_MORE)
		{
			size_t		n = chunk < out.len - fed ? chunk : out.len - fed;

			if (n == 0)
				abort();		/* the whole answer fed, and no end */
			iq_wire_reader_feed(&r, out.data + fed, n);
			fed += n;
		}
		else if (ev != IQ_EV_HEADER && ev != IQ_EV_END)
			abort();
	}
	if (read != rows || got != want || fed != out.len)
		abort();
	iq_wire_reader_free(&r);
	iq_buf_free(&out);
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
	round_trip(data + 1, size - 1, chunk);
	if (whole.n != pieces.n)
		abort();
	for (int i = 0; i < whole.n; i++)
		if (whole.ev[i] != pieces.ev[i] || whole.sum[i] != pieces.sum[i])
			abort();
	return 0;
}

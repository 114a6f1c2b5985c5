/*-------------------------------------------------------------------------
 * wire.c
 *	  The compact read protocol (see wire.h for the byte format): buffers,
 *	  request encoding and decoding, response writing, and an incremental
 *	  response reader.
 *
 * Plain C with malloc only: the worker's server threads and the backends'
 * clients both link it.  The decoder and the reader trust no length they
 * are given: every length is checked against the bytes actually present
 * and against fixed maxima before anything is allocated or copied.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bigendian.h"
#include "common/wire.h"

/* The wire format has u16 partition numbers; we never hold more. */
#define IQ_WIRE_MAX_PARTITIONS 4096

/* the decoder's refusal of a request that ends before a length it gives */
#define WIRE_SHORT_REQUEST "request truncated or a length exceeds the request"

/* a position in a response header: u16 partition, i64 consumed, i64 end */
#define WIRE_POSITION_BYTES 18

/* Reader stages (the order of IqWireStage, wire.h) */
enum
{
	STAGE_START = 0,			/* expecting "IQ" version status */
	STAGE_ERROR_MESSAGE,		/* status != OK: u32 len, message */
	STAGE_POSITIONS,			/* u16 n, positions */
	STAGE_FRAMES = IQ_WIRE_STAGE_FRAMES,	/* 'R' rows and the 'E' end */
	STAGE_DONE,					/* clean end seen */
	STAGE_FAILED				/* error reported; stays failed */
};

/* ---------------------------------------------------------------------
 * Buffers
 * ---------------------------------------------------------------------
 */

/* iq_buf_init: an empty buffer that owns nothing yet */
void
iq_buf_init(IqBuf *buf)
{
	buf->data = NULL;
	buf->len = 0;
	buf->cap = 0;
	buf->oom = false;
}

/* iq_buf_free: release the storage; the buffer may be reused after init */
void
iq_buf_free(IqBuf *buf)
{
	free(buf->data);
	iq_buf_init(buf);
}

/* iq_buf_reserve: make room for extra more bytes; false (and oom) if not */
bool
iq_buf_reserve(IqBuf *buf, size_t extra)
{
	size_t		need;
	size_t		cap;
	char	   *data;

	if (buf->oom)
		return false;
	if (extra > SIZE_MAX / 2 - buf->len)
	{
		buf->oom = true;
		return false;
	}
	need = buf->len + extra;
	if (need <= buf->cap)
		return true;
	cap = buf->cap ? buf->cap : 256;
	while (cap < need)
		cap *= 2;
	data = realloc(buf->data, cap);
	if (data == NULL)
	{
		/* a half-written frame must never be sent: poison the buffer */
		buf->oom = true;
		return false;
	}
	buf->data = data;
	buf->cap = cap;
	return true;
}

/* iq_buf_append: append len bytes; on failure the buffer is marked oom */
void
iq_buf_append(IqBuf *buf, const void *data, size_t len)
{
	if (len == 0)
		return;
	if (!iq_buf_reserve(buf, len))
		return;
	memcpy(buf->data + buf->len, data, len);
	buf->len += len;
}

/* iq_buf_u8: append one byte */
void
iq_buf_u8(IqBuf *buf, uint8_t v)
{
	iq_buf_append(buf, &v, 1);
}

/* iq_buf_u16: append a big-endian u16 */
void
iq_buf_u16(IqBuf *buf, uint16_t v)
{
	unsigned char b[2];

	iq_be16_put(b, v);
	iq_buf_append(buf, b, 2);
}

/* iq_buf_u32: append a big-endian u32 */
void
iq_buf_u32(IqBuf *buf, uint32_t v)
{
	unsigned char b[4];

	iq_be32_put(b, v);
	iq_buf_append(buf, b, 4);
}

/* iq_buf_i64: append a big-endian two's-complement i64 */
void
iq_buf_i64(IqBuf *buf, int64_t v)
{
	unsigned char b[8];

	iq_be64_put(b, (uint64_t) v);
	iq_buf_append(buf, b, 8);
}

/* put_magic: "IQ" and the version, how every request and response opens */
static void
put_magic(IqBuf *out)
{
	iq_buf_append(out, "IQ", 2);
	iq_buf_u8(out, IQ_WIRE_VERSION);
}

/* put_bytes: a u32 length and the bytes (cur_bytes reads them back) */
static void
put_bytes(IqBuf *out, const char *data, uint32_t len)
{
	iq_buf_u32(out, len);
	iq_buf_append(out, data, len);
}

/* ---------------------------------------------------------------------
 * Requests
 * ---------------------------------------------------------------------
 */

/* iq_wire_encode_request: append the request's bytes (without a length prefix) */
void
iq_wire_encode_request(const IqWireRequest *req, IqBuf *out)
{
	int			i;

	put_magic(out);
	iq_buf_u8(out, req->op);
	iq_buf_u8(out, req->store);
	iq_buf_u8(out, req->flags);
	iq_buf_u32(out, req->limit);
	iq_buf_u16(out, (uint16_t) req->npartitions);
	for (i = 0; i < req->npartitions; i++)
		iq_buf_u16(out, req->partitions[i]);
	if (req->op == IQ_OP_GET)
	{
		uint32_t	k;

		iq_buf_u32(out, req->nkeys);
		for (k = 0; k < req->nkeys; k++)
			put_bytes(out, req->keys[k], req->key_lens[k]);
	}
	if (req->flags & IQ_FLAG_LOWER)
		put_bytes(out, req->lower, req->lower_len);
	if (req->flags & IQ_FLAG_UPPER)
		put_bytes(out, req->upper, req->upper_len);
}

/* A cursor over input bytes for the decoder. */
typedef struct Cur
{
	const unsigned char *p;
	size_t		left;
} Cur;

static bool
cur_take(Cur *c, size_t n, const unsigned char **out)
{
	if (c->left < n)
		return false;
	*out = c->p;
	c->p += n;
	c->left -= n;
	return true;
}

/* cur_bytes: a u32 length and that many bytes, pointed to in place */
static bool
cur_bytes(Cur *c, const char **data, uint32_t *len)
{
	const unsigned char *p;
	uint32_t	n;

	if (!cur_take(c, 4, &p))
		return false;
	n = iq_be32_get(p);
	if (!cur_take(c, n, &p))
		return false;
	*data = (const char *) p;
	*len = n;
	return true;
}

/* iq_wire_request_free: free the arrays a decode allocated */
void
iq_wire_request_free(IqWireRequest *req)
{
	free(req->partitions);
	free((void *) req->keys);
	free(req->key_lens);
	req->partitions = NULL;
	req->keys = NULL;
	req->key_lens = NULL;
	req->npartitions = 0;
	req->nkeys = 0;
}

/* version_read: a version of the protocol this build reads */
static bool
version_read(unsigned v)
{
	return v >= IQ_WIRE_VERSION_OLDEST && v <= IQ_WIRE_VERSION;
}

/*
 * iq_wire_unknown_version
 *		Whether a request opens with the magic and a version this build
 *		does not read, and then the message of the answer naming both.
 */
bool
iq_wire_unknown_version(const char *data, size_t len, char *message, size_t size)
{
	const unsigned char *p = (const unsigned char *) data;

	if (len < 3 || p[0] != 'I' || p[1] != 'Q' || version_read(p[2]))
		return false;
	snprintf(message, size,
			 "wire protocol version %u is not one this instance reads (versions %d to %d); it runs an older iq_fdw",
			 p[2], IQ_WIRE_VERSION_OLDEST, IQ_WIRE_VERSION);
	return true;
}

/*
 * decode_head
 *		The fixed 10 bytes: magic, version, op, store, flags, limit.
 *
 * Returns NULL, or the reason the request is refused (static text).
 */
static const char *
decode_head(Cur *c, IqWireRequest *req)
{
	const unsigned char *p;

	if (!cur_take(c, 10, &p))
		return "request too short";
	if (p[0] != 'I' || p[1] != 'Q')
		return "not an iq_fdw request (bad magic)";
	if (!version_read(p[2]))
		return "unsupported protocol version";
	req->op = p[3];
	req->store = p[4];
	req->flags = p[5];
	req->limit = iq_be32_get(p + 6);
	if (req->op < IQ_OP_GET || req->op > IQ_OP_POSITIONS)
		return "unknown operation";
	if (req->flags & ~(IQ_FLAG_LOWER | IQ_FLAG_LOWER_INCL |
					   IQ_FLAG_UPPER | IQ_FLAG_UPPER_INCL | IQ_FLAG_STANDBY |
					   IQ_FLAG_REVERSE))
		return "unknown flags";
	return NULL;
}

/*
 * decode_partitions
 *		u16 npartitions and the partitions; the count is bounded, and the
 *		bytes checked present, before the array is allocated.
 */
static const char *
decode_partitions(Cur *c, IqWireRequest *req)
{
	const unsigned char *p;

	if (!cur_take(c, 2, &p))
		return WIRE_SHORT_REQUEST;
	req->npartitions = iq_be16_get(p);
	if (req->npartitions > IQ_WIRE_MAX_PARTITIONS)
		return "too many partitions";
	if (c->left < (size_t) req->npartitions * 2)
		return WIRE_SHORT_REQUEST;
	if (req->npartitions == 0)
		return NULL;
	req->partitions = malloc(sizeof(uint16_t) * req->npartitions);
	if (req->partitions == NULL)
		return "out of memory";
	for (int i = 0; i < req->npartitions; i++)
	{
		cur_take(c, 2, &p);
		req->partitions[i] = iq_be16_get(p);
	}
	return NULL;
}

/*
 * decode_keys
 *		u32 nkeys and the keys of an IQ_OP_GET, pointed to in place.
 */
static const char *
decode_keys(Cur *c, IqWireRequest *req)
{
	const unsigned char *p;

	if (!cur_take(c, 4, &p))
		return WIRE_SHORT_REQUEST;
	req->nkeys = iq_be32_get(p);
	/* each key needs at least its 4-byte length: bound before malloc */
	if (req->nkeys > c->left / 4)
		return WIRE_SHORT_REQUEST;
	if (req->nkeys == 0)
		return NULL;
	req->keys = malloc(sizeof(char *) * req->nkeys);
	req->key_lens = malloc(sizeof(uint32_t) * req->nkeys);
	if (req->keys == NULL || req->key_lens == NULL)
		return "out of memory";
	for (uint32_t k = 0; k < req->nkeys; k++)
		if (!cur_bytes(c, &req->keys[k], &req->key_lens[k]))
			return WIRE_SHORT_REQUEST;
	return NULL;
}

/* decode_bounds: the lower and upper bounds the flags announce */
static const char *
decode_bounds(Cur *c, IqWireRequest *req)
{
	if ((req->flags & IQ_FLAG_LOWER) &&
		!cur_bytes(c, &req->lower, &req->lower_len))
		return WIRE_SHORT_REQUEST;
	if ((req->flags & IQ_FLAG_UPPER) &&
		!cur_bytes(c, &req->upper, &req->upper_len))
		return WIRE_SHORT_REQUEST;
	return NULL;
}

/*
 * iq_wire_decode_request
 *		Parse and validate one whole request.
 *
 * Each step checks what it reads against the bytes present; the first
 * refusal frees what the earlier steps allocated.
 */
bool
iq_wire_decode_request(const char *data, size_t len,
					   IqWireRequest *req, const char **err)
{
	Cur			c;
	const char *why;

	memset(req, 0, sizeof(*req));
	if (len > IQ_WIRE_MAX_REQUEST)
	{
		*err = "request too large";
		return false;
	}
	c.p = (const unsigned char *) data;
	c.left = len;
	why = decode_head(&c, req);
	if (why == NULL)
		why = decode_partitions(&c, req);
	if (why == NULL && req->op == IQ_OP_GET)
		why = decode_keys(&c, req);
	if (why == NULL)
		why = decode_bounds(&c, req);
	if (why == NULL && c.left != 0)
		why = "trailing bytes after request";
	if (why != NULL)
	{
		iq_wire_request_free(req);
		*err = why;
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------------
 * Response writing
 * ---------------------------------------------------------------------
 */

/* put_message: u32 len + text, truncated to something sane */
static void
put_message(IqBuf *out, const char *message)
{
	size_t		n = message ? strlen(message) : 0;

	if (n > 4000)
		n = 4000;
	put_bytes(out, message, (uint32_t) n);
}

/* iq_wire_response_error: a whole response that is only a failure */
void
iq_wire_response_error(IqBuf *out, IqWireStatus status, const char *message)
{
	put_magic(out);
	iq_buf_u8(out, (uint8_t) status);
	put_message(out, message);
}

/* iq_wire_response_header: status OK and the partitions' positions */
void
iq_wire_response_header(IqBuf *out, int npositions,
						const IqWirePosition *positions)
{
	int			i;

	put_magic(out);
	iq_buf_u8(out, IQ_WIRE_OK);
	iq_buf_u16(out, (uint16_t) npositions);
	for (i = 0; i < npositions; i++)
	{
		iq_buf_u16(out, positions[i].partition);
		iq_buf_i64(out, positions[i].consumed);
		iq_buf_i64(out, positions[i].end);
	}
}

/*
 * iq_wire_response_row: one row frame; value_len -1 means null.  Room for
 * the whole frame is made once and the frame written in place: a scan
 * writes one per row, and five appends, each checking for room, were a
 * twentieth of a full scan's CPU.
 */
void
iq_wire_response_row(IqBuf *out, const char *key, uint32_t key_len,
					 const char *value, int32_t value_len)
{
	size_t		vlen = value_len > 0 ? (size_t) value_len : 0;
	unsigned char *p;

	if (!iq_buf_reserve(out, 1 + 4 + (size_t) key_len + 4 + vlen))
		return;
	p = (unsigned char *) out->data + out->len;
	*p++ = 'R';
	iq_be32_put(p, key_len);
	p += 4;
	if (key_len > 0)
		memcpy(p, key, key_len);
	p += key_len;
	iq_be32_put(p, (uint32_t) value_len);
	p += 4;
	if (vlen > 0)
		memcpy(p, value, vlen);
	out->len += 1 + 4 + (size_t) key_len + 4 + vlen;
}

/* iq_wire_response_end: the end frame; a non-OK status fails the stream late */
void
iq_wire_response_end(IqBuf *out, IqWireStatus status, const char *message)
{
	iq_buf_u8(out, 'E');
	iq_buf_u8(out, (uint8_t) status);
	put_message(out, message);
}

/* ---------------------------------------------------------------------
 * Response reading
 * ---------------------------------------------------------------------
 */

/* iq_wire_reader_init: a reader expecting the start of a response */
void
iq_wire_reader_init(IqWireReader *r)
{
	memset(r, 0, sizeof(*r));
	iq_buf_init(&r->buf);
	r->stage = STAGE_START;
}

/* iq_wire_reader_free: release the buffer and positions */
void
iq_wire_reader_free(IqWireReader *r)
{
	iq_buf_free(&r->buf);
	free(r->positions);
	r->positions = NULL;
	r->npositions = 0;
}

/* iq_wire_reader_feed: append arrived bytes, dropping what was consumed */
void
iq_wire_reader_feed(IqWireReader *r, const char *data, size_t len)
{
	/* previous events' pointers die here, as the contract says */
	if (r->pos > 0)
	{
		memmove(r->buf.data, r->buf.data + r->pos, r->buf.len - r->pos);
		r->buf.len -= r->pos;
		r->pos = 0;
	}
	iq_buf_append(&r->buf, data, len);
}

/* iq_wire_escape: bytes made safe for a message or a log line (wire.h) */
char *
iq_wire_escape(char *out, size_t size, const char *bytes, size_t len)
{
	size_t		o = 0;
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) bytes[i];
		bool		plain = (c >= 0x20 && c < 0x7f && c != '\\');
		size_t		need = plain ? 1 : 4;

		/* room for this byte and, if more follow, for "..." and the NUL */
		if (o + need + (i + 1 < len ? 3 : 0) >= size)
		{
			if (o + 3 < size)
			{
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (plain)
			out[o++] = (char) c;
		else
			o += (size_t) snprintf(out + o, size - o, "\\x%02x", c);
	}
	out[o] = '\0';
	return out;
}

/* reader_fail: remember the failure (a malformed or oversized answer) */
static IqWireEvent
reader_fail(IqWireReader *r, IqWireStatus status, const char *message)
{
	r->status = status;
	r->corrupt = true;
	strncpy(r->message, message, sizeof(r->message) - 1);
	r->message[sizeof(r->message) - 1] = '\0';
	r->stage = STAGE_FAILED;
	return IQ_EV_ERROR;
}

/* copy_message: a length-prefixed text from the peer into r->message, escaped */
static void
copy_message(IqWireReader *r, const unsigned char *p, uint32_t n)
{
	iq_wire_escape(r->message, sizeof(r->message), (const char *) p, n);
}

/* frame_too_large: a row beyond IQ_WIRE_MAX_FRAME, refused before it is read */
static IqWireEvent
frame_too_large(IqWireReader *r, size_t bytes)
{
	char		m[160];

	snprintf(m, sizeof(m),
			 "a row of %zu bytes is larger than a reader accepts (IQ_WIRE_MAX_FRAME, %d MiB)",
			 bytes, IQ_WIRE_MAX_FRAME / (1024 * 1024));
	return reader_fail(r, IQ_WIRE_INTERNAL, m);
}

/*
 * read_start
 *		"IQ" version status: on to the positions, or to the error message.
 */
static IqWireEvent
read_start(IqWireReader *r, const unsigned char *p, size_t avail)
{
	if (avail < 4)
		return IQ_EV_NEED_MORE;
	if (p[0] != 'I' || p[1] != 'Q')
		return reader_fail(r, IQ_WIRE_INTERNAL, "not an iq_fdw response (bad magic)");
	if (!version_read(p[2]))
	{
		char		m[160];

		snprintf(m, sizeof(m),
				 "the answer is in wire protocol version %u; this build reads versions %d to %d",
				 p[2], IQ_WIRE_VERSION_OLDEST, IQ_WIRE_VERSION);
		return reader_fail(r, IQ_WIRE_INTERNAL, m);
	}
	r->status = (IqWireStatus) p[3];
	r->pos += 4;
	r->stage = (r->status == IQ_WIRE_OK) ? STAGE_POSITIONS : STAGE_ERROR_MESSAGE;
	return iq_wire_reader_next(r);
}

/*
 * read_error_message
 *		The message of a response that is only a failure; it ends the answer.
 */
static IqWireEvent
read_error_message(IqWireReader *r, const unsigned char *p, size_t avail)
{
	uint32_t	n;

	if (avail < 4)
		return IQ_EV_NEED_MORE;
	n = iq_be32_get(p);
	if (n > IQ_WIRE_MAX_MESSAGE)
		return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: error message longer than IQ_WIRE_MAX_MESSAGE");
	if (avail - 4 < n)
		return IQ_EV_NEED_MORE;
	copy_message(r, p + 4, n);
	r->pos += 4 + n;
	r->stage = STAGE_FAILED;
	if (r->status == IQ_WIRE_OK)
		r->status = IQ_WIRE_INTERNAL;
	return IQ_EV_ERROR;
}

/*
 * read_positions
 *		u16 n and n positions (u16 partition, i64 consumed, i64 end): the
 *		header of an OK answer, taken whole once all of it has arrived.
 */
static IqWireEvent
read_positions(IqWireReader *r, const unsigned char *p, size_t avail)
{
	uint16_t	n;

	if (avail < 2)
		return IQ_EV_NEED_MORE;
	n = iq_be16_get(p);
	if (n > IQ_WIRE_MAX_PARTITIONS)
		return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: too many partitions");
	if (avail - 2 < (size_t) n * WIRE_POSITION_BYTES)
		return IQ_EV_NEED_MORE;
	free(r->positions);
	r->positions = NULL;
	r->npositions = 0;
	if (n > 0)
	{
		r->positions = malloc(sizeof(IqWirePosition) * n);
		if (r->positions == NULL)
			return reader_fail(r, IQ_WIRE_INTERNAL, "out of memory reading a response");
	}
	for (int i = 0; i < n; i++)
	{
		const unsigned char *q = p + 2 + i * WIRE_POSITION_BYTES;

		r->positions[i].partition = iq_be16_get(q);
		r->positions[i].consumed = (int64_t) iq_be64_get(q + 2);
		r->positions[i].end = (int64_t) iq_be64_get(q + 10);
	}
	r->npositions = n;
	r->pos += 2 + (size_t) n * WIRE_POSITION_BYTES;
	r->stage = STAGE_FRAMES;
	return IQ_EV_HEADER;
}

/*
 * read_row
 *		'R' u32 klen key i32 vlen value.  Each length is bounded by
 *		IQ_WIRE_MAX_FRAME before a byte of what it announces is waited for
 *		or buffered.
 */
static IqWireEvent
read_row(IqWireReader *r, const unsigned char *p, size_t avail)
{
	uint32_t	klen;
	int32_t		vlen;
	size_t		need;

	if (avail < 5)
		return IQ_EV_NEED_MORE;
	klen = iq_be32_get(p + 1);
	if (klen > IQ_WIRE_MAX_FRAME - 9)
		return frame_too_large(r, 9 + (size_t) klen);
	if (avail < 5 + (size_t) klen + 4)
		return IQ_EV_NEED_MORE;
	vlen = (int32_t) iq_be32_get(p + 5 + klen);
	if (vlen < -1)
		return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: bad value length");
	need = 5 + (size_t) klen + 4 + (vlen > 0 ? (size_t) vlen : 0);
	if (need > IQ_WIRE_MAX_FRAME)
		return frame_too_large(r, need);
	if (avail < need)
		return IQ_EV_NEED_MORE;
	/* whole and well-formed: the inline reader takes it (wire.h) */
	if (!iq_wire_reader_row(r))
		return reader_fail(r, IQ_WIRE_INTERNAL, "internal error: a whole row was not taken");
	return IQ_EV_ROW;
}

/*
 * read_end
 *		'E' u8 status u32 len message: the clean end, or a late failure.
 */
static IqWireEvent
read_end(IqWireReader *r, const unsigned char *p, size_t avail)
{
	uint32_t	n;

	if (avail < 6)
		return IQ_EV_NEED_MORE;
	n = iq_be32_get(p + 2);
	if (n > IQ_WIRE_MAX_MESSAGE)
		return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: end message longer than IQ_WIRE_MAX_MESSAGE");
	if (avail - 6 < n)
		return IQ_EV_NEED_MORE;
	r->status = (IqWireStatus) p[1];
	copy_message(r, p + 6, n);
	r->pos += 6 + n;
	if (r->status == IQ_WIRE_OK)
	{
		r->stage = STAGE_DONE;
		return IQ_EV_END;
	}
	r->stage = STAGE_FAILED;
	return IQ_EV_ERROR;
}

/* read_frame: a row or the end, by the frame's first byte */
static IqWireEvent
read_frame(IqWireReader *r, const unsigned char *p, size_t avail)
{
	if (avail < 1)
		return IQ_EV_NEED_MORE;
	if (p[0] == 'R')
		return read_row(r, p, avail);
	if (p[0] == 'E')
		return read_end(r, p, avail);
	return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: unknown frame");
}

/*
 * iq_wire_reader_next
 *		The next complete event, or IQ_EV_NEED_MORE.
 *
 * Each stage reads from the first unconsumed byte and moves r->pos past
 * what it took only once the whole of it has arrived.
 */
IqWireEvent
iq_wire_reader_next(IqWireReader *r)
{
	const unsigned char *p;
	size_t		avail;

	if (r->buf.oom && r->stage != STAGE_FAILED)
	{
		reader_fail(r, IQ_WIRE_INTERNAL, "out of memory reading a response");
		r->corrupt = false;
		return IQ_EV_ERROR;
	}

	/* nothing fed yet: no buffer to point into (NULL + 0 is undefined) */
	avail = r->buf.len - r->pos;
	p = avail > 0 ? (const unsigned char *) r->buf.data + r->pos : NULL;

	switch (r->stage)
	{
		case STAGE_START:
			return read_start(r, p, avail);
		case STAGE_ERROR_MESSAGE:
			return read_error_message(r, p, avail);
		case STAGE_POSITIONS:
			return read_positions(r, p, avail);
		case STAGE_FRAMES:
			return read_frame(r, p, avail);
		case STAGE_DONE:
			if (avail > 0)
				return reader_fail(r, IQ_WIRE_INTERNAL, "corrupt response: bytes after the end");
			return IQ_EV_END;
		case STAGE_FAILED:
		default:
			return IQ_EV_ERROR;
	}
}

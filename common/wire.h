/*-------------------------------------------------------------------------
 * wire.h
 *	  The compact read protocol between a backend and a worker: the same
 *	  bytes over the local Unix socket and in the body of the peer HTTP
 *	  endpoint (POST /iq/v1/read), so a 100,000-row range pays for no JSON.
 *
 * Plain C (malloc, no PostgreSQL calls): the worker's server threads use it.
 * All integers are big-endian.
 *
 * Request:
 *	 "IQ" u8 version(=1) u8 op u8 store u8 flags u32 limit
 *	 u16 npartitions, u16 partition...	 (partitions the caller expects the
 *										  server to hold; 0 = all it holds)
 *	 u32 nkeys, { u32 len, bytes }...	 (IQ_OP_GET)
 *	 u32 len, bytes						 (lower bound, if IQ_FLAG_LOWER)
 *	 u32 len, bytes						 (upper bound, if IQ_FLAG_UPPER)
 *	 Over the local socket and a peer stream (below) the request is
 *	 preceded by its u32 length, and requests follow one another.
 *
 * Response (a stream):
 *	 "IQ" u8 version u8 status
 *	 status != OK: u32 len, message, and nothing more
 *	 status == OK: u16 npartitions, { u16 partition, i64 consumed, i64 end }...
 *				   then frames: 'R' u32 klen key i32 vlen value  (a row)
 *								'E' u8 status u32 len message (the end)
 *	 Rows of IQ_OP_SCAN come in key byte order over all the partitions
 *	 asked (descending with IQ_FLAG_REVERSE); IQ_OP_GET returns the keys
 *	 found; IQ_OP_COUNT one row with an empty key and an 8-byte count;
 *	 IQ_OP_POSITIONS only the header.
 *
 * Peer stream: "GET /iq/v1/stream HTTP/1.1" with "Connection: Upgrade" and
 * "Upgrade: iq-wire/1" (common/peer_api.h) is answered "101 Switching
 * Protocols", and from the blank line on the connection carries requests
 * and responses exactly as the local socket does.  The token names that
 * framing (length-prefixed requests), which stays while versions change.
 *
 * Versions, for instances of two releases side by side in a rolling
 * upgrade: a build reads the versions IQ_WIRE_VERSION_OLDEST to
 * IQ_WIRE_VERSION and writes IQ_WIRE_VERSION.  A server answers a request
 * of a version it reads in that version; a request of any other (a newer
 * release's) is answered in the server's own version with
 * IQ_WIRE_UNKNOWN_VERSION and a message naming both, so that the newer
 * client, which reads the older versions, can say so or ask again in the
 * older one.  A client refuses an answer of a version it does not read,
 * naming both.  A release that changes the bytes raises IQ_WIRE_VERSION,
 * and IQ_WIRE_VERSION_OLDEST only when it stops serving the old ones.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WIRE_H
#define IQ_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/bigendian.h"

#define IQ_WIRE_VERSION 1
#define IQ_WIRE_VERSION_OLDEST 1
#define IQ_WIRE_MAX_REQUEST (16 * 1024 * 1024)

/*
 * Bounds of what a response reader buffers for one answer (the backend per
 * instance asked, the worker's gather per peer): a frame (a row: 'R', its
 * key and value with their lengths) larger than IQ_WIRE_MAX_FRAME, or a
 * status message longer than IQ_WIRE_MAX_MESSAGE, is refused as a corrupt
 * answer before anything is buffered for it.  A reader thus holds at most
 * one frame and the chunk last fed to it.
 */
#define IQ_WIRE_MAX_FRAME	(64 * 1024 * 1024)
#define IQ_WIRE_MAX_MESSAGE (64 * 1024)

/*
 * Progress of an answer, for iq_fdw.peer_timeout (the backend's reads and
 * the worker's gathers alike): a complete frame (the header, a row, the
 * end), or this many bytes received since the last progress, so that a row
 * of many megabytes on a slow link is not cut while a trickle is.
 */
#define IQ_WIRE_PROGRESS_BYTES	(64 * 1024)

typedef enum IqWireOp
{
	IQ_OP_GET = 1,
	IQ_OP_SCAN = 2,
	IQ_OP_COUNT = 3,
	IQ_OP_POSITIONS = 4
} IqWireOp;

#define IQ_FLAG_LOWER		0x01
#define IQ_FLAG_LOWER_INCL	0x02
#define IQ_FLAG_UPPER		0x04
#define IQ_FLAG_UPPER_INCL	0x08
/*
 * The caller accepts, for a partition this instance does not own, the
 * answer of the standby replica it keeps (worker/stream/standby.c); the
 * header's positions then say how far the standby has read.  A server of
 * an earlier release refuses the flag (IQ_WIRE_BAD_REQUEST, "unknown
 * flags"): it keeps no standby.
 */
#define IQ_FLAG_STANDBY		0x10
/*
 * IQ_OP_SCAN: rows in descending key byte order, from the upper bound down
 * (an ORDER BY key DESC, a backward page).  A server of an earlier release
 * refuses the flag ("unknown flags").
 */
#define IQ_FLAG_REVERSE		0x20

typedef enum IqWireStatus
{
	IQ_WIRE_OK = 0,
	IQ_WIRE_NOT_HELD = 1,		/* a partition asked is not held here: ownership moved */
	IQ_WIRE_RESTORING = 2,		/* a partition asked is still restoring */
	IQ_WIRE_UNKNOWN_STORE = 3,
	IQ_WIRE_BAD_REQUEST = 4,
	IQ_WIRE_INTERNAL = 5,
	IQ_WIRE_UNKNOWN_VERSION = 6,	/* the request's version is not one the server reads */
	IQ_WIRE_FORBIDDEN = 7		/* the client proved no peer's certificate (TLS on) */
} IqWireStatus;

/* A growable malloc'd buffer. */
typedef struct IqBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		oom;			/* an append failed; the buffer is unusable */
} IqBuf;

extern void iq_buf_init(IqBuf *buf);
extern void iq_buf_free(IqBuf *buf);
extern bool iq_buf_reserve(IqBuf *buf, size_t extra);
extern void iq_buf_append(IqBuf *buf, const void *data, size_t len);
extern void iq_buf_u8(IqBuf *buf, uint8_t v);
extern void iq_buf_u16(IqBuf *buf, uint16_t v);
extern void iq_buf_u32(IqBuf *buf, uint32_t v);
extern void iq_buf_i64(IqBuf *buf, int64_t v);

/* A decoded or to-be-encoded request; key and bound pointers are borrowed. */
typedef struct IqWireRequest
{
	uint8_t		op;
	uint8_t		store;
	uint8_t		flags;
	uint32_t	limit;			/* 0 = no limit */
	int			npartitions;
	uint16_t   *partitions;
	uint32_t	nkeys;
	const char **keys;
	uint32_t   *key_lens;
	const char *lower;
	uint32_t	lower_len;
	const char *upper;
	uint32_t	upper_len;
} IqWireRequest;

extern void iq_wire_encode_request(const IqWireRequest *req, IqBuf *out);

/*
 * Decode a request of len bytes; pointers in *req point into data, arrays
 * are malloc'd (free with iq_wire_request_free).  False with *err (static
 * text) on malformed input.
 */
extern bool iq_wire_decode_request(const char *data, size_t len,
								   IqWireRequest *req, const char **err);
extern void iq_wire_request_free(IqWireRequest *req);

/*
 * Whether data opens as a request of a version this build does not read;
 * then a message naming both versions, for IQ_WIRE_UNKNOWN_VERSION.
 */
extern bool iq_wire_unknown_version(const char *data, size_t len,
									char *message, size_t size);

/* Response writing (server side). */
typedef struct IqWirePosition
{
	uint16_t	partition;
	int64_t		consumed;
	int64_t		end;
} IqWirePosition;

extern void iq_wire_response_error(IqBuf *out, IqWireStatus status, const char *message);
extern void iq_wire_response_header(IqBuf *out, int npositions,
									const IqWirePosition *positions);
extern void iq_wire_response_row(IqBuf *out, const char *key, uint32_t key_len,
								 const char *value, int32_t value_len);
extern void iq_wire_response_end(IqBuf *out, IqWireStatus status, const char *message);

/*
 * Incremental response reading (client side): feed bytes as they arrive,
 * then take events until IQ_EV_NEED_MORE.  Event data points into the
 * reader's buffer and is valid until the next feed.
 */
typedef enum IqWireEvent
{
	IQ_EV_NEED_MORE,
	IQ_EV_HEADER,				/* status OK; positions available */
	IQ_EV_ROW,
	IQ_EV_END,					/* clean end of stream */
	IQ_EV_ERROR					/* status != OK, or a malformed stream */
} IqWireEvent;

typedef struct IqWireReader
{
	IqBuf		buf;
	size_t		pos;
	int			stage;
	/* results of the last event */
	IqWireStatus status;
	bool		corrupt;		/* the error is the answer's form, not its status */
	char		message[512];	/* bytes not printable ASCII escaped as \xNN */
	int			npositions;
	IqWirePosition *positions;	/* malloc'd */
	const char *key;
	uint32_t	key_len;
	const char *value;
	int32_t		value_len;		/* -1 for null */
} IqWireReader;

/* the reader's stage in which rows come (wire.c has them all) */
#define IQ_WIRE_STAGE_FRAMES 3

/*
 * iq_wire_reader_row
 *		Takes the next event when it is a row that has arrived whole, as
 *		iq_wire_reader_next would, without its stage machine: a full scan
 *		reads a million rows, and the calls per row showed in its profile.
 *		False otherwise, having taken nothing: anything else (the end, a
 *		partial or malformed frame, a failure) is iq_wire_reader_next's.
 */
static inline bool
iq_wire_reader_row(IqWireReader *r)
{
	const unsigned char *p;
	size_t		avail = r->buf.len - r->pos;
	uint32_t	klen;
	int32_t		vlen;
	size_t		need;

	if (r->stage != IQ_WIRE_STAGE_FRAMES || r->buf.oom || avail < 9)
		return false;
	p = (const unsigned char *) r->buf.data + r->pos;
	if (p[0] != 'R')
		return false;
	klen = iq_be32_get(p + 1);
	if (klen > avail - 9)
		return false;
	vlen = (int32_t) iq_be32_get(p + 5 + klen);
	if (vlen < -1)
		return false;
	need = 9 + (size_t) klen + (vlen > 0 ? (size_t) vlen : 0);
	if (need > avail || need > IQ_WIRE_MAX_FRAME)
		return false;
	r->key = (const char *) p + 5;
	r->key_len = klen;
	r->value_len = vlen;
	r->value = vlen >= 0 ? (const char *) p + 9 + klen : NULL;
	r->pos += need;
	return true;
}

extern void iq_wire_reader_init(IqWireReader *r);
extern void iq_wire_reader_feed(IqWireReader *r, const char *data, size_t len);
extern IqWireEvent iq_wire_reader_next(IqWireReader *r);
extern void iq_wire_reader_free(IqWireReader *r);

/*
 * Bytes for a log line or a message: printable ASCII as it is, every other
 * byte (and the backslash) as \xNN; cut with "..." to fit size (>= 4).
 * Plain C, for any thread.  Returns out.
 */
extern char *iq_wire_escape(char *out, size_t size, const char *bytes, size_t len);

#endif							/* IQ_WIRE_H */

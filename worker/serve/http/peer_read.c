/*-------------------------------------------------------------------------
 * peer_read.c
 *	  POST /iq/v1/read: the compact endpoint other instances' backends use.
 *
 * Body and answer are wire.h bytes, answered by read_handler.c as for the
 * local socket.  A small answer (a get of a few keys) goes out in one
 * buffer with a Content-Length; a large one (a scan, a get of many keys) is
 * streamed (chunked) a piece at a time, so it is never built whole in
 * memory, and no store lock is held while the client reads it.
 *-------------------------------------------------------------------------
 */
#include <stdlib.h>
#include <string.h>

#include "worker/serve/http/http_internal.h"
#include "worker/serve/read_handler.h"

#define PEER_CHUNK (64 * 1024)

typedef struct PeerStream
{
	IqReadStream *rs;
	IqBuf		buf;
	size_t		off;
	bool		more;			/* the read stream has more to produce */
} PeerStream;

/* peer_reader: MHD's content callback: hand out the next bytes */
static ssize_t
peer_reader(void *cls, uint64_t pos, char *out, size_t max)
{
	PeerStream *ps = cls;

	if (ps->off >= ps->buf.len)
	{
		if (!ps->more)
			return MHD_CONTENT_READER_END_OF_STREAM;
		ps->buf.len = 0;
		ps->off = 0;
		ps->more = iq_read_produce(ps->rs, &ps->buf, PEER_CHUNK);
		if (ps->buf.oom)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		if (ps->buf.len == 0)
			return ps->more ? 0 : MHD_CONTENT_READER_END_OF_STREAM;
	}
	return iq_http_take(&ps->buf, &ps->off, out, max);
}

/* peer_free: the answer is sent or dropped: close the cursor */
static void
peer_free(void *cls)
{
	PeerStream *ps = cls;

	iq_read_finish(ps->rs);
	iq_buf_free(&ps->buf);
	free(ps);
}

/* iq_http_peer_read: answer one compact request */
enum MHD_Result
iq_http_peer_read(struct MHD_Connection *conn, const char *body, size_t len)
{
	PeerStream *ps = calloc(1, sizeof(PeerStream));
	struct MHD_Response *resp;

	if (ps == NULL)
		return MHD_NO;
	iq_buf_init(&ps->buf);
	ps->rs = iq_read_begin(body, len);
	if (ps->rs == NULL)
	{
		free(ps);
		return MHD_NO;
	}
	ps->more = iq_read_produce(ps->rs, &ps->buf, PEER_CHUNK);
	if (ps->buf.oom)
	{
		peer_free(ps);
		return iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
	}
	if (!ps->more)
	{
		/* complete already: one buffer, MHD takes it */
		resp = MHD_create_response_from_buffer(ps->buf.len, ps->buf.data,
											   MHD_RESPMEM_MUST_FREE);
		if (resp == NULL)
		{
			peer_free(ps);
			return MHD_NO;
		}
		iq_buf_init(&ps->buf);
		peer_free(ps);
		return iq_http_queue(conn, MHD_HTTP_OK, resp, "application/octet-stream");
	}
	return iq_http_send_stream(conn, "application/octet-stream", PEER_CHUNK,
							   peer_reader, ps, peer_free);
}

/*-------------------------------------------------------------------------
 * read_handler.h
 *	  Answers a compact read request (wire.h) from this instance's stores.
 *
 * Shared by the local Unix-socket channel, HTTP connections upgraded to a
 * stream (both through wire_conn.c) and the peer HTTP endpoint (POST
 * /iq/v1/read): only the transport differs.  The answer is produced
 * in pieces so a large scan is streamed, never built whole.  Server threads
 * only: no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_READ_HANDLER_H
#define IQ_READ_HANDLER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/wire.h"

typedef struct IqReadStream IqReadStream;

/* The partitioner servers use to place a key (set once at server start). */
extern void iq_read_set_partitioner(int partitioner);

/*
 * Decode the request and start answering it.  Never NULL unless out of
 * memory: a bad request gives a stream that holds its error response.
 */
extern IqReadStream *iq_read_begin(const char *data, size_t len);

/*
 * Append response bytes to out until it holds at least want bytes or the
 * response is complete; returns false once everything has been appended
 * (possibly by this call), true while more remains.
 */
extern bool iq_read_produce(IqReadStream *stream, IqBuf *out, size_t want);

/* Release the stream and anything it holds open (store cursors). */
extern void iq_read_finish(IqReadStream *stream);

#endif							/* IQ_READ_HANDLER_H */

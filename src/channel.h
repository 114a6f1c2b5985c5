/*-------------------------------------------------------------------------
 * channel.h
 *	  A backend's channel to one worker: a request sent, its answer's bytes
 *	  received, the connection pooled for the next request.  To this
 *	  instance's worker over its Unix socket (channel_unix.c), to another
 *	  instance's over a TCP connection upgraded to the same stream
 *	  (channel_tcp.c); both carry a u32 length and a wire request, and the
 *	  wire answer back.  With TLS on, another instance is asked by one
 *	  POST /iq/v1/read per request instead (channel_post.c).  Backend code.
 *
 * A channel knows requests and bytes, not what they mean: its caller
 * (fetch) reads the answer, decides how long to wait, and reports.
 * Nothing here raises an error (but a cancel while connecting or sending
 * may, and iq_chan_tls_prepare, called before any channel starts): a
 * failure is recorded in the channel, so the caller can release
 * everything before it reports it.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_CHANNEL_H
#define IQ_CHANNEL_H

#include "common/shmem.h"
#include "common/wire.h"
#include "src/channel_conn.h"

#define IQ_CHAN_ENDPOINT_LEN (IQ_HOST_LEN + 16)	/* host:port, or a socket path */

typedef struct IqChannel
{
	/* what to ask of whom (iq_chan_start) */
	char		host[IQ_HOST_LEN];
	int			port;
	bool		local;			/* this instance: its Unix socket */
	const IqBuf *request;		/* the caller's, until the channel finishes */
	int64		deadline;		/* µs (iq_chan_now_us): connected and sent by */

	/* what came back: the caller takes the bytes and empties it */
	IqBuf		inbox;
	bool		done;			/* nothing more will come */
	bool		failed;			/* ... because of error (the caller may set it) */
	bool		timed_out;
	bool		tls_failed;		/* the TLS handshake failed (a certificate?) */
	int			refused_status; /* the HTTP status refusing the upgrade, or 0 */
	bool		unreachable;	/* another instance is not there: refused, or
								 * closed or reset before any byte of an answer */
	char		error[256];		/* a sentence, for an errdetail */

	/* the connection */
	IqChanConn	conn;			/* fd -1 when not holding one */
	IqBuf		outbox;			/* what is being sent: [head,] length, request */
	char		endpoint[IQ_CHAN_ENDPOINT_LEN];	/* the idle pool's key */
	bool		reused;			/* it served an earlier request */
	bool		handshaking;	/* the 101 of a fresh TCP connection is due */
	char		head[1024];		/* the 101 arrived so far */
	size_t		head_len;
	size_t		received;		/* bytes of this answer received */
	int			attempts;
} IqChannel;

/* A monotonic clock in µs, the one a channel's deadline is on. */
extern int64 iq_chan_now_us(void);

extern void iq_chan_init(IqChannel *ch);
extern void iq_chan_start(IqChannel *ch, const char *host, int port, bool local,
						  const IqBuf *request, int64 deadline);
extern void iq_chan_receive(IqChannel *ch);
extern void iq_chan_wait(IqChannel *ch, int timeout_ms);
extern void iq_chan_finish(IqChannel *ch, bool answer_read);
extern void iq_chan_free(IqChannel *ch);
extern void iq_chan_drop_idle_tcp(void);

/* in channel_tls.c: the TLS material of TCP channels */
extern void iq_chan_tls_prepare(void);
extern const IqTls *iq_chan_tls(void);

#endif							/* IQ_CHANNEL_H */

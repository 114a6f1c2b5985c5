/*-------------------------------------------------------------------------
 * fetch_internal.h
 *	  What fetch.c shares with its transports: channel.c (a socket to a
 *	  worker: this instance's Unix socket, or another's HTTP connection
 *	  upgraded by upgrade_client.c) and peer_client.c (libcurl multi,
 *	  POST /iq/v1/read, for workers that do not offer the upgrade).
 *	  Backend code.
 *
 * A source is one target's answer in flight.  Everything a source owns is
 * malloc'd (curl and the socket never see palloc'd memory), so that an
 * abort can free it whatever memory context has been reset meanwhile.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FETCH_INTERNAL_H
#define IQ_FETCH_INTERNAL_H

#include "src/fetch.h"

/* A socket of channel.c, and what owns it. */
typedef struct IqChanConn
{
	int			fd;				/* -1 when none */
	void	   *easy;			/* CURL * that opened it (a peer's); NULL for Unix */
	void	   *multi;			/* CURLM * its connect ran in */
} IqChanConn;

#define IQ_ENDPOINT_LEN (IQ_HOST_LEN + 16)	/* host:port, or a socket path */

typedef struct IqFetchSource
{
	IqTarget	target;			/* copied from the caller */
	IqBuf		request;		/* this target's encoded wire request */
	IqWireReader reader;
	IqBuf		inbox;			/* arrived, not yet fed to the reader */
	bool		sock;			/* over a socket channel (channel.c), else
								 * POST /iq/v1/read (peer_client.c) */

	/* transport state */
	bool		done;			/* the transport has nothing more to give */
	bool		failed;			/* ... because it failed: see error */
	bool		timed_out;
	char		error[256];
	int64		last_activity;	/* µs: the transport last had bytes */

	/* iq_fdw.peer_timeout (fetch.c, see wait_for) */
	int64		call_started;	/* µs: the call began (connect included) */
	bool		answering;		/* the first byte of the answer arrived */
	int64		stalled_us;		/* waited since the last progress */
	size_t		partial;		/* bytes received since the last progress */

	/* POST */
	void	   *easy;			/* CURL *, NULL when not in flight */
	bool		paused;			/* write callback paused it (inbox full) */
	long		http_status;

	/* socket channel */
	IqChanConn	conn;			/* fd -1 when not holding a connection */
	char		endpoint[IQ_ENDPOINT_LEN];	/* the idle pool's key */
	bool		reused;			/* the connection served an earlier query */
	bool		handshaking;	/* the 101 of a fresh peer connection is due */
	char		head[1024];		/* the 101 arrived so far */
	size_t		head_len;
	size_t		received;		/* bytes of this answer received */
	int			attempts;

	/* the answer */
	bool		header_seen;
	bool		has_row;
	bool		ended;
} IqFetchSource;

/* in peer_client.c */
extern void iq_peer_start(IqFetchSource *src);
extern void iq_peer_drive(int wait_ms, int extra_fd);
extern void iq_peer_resume(IqFetchSource *src);
extern void iq_peer_abort(IqFetchSource *src);
extern void iq_target_url(char *url, size_t size, const IqTarget *target,
						const char *path);

/* in channel.c */
extern bool iq_chan_serves(const IqTarget *target);
extern void iq_chan_start(IqFetchSource *src);
extern void iq_chan_receive(IqFetchSource *src);
extern void iq_chan_finish(IqFetchSource *src);

/* in upgrade_client.c */
typedef enum IqUpgradeCheck
{
	IQ_UPGRADE_MORE,			/* the head is not complete yet */
	IQ_UPGRADE_DONE,			/* 101: the stream starts at *end */
	IQ_UPGRADE_REFUSED,			/* another status: the peer does not offer it */
	IQ_UPGRADE_NOT_HTTP
} IqUpgradeCheck;

extern bool iq_upgrade_offered(const char *host, int port);
extern bool iq_upgrade_connect(IqFetchSource *src);
extern const char *iq_upgrade_head(IqFetchSource *src, size_t *len);
extern IqUpgradeCheck iq_upgrade_check(const char *head, size_t len,
									   size_t *end, int *status);
extern void iq_upgrade_refused(IqFetchSource *src, int status);
extern void iq_upgrade_close(IqChanConn *conn);

/* in fetch.c */
extern int64 iq_fetch_now_us(void);

/* A peer's bytes beyond this, unread by the merge, pause its transfer. */
#ifndef IQ_FETCH_INBOX_MAX
#define IQ_FETCH_INBOX_MAX (4 * 1024 * 1024)
#endif

#endif							/* IQ_FETCH_INTERNAL_H */

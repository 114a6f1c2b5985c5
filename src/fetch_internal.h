/*-------------------------------------------------------------------------
 * fetch_internal.h
 *	  What fetch.c shares with its two transports: peer_client.c (libcurl
 *	  multi, POST /iq/v1/read) and local_client.c (the worker's Unix
 *	  socket).  Backend code.
 *
 * A source is one target's answer in flight.  Everything a source owns is
 * malloc'd (curl and the socket never see palloc'd memory), so that an
 * abort can free it whatever memory context has been reset meanwhile.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FETCH_INTERNAL_H
#define IQ_FETCH_INTERNAL_H

#include "fetch.h"

typedef struct IqFetchSource
{
	IqTarget	target;			/* copied from the caller */
	IqBuf		request;		/* this target's encoded wire request */
	IqWireReader reader;
	IqBuf		inbox;			/* peer: arrived, not yet fed to the reader */

	/* transport state */
	bool		done;			/* the transport has nothing more to give */
	bool		failed;			/* ... because it failed: see error */
	bool		timed_out;
	char		error[256];
	int64		last_activity;	/* µs, for the idle timeout */

	/* peer */
	void	   *easy;			/* CURL *, NULL when not in flight */
	bool		paused;			/* write callback paused it (inbox full) */
	long		http_status;

	/* local */
	int			fd;				/* -1 when not holding a connection */
	bool		reused;			/* the connection served an earlier query */
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

/* in local_client.c */
extern void iq_local_start(IqFetchSource *src);
extern void iq_local_receive(IqFetchSource *src);
extern void iq_local_finish(IqFetchSource *src);

/* in fetch.c */
extern int64 iq_fetch_now_us(void);

/* A peer's bytes beyond this, unread by the merge, pause its transfer. */
#ifndef IQ_FETCH_INBOX_MAX
#define IQ_FETCH_INBOX_MAX (4 * 1024 * 1024)
#endif

#endif							/* IQ_FETCH_INTERNAL_H */

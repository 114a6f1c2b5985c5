/*-------------------------------------------------------------------------
 * wire_conn.h
 *	  Connections that speak the compact protocol (wire.h) as a stream of
 *	  requests, each served by a thread of its own: the local Unix socket
 *	  (local_server.c) and HTTP connections upgraded to iq-wire/1
 *	  (upgrade.c).
 *
 * On such a connection a request is a u32 length and the wire request; the
 * answer is the wire response stream; the next request may follow at once.
 * A set bounds its connections; beyond the bound a connection is told so
 * (a wire error) and closed.  Each connection's waits are bounded by the
 * limits of conn_limits.h: idle time between requests, the time to receive
 * a request whole, and the memory of large requests in flight.  A connection is closed by its set's close
 * action, since an upgraded socket belongs to libmicrohttpd and must be
 * closed through it.  Threads run with every signal blocked and never call
 * PostgreSQL.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WIRE_CONN_H
#define IQ_WIRE_CONN_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define IQ_WIRE_CONN_MAX 1024

/* How a set's connection is closed (its fd and the arg given with it). */
typedef void (*IqWireConnClose) (int fd, void *arg);

typedef struct IqWireConn
{
	int			fd;				/* -1 when the slot is free */
	int			answering;		/* a request is being answered (atomic) */
	void	   *close_arg;
	char	   *early;			/* bytes read before the thread started */
	size_t		early_len;
	struct IqWireConnSet *set;
} IqWireConn;

typedef struct IqWireConnSet
{
	const char *thread_name;	/* at most 15 characters */
	const char *full_message;	/* told to a connection beyond the bound */
	IqWireConnClose close_fn;
	pthread_mutex_t lock;
	pthread_cond_t gone;
	int			nthreads;		/* connection threads alive */
	bool		stopping;
	IqWireConn	conns[IQ_WIRE_CONN_MAX];
} IqWireConnSet;

#define IQ_WIRE_CONN_SET(name, full, close) \
	{ .thread_name = (name), .full_message = (full), .close_fn = (close), \
	  .lock = PTHREAD_MUTEX_INITIALIZER, .gone = PTHREAD_COND_INITIALIZER }

/* Make a set ready for (new) connections; before any iq_wire_conn_serve. */
extern void iq_wire_conn_open(IqWireConnSet *set);

/*
 * Serve fd on a thread of its own; early holds bytes already read from it
 * (copied).  The set owns fd from here on, whatever happens: it is closed
 * with set->close_fn(fd, close_arg) when the peer hangs up, on refusal, or
 * by iq_wire_conn_stop.
 */
extern void iq_wire_conn_serve(IqWireConnSet *set, int fd, void *close_arg,
							   const char *early, size_t early_len);

/*
 * Refuse new connections, hang up on every one, wait for their threads:
 * idle ones at once, those answering a request once their answer is sent or
 * drain_ms has passed, whichever comes first.
 */
extern void iq_wire_conn_stop(IqWireConnSet *set, int drain_ms);

#endif							/* IQ_WIRE_CONN_H */

/*-------------------------------------------------------------------------
 * conn_limits.h
 *	  Limits the worker's servers share (HTTP, upgraded streams, the local
 *	  socket): the settings the main thread applies at start and on every
 *	  reload, and the budget of request bodies being received.
 *
 * The main thread sets, server threads read: every value is an atomic, so
 * a reload takes effect on the next wait of each connection, with no
 * restart and no lock.  No PostgreSQL calls (server threads use it).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_CONN_LIMITS_H
#define IQ_CONN_LIMITS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Requests up to this size are not charged to the request budget: a
 * stream connection reads them into the buffer it has anyway, and an HTTP
 * body this small is bounded by the connection limit.  Larger ones must
 * fit in iq_fdw.request_memory with every other large request in flight.
 */
#define IQ_REQUEST_SMALL	(64 * 1024)

/*
 * A server that stops (a clean stop of the instance, a restart for new
 * settings) lets the answers under way finish for up to this long before it
 * hangs up on them, and begins no new one: a rolling restart cuts no read.
 */
#define IQ_SERVE_DRAIN_MS	2000

typedef struct IqConnLimits
{
	int			request_timeout_ms; /* iq_fdw.request_timeout */
	int			idle_timeout_ms;	/* iq_fdw.stream_idle_timeout */
	int			per_client;		/* iq_fdw.http_connections_per_client */
	size_t		request_memory; /* iq_fdw.request_memory, bytes */
} IqConnLimits;

/* main thread: at server start and after each reload */
extern void iq_conn_limits_set(const IqConnLimits *limits);

/* server threads */
extern int	iq_conn_request_timeout_ms(void);
extern int	iq_conn_idle_timeout_ms(void);
extern int	iq_conn_per_client(void);

/*
 * Charge n bytes of a request to the budget: false (nothing charged) when
 * they do not fit.  Requests of IQ_REQUEST_SMALL or less always fit and
 * are not charged; iq_request_memory_release takes the same n.
 */
extern bool iq_request_memory_reserve(size_t n);
extern void iq_request_memory_release(size_t n);

/* a monotonic clock in ms */
extern long long iq_conn_now_ms(void);

#endif							/* IQ_CONN_LIMITS_H */

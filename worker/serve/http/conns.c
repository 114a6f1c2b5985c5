/*-------------------------------------------------------------------------
 * conns.c
 *	  The HTTP server's connections: a cap per client address, and a
 *	  deadline for each request as a whole.
 *
 * libmicrohttpd bounds connections in all, not per client, and its
 * connection timeout restarts on every byte: a client sending a byte every
 * few seconds holds a connection for ever, and one address could take
 * every connection (upgraded streams stay MHD's connections until closed).
 * So every connection has a record here, made when MHD accepts it and
 * dropped when MHD closes it (its notify callback, called before MHD
 * closes the socket, under our lock: the socket we may shut down is never
 * a reused descriptor).
 *
 * Per client: a new connection from an address (IPv6: its /64) that holds
 * iq_fdw.http_connections_per_client unauthenticated connections is closed
 * at once by MHD's accept policy.  Connections of authenticated peers (a
 * client certificate the cluster's CA signed, access.c) are not counted,
 * nor is the local socket, which is not HTTP.
 *
 * Deadlines: a request must arrive whole (head and body) within
 * iq_fdw.request_timeout of the accept, or, on a kept-alive connection, of
 * its request line; the request line of a next request must come within
 * IQ_HTTP_CONN_TIMEOUT_S of the previous answer.  While a request is
 * answered there is no deadline here (MHD's timeout finds a client that
 * stopped reading), nor once it is upgraded (wire_conn.c has its own).  A
 * watchdog thread shuts down the socket of a connection past its
 * deadline; MHD then sees the hang-up and closes it.
 *
 * MHD's threads and the watchdog only: no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* pthread_setname_np */
#endif

#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "worker/serve/conn_limits.h"
#include "worker/serve/http/http_internal.h"
#include "worker/thread.h"

#define WATCHDOG_TICK_MS	200 /* deadlines are kept to this precision */

typedef enum ConnPhase
{
	PHASE_FIRST,				/* accepted: the first request is due */
	PHASE_REQUEST,				/* a later request's line arrived */
	PHASE_ANSWER,				/* received whole, being answered */
	PHASE_IDLE,					/* kept alive: the next request is due */
	PHASE_UPGRADED				/* a stream now (wire_conn.c) */
} ConnPhase;

typedef struct HttpConn
{
	struct HttpConn *prev;
	struct HttpConn *next;
	int			fd;
	unsigned char client[17];	/* family byte, then the address or /64 */
	bool		counted;		/* against its client's cap (anonymous) */
	bool		verified;		/* its client certificate verified (access.c) */
	bool		cut;			/* shut down by the watchdog */
	int			phase;			/* ConnPhase, atomic */
	long long	deadline;		/* monotonic ms, 0 for none; atomic */
} HttpConn;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake;
static HttpConn *conns = NULL;
static bool stopping = false;
static bool running = false;
static pthread_t watchdog;

/* client_key: the address a cap applies to; false for what is not IP */
static bool
client_key(const struct sockaddr *addr, socklen_t len, unsigned char key[17])
{
	static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	memset(key, 0, 17);
	if (addr == NULL)
		return false;
	if (addr->sa_family == AF_INET && len >= (socklen_t) sizeof(struct sockaddr_in))
	{
		key[0] = 4;
		memcpy(key + 1, &((const struct sockaddr_in *) addr)->sin_addr, 4);
		return true;
	}
	if (addr->sa_family == AF_INET6 && len >= (socklen_t) sizeof(struct sockaddr_in6))
	{
		const unsigned char *a = ((const struct sockaddr_in6 *) addr)->sin6_addr.s6_addr;

		if (memcmp(a, v4mapped, 12) == 0)
		{
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		}
		else
		{
			/* one host usually has a whole /64: count it as one client */
			key[0] = 6;
			memcpy(key + 1, a, 8);
		}
		return true;
	}
	return false;
}

/* record: our record of an MHD connection, NULL if it has none */
static HttpConn *
record(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

	return ci ? (HttpConn *) ci->socket_context : NULL;
}

static void
set_state(HttpConn *c, ConnPhase phase, long long deadline)
{
	__atomic_store_n(&c->deadline, deadline, __ATOMIC_RELAXED);
	__atomic_store_n(&c->phase, (int) phase, __ATOMIC_RELAXED);
}

/* iq_http_conn_admit: MHD's accept policy: is this client under its cap? */
enum MHD_Result
iq_http_conn_admit(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	unsigned char key[17];
	int			cap = iq_conn_per_client();
	int			n = 0;
	HttpConn   *c;

	if (!client_key(addr, addrlen, key))
		return MHD_YES;
	pthread_mutex_lock(&lock);
	for (c = conns; c != NULL && n < cap; c = c->next)
		if (c->counted && memcmp(c->client, key, sizeof(key)) == 0)
			n++;
	pthread_mutex_unlock(&lock);
	return n < cap ? MHD_YES : MHD_NO;
}

/* iq_http_conn_notify: MHD's connection callback: make or drop the record */
void
iq_http_conn_notify(void *cls, struct MHD_Connection *conn,
					void **socket_context, enum MHD_ConnectionNotificationCode toe)
{
	HttpConn   *c;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED)
	{
		c = *socket_context;
		if (c == NULL)
			return;
		pthread_mutex_lock(&lock);
		if (c->prev)
			c->prev->next = c->next;
		else
			conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		pthread_mutex_unlock(&lock);
		free(c);
		*socket_context = NULL;
		return;
	}
	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	c = calloc(1, sizeof(HttpConn));
	if (c == NULL)
	{
		/* no record, no deadline: close it rather than serve it unbounded */
		const union MHD_ConnectionInfo *fd =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		if (fd)
			shutdown(fd->connect_fd, SHUT_RDWR);
		return;
	}
	{
		/*
		 * libmicrohttpd 1.0 answers every query in one buffer of the
		 * connection: an answer is read before the next query overwrites
		 * it (else the fd would be bytes of the address's pointer)
		 */
		const union MHD_ConnectionInfo *ci =
			MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

		c->fd = ci ? ci->connect_fd : -1;
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		c->counted = ci && client_key(ci->client_addr,
									  ci->client_addr->sa_family == AF_INET6 ?
									  sizeof(struct sockaddr_in6) :
									  sizeof(struct sockaddr_in),
									  c->client);
	}
	set_state(c, PHASE_FIRST, iq_conn_now_ms() + iq_conn_request_timeout_ms());
	pthread_mutex_lock(&lock);
	c->next = conns;
	if (conns)
		conns->prev = c;
	conns = c;
	pthread_mutex_unlock(&lock);
	*socket_context = c;
}

/* iq_http_conn_request_line: a request line arrived (MHD's URI log callback) */
void
iq_http_conn_request_line(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	/* the first request keeps the deadline it had from the accept */
	if (c && __atomic_load_n(&c->phase, __ATOMIC_RELAXED) == PHASE_IDLE)
		set_state(c, PHASE_REQUEST, iq_conn_now_ms() + iq_conn_request_timeout_ms());
}

/* iq_http_conn_answering: the request arrived whole: no deadline while answered */
void
iq_http_conn_answering(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	if (c && __atomic_load_n(&c->phase, __ATOMIC_RELAXED) != PHASE_UPGRADED)
		set_state(c, PHASE_ANSWER, 0);
}

/* iq_http_conn_completed: answered; a kept-alive connection awaits the next */
void
iq_http_conn_completed(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	if (c && __atomic_load_n(&c->phase, __ATOMIC_RELAXED) != PHASE_UPGRADED)
		set_state(c, PHASE_IDLE, iq_conn_now_ms() + IQ_HTTP_CONN_TIMEOUT_S * 1000);
}

/* iq_http_conn_upgraded: a stream from now on; wire_conn.c keeps its time */
void
iq_http_conn_upgraded(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	if (c)
		set_state(c, PHASE_UPGRADED, 0);
}

/*
 * iq_http_conn_authenticated: the client proved a certificate the
 * cluster's CA signed (access.c): its connection no longer counts against its
 * address's cap, so peers and other instances' backends, which may share
 * an address with anonymous clients (or, on one host, with each other),
 * are never throttled by it.  The verdict is kept for the connection's
 * later requests (iq_http_conn_verified).
 */
void
iq_http_conn_authenticated(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	if (c == NULL)
		return;
	pthread_mutex_lock(&lock);
	c->counted = false;
	c->verified = true;
	pthread_mutex_unlock(&lock);
}

/*
 * iq_http_conn_verified: whether an earlier request of this connection
 * proved a client certificate the cluster's CA signed.  A TLS connection's
 * peer certificate is fixed (MHD does no renegotiation), and new TLS
 * material restarts the server, closing every connection: so the
 * verification, a signature check and two certificates parsed (about
 * 200 us with ECDSA), is done once per connection, not once per request
 * (a backend's kept-alive POSTs, channel_post.c).  Read by the thread
 * serving the connection, which alone sets it.
 */
bool
iq_http_conn_verified(struct MHD_Connection *conn)
{
	HttpConn   *c = record(conn);

	return c != NULL && c->verified;
}

/* watchdog_main: shut down connections past their deadline */
static void *
watchdog_main(void *arg)
{
	pthread_setname_np(pthread_self(), "iq_http_watch");
	pthread_mutex_lock(&lock);
	while (!stopping)
	{
		long long	now = iq_conn_now_ms();
		struct timespec until;
		HttpConn   *c;

		for (c = conns; c != NULL; c = c->next)
		{
			long long	deadline = __atomic_load_n(&c->deadline, __ATOMIC_RELAXED);

			if (deadline != 0 && now >= deadline && !c->cut && c->fd >= 0)
			{
				/* MHD sees the hang-up and closes the connection itself */
				shutdown(c->fd, SHUT_RDWR);
				c->cut = true;
			}
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += WATCHDOG_TICK_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L)
		{
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&wake, &lock, &until);
	}
	pthread_mutex_unlock(&lock);
	return NULL;
}

/* iq_http_conns_answering: how many connections are answering a request */
int
iq_http_conns_answering(void)
{
	int			n = 0;
	HttpConn   *c;

	pthread_mutex_lock(&lock);
	for (c = conns; c != NULL; c = c->next)
		if (__atomic_load_n(&c->phase, __ATOMIC_RELAXED) == PHASE_ANSWER)
			n++;
	pthread_mutex_unlock(&lock);
	return n;
}

/* iq_http_conns_start: start the watchdog (before MHD starts); false with errno */
bool
iq_http_conns_start(void)
{
	pthread_condattr_t attr;
	int			rc;

	if (running)
		return true;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&wake, &attr);
	pthread_condattr_destroy(&attr);
	stopping = false;
	rc = iq_thread_create(&watchdog, NULL, watchdog_main, NULL);
	if (rc != 0)
	{
		pthread_cond_destroy(&wake);
		errno = rc;
		return false;
	}
	running = true;
	return true;
}

/* iq_http_conns_stop: stop the watchdog (after MHD stopped: no records left) */
void
iq_http_conns_stop(void)
{
	if (!running)
		return;
	pthread_mutex_lock(&lock);
	stopping = true;
	pthread_cond_signal(&wake);
	pthread_mutex_unlock(&lock);
	pthread_join(watchdog, NULL);
	pthread_cond_destroy(&wake);
	running = false;
}

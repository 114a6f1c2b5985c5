/*-------------------------------------------------------------------------
 * channel.c
 *	  A backend's channels to workers (see channel.h): the framing of a
 *	  request, the answer's bytes, the 101 of a fresh TCP connection taken
 *	  off them, and the pool of idle connections.
 *
 * Connections are kept per backend and reused across queries (connecting
 * costs more than a point get).  A connection is reused only after an
 * answer was read to its end; the end of a fetch reads the short rest of
 * an answer it stopped early (a LIMIT met: fetch_read.c, iq_fetch_drain)
 * so that it can be; one abandoned midway with more in flight (an error, a
 * cancel, a long remainder) is closed.  Two fetches
 * may be open at once (a nested loop), so idle connections are a small
 * pool per endpoint, not a single socket.  A reused connection that fails
 * before the first byte of the answer means the worker restarted: the
 * request is sent again on a fresh connection, once.
 *
 * The worker closes a connection idle for iq_fdw.stream_idle_timeout; a
 * pooled one it closed fails before the first byte of its answer, like
 * one of a restarted worker, and is replaced the same way.
 *
 * A fresh TCP connection sends the upgrade request and the first wire
 * request in one write; the 101's head is taken off the answer before the
 * wire bytes.  An instance that answers anything but 101 cannot be read.
 * Over TLS the same bytes go through libcurl (channel_io.c); what is sent
 * is laid out once in the channel's outbox, so a send TLS could not
 * finish is retried from the same buffer.  Idle TCP connections are
 * closed when the TLS material changes (iq_chan_drop_idle_tcp, called by
 * channel_tls.c).
 *
 * With TLS on, another instance is asked by POST (channel_post.c): no
 * head to strip, curl's write callback fills the inbox, and a POST
 * connection is pooled once curl saw its HTTP answer end.
 *
 * Sockets are non-blocking; the caller waits on them (iq_chan_wait) with
 * its own timeouts and cancel checks.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"

#include "common/peer_api.h"
#include "src/channel.h"

#define IDLE_MAX 8				/* idle connections in all */
#define IDLE_PER_ENDPOINT 2
#define SEND_SLICE_MS 100

typedef struct IdleConn
{
	char		endpoint[IQ_CHAN_ENDPOINT_LEN];
	IqChanConn	conn;
} IdleConn;

static IdleConn idle[IDLE_MAX];	/* oldest first */
static int	nidle = 0;

static void open_and_send(IqChannel *ch);

/* iq_chan_now_us: a monotonic clock for deadlines */
int64
iq_chan_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* forget_conn: conn holds nothing (closed, or handed on) */
static void
forget_conn(IqChanConn *conn)
{
	conn->fd = -1;
	conn->easy = conn->multi = NULL;
	conn->tls = false;
	conn->post = NULL;
}

/* holding: whether conn holds a connection (or POST handles) */
static bool
holding(const IqChanConn *conn)
{
	return conn->fd >= 0 || conn->easy != NULL;
}

/* close_conn: close a connection however it was opened */
static void
close_conn(IqChanConn *conn)
{
	if (conn->post != NULL)
		iq_post_close(conn);
	else if (conn->easy != NULL)
		iq_tcp_close(conn);		/* curl closes the socket it opened */
	else if (conn->fd >= 0)
		close(conn->fd);
	forget_conn(conn);
}

/* fail: record why the answer cannot be read, a sentence */
static void
fail(IqChannel *ch, const char *what)
{
	strlcpy(ch->error, what, sizeof(ch->error));
	ch->failed = true;
	ch->done = true;
	close_conn(&ch->conn);
}

/* fail_why: fail with "what: why." (why: TLS's text, or NULL for errno's) */
static void
fail_why(IqChannel *ch, const char *what, const char *why)
{
	char		sentence[sizeof(ch->error)];

	snprintf(sentence, sizeof(sentence), "%s: %s.", what, why ? why : strerror(errno));
	fail(ch, sentence);
}

/*
 * gone: another instance closed or reset a connection (err: its errno)
 * before any byte of the answer, as one does while it stops: the caller
 * may wait for its partitions to move rather than fail.
 */
static void
gone(IqChannel *ch, int err)
{
	if (!ch->local && ch->received == 0 &&
		(err == ECONNRESET || err == EPIPE || err == ECONNREFUSED))
		ch->unreachable = true;
}

/* ---------------------------------------------------------------------
 * The idle pool
 * ---------------------------------------------------------------------
 */

/* drop_idle: close the idle connections to an endpoint (it restarted) */
static void
drop_idle(const char *endpoint)
{
	int			i = 0;

	while (i < nidle)
	{
		if (strcmp(idle[i].endpoint, endpoint) == 0)
		{
			close_conn(&idle[i].conn);
			memmove(&idle[i], &idle[i + 1], sizeof(IdleConn) * (nidle - i - 1));
			nidle--;
		}
		else
			i++;
	}
}

/* iq_chan_drop_idle_tcp: close every idle TCP connection (the TLS material changed) */
void
iq_chan_drop_idle_tcp(void)
{
	int			i = 0;

	while (i < nidle)
	{
		if (idle[i].conn.easy != NULL)
		{
			close_conn(&idle[i].conn);
			memmove(&idle[i], &idle[i + 1], sizeof(IdleConn) * (nidle - i - 1));
			nidle--;
		}
		else
			i++;
	}
}

/* take_idle: the most recently pooled connection to endpoint, if any */
static bool
take_idle(const char *endpoint, IqChanConn *conn)
{
	int			i;

	for (i = nidle - 1; i >= 0; i--)
		if (strcmp(idle[i].endpoint, endpoint) == 0)
		{
			*conn = idle[i].conn;
			memmove(&idle[i], &idle[i + 1], sizeof(IdleConn) * (nidle - i - 1));
			nidle--;
			return true;
		}
	return false;
}

/* put_idle: pool a connection, closing what exceeds the bounds */
static void
put_idle(const char *endpoint, IqChanConn *conn)
{
	int			same = 0;
	int			i;

	for (i = 0; i < nidle; i++)
		if (strcmp(idle[i].endpoint, endpoint) == 0)
			same++;
	if (same >= IDLE_PER_ENDPOINT)
	{
		close_conn(conn);
		return;
	}
	if (nidle == IDLE_MAX)
	{
		close_conn(&idle[0].conn);
		memmove(&idle[0], &idle[1], sizeof(IdleConn) * (nidle - 1));
		nidle--;
	}
	strlcpy(idle[nidle].endpoint, endpoint, sizeof(idle[nidle].endpoint));
	idle[nidle].conn = *conn;
	nidle++;
	forget_conn(conn);
}

/* ---------------------------------------------------------------------
 * Sending
 * ---------------------------------------------------------------------
 */

/*
 * connect_new: a fresh connection for ch; false when ch failed.  With TLS
 * on, another instance is asked by POST (channel_post.c says why), whose
 * connection is made by the first POST.
 */
static bool
connect_new(IqChannel *ch)
{
	IqConnectFailure failure = IQ_CONNECT_FAILED;
	const IqTls *tls = iq_chan_tls();

	if (ch->local ? iq_unix_connect(&ch->conn, ch->endpoint, ch->error, sizeof(ch->error)) :
		tls->on ? iq_post_open(&ch->conn, ch->host, ch->port, tls,
							   ch->error, sizeof(ch->error)) :
		iq_tcp_connect(&ch->conn, ch->host, ch->port, tls,
					   (int) ((ch->deadline - iq_chan_now_us()) / 1000),
					   ch->error, sizeof(ch->error), &failure))
		return true;
	ch->timed_out = (failure == IQ_CONNECT_TIMED_OUT);
	ch->tls_failed = (failure == IQ_CONNECT_TLS);
	ch->unreachable = (failure == IQ_CONNECT_REFUSED);
	ch->failed = true;
	ch->done = true;
	return false;
}

/* send_all: write the outbox, waiting for room until the deadline; false with errno */
static bool
send_all(IqChannel *ch, const char **why)
{
	size_t		sent = 0;

	while (sent < ch->outbox.len)
	{
		ssize_t		w = iq_conn_send(&ch->conn, ch->outbox.data + sent,
									 ch->outbox.len - sent, why);

		if (w >= 0)
			sent += (size_t) w;
		else if (errno == EAGAIN || errno == EWOULDBLOCK)
		{
			/* a large request: the worker reads it as it answers others */
			struct pollfd pfd = {ch->conn.fd, POLLOUT, 0};
			int64		left = ch->deadline - iq_chan_now_us();

			if (left <= 0)
			{
				errno = ETIMEDOUT;
				return false;
			}
			(void) poll(&pfd, 1, (int) Min(left / 1000 + 1, SEND_SLICE_MS));
			CHECK_FOR_INTERRUPTS();
		}
		else if (errno != EINTR)
			return false;
	}
	return true;
}

/*
 * send_request: [the upgrade head,] u32 length, the request, laid out in
 * the outbox and sent; false with errno (and *why from TLS).  Usually one
 * write; a large request waits for room, cancellably.
 */
static bool
send_request(IqChannel *ch, const char *head, size_t head_len, const char **why)
{
	*why = NULL;
	ch->outbox.len = 0;
	iq_buf_append(&ch->outbox, head, head_len);
	iq_buf_u32(&ch->outbox, (uint32) ch->request->len);
	iq_buf_append(&ch->outbox, ch->request->data, ch->request->len);
	if (ch->outbox.oom)
	{
		iq_buf_free(&ch->outbox);
		iq_buf_init(&ch->outbox);
		errno = ENOMEM;
		return false;
	}
	return send_all(ch, why);
}

/* post_failed: record a POST that failed or was refused (ch->error says why) */
static void
post_failed(IqChannel *ch, IqConnectFailure failure, int status, bool refused)
{
	ch->timed_out = !refused && failure == IQ_CONNECT_TIMED_OUT;
	ch->tls_failed = !refused && failure == IQ_CONNECT_TLS;
	ch->refused_status = refused ? status : 0;
	ch->unreachable = !refused && (failure == IQ_CONNECT_REFUSED ||
								   (failure == IQ_CONNECT_RESET && ch->received == 0));
	ch->failed = true;
	ch->done = true;
	close_conn(&ch->conn);
}

/*
 * send_post: start ch's POST and move it on until the request went out
 * whole (or the POST is over), cancellably, by ch's deadline; where the
 * POST is, FAILED and REFUSED with ch->error set.
 */
static IqPostState
send_post(IqChannel *ch, IqConnectFailure *failure, int *status)
{
	*failure = IQ_CONNECT_FAILED;
	*status = 0;
	if (!iq_post_begin(&ch->conn, ch->request, &ch->inbox,
					   (int) ((ch->deadline - iq_chan_now_us()) / 1000)))
	{
		strlcpy(ch->error, "Could not start a curl transfer.", sizeof(ch->error));
		return IQ_POST_FAILED;
	}
	for (;;)
	{
		IqPostState st = iq_post_pump(&ch->conn, ch->error, sizeof(ch->error),
									  failure, status);
		int64		left = ch->deadline - iq_chan_now_us();

		if (st != IQ_POST_RUNNING || iq_post_sent(&ch->conn))
			return st;
		if (left <= 0)
		{
			snprintf(ch->error, sizeof(ch->error), "Could not send the request: %s.",
					 strerror(ETIMEDOUT));
			*failure = IQ_CONNECT_TIMED_OUT;
			return IQ_POST_FAILED;
		}
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		iq_post_wait(&ch->conn, (int) Min(left / 1000 + 1, SEND_SLICE_MS));
		pgstat_report_wait_end();
		CHECK_FOR_INTERRUPTS();
	}
}

/* set_endpoint: the pool's name for ch's worker; false when ch failed */
static bool
set_endpoint(IqChannel *ch)
{
	if (!ch->local)
	{
		snprintf(ch->endpoint, sizeof(ch->endpoint), "%s:%d", ch->host, ch->port);
		return true;
	}
	if (iq_unix_socket_path(ch->endpoint, sizeof(ch->endpoint)))
		return true;
	fail(ch, "The iq_fdw worker of this instance is not serving its local socket (see iq_worker()).");
	return false;
}

/* open_and_send: send ch's request over a pooled or new connection */
static void
open_and_send(IqChannel *ch)
{
	for (;;)
	{
		char		head[IQ_PEER_AUTHORITY_LEN + 160];
		size_t		head_len = 0;
		const char *why;

		ch->attempts++;
		ch->reused = (ch->attempts == 1 && take_idle(ch->endpoint, &ch->conn));
		if (!ch->reused && !connect_new(ch))
			return;
		if (ch->conn.post)
		{
			IqConnectFailure failure;
			int			status;
			IqPostState st = send_post(ch, &failure, &status);

			if (st == IQ_POST_RUNNING || st == IQ_POST_DONE)
				return;
			if (st == IQ_POST_FAILED && ch->reused && ch->attempts == 1)
			{
				close_conn(&ch->conn);
				drop_idle(ch->endpoint);
				continue;
			}
			post_failed(ch, failure, status, st == IQ_POST_REFUSED);
			return;
		}
		if (!ch->reused && !ch->local)
		{
			head_len = iq_tcp_upgrade_head(head, sizeof(head), ch->host, ch->port);
			ch->handshaking = true;
		}
		if (send_request(ch, head, head_len, &why))
			return;
		if (ch->reused && ch->attempts == 1)
		{
			/* the worker restarted since this connection was pooled */
			close_conn(&ch->conn);
			drop_idle(ch->endpoint);
			continue;
		}
		gone(ch, errno);
		fail_why(ch, ch->local ?
				 "Could not send the request to the local socket" :
				 "Could not send the request", why);
		return;
	}
}

/* iq_chan_init: a channel holding nothing (before its first start) */
void
iq_chan_init(IqChannel *ch)
{
	memset(ch, 0, sizeof(IqChannel));
	ch->conn.fd = -1;
	iq_buf_init(&ch->inbox);
	iq_buf_init(&ch->outbox);
}

/*
 * iq_chan_start: send request to host:port (or, local, to this instance's
 * worker) over a pooled or new connection, connected and sent by deadline.
 * The request stays the caller's and must live until iq_chan_finish.
 */
void
iq_chan_start(IqChannel *ch, const char *host, int port, bool local,
			  const IqBuf *request, int64 deadline)
{
	strlcpy(ch->host, host, sizeof(ch->host));
	ch->port = port;
	ch->local = local;
	ch->request = request;
	ch->deadline = deadline;
	ch->inbox.len = 0;
	ch->inbox.oom = false;
	ch->done = ch->failed = ch->timed_out = ch->tls_failed = false;
	ch->refused_status = 0;
	ch->unreachable = false;
	ch->error[0] = '\0';
	forget_conn(&ch->conn);
	ch->received = 0;
	ch->head_len = 0;
	ch->handshaking = false;
	ch->attempts = 0;
	if (set_endpoint(ch))
		open_and_send(ch);
}

/* ---------------------------------------------------------------------
 * Receiving
 * ---------------------------------------------------------------------
 */

/* take_head: strip the upgrade's answer off the first bytes; false if ch is done */
static bool
take_head(IqChannel *ch, const char *data, size_t len, size_t *used)
{
	size_t		room = sizeof(ch->head) - ch->head_len;
	size_t		n = Min(len, room);
	size_t		end;
	int			status;
	char		sentence[sizeof(ch->error)];

	memcpy(ch->head + ch->head_len, data, n);
	ch->head_len += n;
	switch (iq_tcp_upgrade_check(ch->head, ch->head_len, &end, &status))
	{
		case IQ_UPGRADE_MORE:
			if (ch->head_len == sizeof(ch->head))
			{
				fail(ch, "The answer to the upgrade request has an overlong head.");
				return false;
			}
			*used = n;
			return true;
		case IQ_UPGRADE_DONE:
			ch->handshaking = false;
			*used = n - (ch->head_len - end);
			return true;
		case IQ_UPGRADE_REFUSED:
			ch->refused_status = status;
			snprintf(sentence, sizeof(sentence),
					 "The instance answered HTTP %d to the request to upgrade %s to %s.",
					 status, IQ_PEER_STREAM_PATH, IQ_PEER_STREAM_PROTOCOL);
			fail(ch, sentence);
			return false;
		default:
			fail(ch, "The answer to the upgrade request is not HTTP.");
			return false;
	}
}

/* retry: ask again on a fresh connection if a pooled one failed before answering */
static bool
retry(IqChannel *ch)
{
	if (ch->received != 0 || !ch->reused || ch->attempts != 1)
		return false;
	/* closed before answering: a restarted worker; ask again once */
	close_conn(&ch->conn);
	drop_idle(ch->endpoint);
	open_and_send(ch);
	return true;
}

/* lost: the connection ended or failed (r = what recv returned, why TLS's text) */
static void
lost(IqChannel *ch, ssize_t r, const char *why)
{
	if (retry(ch))
		return;
	gone(ch, r == 0 ? ECONNRESET : errno);
	if (r == 0)
		fail(ch, ch->local ?
			 "The worker closed the local connection before the end of its answer." :
			 "The connection was closed before the end of the answer.");
	else
		fail_why(ch, ch->local ?
				 "Could not read from the local socket" :
				 "Could not read the answer", why);
}

/* receive_post: move ch's POST on; its bytes are in the inbox already */
static void
receive_post(IqChannel *ch)
{
	IqConnectFailure failure = IQ_CONNECT_FAILED;
	int			status = 0;
	IqPostState st = iq_post_pump(&ch->conn, ch->error, sizeof(ch->error),
								  &failure, &status);

	ch->received = iq_post_received(&ch->conn);
	if (ch->inbox.oom)
		fail(ch, "Out of memory reading an answer.");
	else if (st == IQ_POST_DONE)
		ch->done = true;
	else if (st != IQ_POST_RUNNING && !(st == IQ_POST_FAILED && retry(ch)))
		post_failed(ch, failure, status, st == IQ_POST_REFUSED);
}

/* iq_chan_receive: take what has arrived (non-blocking) into ch->inbox */
void
iq_chan_receive(IqChannel *ch)
{
	char		buf[65536];
	ssize_t		r;
	size_t		used = 0;
	const char *why;

	if (ch->done || !holding(&ch->conn))
		return;
	if (ch->conn.post)
	{
		receive_post(ch);
		return;
	}
	if (!ch->handshaking)
	{
		/* straight into the inbox: a scan's every byte once less copied */
		if (!iq_buf_reserve(&ch->inbox, sizeof(buf)))
		{
			fail(ch, "Out of memory reading an answer.");
			return;
		}
		r = iq_conn_recv(&ch->conn, ch->inbox.data + ch->inbox.len, sizeof(buf), &why);
		if (r > 0)
		{
			ch->inbox.len += (size_t) r;
			ch->received += (size_t) r;
			return;
		}
	}
	else
		r = iq_conn_recv(&ch->conn, buf, sizeof(buf), &why);
	if (r > 0)
	{
		if (ch->handshaking && !take_head(ch, buf, (size_t) r, &used))
			return;
		if (ch->handshaking)
			return;
		iq_buf_append(&ch->inbox, buf + used, (size_t) r - used);
		ch->received += (size_t) r - used;
		if (ch->inbox.oom)
			fail(ch, "Out of memory reading an answer.");
		return;
	}
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	lost(ch, r, why);
}

/* iq_chan_wait: up to timeout_ms for ch's connection to have bytes */
void
iq_chan_wait(IqChannel *ch, int timeout_ms)
{
	struct pollfd pfd = {ch->conn.fd, POLLIN, 0};

	if (ch->conn.post)
		iq_post_wait(&ch->conn, timeout_ms);
	else if (ch->conn.fd >= 0)
		(void) poll(&pfd, 1, timeout_ms);
	else
		pg_usleep(timeout_ms * 1000L);
}

/*
 * iq_chan_finish: done with ch's answer; pool the connection if the caller
 * read the answer to its end (answer_read) and nothing of it is left.
 */
void
iq_chan_finish(IqChannel *ch, bool answer_read)
{
	if (!holding(&ch->conn))
		return;
	if (answer_read && !ch->failed && ch->inbox.len == 0 &&
		(ch->conn.post ? iq_post_end(&ch->conn) : ch->conn.fd >= 0))
		put_idle(ch->endpoint, &ch->conn);
	else
		close_conn(&ch->conn);
	forget_conn(&ch->conn);
}

/* iq_chan_free: finish ch without pooling, and free its inbox */
void
iq_chan_free(IqChannel *ch)
{
	iq_chan_finish(ch, false);
	iq_buf_free(&ch->inbox);
	iq_buf_free(&ch->outbox);
}

/*-------------------------------------------------------------------------
 * channel.c
 *	  A backend's socket channels to workers: the Unix socket of its own
 *	  instance's worker (published in iq_shared->local_socket), and, for
 *	  other instances, an HTTP connection upgraded to the same stream
 *	  (GET /iq/v1/stream, see upgrade_client.c).  Both carry a u32 length
 *	  and a wire request, and the wire answer back.
 *
 * Connections are kept per backend and reused across queries (connecting
 * costs more than a point get).  A connection is reused only after an
 * answer was read to its end; one abandoned midway (LIMIT, error, cancel)
 * still has the rest of its answer in flight, so it is closed.  Two fetches
 * may be open at once (a nested loop), so idle connections are a small
 * pool per endpoint, not a single socket.  A reused connection that fails
 * before the first byte of the answer means the worker restarted: the
 * request is sent again on a fresh connection, once.
 *
 * The worker closes a connection idle for iq_fdw.stream_idle_timeout; a
 * pooled one it closed fails before the first byte of its answer, like
 * one of a restarted worker, and is replaced the same way.
 *
 * A fresh peer connection sends the upgrade request and the first wire
 * request in one write; the 101's head is taken off the answer before the
 * wire bytes.  A peer that answers anything but 101 (a worker from before
 * the stream) is asked over POST /iq/v1/read instead (peer_client.c).
 *
 * Sockets are non-blocking; fetch.c waits on them with poll and its own
 * timeouts and cancel checks.  Failures are recorded in the source, never
 * raised here, so fetch.c can release everything before it reports them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "src/fetch_internal.h"
#include "miscadmin.h"
#include "common/settings.h"
#include "common/shmem.h"
#include "storage/lwlock.h"

#define IDLE_MAX 8				/* idle connections in all */
#define IDLE_PER_ENDPOINT 2

typedef struct IdleConn
{
	char		endpoint[IQ_ENDPOINT_LEN];
	IqChanConn	conn;
} IdleConn;

static IdleConn idle[IDLE_MAX];	/* oldest first */
static int	nidle = 0;

/* close_conn: close a connection however it was opened */
static void
close_conn(IqChanConn *conn)
{
	if (conn->easy != NULL)
		iq_upgrade_close(conn);	/* curl closes the socket it opened */
	else if (conn->fd >= 0)
		close(conn->fd);
	conn->fd = -1;
	conn->easy = conn->multi = NULL;
}

/* fail: record why the read cannot go on */
static void
fail(IqFetchSource *src, const char *what, int err)
{
	if (err)
		snprintf(src->error, sizeof(src->error), "%s: %s", what, strerror(err));
	else
		snprintf(src->error, sizeof(src->error), "%s", what);
	src->failed = true;
	src->done = true;
	close_conn(&src->conn);
}

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
	conn->fd = -1;
	conn->easy = conn->multi = NULL;
}

/* connect_unix: a fresh non-blocking connection to path, -1 with errno */
static int
connect_unix(const char *path)
{
	struct sockaddr_un addr;
	int			fd;

	if (strlen(path) >= sizeof(addr.sun_path))
	{
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	strlcpy(addr.sun_path, path, sizeof(addr.sun_path));
	/* a Unix connect completes at once (or fails): no need to poll it */
	if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0)
	{
		int			e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	if (!pg_set_noblock(fd))
	{
		int			e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* connect_new: a fresh connection for src; false when src failed */
static bool
connect_new(IqFetchSource *src)
{
	src->conn.easy = src->conn.multi = NULL;
	src->conn.fd = -1;
	if (!src->target.is_local)
		return iq_upgrade_connect(src);
	/* a relative name is in the data directory, our working directory */
	src->conn.fd = connect_unix(src->endpoint);
	if (src->conn.fd < 0)
	{
		char		what[MAXPGPATH + IQ_ENDPOINT_LEN + 64];
		int			e = errno;

		snprintf(what, sizeof(what), "could not connect to the local socket \"%s%s%s\"",
				 is_absolute_path(src->endpoint) ? "" : DataDir,
				 is_absolute_path(src->endpoint) ? "" : "/", src->endpoint);
		fail(src, what, e);
		return false;
	}
	return true;
}

/*
 * send_request: [the upgrade head,] u32 length, the request; false with
 * errno.  Usually one sendmsg; a large request waits for room, cancellably.
 */
static bool
send_request(IqFetchSource *src, const char *head, size_t head_len)
{
	unsigned char len[4];
	struct iovec parts[3];
	size_t		total = 0;
	size_t		sent = 0;
	/* sending is part of the call's first iq_fdw.peer_timeout (fetch.c) */
	int64		deadline = src->call_started + (int64) iq_peer_timeout_ms * 1000;
	int			i;

	len[0] = (unsigned char) (src->request.len >> 24);
	len[1] = (unsigned char) (src->request.len >> 16);
	len[2] = (unsigned char) (src->request.len >> 8);
	len[3] = (unsigned char) src->request.len;
	parts[0].iov_base = (void *) head;
	parts[0].iov_len = head_len;
	parts[1].iov_base = len;
	parts[1].iov_len = 4;
	parts[2].iov_base = src->request.data;
	parts[2].iov_len = src->request.len;
	for (i = 0; i < 3; i++)
		total += parts[i].iov_len;
	while (sent < total)
	{
		struct iovec iov[3];
		struct msghdr msg;
		size_t		skip = sent;
		ssize_t		w;

		/* what is left of the three parts */
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		for (i = 0; i < 3; i++)
		{
			if (skip >= parts[i].iov_len)
			{
				skip -= parts[i].iov_len;
				continue;
			}
			iov[msg.msg_iovlen].iov_base = (char *) parts[i].iov_base + skip;
			iov[msg.msg_iovlen].iov_len = parts[i].iov_len - skip;
			msg.msg_iovlen++;
			skip = 0;
		}
		w = sendmsg(src->conn.fd, &msg, MSG_NOSIGNAL);
		if (w >= 0)
		{
			sent += (size_t) w;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
		{
			/* a large request: the worker reads it as it answers others */
			struct pollfd pfd = {src->conn.fd, POLLOUT, 0};
			int64		left = deadline - iq_fetch_now_us();

			if (left <= 0)
			{
				errno = ETIMEDOUT;
				return false;
			}
			(void) poll(&pfd, 1, (int) Min(left / 1000 + 1, 100));
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		return false;
	}
	return true;
}

/* set_endpoint: the pool's name for src's worker; false when src failed */
static bool
set_endpoint(IqFetchSource *src)
{
	if (!src->target.is_local)
	{
		snprintf(src->endpoint, sizeof(src->endpoint), "%s:%d",
				 src->target.host, src->target.port);
		return true;
	}
	LWLockAcquire(iq_shared->lock, LW_SHARED);
	strlcpy(src->endpoint, iq_shared->local_socket, sizeof(src->endpoint));
	LWLockRelease(iq_shared->lock);
	if (src->endpoint[0] == '\0')
	{
		fail(src, "the iq_fdw worker of this instance is not serving its local socket (see iq_worker())", 0);
		return false;
	}
	return true;
}

/* iq_chan_serves: is target read over a socket channel (else over POST)? */
bool
iq_chan_serves(const IqTarget *target)
{
	return target->is_local || iq_upgrade_offered(target->host, target->port);
}

/* iq_chan_start: send src's request over a pooled or new connection */
void
iq_chan_start(IqFetchSource *src)
{
	src->conn.fd = -1;
	src->conn.easy = src->conn.multi = NULL;
	src->received = 0;
	src->head_len = 0;
	src->handshaking = false;
	src->last_activity = iq_fetch_now_us();
	if (!set_endpoint(src))
		return;

	for (;;)
	{
		const char *head = NULL;
		size_t		head_len = 0;

		src->attempts++;
		src->reused = (src->attempts == 1 && take_idle(src->endpoint, &src->conn));
		if (!src->reused)
		{
			if (!connect_new(src))
				return;
			if (!src->target.is_local)
			{
				head = iq_upgrade_head(src, &head_len);
				src->handshaking = true;
			}
		}
		if (send_request(src, head, head_len))
			return;
		if (src->reused && src->attempts == 1)
		{
			/* the worker restarted since this connection was pooled */
			close_conn(&src->conn);
			drop_idle(src->endpoint);
			continue;
		}
		fail(src, src->target.is_local ?
			 "could not send the request to the local socket" :
			 "could not send the request", errno);
		return;
	}
}

/* take_head: strip the upgrade's answer off the first bytes; false if src is done */
static bool
take_head(IqFetchSource *src, const char *data, size_t len, size_t *used)
{
	size_t		room = sizeof(src->head) - src->head_len;
	size_t		n = Min(len, room);
	size_t		end;
	int			status;

	memcpy(src->head + src->head_len, data, n);
	src->head_len += n;
	switch (iq_upgrade_check(src->head, src->head_len, &end, &status))
	{
		case IQ_UPGRADE_MORE:
			if (src->head_len == sizeof(src->head))
			{
				fail(src, "the answer to the upgrade request has an overlong head", 0);
				return false;
			}
			*used = n;
			return true;
		case IQ_UPGRADE_DONE:
			src->handshaking = false;
			*used = n - (src->head_len - end);
			return true;
		case IQ_UPGRADE_REFUSED:
			/* an older worker: this source, and later ones, over POST */
			close_conn(&src->conn);
			iq_upgrade_refused(src, status);
			src->sock = false;
			iq_peer_start(src);
			return false;
		default:
			fail(src, "the answer to the upgrade request is not HTTP", 0);
			return false;
	}
}

/* iq_chan_receive: take what has arrived (non-blocking) into src->inbox */
void
iq_chan_receive(IqFetchSource *src)
{
	char		buf[65536];
	ssize_t		r;
	size_t		used = 0;

	if (src->done || src->conn.fd < 0)
		return;
	r = recv(src->conn.fd, buf, sizeof(buf), 0);
	if (r > 0)
	{
		src->last_activity = iq_fetch_now_us();
		if (src->handshaking && !take_head(src, buf, (size_t) r, &used))
			return;
		if (src->handshaking)
			return;
		iq_buf_append(&src->inbox, buf + used, (size_t) r - used);
		src->received += (size_t) r - used;
		if (src->inbox.oom)
			fail(src, "out of memory reading an answer", 0);
		return;
	}
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (src->received == 0 && src->reused && src->attempts == 1)
	{
		/* closed before answering: a restarted worker; ask again once */
		close_conn(&src->conn);
		drop_idle(src->endpoint);
		iq_chan_start(src);
		return;
	}
	if (r == 0)
		fail(src, src->target.is_local ?
			 "the worker closed the local connection before the end of its answer" :
			 "the connection was closed before the end of the answer", 0);
	else
		fail(src, src->target.is_local ?
			 "could not read from the local socket" :
			 "could not read the answer", errno);
}

/* iq_chan_finish: pool the connection if its answer was read to the end */
void
iq_chan_finish(IqFetchSource *src)
{
	if (src->conn.fd < 0 && src->conn.easy == NULL)
		return;
	if (src->ended && !src->failed && src->inbox.len == 0 && src->conn.fd >= 0)
		put_idle(src->endpoint, &src->conn);
	else
		close_conn(&src->conn);
	src->conn.fd = -1;
	src->conn.easy = src->conn.multi = NULL;
}

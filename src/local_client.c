/*-------------------------------------------------------------------------
 * local_client.c
 *	  A backend's connections to its own instance's worker: the Unix socket
 *	  the worker publishes in iq_shared->local_socket.
 *
 * Connections are kept per backend and reused across queries (connecting
 * costs more than a point get).  A connection is reused only after an
 * answer was read to its end; one abandoned midway (LIMIT, error, cancel)
 * still has the rest of its answer in flight, so it is closed.  Two fetches
 * may be open at once (a nested loop), so idle connections are a small
 * pool, not a single socket.  A reused connection that fails before the
 * first byte of the answer means the worker restarted: the request is sent
 * again on a fresh connection, once.
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

#include "fetch_internal.h"
#include "miscadmin.h"
#include "settings.h"
#include "shmem.h"
#include "storage/lwlock.h"

#define IDLE_MAX 2

static int	idle_fds[IDLE_MAX];
static int	nidle = 0;
static char idle_path[IQ_SOCKET_PATH_LEN];

/* fail: record why the local read cannot go on */
static void
fail(IqFetchSource *src, const char *what, int err)
{
	if (err)
		snprintf(src->error, sizeof(src->error), "%s: %s", what, strerror(err));
	else
		snprintf(src->error, sizeof(src->error), "%s", what);
	src->failed = true;
	src->done = true;
	if (src->fd >= 0)
		close(src->fd);
	src->fd = -1;
}

/* drop_idle: close every idle connection (the worker moved its socket) */
static void
drop_idle(void)
{
	while (nidle > 0)
		close(idle_fds[--nidle]);
}

/* connect_new: a fresh non-blocking connection to path, -1 with errno */
static int
connect_new(const char *path)
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

/* send_request: u32 length then the request; false with errno */
static bool
send_request(IqFetchSource *src)
{
	unsigned char len[4];
	struct iovec iov[2];
	size_t		total = 4 + src->request.len;
	size_t		sent = 0;
	int64		deadline = iq_fetch_now_us() + (int64) iq_peer_timeout_ms * 1000;

	len[0] = (unsigned char) (src->request.len >> 24);
	len[1] = (unsigned char) (src->request.len >> 16);
	len[2] = (unsigned char) (src->request.len >> 8);
	len[3] = (unsigned char) src->request.len;
	while (sent < total)
	{
		struct msghdr msg;
		ssize_t		w;

		memset(&msg, 0, sizeof(msg));
		if (sent < 4)
		{
			iov[0].iov_base = len + sent;
			iov[0].iov_len = 4 - sent;
			iov[1].iov_base = src->request.data;
			iov[1].iov_len = src->request.len;
			msg.msg_iovlen = 2;
		}
		else
		{
			iov[0].iov_base = src->request.data + (sent - 4);
			iov[0].iov_len = total - sent;
			msg.msg_iovlen = 1;
		}
		msg.msg_iov = iov;
		w = sendmsg(src->fd, &msg, MSG_NOSIGNAL);
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
			struct pollfd pfd = {src->fd, POLLOUT, 0};
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

/* iq_local_start: send src's request over a pooled or new connection */
void
iq_local_start(IqFetchSource *src)
{
	char		path[IQ_SOCKET_PATH_LEN];

	src->fd = -1;
	src->received = 0;
	src->last_activity = iq_fetch_now_us();
	LWLockAcquire(iq_shared->lock, LW_SHARED);
	strlcpy(path, iq_shared->local_socket, sizeof(path));
	LWLockRelease(iq_shared->lock);
	if (path[0] == '\0')
	{
		fail(src, "the iq_fdw worker of this instance is not serving its local socket (see iq_worker())", 0);
		return;
	}
	if (strcmp(path, idle_path) != 0)
	{
		drop_idle();
		strlcpy(idle_path, path, sizeof(idle_path));
	}

	for (;;)
	{
		src->attempts++;
		if (nidle > 0 && src->attempts == 1)
		{
			src->fd = idle_fds[--nidle];
			src->reused = true;
		}
		else
		{
			src->fd = connect_new(path);
			src->reused = false;
			if (src->fd < 0)
			{
				char		what[IQ_SOCKET_PATH_LEN + 64];

				snprintf(what, sizeof(what), "could not connect to the local socket \"%s\"", path);
				fail(src, what, errno);
				return;
			}
		}
		if (send_request(src))
			return;
		if (src->reused && src->attempts == 1)
		{
			/* the worker restarted since this connection was pooled */
			close(src->fd);
			src->fd = -1;
			drop_idle();
			continue;
		}
		fail(src, "could not send the request to the local socket", errno);
		return;
	}
}

/* iq_local_receive: take what has arrived (non-blocking) into src->inbox */
void
iq_local_receive(IqFetchSource *src)
{
	char		buf[65536];
	ssize_t		r;

	if (src->done || src->fd < 0)
		return;
	r = recv(src->fd, buf, sizeof(buf), 0);
	if (r > 0)
	{
		iq_buf_append(&src->inbox, buf, (size_t) r);
		src->received += (size_t) r;
		src->last_activity = iq_fetch_now_us();
		if (src->inbox.oom)
			fail(src, "out of memory reading the local socket", 0);
		return;
	}
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (src->received == 0 && src->reused && src->attempts == 1)
	{
		/* closed before answering: a restarted worker; ask again once */
		close(src->fd);
		src->fd = -1;
		drop_idle();
		iq_local_start(src);
		return;
	}
	if (r == 0)
		fail(src, "the worker closed the local connection before the end of its answer", 0);
	else
		fail(src, "could not read from the local socket", errno);
}

/* iq_local_finish: pool the connection if its answer was read to the end */
void
iq_local_finish(IqFetchSource *src)
{
	if (src->fd < 0)
		return;
	if (src->ended && !src->failed && src->inbox.len == 0 && nidle < IDLE_MAX)
		idle_fds[nidle++] = src->fd;
	else
		close(src->fd);
	src->fd = -1;
}

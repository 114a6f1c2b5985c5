/*-------------------------------------------------------------------------
 * local_server.c
 *	  The local channel: backends of this instance read its state over a
 *	  Unix-domain socket, with the same compact protocol (and the same
 *	  handler, read_handler.c) as the peer HTTP endpoint.
 *
 * A request is a u32 length and the wire request; the answer is the wire
 * response stream.  A backend keeps its connection across queries, so
 * each connection has a thread of its own that waits in recv() between
 * requests: a point get costs one write and one read on each side, a
 * round trip of a few microseconds, with no HTTP and no event loop hop.
 * Connections are bounded (LOCAL_MAX_CONNECTIONS); beyond that a backend
 * is told so and its connection closed.  The socket is 0600 in a directory
 * of the PostgreSQL user: only that user's processes can connect.
 *
 * Threads are created with every signal blocked, so the worker's signals
 * reach its main thread; none of them calls PostgreSQL.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* accept4, pipe2 */
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "read_handler.h"
#include "servers.h"
#include "wire.h"

#define LOCAL_MAX_CONNECTIONS	1024
#define LOCAL_BODY_TIMEOUT_MS	10000	/* a request once started */
#define LOCAL_SEND_TIMEOUT_S	30	/* a backend that stopped reading */
#define LOCAL_CHUNK				(64 * 1024)
#define LOCAL_STACK_SIZE		(512 * 1024)

typedef struct Conn
{
	int			fd;				/* -1 when the slot is free */
} Conn;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gone = PTHREAD_COND_INITIALIZER;
static Conn conns[LOCAL_MAX_CONNECTIONS];
static int	nthreads = 0;		/* connection threads alive */
static bool stopping = false;
static bool running = false;
static int	listen_fd = -1;
static int	wake_pipe[2] = {-1, -1};
static pthread_t accept_thread;
static char socket_path[108];

/* send_all: write everything or fail (the backend went away or stalled) */
static bool
send_all(int fd, const char *p, size_t n)
{
	while (n > 0)
	{
		ssize_t		w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			return false;
		}
		p += w;
		n -= (size_t) w;
	}
	return true;
}

/* recv_more: append what arrives to buf; timeout_ms -1 waits for ever */
static bool
recv_more(int fd, IqBuf *buf, int timeout_ms)
{
	ssize_t		r;

	if (timeout_ms >= 0)
	{
		struct pollfd pfd = {fd, POLLIN, 0};
		int			rc;

		do
			rc = poll(&pfd, 1, timeout_ms);
		while (rc < 0 && errno == EINTR);
		if (rc <= 0)
			return false;
	}
	if (!iq_buf_reserve(buf, LOCAL_CHUNK))
		return false;
	do
		r = recv(fd, buf->data + buf->len, buf->cap - buf->len, 0);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return false;
	buf->len += (size_t) r;
	return true;
}

/* answer: produce and send the whole response for one request */
static bool
answer(int fd, const char *req, size_t len, IqBuf *out)
{
	IqReadStream *s = iq_read_begin(req, len);
	bool		more = true;
	bool		ok = true;

	if (s == NULL)
		return false;
	while (more && ok)
	{
		out->len = 0;
		more = iq_read_produce(s, out, LOCAL_CHUNK);
		if (out->oom)
		{
			ok = false;
			break;
		}
		ok = send_all(fd, out->data, out->len);
	}
	iq_read_finish(s);
	return ok;
}

/* serve: one backend's connection, request after request */
static void
serve(int fd)
{
	IqBuf		in;
	IqBuf		out;

	iq_buf_init(&in);
	iq_buf_init(&out);
	for (;;)
	{
		uint32_t	need;
		const unsigned char *p;

		/* idle between queries: wait for ever (stop wakes us by shutdown) */
		while (in.len < 4)
			if (!recv_more(fd, &in, -1))
				goto done;
		p = (const unsigned char *) in.data;
		need = ((uint32_t) p[0] << 24) | ((uint32_t) p[1] << 16) |
			((uint32_t) p[2] << 8) | p[3];
		if (need > IQ_WIRE_MAX_REQUEST)
		{
			/* the stream cannot be resynchronised: answer and hang up */
			out.len = 0;
			iq_wire_response_error(&out, IQ_WIRE_BAD_REQUEST, "request too large");
			if (!out.oom)
				send_all(fd, out.data, out.len);
			goto done;
		}
		while (in.len < 4 + (size_t) need)
			if (!recv_more(fd, &in, LOCAL_BODY_TIMEOUT_MS))
				goto done;
		if (!answer(fd, in.data + 4, need, &out))
			goto done;
		/* keep bytes of a request sent right behind this one */
		memmove(in.data, in.data + 4 + need, in.len - 4 - need);
		in.len -= 4 + need;
		/* don't hold on to a large buffer after a large request */
		if (in.cap > 4 * LOCAL_CHUNK && in.len == 0)
			iq_buf_free(&in);
		if (out.cap > 4 * LOCAL_CHUNK)
			iq_buf_free(&out);
	}
done:
	iq_buf_free(&in);
	iq_buf_free(&out);
}

/* conn_main: a connection thread; frees its slot before closing the fd */
static void *
conn_main(void *arg)
{
	Conn	   *c = arg;
	int			fd = c->fd;

	pthread_setname_np(pthread_self(), "iq_local_conn");
	serve(fd);
	pthread_mutex_lock(&lock);
	c->fd = -1;					/* stop must no longer shut this fd down */
	close(fd);
	nthreads--;
	pthread_cond_broadcast(&gone);
	pthread_mutex_unlock(&lock);
	return NULL;
}

/* refuse: tell a backend beyond the limit why, then hang up */
static void
refuse(int fd)
{
	IqBuf		out;

	iq_buf_init(&out);
	iq_wire_response_error(&out, IQ_WIRE_INTERNAL,
						   "too many local connections to the iq_fdw worker");
	if (!out.oom)
		send_all(fd, out.data, out.len);
	iq_buf_free(&out);
	close(fd);
}

/* start_conn: a thread for an accepted connection, if a slot is free */
static void
start_conn(int fd)
{
	pthread_attr_t attr;
	pthread_t	t;
	struct timeval tv = {LOCAL_SEND_TIMEOUT_S, 0};
	Conn	   *slot = NULL;
	int			i;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	pthread_mutex_lock(&lock);
	for (i = 0; i < LOCAL_MAX_CONNECTIONS && !stopping; i++)
		if (conns[i].fd < 0)
		{
			slot = &conns[i];
			break;
		}
	if (slot == NULL)
	{
		pthread_mutex_unlock(&lock);
		refuse(fd);
		return;
	}
	slot->fd = fd;
	nthreads++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, LOCAL_STACK_SIZE);
	if (pthread_create(&t, &attr, conn_main, slot) != 0)
	{
		slot->fd = -1;
		nthreads--;
		pthread_mutex_unlock(&lock);
		pthread_attr_destroy(&attr);
		close(fd);
		return;
	}
	pthread_attr_destroy(&attr);
	pthread_mutex_unlock(&lock);
}

/* accept_main: the accept thread, until the wake pipe says stop */
static void *
accept_main(void *arg)
{
	pthread_setname_np(pthread_self(), "iq_local_accept");
	for (;;)
	{
		struct pollfd pfd[2] = {{listen_fd, POLLIN, 0}, {wake_pipe[0], POLLIN, 0}};
		int			fd;

		if (poll(pfd, 2, -1) < 0)
		{
			if (errno == EINTR)
				continue;
			break;
		}
		if (pfd[1].revents)
			break;
		fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
		{
			if (errno == EMFILE || errno == ENFILE)
				poll(NULL, 0, 100);	/* let descriptors free up */
			continue;
		}
		start_conn(fd);
	}
	return NULL;
}

/* fail_start: undo a partial start, with a message naming what failed */
static bool
fail_start(char **err, const char *what, int e)
{
	char		msg[512];

	snprintf(msg, sizeof(msg), "local socket \"%s\": %s: %s", socket_path, what, strerror(e));
	*err = strdup(msg);
	if (listen_fd >= 0)
		close(listen_fd);
	listen_fd = -1;
	if (wake_pipe[0] >= 0)
	{
		close(wake_pipe[0]);
		close(wake_pipe[1]);
	}
	wake_pipe[0] = wake_pipe[1] = -1;
	unlink(socket_path);
	return false;
}

/* iq_local_server_start: listen on config->socket_path and start accepting */
bool
iq_local_server_start(const IqServerConfig *config, char **err)
{
	struct sockaddr_un addr;
	sigset_t	all;
	sigset_t	old;
	int			rc;
	int			i;

	*err = NULL;
	if (running)
		return true;
	iq_read_set_partitioner(config->partitioner);
	snprintf(socket_path, sizeof(socket_path), "%s", config->socket_path);
	if (strlen(config->socket_path) >= sizeof(addr.sun_path))
	{
		*err = strdup("local socket path too long");
		return false;
	}
	for (i = 0; i < LOCAL_MAX_CONNECTIONS; i++)
		conns[i].fd = -1;
	stopping = false;

	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0)
		return fail_start(err, "socket", errno);
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, socket_path, strlen(socket_path));
	/* a socket file left by a worker that crashed */
	unlink(socket_path);
	{
		mode_t		old_umask = umask(0077);

		rc = bind(listen_fd, (struct sockaddr *) &addr, sizeof(addr));
		umask(old_umask);
	}
	if (rc < 0)
		return fail_start(err, "bind", errno);
	if (chmod(socket_path, 0600) < 0)
		return fail_start(err, "chmod", errno);
	if (listen(listen_fd, 128) < 0)
		return fail_start(err, "listen", errno);
	if (pipe2(wake_pipe, O_CLOEXEC) < 0)
		return fail_start(err, "pipe", errno);

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&accept_thread, NULL, accept_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return fail_start(err, "starting the accept thread", rc);
	running = true;
	return true;
}

/* iq_local_server_stop: stop accepting, hang up on every backend, wait */
void
iq_local_server_stop(void)
{
	int			i;
	ssize_t		w;

	if (!running)
		return;
	do
		w = write(wake_pipe[1], "x", 1);
	while (w < 0 && errno == EINTR);
	pthread_join(accept_thread, NULL);
	close(listen_fd);
	listen_fd = -1;
	unlink(socket_path);
	close(wake_pipe[0]);
	close(wake_pipe[1]);
	wake_pipe[0] = wake_pipe[1] = -1;

	pthread_mutex_lock(&lock);
	stopping = true;
	for (i = 0; i < LOCAL_MAX_CONNECTIONS; i++)
		if (conns[i].fd >= 0)
			shutdown(conns[i].fd, SHUT_RDWR);	/* wakes recv() and send() */
	while (nthreads > 0)
		pthread_cond_wait(&gone, &lock);
	pthread_mutex_unlock(&lock);
	running = false;
}

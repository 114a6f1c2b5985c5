/*-------------------------------------------------------------------------
 * local_server.c
 *	  The local channel: backends of this instance read its state over a
 *	  Unix-domain socket, with the same compact protocol (and the same
 *	  handler, read_handler.c) as the peer HTTP endpoint.
 *
 * This file listens and accepts; every connection is served by a thread
 * of its own (wire_conn.c, shared with HTTP connections upgraded to the
 * same stream): a request is a u32 length and the wire request, the
 * answer is the wire response stream, a point get one write and one read
 * on each side.  The socket is 0600 in a directory of the PostgreSQL
 * user: only that user's processes can connect.
 *
 * The accept thread is created with every signal blocked, so the worker's
 * signals reach its main thread; no thread here calls PostgreSQL.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* accept4, pipe2 */
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "read_handler.h"
#include "servers.h"
#include "thread.h"
#include "wire.h"
#include "wire_conn.h"

static void close_fd(int fd, void *arg);

static IqWireConnSet conns =
IQ_WIRE_CONN_SET("iq_local_conn", "too many local connections to the iq_fdw worker", close_fd);
static bool running = false;
static int	listen_fd = -1;
static int	wake_pipe[2] = {-1, -1};
static pthread_t accept_thread;
static char socket_path[108];

/* close_fd: a local connection is a plain socket */
static void
close_fd(int fd, void *arg)
{
	close(fd);
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
		iq_wire_conn_serve(&conns, fd, NULL, NULL, 0);
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
	int			rc;

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
	iq_wire_conn_open(&conns);

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

	rc = iq_thread_create(&accept_thread, NULL, accept_main, NULL);
	if (rc != 0)
		return fail_start(err, "starting the accept thread", rc);
	running = true;
	return true;
}

/* iq_local_server_stop: stop accepting, hang up on every backend, wait */
void
iq_local_server_stop(void)
{
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

	iq_wire_conn_stop(&conns);
	running = false;
}

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
 * on each side.
 *
 * Where: iq_fdw.sock (the name engine_main.c gives) in the data directory,
 * which only the PostgreSQL user can write (a socket in /tmp could be
 * bound first by any local user, and would be shared by two clusters on
 * one port), named relative to it: every PostgreSQL process runs with the
 * data directory as its working directory, and a relative name fits
 * sun_path (107 bytes) however long the directory's path.  The name is
 * published in shared memory, where backends find it.  The socket is 0600:
 * only the PostgreSQL user's processes can connect.  A socket file already
 * there is removed only if nobody listens on it (a crashed worker's); one
 * with a live listener is left alone and the next of IQ_LOCAL_SOCKET_NAMES
 * names is tried (iq_fdw.sock.1, ...).  On stop the socket is removed only
 * if the file is still the one we bound.
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

#include "common/wire.h"
#include "worker/serve/read_handler.h"
#include "worker/serve/servers.h"
#include "worker/serve/conn_limits.h"
#include "worker/serve/wire_conn.h"
#include "worker/thread.h"

static void close_fd(int fd, void *arg);

static IqWireConnSet conns =
IQ_WIRE_CONN_SET("iq_local_conn", "too many local connections to the iq_fdw worker", close_fd);
static bool running = false;
static int	listen_fd = -1;
static int	wake_pipe[2] = {-1, -1};
static pthread_t accept_thread;
static char socket_path[108];
static bool bound = false;		/* socket_path is our socket */
static dev_t bound_dev;
static ino_t bound_ino;

/* the name given (iq_fdw.sock), then name.1, name.2, ... */
#define IQ_LOCAL_SOCKET_NAMES 4

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

/* unlink_ours: remove the socket file if it is still the one we bound */
static void
unlink_ours(void)
{
	struct stat st;

	if (bound && lstat(socket_path, &st) == 0 && st.st_dev == bound_dev &&
		st.st_ino == bound_ino)
		unlink(socket_path);
	bound = false;
}

/*
 * path_free: may we bind path?  True if nothing is there, or a socket
 * nobody listens on (left by a worker that died), which is removed.  A
 * socket someone listens on, or any other file, is left alone.
 */
static bool
path_free(const char *path)
{
	struct sockaddr_un addr;
	struct stat st;
	int			fd;
	int			rc;
	int			e;

	if (lstat(path, &st) != 0)
		return errno == ENOENT;
	if (!S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return false;
	memset(&addr, 0, sizeof(addr));
	addr.sun_family = AF_UNIX;
	memcpy(addr.sun_path, path, strlen(path));
	rc = connect(fd, (struct sockaddr *) &addr, sizeof(addr));
	e = errno;
	close(fd);
	if (rc == 0 || e != ECONNREFUSED)
		return false;			/* live (or its backlog is full), or not ours */
	return unlink(path) == 0 || errno == ENOENT;
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
	unlink_ours();
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
	rc = -1;
	for (int i = 0; i < IQ_LOCAL_SOCKET_NAMES && rc < 0; i++)
	{
		mode_t		old_umask;

		if (i == 0)
			snprintf(socket_path, sizeof(socket_path), "%s", config->socket_path);
		else
			snprintf(socket_path, sizeof(socket_path), "%s.%d", config->socket_path, i);
		if (strlen(socket_path) >= sizeof(addr.sun_path))
		{
			errno = ENAMETOOLONG;
			break;
		}
		if (!path_free(socket_path))
		{
			errno = EADDRINUSE;
			continue;
		}
		memset(&addr, 0, sizeof(addr));
		addr.sun_family = AF_UNIX;
		memcpy(addr.sun_path, socket_path, strlen(socket_path));
		old_umask = umask(0077);
		rc = bind(listen_fd, (struct sockaddr *) &addr, sizeof(addr));
		umask(old_umask);
	}
	if (rc < 0)
	{
		/* name the first choice: the others are its variants */
		snprintf(socket_path, sizeof(socket_path), "%s", config->socket_path);
		return fail_start(err, "bind (a live server holds it, or another file is there)", errno);
	}
	{
		struct stat st;

		if (lstat(socket_path, &st) < 0)
			return fail_start(err, "stat", errno);
		bound = true;
		bound_dev = st.st_dev;
		bound_ino = st.st_ino;
	}
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
	unlink_ours();
	close(wake_pipe[0]);
	close(wake_pipe[1]);
	wake_pipe[0] = wake_pipe[1] = -1;

	iq_wire_conn_stop(&conns, IQ_SERVE_DRAIN_MS);
	running = false;
}

/* iq_local_server_path: the socket's name (relative to the data directory) */
const char *
iq_local_server_path(void)
{
	return socket_path;
}

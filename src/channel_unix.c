/*-------------------------------------------------------------------------
 * channel_unix.c
 *	  A channel's connection to this instance's worker: its Unix socket,
 *	  whose name the worker publishes in iq_shared->local_socket.
 *
 * The connection is non-blocking once made; a Unix connect completes at
 * once (or fails), so there is nothing to wait for here.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/lwlock.h"

#include "common/shmem.h"
#include "src/channel_conn.h"

/* iq_unix_socket_path: the socket the worker serves; false if it serves none */
bool
iq_unix_socket_path(char *path, size_t size)
{
	char		copy[IQ_SOCKET_PATH_LEN];
	uint32		seq;

	do
	{
		seq = iq_shared_read_begin();
		memcpy(copy, iq_shared->local_socket, sizeof(copy));
	} while (!iq_shared_read_ok(seq));
	copy[sizeof(copy) - 1] = '\0';
	strlcpy(path, copy, size);
	return path[0] != '\0';
}

/* connect_path: a fresh non-blocking connection to path, -1 with errno */
static int
connect_path(const char *path)
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
	if (connect(fd, (struct sockaddr *) &addr, sizeof(addr)) < 0 ||
		!pg_set_noblock(fd))
	{
		int			e = errno;

		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* iq_unix_connect: conn to the socket at path; false with why in error */
bool
iq_unix_connect(IqChanConn *conn, const char *path, char *error, size_t errlen)
{
	bool		relative = !is_absolute_path(path);

	conn->easy = conn->multi = NULL;
	/* a relative name is in the data directory, our working directory */
	conn->fd = connect_path(path);
	if (conn->fd >= 0)
		return true;
	snprintf(error, errlen, "Could not connect to the local socket \"%s%s%s\": %m.",
			 relative ? DataDir : "", relative ? "/" : "", path);
	return false;
}

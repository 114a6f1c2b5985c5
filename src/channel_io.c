/*-------------------------------------------------------------------------
 * channel_io.c
 *	  A channel's bytes in and out of its connection: the socket itself
 *	  (the Unix socket, a plain TCP connection), or libcurl's TLS over it.
 *
 * Both behave as send() and recv() on a non-blocking socket: bytes moved,
 * 0 for a closed connection (recv), -1 with errno EAGAIN when nothing can
 * move now, and -1 with another errno on failure.  A TLS failure sets
 * errno EIO and *why to libcurl's sentence.
 *
 * TLS keeps decrypted bytes of a record it read only in part, and may read
 * a record that carries no data (a session ticket): the caller always
 * tries iq_conn_recv before it waits on the socket, and waits only after
 * EAGAIN, so nothing already received is left waiting for more.  A send
 * that TLS could not finish (EAGAIN) must be retried with the same bytes
 * at the same address, as OpenSSL asks: channel.c sends from one buffer.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "src/channel_conn.h"

/* from_curl: a curl result as send/recv would say it */
static ssize_t
from_curl(CURLcode rc, size_t n, const char **why)
{
	if (rc == CURLE_OK)
		return (ssize_t) n;
	if (rc == CURLE_AGAIN)
	{
		errno = EAGAIN;
		return -1;
	}
	*why = curl_easy_strerror(rc);
	errno = EIO;
	return -1;
}

/* iq_conn_send: write what the connection takes now of data */
ssize_t
iq_conn_send(IqChanConn *conn, const void *data, size_t len, const char **why)
{
	size_t		n = 0;
	CURLcode	rc;

	*why = NULL;
	if (!conn->tls)
		return send(conn->fd, data, len, MSG_NOSIGNAL);
	rc = curl_easy_send(conn->easy, data, len, &n);
	return from_curl(rc, n, why);
}

/* iq_conn_recv: read what has arrived, up to size bytes */
ssize_t
iq_conn_recv(IqChanConn *conn, void *buf, size_t size, const char **why)
{
	size_t		n = 0;
	CURLcode	rc;

	*why = NULL;
	if (!conn->tls)
		return recv(conn->fd, buf, size, 0);
	rc = curl_easy_recv(conn->easy, buf, size, &n);
	return from_curl(rc, n, why);
}

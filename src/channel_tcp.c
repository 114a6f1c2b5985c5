/*-------------------------------------------------------------------------
 * channel_tcp.c
 *	  A channel's connection to another instance: a TCP connection made by
 *	  libcurl, upgraded with "GET /iq/v1/stream" to iq-wire/1
 *	  (common/peer_api.h), then used by channel.c like the local socket.
 *
 * Why not CURLOPT_CONNECT_ONLY = 2, which since 7.86 sends the request and
 * reads the response headers before handing over: with libcurl 7.88.1 that
 * holds for WebSocket only.  A 101 to any other protocol is taken for an
 * ordinary response whose body runs to the end of the connection, so the
 * transfer waits for the close (measured: it times out, and curl eats the
 * first bytes of the stream as body).  So libcurl makes the connection
 * (CONNECT_ONLY = 1: name resolution, IPv4/IPv6, connect timeout,
 * TCP_NODELAY and keepalive), and the upgrade is one fixed request that
 * channel.c sends with the first wire request, whose answer is checked
 * only up to the blank line (the status line, then where the stream
 * starts).
 *
 * With TLS on (channel_tls.c holds the material), the URL is https and
 * the connect includes the handshake: curl presents our certificate,
 * trusts the cluster's CA alone, and verifies that the peer's certificate
 * names the host called (common/tls.h).  A peer that fails that is never
 * sent a byte of a request.  Every byte after goes through curl
 * (channel_io.c).
 *
 * The connect runs in a multi handle of its own, in slices of 100 ms with
 * CHECK_FOR_INTERRUPTS between them, so a cancel is answered at once and a
 * slow connect lasts at most the time it is given.  The easy handle owns
 * the socket: the connection is closed by removing it from its multi
 * handle and cleaning both up.  curl runs with CURLOPT_NOSIGNAL, and every
 * signal is blocked while it may start its resolver thread: the thread
 * inherits a full mask and cannot take the backend's SIGINT or the latch's
 * SIGURG.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include <curl/curl.h>

#include "miscadmin.h"
#include "pgstat.h"

#include "common/peer_api.h"
#include "common/tls.h"
#include "src/channel_conn.h"

#define CONNECT_SLICE_MS	100

static bool curl_ready = false;

/* iq_tcp_close: close the connection (curl's socket) and free its handles */
void
iq_tcp_close(IqChanConn *conn)
{
	CURL	   *easy = conn->easy;
	CURLM	   *multi = conn->multi;

	/* removing a connect-only transfer closes its connection */
	if (multi && easy)
		curl_multi_remove_handle(multi, easy);
	if (multi)
		curl_multi_cleanup(multi);
	if (easy)
		curl_easy_cleanup(easy);
	conn->fd = -1;
	conn->easy = conn->multi = NULL;
	conn->tls = false;
}

/*
 * iq_tcp_perform: one curl_multi_perform of multi, with every signal
 * blocked: a resolver thread it starts inherits a full mask.
 */
void
iq_tcp_perform(void *multi)
{
	sigset_t	all;
	sigset_t	old;
	int			running;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	curl_multi_perform(multi, &running);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* run_connect: drive the connect to its end, cancellably; curl's result */
static CURLcode
run_connect(CURLM *multi)
{
	for (;;)
	{
		CURLMsg    *msg;
		int			left;

		iq_tcp_perform(multi);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE)
				return msg->data.result;
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		curl_multi_poll(multi, NULL, 0, CONNECT_SLICE_MS, NULL);
		pgstat_report_wait_end();
		CHECK_FOR_INTERRUPTS();
	}
}

/*
 * iq_tcp_why: why curl's transfer on easy failed with rc, for a sentence:
 * the system's word for a refused or unroutable connection ("Connection
 * refused"), which curl's own text leaves out, else curl's text.
 */
const char *
iq_tcp_why(void *easy, int rc, const char *curl_error)
{
	long		os_errno = 0;

	if (rc == CURLE_COULDNT_CONNECT &&
		curl_easy_getinfo((CURL *) easy, CURLINFO_OS_ERRNO, &os_errno) == CURLE_OK &&
		os_errno != 0)
		return strerror((int) os_errno);
	return curl_error && curl_error[0] ? curl_error : curl_easy_strerror((CURLcode) rc);
}

/* iq_tcp_failure: which kind of failure curl's result rc is */
IqConnectFailure
iq_tcp_failure(int rc)
{
	switch (rc)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return IQ_CONNECT_TIMED_OUT;
		case CURLE_COULDNT_CONNECT:
			return IQ_CONNECT_REFUSED;
		case CURLE_GOT_NOTHING:
		case CURLE_RECV_ERROR:
		case CURLE_SEND_ERROR:
			return IQ_CONNECT_RESET;
		case CURLE_PEER_FAILED_VERIFICATION:
		case CURLE_SSL_CONNECT_ERROR:
		case CURLE_SSL_CERTPROBLEM:
		case CURLE_SSL_CIPHER:
		case CURLE_SSL_CACERT_BADFILE:
		case CURLE_SSL_ISSUER_ERROR:
		case CURLE_SSL_INVALIDCERTSTATUS:
		case CURLE_SSL_ENGINE_INITFAILED:
			return IQ_CONNECT_TLS;
		default:
			return IQ_CONNECT_FAILED;
	}
}

/*
 * iq_tcp_handles: conn's easy and multi handles for url, with what every
 * connection to a peer has (no proxy, no signals, TCP_NODELAY, keepalive,
 * a connect timeout, this instance's TLS material); false with why in
 * error.  conn owns them from the start (free with iq_tcp_close).
 */
bool
iq_tcp_handles(IqChanConn *conn, const char *url, const IqTls *tls,
			   int timeout_ms, char *error, size_t errlen)
{
	CURL	   *easy;

	conn->fd = -1;
	conn->easy = conn->multi = NULL;
	conn->tls = tls->on;
	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		{
			strlcpy(error, "Could not initialise libcurl.", errlen);
			return false;
		}
		curl_ready = true;
	}
	conn->easy = easy = curl_easy_init();
	conn->multi = curl_multi_init();
	if (easy == NULL || conn->multi == NULL)
	{
		iq_tcp_close(conn);
		strlcpy(error, "Could not create a curl handle.", errlen);
		return false;
	}
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Max(timeout_ms, 1));
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	iq_tls_curl_client(easy, tls);
	return true;
}

/*
 * iq_tcp_connect: conn to host:port within timeout_ms, over TLS when
 * tls->on; false with why in error and *failure.  conn owns the handles
 * from the start, so an error or cancel while connecting frees them.
 */
bool
iq_tcp_connect(IqChanConn *conn, const char *host, int port, const IqTls *tls,
			   int timeout_ms, char *error, size_t errlen, IqConnectFailure *failure)
{
	char		curl_error[CURL_ERROR_SIZE] = "";
	char		url[IQ_PEER_URL_LEN];
	curl_socket_t fd = CURL_SOCKET_BAD;
	CURL	   *easy;
	CURLcode	rc;

	*failure = IQ_CONNECT_FAILED;
	(void) iq_peer_url(url, sizeof(url), tls->on, host, port, "/");
	if (!iq_tcp_handles(conn, url, tls, timeout_ms, error, errlen))
		return false;
	easy = conn->easy;
	curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, curl_error);
	rc = curl_multi_add_handle(conn->multi, easy) == CURLM_OK ?
		run_connect(conn->multi) : CURLE_FAILED_INIT;
	/* the handle outlives this call in the pool: forget our buffer */
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	if (rc == CURLE_OK &&
		(curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
		 fd == CURL_SOCKET_BAD))
		strlcpy(curl_error, "libcurl connected but gave no socket", sizeof(curl_error));
	else if (rc == CURLE_OK)
	{
		conn->fd = fd;
		return true;
	}
	*failure = iq_tcp_failure(rc);
	snprintf(error, errlen, "Could not connect to %s: %s.", url,
			 iq_tcp_why(easy, rc, curl_error));
	iq_tcp_close(conn);
	return false;
}

/* iq_tcp_upgrade_head: the upgrade request for host:port into head; its length */
size_t
iq_tcp_upgrade_head(char *head, size_t size, const char *host, int port)
{
	char		authority[IQ_PEER_AUTHORITY_LEN];
	int			n;

	(void) iq_peer_authority(authority, sizeof(authority), host, port);
	n = snprintf(head, size,
				 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
				 IQ_PEER_STREAM_PATH, authority, IQ_PEER_STREAM_PROTOCOL);
	return (size_t) Min(n, (int) size - 1);
}

/*
 * iq_tcp_upgrade_check: what the head of the answer says so far.  Only the
 * status line and the blank line matter: 101 means the upgrade was done,
 * and the stream starts after the blank line.
 */
IqUpgradeCheck
iq_tcp_upgrade_check(const char *head, size_t len, size_t *end, int *status)
{
	static const char proto[] = "HTTP/1.";
	const char *blank;
	size_t		i;

	/* "HTTP/1.x NNN" */
	if (memcmp(head, proto, Min(len, sizeof(proto) - 1)) != 0)
		return IQ_UPGRADE_NOT_HTTP;
	if (len < 12)
		return IQ_UPGRADE_MORE;
	if (head[8] != ' ')
		return IQ_UPGRADE_NOT_HTTP;
	*status = 0;
	for (i = 9; i < 12; i++)
	{
		if (head[i] < '0' || head[i] > '9')
			return IQ_UPGRADE_NOT_HTTP;
		*status = *status * 10 + (head[i] - '0');
	}
	if (*status != 101)
		return IQ_UPGRADE_REFUSED;
	blank = memmem(head, len, "\r\n\r\n", 4);
	if (blank == NULL)
		return IQ_UPGRADE_MORE;
	*end = (size_t) (blank + 4 - head);
	return IQ_UPGRADE_DONE;
}

/*-------------------------------------------------------------------------
 * upgrade_client.c
 *	  Opening a backend's stream to another instance: a TCP connection made
 *	  by libcurl, upgraded with "GET /iq/v1/stream" to iq-wire/1 (wire.h),
 *	  then used by channel.c like the local socket.
 *
 * Why not CURLOPT_CONNECT_ONLY = 2, which since 7.86 sends the request and
 * reads the response headers before handing over: with libcurl 7.88.1 that
 * holds for WebSocket only.  A 101 to any other protocol is taken for an
 * ordinary response whose body runs to the end of the connection, so the
 * transfer waits for the close (measured: it times out, and curl eats the
 * first bytes of the stream as body).  So libcurl makes the connection
 * (CONNECT_ONLY = 1: name resolution, IPv4/IPv6, connect timeout,
 * TCP_NODELAY and keepalive), and the upgrade is one fixed request sent
 * with the first wire request, whose answer is checked only up to the
 * blank line (the status line, then where the stream starts).
 *
 * The connect runs in a multi handle of its own, in slices of 100 ms with
 * CHECK_FOR_INTERRUPTS between them, so a cancel is answered at once and a
 * slow connect lasts at most what is left of the call's iq_fdw.peer_timeout
 * (which bounds connecting and the first byte of the answer together).  The easy handle owns
 * the socket: the connection is closed by removing it from its multi
 * handle and cleaning both up.  Signals are blocked while curl may start
 * its resolver thread, as in peer_client.c.
 *
 * A peer that answers anything but 101 is a worker from before the stream:
 * it is read over POST /iq/v1/read for a minute before it is asked again.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include <curl/curl.h>

#include "src/fetch_internal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "common/settings.h"

#define CONNECT_SLICE_MS	100
#define REFUSAL_MEMORY_US	(60 * INT64CONST(1000000))
#define REFUSED_MAX			16

typedef struct Refusal
{
	char		endpoint[IQ_ENDPOINT_LEN];
	int64		at;				/* µs, iq_fetch_now_us */
} Refusal;

static Refusal refused[REFUSED_MAX];
static int	nrefused = 0;
static bool curl_ready = false;

/* iq_upgrade_offered: false while host:port is known to refuse the stream */
bool
iq_upgrade_offered(const char *host, int port)
{
	char		endpoint[IQ_ENDPOINT_LEN];
	int			i;

	if (nrefused == 0)
		return true;
	snprintf(endpoint, sizeof(endpoint), "%s:%d", host, port);
	for (i = 0; i < nrefused; i++)
		if (strcmp(refused[i].endpoint, endpoint) == 0)
		{
			if (iq_fetch_now_us() - refused[i].at < REFUSAL_MEMORY_US)
				return false;
			refused[i] = refused[--nrefused];	/* ask it again */
			return true;
		}
	return true;
}

/* iq_upgrade_refused: remember that src's peer answered status, not 101 */
void
iq_upgrade_refused(IqFetchSource *src, int status)
{
	int			i;

	for (i = 0; i < nrefused; i++)
		if (strcmp(refused[i].endpoint, src->endpoint) == 0)
			break;
	if (i == REFUSED_MAX)
		i = 0;					/* forget the first: it is asked again */
	else if (i == nrefused)
		nrefused++;
	strlcpy(refused[i].endpoint, src->endpoint, sizeof(refused[i].endpoint));
	refused[i].at = iq_fetch_now_us();
	ereport(DEBUG1,
			(errmsg_internal("instance %s answered HTTP %d to the upgrade to %s; reading it over POST /iq/v1/read",
							 src->endpoint, status, IQ_STREAM_PROTOCOL)));
}

/* iq_upgrade_close: close the connection (curl's socket) and free its handles */
void
iq_upgrade_close(IqChanConn *conn)
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
}

/* connect_failed: record a failed connect and free what it made */
static bool
connect_failed(IqFetchSource *src, const char *what, bool timed_out)
{
	if (what != NULL)
		strlcpy(src->error, what, sizeof(src->error));
	src->failed = true;
	src->done = true;
	src->timed_out = timed_out;
	iq_upgrade_close(&src->conn);
	return false;
}

/* iq_upgrade_connect: a TCP connection to src's peer; false when src failed */
bool
iq_upgrade_connect(IqFetchSource *src)
{
	CURL	   *easy;
	CURLM	   *multi;
	CURLcode	rc = CURLE_OK;
	curl_socket_t fd = CURL_SOCKET_BAD;
	char		url[IQ_HOST_LEN + 32];
	bool		done = false;
	/* the connect is part of the call's first iq_fdw.peer_timeout (fetch.c) */
	int64		left_ms = (src->call_started + (int64) iq_peer_timeout_ms * 1000 -
						   iq_fetch_now_us()) / 1000;

	if (!curl_ready)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return connect_failed(src, "could not initialise libcurl", false);
		curl_ready = true;
	}
	/* src owns the handles from here: an error or cancel frees them */
	src->conn.easy = easy = curl_easy_init();
	src->conn.multi = multi = curl_multi_init();
	if (easy == NULL || multi == NULL)
		return connect_failed(src, "could not create a curl handle", false);
	iq_target_url(url, sizeof(url), &src->target, "/");
	src->error[0] = '\0';
	curl_easy_setopt(easy, CURLOPT_URL, url);
	curl_easy_setopt(easy, CURLOPT_CONNECT_ONLY, 1L);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Max(left_ms, 1));
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_PROXY, "");
	curl_easy_setopt(easy, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, src->error);
	if (curl_multi_add_handle(multi, easy) != CURLM_OK)
		return connect_failed(src, "could not add a transfer to a curl multi handle", false);

	for (;;)
	{
		sigset_t	all;
		sigset_t	old;
		CURLMsg    *msg;
		int			running;
		int			left;

		/* a resolver thread started now inherits a full mask */
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		curl_multi_perform(multi, &running);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		while ((msg = curl_multi_info_read(multi, &left)) != NULL)
			if (msg->msg == CURLMSG_DONE)
			{
				rc = msg->data.result;
				done = true;
			}
		if (done)
			break;
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		curl_multi_poll(multi, NULL, 0, CONNECT_SLICE_MS, NULL);
		pgstat_report_wait_end();
		CHECK_FOR_INTERRUPTS();
	}
	/* the handle outlives this source in the pool: forget its memory */
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK)
		return connect_failed(src, src->error[0] ? NULL : curl_easy_strerror(rc),
							  rc == CURLE_OPERATION_TIMEDOUT);
	if (curl_easy_getinfo(easy, CURLINFO_ACTIVESOCKET, &fd) != CURLE_OK ||
		fd == CURL_SOCKET_BAD)
		return connect_failed(src, "libcurl connected but gave no socket", false);
	src->conn.fd = fd;
	return true;
}

/* iq_upgrade_head: the upgrade request for src's peer (a static buffer) */
const char *
iq_upgrade_head(IqFetchSource *src, size_t *len)
{
	static char head[IQ_HOST_LEN + 160];
	char		url[IQ_HOST_LEN + 32];
	int			n;

	/* Host is the URL's authority: "http://" and nothing after it */
	iq_target_url(url, sizeof(url), &src->target, "");
	n = snprintf(head, sizeof(head),
				 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
				 IQ_STREAM_PATH, url + strlen("http://"), IQ_STREAM_PROTOCOL);
	*len = (size_t) Min(n, (int) sizeof(head) - 1);
	return head;
}

/*
 * iq_upgrade_check: what the head of the answer says so far.  Only the
 * status line and the blank line matter: 101 means the upgrade was done,
 * and the stream starts after the blank line.
 */
IqUpgradeCheck
iq_upgrade_check(const char *head, size_t len, size_t *end, int *status)
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

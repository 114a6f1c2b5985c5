/*-------------------------------------------------------------------------
 * channel_post.c
 *	  A channel's connection to another instance when TLS is on: one
 *	  "POST /iq/v1/read" per request on a kept-alive HTTPS connection,
 *	  the wire request as the body, the wire answer as the response body.
 *
 * Why not the upgraded stream over TLS: libmicrohttpd 0.9.75 (Debian 12)
 * relays an upgraded TLS connection through buffers taken from the
 * connection's memory pool, which its header builder has already given
 * whole to the write buffer, so it falls back to an 8-byte buffer: 4
 * bytes per TLS record, remote reads at a tenth of their plain speed
 * (fixed in 0.9.76, commit a93ca180).  An ordinary response has no such
 * relay: MHD encrypts its buffers directly.
 *
 * libcurl does the HTTP: the TLS handshake (our certificate, the
 * cluster's CA alone, the peer's host verified: common/tls.h), chunked
 * decoding, keep-alive, and a fresh connection in place of a reused one
 * the peer closed meanwhile.  The connection lives in the multi handle's
 * cache between POSTs; the easy and multi handles stay together in the
 * channel's idle pool, so the next POST to the same peer reuses it.
 * Nothing here blocks: iq_post_pump moves the transfer on as far as it
 * can now, the caller waits (iq_post_wait) with its own timeouts and
 * cancel checks.  The answer's bytes go to the channel's inbox from the
 * write callback, only under a 200: any other status refuses the body
 * and is reported as the status.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "common/peer_api.h"
#include "src/channel_conn.h"

#define END_SLICE_MS	10
#define END_WAIT_MS		200		/* for the HTTP end after the wire end */
#define RECEIVE_BUFFER	(64 * 1024)

typedef struct IqPost
{
	struct curl_slist *headers;
	char		url[IQ_PEER_URL_LEN];
	char		curl_error[CURL_ERROR_SIZE];
	bool		in_multi;		/* a transfer is running */
	IqPostState state;			/* of the last transfer, when not running */
	IqBuf	   *inbox;			/* the channel's, during a transfer */
	size_t		request_len;
	size_t		received;
	long		status;			/* HTTP status of the answer, 0 until known */
	void	   *easy;
} IqPost;

/* on_bytes: curl's write callback: the answer's bytes into the inbox */
static size_t
on_bytes(char *data, size_t size, size_t n, void *cls)
{
	IqPost	   *p = cls;

	if (p->status == 0)
		curl_easy_getinfo(p->easy, CURLINFO_RESPONSE_CODE, &p->status);
	if (p->status != 200 || p->inbox == NULL)
		return 0;				/* not a wire answer: the transfer fails */
	iq_buf_append(p->inbox, data, size * n);
	if (p->inbox->oom)
		return 0;
	p->received += size * n;
	return size * n;
}

/*
 * iq_post_open: conn's handles for POSTs to host:port (no connection yet:
 * the first POST makes it); false with why in error.
 */
bool
iq_post_open(IqChanConn *conn, const char *host, int port, const IqTls *tls,
			 char *error, size_t errlen)
{
	char		url[IQ_PEER_URL_LEN];
	IqPost	   *p;
	CURL	   *easy;

	(void) iq_peer_url(url, sizeof(url), true, host, port, IQ_PEER_READ_PATH);
	if (!iq_tcp_handles(conn, url, tls, 0, error, errlen))
		return false;
	conn->post = p = calloc(1, sizeof(IqPost));
	if (p == NULL)
	{
		iq_post_close(conn);
		strlcpy(error, "Out of memory opening a connection.", errlen);
		return false;
	}
	strlcpy(p->url, url, sizeof(p->url));
	p->easy = easy = conn->easy;
	p->headers = curl_slist_append(NULL, "Content-Type: application/octet-stream");
	/* no "Expect: 100-continue" for a request above 1 kB: one round trip */
	p->headers = p->headers ? curl_slist_append(p->headers, "Expect:") : NULL;
	if (p->headers == NULL)
	{
		iq_post_close(conn);
		strlcpy(error, "Out of memory opening a connection.", errlen);
		return false;
	}
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, p->headers);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, on_bytes);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, p);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, p->curl_error);
	curl_easy_setopt(easy, CURLOPT_BUFFERSIZE, (long) RECEIVE_BUFFER);
	return true;
}

/*
 * iq_post_begin: start POSTing request, the answer's bytes to go to
 * inbox, connecting (if the pooled connection is gone) within timeout_ms;
 * false when curl could not start it.  Both must live until the POST is
 * done or the connection closed.
 */
bool
iq_post_begin(IqChanConn *conn, const IqBuf *request, IqBuf *inbox, int timeout_ms)
{
	IqPost	   *p = conn->post;

	p->inbox = inbox;
	p->request_len = request->len;
	p->received = 0;
	p->status = 0;
	p->curl_error[0] = '\0';
	curl_easy_setopt(conn->easy, CURLOPT_CONNECTTIMEOUT_MS, (long) Max(timeout_ms, 1));
	curl_easy_setopt(conn->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) request->len);
	curl_easy_setopt(conn->easy, CURLOPT_POSTFIELDS, request->data);
	if (curl_multi_add_handle(conn->multi, conn->easy) != CURLM_OK)
		return false;
	p->in_multi = true;
	p->state = IQ_POST_RUNNING;
	iq_tcp_perform(conn->multi);
	return true;
}

/* settle: what the finished transfer's result rc means; sets p->state */
static void
settle(IqChanConn *conn, CURLcode rc, char *error, size_t errlen,
	   IqConnectFailure *failure, int *status)
{
	IqPost	   *p = conn->post;
	const char *why = iq_tcp_why(conn->easy, rc, p->curl_error);

	curl_multi_remove_handle(conn->multi, conn->easy);	/* the connection stays cached */
	p->in_multi = false;
	p->inbox = NULL;
	if (p->status == 0)
		curl_easy_getinfo(conn->easy, CURLINFO_RESPONSE_CODE, &p->status);
	*failure = iq_tcp_failure(rc);
	*status = (int) p->status;
	if ((rc == CURLE_OK || rc == CURLE_WRITE_ERROR) && p->status != 200 && p->status != 0)
	{
		snprintf(error, errlen, "The instance answered HTTP %ld to POST %s.",
				 p->status, IQ_PEER_READ_PATH);
		p->state = IQ_POST_REFUSED;
	}
	else if (rc == CURLE_OK)
		p->state = IQ_POST_DONE;
	else
	{
		bool		connecting = (rc == CURLE_COULDNT_CONNECT ||
								  rc == CURLE_COULDNT_RESOLVE_HOST ||
								  *failure == IQ_CONNECT_TLS);

		if (rc == CURLE_WRITE_ERROR)
			why = "out of memory";
		snprintf(error, errlen, "Could not %s %s: %s.",
				 connecting ? "connect to" : "read the answer from", p->url, why);
		p->state = IQ_POST_FAILED;
	}
}

/*
 * iq_post_pump: move the POST on as far as it goes now; where it is.
 * FAILED and REFUSED come with a sentence in error, *failure and *status.
 */
IqPostState
iq_post_pump(IqChanConn *conn, char *error, size_t errlen,
			 IqConnectFailure *failure, int *status)
{
	IqPost	   *p = conn->post;
	CURLMsg    *msg;
	int			left;

	if (!p->in_multi)
		return p->state;
	iq_tcp_perform(conn->multi);
	while ((msg = curl_multi_info_read(conn->multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
		{
			settle(conn, msg->data.result, error, errlen, failure, status);
			break;
		}
	return p->state;
}

/* iq_post_sent: whether the request went out whole (or the POST is over) */
bool
iq_post_sent(IqChanConn *conn)
{
	IqPost	   *p = conn->post;
	curl_off_t	up = 0;

	if (!p->in_multi || p->received > 0)
		return true;
	return curl_easy_getinfo(conn->easy, CURLINFO_SIZE_UPLOAD_T, &up) == CURLE_OK &&
		up >= (curl_off_t) p->request_len;
}

/* iq_post_received: bytes of this POST's answer received so far */
size_t
iq_post_received(IqChanConn *conn)
{
	return conn->post->received;
}

/* iq_post_wait: up to timeout_ms for the POST's connection to move */
void
iq_post_wait(IqChanConn *conn, int timeout_ms)
{
	curl_multi_poll(conn->multi, NULL, 0, timeout_ms, NULL);
}

/*
 * iq_post_end: the caller read the wire answer to its end; whether the
 * connection can serve another POST.  The HTTP end (a chunked answer's
 * last chunk) follows the wire end at once: waited for briefly, not
 * cancellably (this runs while releasing).
 */
bool
iq_post_end(IqChanConn *conn)
{
	char		error[8];
	IqConnectFailure failure;
	int			status;
	int			waited;

	for (waited = 0; conn->post->in_multi && waited < END_WAIT_MS; waited += END_SLICE_MS)
	{
		if (iq_post_pump(conn, error, sizeof(error), &failure, &status) != IQ_POST_RUNNING)
			break;
		iq_post_wait(conn, END_SLICE_MS);
	}
	return !conn->post->in_multi && conn->post->state == IQ_POST_DONE;
}

/* iq_post_close: close the connection and free the handles */
void
iq_post_close(IqChanConn *conn)
{
	IqPost	   *p = conn->post;

	if (p && p->in_multi)
		curl_multi_remove_handle(conn->multi, conn->easy);
	conn->post = NULL;
	iq_tcp_close(conn);			/* the multi handle's cleanup closes its cache */
	if (p)
	{
		curl_slist_free_all(p->headers);
		free(p);
	}
}

/*-------------------------------------------------------------------------
 * http_forward.c
 *	  Requests from the HTTP server's threads to other instances (a get
 *	  for a key another instance owns, ?scope=all gathering).
 *
 * Each server thread keeps one CURL easy handle in thread-local storage, so
 * its connections to peers stay open and are reused request after request
 * (no TCP handshake per forwarded get); the handle is cleaned up by the
 * key's destructor when MHD ends the thread.  Every transfer has the peer
 * timeout and CURLOPT_NOSIGNAL (no SIGALRM in a thread of a PostgreSQL
 * process); proxies from the environment are ignored (peers are direct).
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "http_internal.h"

/* Forwarded answers above this size are refused rather than buffered. */
#define MAX_FORWARD_BODY ((size_t) 1024 * 1024 * 1024)

static pthread_key_t curl_key;
static bool curl_key_made = false;

/* destroy_handle: thread exit: close this thread's peer connections */
static void
destroy_handle(void *h)
{
	curl_easy_cleanup((CURL *) h);
}

/* iq_forward_init: once per server start, before any thread forwards */
void
iq_forward_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!curl_key_made && pthread_key_create(&curl_key, destroy_handle) == 0)
		curl_key_made = true;
}

/* iq_forward_shutdown: after the server's threads are gone */
void
iq_forward_shutdown(void)
{
	if (curl_key_made)
	{
		pthread_key_delete(curl_key);
		curl_key_made = false;
	}
}

/* thread_handle: this thread's easy handle, made on first use */
static CURL *
thread_handle(void)
{
	CURL	   *h;

	if (!curl_key_made)
		return curl_easy_init();	/* caller cleans up (see release_handle) */
	h = pthread_getspecific(curl_key);
	if (h == NULL)
	{
		h = curl_easy_init();
		if (h && pthread_setspecific(curl_key, h) != 0)
		{
			curl_easy_cleanup(h);
			h = NULL;
		}
	}
	else
		curl_easy_reset(h);		/* keeps its live connections */
	return h;
}

/* release_handle: only a handle not kept per thread is cleaned up */
static void
release_handle(CURL *h)
{
	if (!curl_key_made)
		curl_easy_cleanup(h);
}

/* write_body: curl's write callback, into an IqBuf, bounded */
static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	IqBuf	   *buf = userdata;
	size_t		n = size * nmemb;

	if (buf->len + n > MAX_FORWARD_BODY)
		return 0;				/* makes curl fail the transfer */
	iq_buf_append(buf, ptr, n);
	return buf->oom ? 0 : n;
}

/* perform: one transfer with the common options */
static void
perform(const char *host, int port, const char *path,
		const char *body, size_t len, bool post, IqForwardResult *res)
{
	CURL	   *h = thread_handle();
	struct curl_slist *headers = NULL;
	IqBuf		url;
	CURLcode	rc;
	char		errbuf[CURL_ERROR_SIZE];

	memset(res, 0, sizeof(*res));
	iq_buf_init(&res->body);
	if (h == NULL)
	{
		snprintf(res->error, sizeof(res->error), "could not create a curl handle");
		return;
	}
	iq_buf_init(&url);
	iq_buf_append(&url, "http://", 7);
	/* an IPv6 literal needs brackets in a URL */
	if (strchr(host, ':'))
	{
		iq_buf_u8(&url, '[');
		iq_buf_append(&url, host, strlen(host));
		iq_buf_u8(&url, ']');
	}
	else
		iq_buf_append(&url, host, strlen(host));
	{
		char		portstr[16];

		snprintf(portstr, sizeof(portstr), ":%d", port);
		iq_buf_append(&url, portstr, strlen(portstr));
	}
	iq_buf_append(&url, path, strlen(path) + 1);
	if (url.oom)
	{
		iq_buf_free(&url);
		release_handle(h);
		snprintf(res->error, sizeof(res->error), "out of memory");
		return;
	}

	errbuf[0] = '\0';
	headers = curl_slist_append(headers, "X-IQ-Forwarded: 1");
	if (post)
	{
		headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
		headers = curl_slist_append(headers, "Expect:");
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) len);
	}
	curl_easy_setopt(h, CURLOPT_URL, url.data);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) iq_http_config.peer_timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) iq_http_config.peer_timeout_ms);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &res->body);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);

	rc = curl_easy_perform(h);
	if (rc == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
	else
	{
		res->status = 0;
		res->timed_out = (rc == CURLE_OPERATION_TIMEDOUT);
		snprintf(res->error, sizeof(res->error), "%s",
				 errbuf[0] ? errbuf : curl_easy_strerror(rc));
		iq_buf_free(&res->body);
	}
	/* the handle must not keep pointers to our stack and heap */
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
	curl_slist_free_all(headers);
	iq_buf_free(&url);
	release_handle(h);
}

/* iq_forward_get: GET path from host:port */
void
iq_forward_get(const char *host, int port, const char *path, IqForwardResult *res)
{
	perform(host, port, path, NULL, 0, false, res);
}

/* iq_forward_post: POST body to path on host:port */
void
iq_forward_post(const char *host, int port, const char *path,
				const char *body, size_t len, IqForwardResult *res)
{
	perform(host, port, path, body, len, true, res);
}

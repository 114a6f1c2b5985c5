/*-------------------------------------------------------------------------
 * peer_client.c
 *	  A backend's reads from other instances: POST /iq/v1/read with libcurl.
 *
 * One multi handle per backend drives every transfer of every open fetch
 * at once, and its connection cache keeps connections to peers open across
 * queries (no TCP handshake per point get).  curl never sees palloc'd
 * memory: bodies and buffers are the sources' malloc'd ones.  Nothing here
 * raises an error: failures are recorded in the source for fetch.c, which
 * releases everything before it reports.
 *
 * curl runs with CURLOPT_NOSIGNAL, and every signal is blocked while it
 * starts new transfers: a thread it starts then (the threaded resolver)
 * inherits a full mask and cannot take the backend's SIGINT or the latch's
 * SIGURG.  Finished easy handles are kept and reused, options and all.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <poll.h>
#include <signal.h>

#include <curl/curl.h>

#include "common/settings.h"
#include "src/fetch_internal.h"

static CURLM *multi = NULL;
static struct curl_slist *headers = NULL;
static int	in_flight = 0;
static bool fresh = false;		/* transfers added since the last perform */

#define SPARE_MAX 16
static CURL *spare[SPARE_MAX];
static int	nspare = 0;

/* get_multi: the backend's multi handle, made on first use */
static CURLM *
get_multi(void)
{
	if (multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return NULL;
		multi = curl_multi_init();
		if (multi == NULL)
			return NULL;
		curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, 64L);
	}
	if (headers == NULL)
	{
		struct curl_slist *h;

		h = curl_slist_append(NULL, "Content-Type: application/octet-stream");
		if (h)
		{
			struct curl_slist *h2 = curl_slist_append(h, "Expect:");

			if (h2 == NULL)
				curl_slist_free_all(h);
			else
				headers = h2;
		}
	}
	return multi;
}

/* write_cb: bytes of an answer; pause the transfer while the merge lags behind */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	IqFetchSource *src = userdata;
	size_t		n = size * nmemb;

	if (src->inbox.len >= IQ_FETCH_INBOX_MAX)
	{
		/* curl keeps these bytes and hands them again after unpausing */
		src->paused = true;
		return CURL_WRITEFUNC_PAUSE;
	}
	iq_buf_append(&src->inbox, ptr, n);
	if (src->inbox.oom)
		return 0;				/* fails the transfer */
	src->last_activity = iq_fetch_now_us();
	return n;
}

/* iq_target_url: http://host:port/path, an IPv6 address in brackets */
void
iq_target_url(char *url, size_t size, const IqTarget *target, const char *path)
{
	if (strchr(target->host, ':'))
		snprintf(url, size, "http://[%s]:%d%s", target->host, target->port, path);
	else
		snprintf(url, size, "http://%s:%d%s", target->host, target->port, path);
}

/* fail: record a failure that happened before the transfer could start */
static void
fail(IqFetchSource *src, const char *what)
{
	strlcpy(src->error, what, sizeof(src->error));
	src->failed = true;
	src->done = true;
}

/* iq_peer_start: add src's transfer to the multi handle */
void
iq_peer_start(IqFetchSource *src)
{
	CURLM	   *m = get_multi();
	CURL	   *h;
	char		url[IQ_HOST_LEN + 64];

	src->last_activity = iq_fetch_now_us();
	if (m == NULL || headers == NULL)
	{
		fail(src, "could not initialise libcurl");
		return;
	}
	if (nspare > 0)
		h = spare[--nspare];
	else
	{
		h = curl_easy_init();
		if (h == NULL)
		{
			fail(src, "could not create a curl handle");
			return;
		}
		/* what every transfer has in common */
		curl_easy_setopt(h, CURLOPT_POST, 1L);
		curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_cb);
		curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(h, CURLOPT_PROXY, "");
		curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
		curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	}
	iq_target_url(url, sizeof(url), &src->target, "/iq/v1/read");
	src->error[0] = '\0';
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, src->request.data);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) src->request.len);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, src);
	curl_easy_setopt(h, CURLOPT_PRIVATE, src);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, src->error);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) iq_peer_timeout_ms);
	if (curl_multi_add_handle(m, h) != CURLM_OK)
	{
		curl_easy_cleanup(h);
		fail(src, "could not add a transfer to the curl multi handle");
		return;
	}
	src->easy = h;
	in_flight++;
	fresh = true;
}

/* finish: a transfer ended; record how, and give its handle back */
static void
finish(CURL *h, CURLcode rc)
{
	IqFetchSource *src = NULL;

	curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **) &src);
	if (src == NULL)
		return;
	src->done = true;
	if (rc != CURLE_OK)
	{
		src->failed = true;
		src->timed_out = (rc == CURLE_OPERATION_TIMEDOUT);
		if (src->error[0] == '\0')
			strlcpy(src->error, curl_easy_strerror(rc), sizeof(src->error));
	}
	else
	{
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &src->http_status);
		if (src->http_status != 200)
		{
			snprintf(src->error, sizeof(src->error), "HTTP status %ld", src->http_status);
			src->failed = true;
		}
	}
	iq_peer_abort(src);
}

/* perform: let curl move every transfer on, then collect the finished */
static void
perform(void)
{
	sigset_t	all;
	sigset_t	old;
	int			running;
	CURLMsg    *msg;
	int			left;

	/* only a new transfer may start a resolver thread */
	if (fresh)
	{
		sigfillset(&all);
		pthread_sigmask(SIG_BLOCK, &all, &old);
		curl_multi_perform(multi, &running);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		fresh = false;
	}
	else
		curl_multi_perform(multi, &running);
	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
			finish(msg->easy_handle, msg->data.result);
}

/*
 * iq_peer_drive: move transfers on; with wait_ms > 0, first wait up to
 * that long for any of them (or extra_fd, if >= 0) to have something.
 */
void
iq_peer_drive(int wait_ms, int extra_fd)
{
	if (in_flight == 0)
	{
		if (wait_ms > 0 && extra_fd >= 0)
		{
			struct pollfd pfd = {extra_fd, POLLIN, 0};

			(void) poll(&pfd, 1, wait_ms);
		}
		else if (wait_ms > 0)
			pg_usleep(wait_ms * 1000L);
		return;
	}
	perform();
	if (wait_ms > 0)
	{
		struct curl_waitfd extra = {extra_fd, CURL_WAIT_POLLIN, 0};

		curl_multi_poll(multi, extra_fd >= 0 ? &extra : NULL, extra_fd >= 0 ? 1 : 0,
						wait_ms, NULL);
		perform();
	}
}

/* iq_peer_resume: unpause a transfer whose inbox the merge has drained */
void
iq_peer_resume(IqFetchSource *src)
{
	if (src->paused && src->easy && src->inbox.len < IQ_FETCH_INBOX_MAX)
	{
		src->paused = false;
		curl_easy_pause((CURL *) src->easy, CURLPAUSE_CONT);
	}
}

/* iq_peer_abort: take src's transfer out (closing its connection if unfinished) */
void
iq_peer_abort(IqFetchSource *src)
{
	CURL	   *h = (CURL *) src->easy;

	if (h == NULL)
		return;
	src->easy = NULL;
	curl_multi_remove_handle(multi, h);
	in_flight--;
	/* forget the source's memory; keep the handle for the next transfer */
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, NULL);
	curl_easy_setopt(h, CURLOPT_PRIVATE, NULL);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, NULL);
	if (nspare < SPARE_MAX && !src->paused)
		spare[nspare++] = h;
	else
		curl_easy_cleanup(h);	/* a paused one could keep its pause */
}

/*-------------------------------------------------------------------------
 * peer_call.c
 *	  What every call from the HTTP server's threads to another instance
 *	  shares: curl's global setup, the common transfer options, a
 *	  monotonic clock (the peer's URL: common/peer_api.h), and the idle
 *	  multi handles of gathers, with their connections to peers.  The calls
 *	  themselves are the forwarder's (a get for a key another instance
 *	  owns, forwarded_get.c) and the gathering of ?scope=all (gather.c).
 *
 * Every transfer has the peer timeout to connect and CURLOPT_NOSIGNAL (no
 * SIGALRM in a thread of a PostgreSQL process); proxies from the
 * environment are ignored (peers are direct).  With TLS on, every transfer
 * is HTTPS presenting this instance's certificate, and a peer whose
 * certificate the cluster's CA did not sign, or that does not name the
 * host called, fails the transfer: the caller's error names that peer.
 * The material is the running server's (iq_http_config.tls), unchanged
 * until the server, and with it every thread calling peers, is stopped.
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "worker/serve/http/http_internal.h"

/*
 * Idle multi handles of gathers (iq_http_multi_take).  A gather's
 * connections stay in its multi handle's cache, so a handle given back
 * keeps them open for the next gather: without that every gather opened a
 * connection to each peer, over TLS a handshake on both sides (a gather
 * of one count ran at a thirtieth of its plain rate).  A handle is used by
 * one thread at a time, so it may pass between threads; curl's share
 * handles may not share connections between threads.  At most
 * MULTI_IDLE_MAX are kept, each with one connection per peer it called.
 */
#define MULTI_IDLE_MAX 16
static pthread_mutex_t multi_lock = PTHREAD_MUTEX_INITIALIZER;
static CURLM *multi_idle[MULTI_IDLE_MAX];
static int	nmulti_idle = 0;

/* iq_http_peer_init: once per server start, before any thread calls a peer */
void
iq_http_peer_init(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* iq_http_peer_shutdown: after the server's threads are gone */
void
iq_http_peer_shutdown(void)
{
	pthread_mutex_lock(&multi_lock);
	while (nmulti_idle > 0)
		curl_multi_cleanup(multi_idle[--nmulti_idle]);
	pthread_mutex_unlock(&multi_lock);
}

/* iq_http_multi_take: an idle multi handle, or a new one (NULL: out of memory) */
CURLM *
iq_http_multi_take(void)
{
	CURLM	   *m = NULL;

	pthread_mutex_lock(&multi_lock);
	if (nmulti_idle > 0)
		m = multi_idle[--nmulti_idle];
	pthread_mutex_unlock(&multi_lock);
	return m ? m : curl_multi_init();
}

/*
 * iq_http_multi_give: a multi handle with no transfer left, kept with its
 * connections for the next gather, or cleaned up when enough are kept
 */
void
iq_http_multi_give(CURLM *m)
{
	if (m == NULL)
		return;
	pthread_mutex_lock(&multi_lock);
	if (nmulti_idle < MULTI_IDLE_MAX)
	{
		multi_idle[nmulti_idle++] = m;
		m = NULL;
	}
	pthread_mutex_unlock(&multi_lock);
	if (m)
		curl_multi_cleanup(m);
}

/* iq_http_now_ms: a monotonic clock for the servers' timeouts */
long long
iq_http_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * iq_http_peer_setup
 *		The options every call to a peer has: the URL, the peer timeout to
 *		connect, no signals (a thread of a PostgreSQL process), no proxy
 *		from the environment (peers are direct), and the header that marks
 *		it forwarded.  The headers returned belong to the caller (free them
 *		with curl_slist_free_all once the transfer is over).
 */
struct curl_slist *
iq_http_peer_setup(CURL *h, const char *url, bool post)
{
	struct curl_slist *headers = NULL;

	headers = curl_slist_append(headers, IQ_PEER_FORWARDED_HEADER ": 1");
	if (post)
	{
		headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
		headers = curl_slist_append(headers, "Expect:");
		curl_easy_setopt(h, CURLOPT_POST, 1L);
	}
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) iq_http_config.peer_timeout_ms);
	curl_easy_setopt(h, CURLOPT_PROXY, "");
	curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L);
	/* with TLS on: our certificate, the cluster's CA alone, the host verified */
	iq_tls_curl_client(h, &iq_http_config.tls);
	return headers;
}

/*-------------------------------------------------------------------------
 * forwarded_get.c
 *	  Forwarded gets without blocking a server thread.
 *
 * A get for a key another instance owns is handed to the forwarder thread
 * and its connection suspended (MHD_suspend_connection); the forwarder
 * drives every forwarded transfer with one curl multi handle, whose
 * connection cache keeps connections to peers open and reused, and
 * resumes the connection when the owner has answered.  Server threads
 * never wait on a peer: with blocking forwards, instances forwarding to
 * each other could take every thread of the bounded pools and wait for one
 * another until the peer timeout.
 *
 * The thread uses curl's socket interface with its own epoll set, so each
 * event costs work for the one transfer it concerns, not a walk over every
 * transfer in flight (curl_multi_perform) as a busy server has dozens.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* pthread_setname_np */
#endif

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/bigendian.h"
#include "common/wire.h"
#include "worker/serve/http/forward_internal.h"
#include "worker/thread.h"


static pthread_mutex_t fwd_lock = PTHREAD_MUTEX_INITIALIZER;
static IqForwardJob *queue = NULL;
static bool fwd_stopping = false;
static bool fwd_running = false;
static CURLM *fwd_multi = NULL;
static pthread_t fwd_thread;
static IqForwardJob *flying = NULL;	/* transfers added to fwd_multi */
static int	epoll_fd = -1;
static int	wake_fd = -1;		/* eventfd: new jobs, or stop */
static long long timer_deadline = -1;	/* ms (monotonic) curl wants a call, -1 none */

static IqForwardJob *enqueue(struct MHD_Connection *conn, IqForwardJob *job);

/* Connections to one peer at most, and kept open in all (iq_forwarder_start) */
#define FWD_PER_PEER 64
#define FWD_CACHED (4 * FWD_PER_PEER)

/* Finished easy handles, reset and reused (forwarder thread only). */
#define SPARE_MAX 256
static CURL *spare[SPARE_MAX];
static int	nspare = 0;

/* body_cb: an owner's answer, into the job's buffer */
static size_t
body_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	IqForwardJob *job = userdata;
	size_t		n = size * nmemb;

	if (job->result.body.len + n > 64 * 1024 * 1024)
		return 0;
	iq_buf_append(&job->result.body, ptr, n);
	return job->result.body.oom ? 0 : n;
}

/* complete: record the outcome and wake the waiting connection */
static void
complete(IqForwardJob *job, CURLcode rc)
{
	if (job->easy)
	{
		IqForwardJob **p;

		if (rc == CURLE_OK)
			curl_easy_getinfo(job->easy, CURLINFO_RESPONSE_CODE, &job->result.status);
		curl_multi_remove_handle(fwd_multi, job->easy);
		if (nspare < SPARE_MAX)
		{
			curl_easy_reset(job->easy);
			spare[nspare++] = job->easy;
		}
		else
			curl_easy_cleanup(job->easy);
		job->easy = NULL;
		for (p = &flying; *p; p = &(*p)->next)
			if (*p == job)
			{
				*p = job->next;
				break;
			}
	}
	curl_slist_free_all(job->headers);
	job->headers = NULL;
	if (job->members)
	{
		/* a batch's POST (forward_batch.c): its gets are answered there */
		iq_fbatch_done(job, rc, job->errbuf[0] ? job->errbuf : curl_easy_strerror(rc));
		return;
	}
	if (rc != CURLE_OK)
	{
		job->result.status = 0;
		job->result.timed_out = (rc == CURLE_OPERATION_TIMEDOUT);
		job->result.refused = (rc == CURLE_COULDNT_CONNECT);
		snprintf(job->result.error, sizeof(job->result.error), "%s",
				 job->errbuf[0] ? job->errbuf : curl_easy_strerror(rc));
		iq_buf_free(&job->result.body);
	}
	iq_forward_finish(job);
}

/*
 * iq_forward_finish: the job's outcome is set; wake the waiting connection.
 * The release store publishes the outcome to the server thread's acquire
 * load (iq_forward_job_done): no lock that server threads queueing gets
 * would contend for.
 */
void
iq_forward_finish(IqForwardJob *job)
{
	__atomic_store_n(&job->done, true, __ATOMIC_RELEASE);
	/* the job belongs to the request again from here on */
	MHD_resume_connection(job->conn);
}

/* iq_forward_fail: a get is over without an answer from the owner */
void
iq_forward_fail(IqForwardJob *job, bool timed_out, bool refused, const char *what)
{
	job->result.status = 0;
	job->result.timed_out = timed_out;
	job->result.refused = refused;
	snprintf(job->result.error, sizeof(job->result.error), "%s", what);
	iq_buf_free(&job->result.body);
	iq_forward_finish(job);
}

/*
 * iq_forward_finish_wire: a get's answer from the owner's wire reader: its
 * value (already in result.body) when failed is NULL, else the owner's
 * error, given the status the owner's JSON get would have answered (503
 * while partitions move, else 500)
 */
void
iq_forward_finish_wire(IqForwardJob *job, const IqWireReader *failed)
{
	job->result.wire = true;
	if (failed == NULL)
	{
		job->result.wire_status = IQ_WIRE_OK;
		job->result.status = 200;
	}
	else
	{
		job->result.wire_status = failed->status;
		job->result.status = (failed->status == IQ_WIRE_NOT_HELD ||
							  failed->status == IQ_WIRE_RESTORING) ? 503 : 500;
		snprintf(job->result.error, sizeof(job->result.error), "%s", failed->message);
	}
	iq_forward_finish(job);
}

/*
 * transfer_timeout_ms: iq_fdw.peer_timeout, or for a batch what is left of
 * its earliest get's (at least 1 ms: curl takes 0 as none)
 */
static long
transfer_timeout_ms(const IqForwardJob *job)
{
	long long	left;

	if (job->members == NULL)
		return (long) iq_http_config.peer_timeout_ms;
	left = job->deadline - iq_http_now_ms();
	return left < 1 ? 1L : (long) left;
}

/*
 * iq_forward_launch: a queued job's transfer, added to the multi handle: a
 * GET of its url, or a batch's POST of its request
 */
void
iq_forward_launch(IqForwardJob *job)
{
	CURL	   *h = nspare > 0 ? spare[--nspare] : curl_easy_init();

	if (h == NULL)
	{
		complete(job, CURLE_OUT_OF_MEMORY);
		return;
	}
	job->headers = iq_http_peer_setup(h, job->url, job->members != NULL);
	if (job->members)
	{
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, job->request.data);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long) job->request.len);
	}
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, transfer_timeout_ms(job));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_cb);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, job);
	curl_easy_setopt(h, CURLOPT_PRIVATE, job);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, job->errbuf);
	if (curl_multi_add_handle(fwd_multi, h) != CURLM_OK)
	{
		curl_easy_cleanup(h);
		complete(job, CURLE_FAILED_INIT);
		return;
	}
	job->easy = h;
	job->next = flying;
	flying = job;
}

/* socket_cb: curl says which events to wait for on a socket */
static int
socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		epoll_ctl(epoll_fd, EPOLL_CTL_DEL, fd, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = fd;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) |
		((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0 && errno == ENOENT)
		epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev);
	return 0;
}

/* timer_cb: curl wants to be called after timeout_ms (-1: never) */
static int
timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	timer_deadline = timeout_ms < 0 ? -1 : iq_http_now_ms() + timeout_ms;
	return 0;
}

/* collect: complete every finished transfer */
static void
collect(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(fwd_multi, &left)) != NULL)
	{
		IqForwardJob *job = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &job);
		complete(job, msg->data.result);
	}
}

/* wait_for: ms until the earlier of two deadlines (-1: none), at most 1 s */
static int
wait_for(long long a, long long b)
{
	long long	next = (a < 0 || (b >= 0 && b < a)) ? b : a;
	long long	left;

	if (next < 0)
		return 1000;
	left = next - iq_http_now_ms();
	return left <= 0 ? 0 : (left > 1000 ? 1000 : (int) left);
}

/* forwarder_main: the forwarder thread's loop */
static void *
forwarder_main(void *arg)
{
	pthread_setname_np(pthread_self(), "iq_forwarder");
	for (;;)
	{
		struct epoll_event evs[64];
		IqForwardJob *jobs;
		bool		stopping;
		int			running;
		int			wait_ms;
		int			n;
		int			i;

		pthread_mutex_lock(&fwd_lock);
		jobs = queue;
		queue = NULL;
		stopping = fwd_stopping;
		pthread_mutex_unlock(&fwd_lock);

		while (jobs)
		{
			IqForwardJob *next = jobs->next;

			if (stopping)
				complete(jobs, CURLE_ABORTED_BY_CALLBACK);
			else if (jobs->url == NULL && jobs->key != NULL)
				iq_fbatch_add(jobs);
			else if (jobs->url == NULL)
				iq_fstream_submit(jobs);
			else
				iq_forward_launch(jobs);
			jobs = next;
		}
		/* what was queued for one owner goes out in one POST over TLS */
		if (!stopping)
			iq_fbatch_launch_all();
		if (stopping)
		{
			/* answer whatever waits or is in flight as failed, then go */
			iq_fbatch_shutdown();
			while (flying)
				complete(flying, CURLE_ABORTED_BY_CALLBACK);
			iq_fstream_shutdown();
			break;
		}
		/* what was queued goes out in one send per stream */
		iq_fstream_flush();

		wait_ms = wait_for(timer_deadline, iq_fstream_next_deadline());
		n = epoll_wait(epoll_fd, evs, 64, wait_ms);
		for (i = 0; i < n; i++)
		{
			int			flags = 0;

			if (evs[i].data.u64 & IQ_FSTREAM_TAG)
			{
				iq_fstream_event(evs[i].data.u64, evs[i].events);
				continue;
			}
			if (evs[i].data.fd == wake_fd)
			{
				uint64_t	count;

				if (read(wake_fd, &count, sizeof(count)) < 0 && errno != EAGAIN)
					break;
				continue;
			}
			if (evs[i].events & EPOLLIN)
				flags |= CURL_CSELECT_IN;
			if (evs[i].events & EPOLLOUT)
				flags |= CURL_CSELECT_OUT;
			if (evs[i].events & (EPOLLERR | EPOLLHUP))
				flags |= CURL_CSELECT_ERR;
			curl_multi_socket_action(fwd_multi, evs[i].data.fd, flags, &running);
		}
		if (timer_deadline >= 0 && iq_http_now_ms() >= timer_deadline)
		{
			timer_deadline = -1;
			curl_multi_socket_action(fwd_multi, CURL_SOCKET_TIMEOUT, 0, &running);
		}
		collect();
		iq_fstream_tick();
	}
	return NULL;
}

/* wake: tell the forwarder thread to look at its queue */
static void
wake(void)
{
	uint64_t	one = 1;

	if (write(wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		return;					/* nothing better to do: it polls every second */
}

/* iq_forwarder_start: the multi handle and its thread */
bool
iq_forwarder_start(char **err)
{
	int			rc;

	if (fwd_running)
		return true;
	fwd_multi = curl_multi_init();
	if (fwd_multi == NULL)
	{
		*err = strdup("could not create the curl multi handle for forwarded gets");
		return false;
	}
	/*
	 * At most FWD_PER_PEER connections to one peer, a quarter of a peer's
	 * default iq_fdw.http_connections_per_client: ours alone never bring
	 * this address near a peer's cap; more forwards wait in curl for one
	 * of them.  The cache keeps that many for several peers: when it held
	 * fewer than the connections in use (64 in all, while the forwards in
	 * flight moved between two peers), every finished transfer closed one
	 * and the next opened another, a TLS handshake on both sides each time
	 * (forwarded gets over TLS at a tenth of their plain rate).
	 */
	curl_multi_setopt(fwd_multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long) FWD_PER_PEER);
	curl_multi_setopt(fwd_multi, CURLMOPT_MAXCONNECTS, (long) FWD_CACHED);
	curl_multi_setopt(fwd_multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(fwd_multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	timer_deadline = -1;
	epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (epoll_fd < 0 || wake_fd < 0)
	{
		if (epoll_fd >= 0)
			close(epoll_fd);
		if (wake_fd >= 0)
			close(wake_fd);
		epoll_fd = wake_fd = -1;
		curl_multi_cleanup(fwd_multi);
		fwd_multi = NULL;
		*err = strdup("could not create the forwarder's epoll set");
		return false;
	}
	{
		struct epoll_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.events = EPOLLIN;
		ev.data.fd = wake_fd;
		epoll_ctl(epoll_fd, EPOLL_CTL_ADD, wake_fd, &ev);
	}
	iq_fstream_init(epoll_fd);
	iq_fbatch_init();
	fwd_stopping = false;
	rc = iq_thread_create(&fwd_thread, NULL, forwarder_main, NULL);
	if (rc != 0)
	{
		curl_multi_cleanup(fwd_multi);
		fwd_multi = NULL;
		close(epoll_fd);
		close(wake_fd);
		epoll_fd = wake_fd = -1;
		*err = strdup("could not start the forwarding thread");
		return false;
	}
	fwd_running = true;
	return true;
}

/*
 * iq_forwarder_stop: answer every pending forward (as failed if need be),
 * then end the thread.  Called before MHD is stopped, so no connection is
 * left suspended.
 */
void
iq_forwarder_stop(void)
{
	if (!fwd_running)
		return;
	pthread_mutex_lock(&fwd_lock);
	fwd_stopping = true;
	wake();
	pthread_mutex_unlock(&fwd_lock);
	pthread_join(fwd_thread, NULL);
	while (nspare > 0)
		curl_easy_cleanup(spare[--nspare]);
	curl_multi_cleanup(fwd_multi);
	fwd_multi = NULL;
	close(epoll_fd);
	close(wake_fd);
	epoll_fd = wake_fd = -1;
	fwd_running = false;
}

/*
 * iq_forward_submit: suspend conn and forward GET url; the access handler
 * is called again when iq_forward_job_done says so.  NULL if the forward
 * could not be queued (conn is then not suspended).
 */
IqForwardJob *
iq_forward_submit(struct MHD_Connection *conn, const char *url)
{
	IqForwardJob *job;

	if (!fwd_running)
		return NULL;
	job = calloc(1, sizeof(IqForwardJob));
	if (job == NULL)
		return NULL;
	job->url = strdup(url);
	if (job->url == NULL)
	{
		free(job);
		return NULL;
	}
	return enqueue(conn, job);
}

/* enqueue: suspend conn and queue job for the forwarder (NULL: stopping) */
static IqForwardJob *
enqueue(struct MHD_Connection *conn, IqForwardJob *job)
{
	job->conn = conn;
	iq_buf_init(&job->result.body);
	MHD_suspend_connection(conn);
	pthread_mutex_lock(&fwd_lock);
	if (fwd_stopping)
	{
		pthread_mutex_unlock(&fwd_lock);
		MHD_resume_connection(conn);
		iq_buf_free(&job->request);
		free(job->url);
		free(job->key);
		free(job);
		return NULL;
	}
	/*
	 * A queue not empty was signalled when its first job came and not yet
	 * taken (the forwarder takes it whole after it wakes): one write per
	 * burst of gets, not one each.
	 */
	if (queue == NULL)
		wake();					/* under the lock: stop closes wake_fd after it */
	job->next = queue;
	queue = job;
	pthread_mutex_unlock(&fwd_lock);
	return job;
}

/* iq_forward_job_done: whether the owner has answered (or the forward failed) */
bool
iq_forward_job_done(IqForwardJob *job)
{
	return __atomic_load_n(&job->done, __ATOMIC_ACQUIRE);
}

/* iq_forward_job_result: the outcome of a done job (body may be taken) */
IqForwardResult *
iq_forward_job_result(IqForwardJob *job)
{
	return &job->result;
}

/* iq_forward_job_free: a done job, after its answer was sent */
void
iq_forward_job_free(IqForwardJob *job)
{
	if (job == NULL)
		return;
	iq_buf_free(&job->result.body);
	iq_buf_free(&job->request);
	free(job->url);
	free(job->key);
	free(job);
}

/* submit_batched: job asks key of store in its owner's next batch */
static IqForwardJob *
submit_batched(struct MHD_Connection *conn, IqForwardJob *job, int store,
			   const char *key, size_t len)
{
	job->key = malloc(len > 0 ? len : 1);
	if (job->key == NULL)
	{
		free(job);
		return NULL;
	}
	memcpy(job->key, key, len);
	job->key_len = (uint32_t) len;
	job->store = store;
	return enqueue(conn, job);
}

/*
 * iq_forward_submit_get: suspend conn and ask the owner at host:port for
 * key of store, over a peer stream (forward_stream.c), or with TLS on in
 * a batch over HTTPS (forward_batch.c), the stream being plain only; the
 * answer is the wire's (IqForwardResult.wire).
 */
IqForwardJob *
iq_forward_submit_get(struct MHD_Connection *conn, const char *host, int port,
					  int store, const char *key, size_t len)
{
	IqForwardJob *job;
	IqWireRequest req;
	const char *keys[1] = {key};
	uint32_t	lens[1] = {(uint32_t) len};
	size_t		at;

	if (!fwd_running || len > IQ_WIRE_MAX_REQUEST / 2)
		return NULL;
	job = calloc(1, sizeof(IqForwardJob));
	if (job == NULL)
		return NULL;
	snprintf(job->host, sizeof(job->host), "%s", host);
	job->port = port;
	job->deadline = iq_http_now_ms() + iq_http_config.peer_timeout_ms;
	if (iq_http_config.tls.on)
		return submit_batched(conn, job, store, key, len);
	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_GET;
	req.store = (uint8_t) store;
	req.nkeys = 1;
	req.keys = keys;
	req.key_lens = lens;
	/* the request framed as on a stream: its u32 length first */
	iq_buf_init(&job->request);
	iq_buf_u32(&job->request, 0);
	at = job->request.len;
	iq_wire_encode_request(&req, &job->request);
	if (job->request.oom)
	{
		iq_buf_free(&job->request);
		free(job);
		return NULL;
	}
	iq_be32_put((unsigned char *) job->request.data, (uint32_t) (job->request.len - at));
	return enqueue(conn, job);
}

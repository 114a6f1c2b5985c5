/*-------------------------------------------------------------------------
 * wire_conn.c
 *	  A thread per connection, answering wire requests one after the other
 *	  (see wire_conn.h), for the local socket and upgraded HTTP connections.
 *
 * A client keeps its connection across queries, so each connection has a
 * thread of its own that waits in poll()/recv() between requests: a point
 * get costs one write and one read on each side, with no HTTP parsing and
 * no event loop hop.  The socket is blocking.  Every wait has a deadline
 * for the whole of what it waits for (conn_limits.h): an idle connection
 * is closed, without a word, iq_fdw.stream_idle_timeout after its last
 * answer (a backend's pool then reconnects); a request must arrive whole
 * within iq_fdw.request_timeout of its first byte, however it trickles;
 * a request larger than IQ_REQUEST_SMALL is read only once its size is
 * charged to iq_fdw.request_memory; a client that stops reading an answer
 * is dropped after the send timeout set on its socket.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* pthread_setname_np */
#endif

#include <errno.h>
#include <stdint.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/bigendian.h"
#include "common/wire.h"
#include "worker/serve/conn_limits.h"
#include "worker/serve/read_handler.h"
#include "worker/serve/wire_conn.h"
#include "worker/thread.h"

#define WIRE_SEND_TIMEOUT_S		30	/* a client that stopped reading */
#define WIRE_CHUNK				(64 * 1024)
#define WIRE_STACK_SIZE			(512 * 1024)
#define WIRE_WAIT_SLICE_MS		1000	/* an idle wait looks at the setting again */
#define DRAIN_POLL_US			10000	/* how often a stop looks for answers ended */

/* send_all: write everything or fail (the client went away or stalled) */
static bool
send_all(int fd, const char *p, size_t n)
{
	while (n > 0)
	{
		ssize_t		w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			return false;
		}
		p += w;
		n -= (size_t) w;
	}
	return true;
}

/*
 * wait_readable: 1 when fd has bytes (or its peer hung up: recv says
 * which), 0 when the deadline (monotonic ms) passes first, -1 on error
 */
static int
wait_readable(int fd, long long deadline)
{
	for (;;)
	{
		struct pollfd pfd = {fd, POLLIN, 0};
		long long	left = deadline - iq_conn_now_ms();
		int			rc;

		if (left <= 0)
			return 0;
		rc = poll(&pfd, 1, (int) (left < INT32_MAX ? left : INT32_MAX));
		if (rc > 0)
			return 1;
		if (rc < 0 && errno != EINTR)
			return -1;
	}
}

/*
 * recv_ready: append what bytes have already arrived (up to max) to buf,
 * without waiting; 1 some came, 0 none yet, -1 hang-up or error.  Tried
 * before poll(): a pipelining client's next request is usually there, and
 * a poll() before each recv() cost a syscall per request.
 */
static int
recv_ready(int fd, IqBuf *buf, size_t max)
{
	ssize_t		r;

	if (!iq_buf_reserve(buf, max))
		return -1;
	do
		r = recv(fd, buf->data + buf->len, max, MSG_DONTWAIT);
	while (r < 0 && errno == EINTR);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return 0;
	if (r <= 0)
		return -1;
	buf->len += (size_t) r;
	return 1;
}

/*
 * recv_more: append up to max bytes that arrive before the deadline to
 * buf; false on timeout, hang-up or error
 */
static bool
recv_more(int fd, IqBuf *buf, size_t max, long long deadline)
{
	int			got = recv_ready(fd, buf, max);

	while (got == 0)
	{
		if (wait_readable(fd, deadline) <= 0)
			return false;
		got = recv_ready(fd, buf, max);
	}
	return got > 0;
}

/*
 * wait_idle: until the first byte of the next request (true), or the idle
 * timeout; the setting is read again every slice, so a reload applies to
 * connections already idle
 */
static bool
wait_idle(int fd)
{
	long long	since = iq_conn_now_ms();

	for (;;)
	{
		long long	end = since + iq_conn_idle_timeout_ms();
		long long	now = iq_conn_now_ms();
		int			rc;

		if (now >= end)
			return false;
		rc = wait_readable(fd, end < now + WIRE_WAIT_SLICE_MS ? end : now + WIRE_WAIT_SLICE_MS);
		if (rc != 0)
			return rc > 0;
	}
}

/*
 * answer: produce the whole response for one request and send it; with
 * defer, an answer that fits a chunk stays in out for the next one's send
 * (the caller's flush_out): a client pipelining gets then has one send,
 * and one wakeup, for the answers to what it sent at once, not one each
 */
static bool
answer(int fd, const char *req, size_t len, IqBuf *out, bool defer)
{
	IqReadStream *s = iq_read_begin(req, len);
	bool		more = true;
	bool		ok = true;

	if (s == NULL)
		return false;
	while (more && ok)
	{
		more = iq_read_produce(s, out, WIRE_CHUNK);
		if (out->oom)
		{
			ok = false;
			break;
		}
		if (!more && defer && out->len < WIRE_CHUNK)
			break;
		ok = send_all(fd, out->data, out->len);
		out->len = 0;
	}
	iq_read_finish(s);
	return ok;
}

/* flush_out: the answers deferred in out, sent */
static bool
flush_out(int fd, IqBuf *out)
{
	bool		ok = send_all(fd, out->data, out->len);

	out->len = 0;
	return ok;
}

/* next_is_whole: the request after the first used bytes of in arrived whole */
static bool
next_is_whole(const IqBuf *in, size_t used)
{
	size_t		left = in->len - used;

	return left >= 4 &&
		left - 4 >= iq_be32_get((const unsigned char *) in->data + used);
}

/* send_error: one wire error answer (before hanging up) */
static void
send_error(int fd, IqWireStatus status, const char *message)
{
	IqBuf		out;

	iq_buf_init(&out);
	iq_wire_response_error(&out, status, message);
	if (!out.oom)
		send_all(fd, out.data, out.len);
	iq_buf_free(&out);
}

/* serve: one client's connection, request after request, until the set stops */
static void
serve(IqWireConn *c, IqBuf *in)
{
	int			fd = c->fd;
	IqBuf		out;

	iq_buf_init(&out);
	for (;;)
	{
		uint32_t	need;
		size_t		whole;
		long long	deadline;
		const unsigned char *p;
		bool		ok;

		/* idle between queries, up to iq_fdw.stream_idle_timeout */
		if (in->len == 0)
		{
			int			got = recv_ready(fd, in, WIRE_CHUNK);

			if (got < 0 || (got == 0 && !wait_idle(fd)))
				goto done;
		}
		/* from its first byte, the request has iq_fdw.request_timeout */
		deadline = iq_conn_now_ms() + iq_conn_request_timeout_ms();
		while (in->len < 4)
			if (!recv_more(fd, in, WIRE_CHUNK, deadline))
				goto done;
		p = (const unsigned char *) in->data;
		need = iq_be32_get(p);
		if (need > IQ_WIRE_MAX_REQUEST)
		{
			/* the stream cannot be resynchronised: answer and hang up */
			if (out.len > 0 && !flush_out(fd, &out))
				goto done;
			send_error(fd, IQ_WIRE_BAD_REQUEST, "request too large");
			goto done;
		}
		if (!iq_request_memory_reserve(need))
		{
			if (out.len > 0 && !flush_out(fd, &out))
				goto done;
			send_error(fd, IQ_WIRE_INTERNAL,
					   "the worker is receiving too many large requests at once "
					   "(iq_fdw.request_memory): retry later");
			goto done;
		}
		/* read exactly the rest of this request: nothing uncharged piles up */
		whole = 4 + (size_t) need;
		ok = true;
		while (ok && in->len < whole)
			ok = recv_more(fd, in, whole - in->len, deadline);
		if (ok)
		{
			/* answering until the deferred answers are sent too */
			bool		defer = next_is_whole(in, whole);

			__atomic_store_n(&c->answering, 1, __ATOMIC_SEQ_CST);
			ok = answer(fd, in->data + 4, need, &out, defer);
			if (ok && out.len > 0 && !defer)
				ok = flush_out(fd, &out);
			if (out.len == 0)
				__atomic_store_n(&c->answering, 0, __ATOMIC_SEQ_CST);
		}
		iq_request_memory_release(need);
		if (!ok)
			goto done;
		/* stopping: the answers under way were let finish, no other begins */
		if (__atomic_load_n(&c->set->stopping, __ATOMIC_SEQ_CST))
		{
			if (out.len > 0)
				flush_out(fd, &out);
			goto done;
		}
		/* keep bytes of a request sent right behind this one */
		memmove(in->data, in->data + whole, in->len - whole);
		in->len -= whole;
		/* don't hold on to a large buffer after a large request */
		if (in->cap > 4 * WIRE_CHUNK)
		{
			IqBuf		small;

			iq_buf_init(&small);
			iq_buf_append(&small, in->data, in->len);
			iq_buf_free(in);
			*in = small;
			if (in->oom)
				goto done;
		}
		if (out.len == 0 && out.cap > 4 * WIRE_CHUNK)
			iq_buf_free(&out);
	}
done:
	iq_buf_free(&out);
}

/* conn_main: a connection thread; frees its slot before closing the fd */
static void *
conn_main(void *arg)
{
	IqWireConn *c = arg;
	IqWireConnSet *set = c->set;
	int			fd = c->fd;
	void	   *close_arg = c->close_arg;
	IqBuf		in;

	pthread_setname_np(pthread_self(), set->thread_name);
	iq_buf_init(&in);
	iq_buf_append(&in, c->early, c->early_len);
	free(c->early);
	c->early = NULL;
	if (!in.oom)
		serve(c, &in);
	iq_buf_free(&in);
	pthread_mutex_lock(&set->lock);
	c->fd = -1;					/* stop must no longer shut this fd down */
	pthread_mutex_unlock(&set->lock);
	/* outside the lock: closing an upgraded socket takes MHD's locks */
	set->close_fn(fd, close_arg);
	pthread_mutex_lock(&set->lock);
	set->nthreads--;			/* counted until closed: stop waits for it */
	pthread_cond_broadcast(&set->gone);
	pthread_mutex_unlock(&set->lock);
	return NULL;
}

/* iq_wire_conn_open: every slot free, connections welcome */
void
iq_wire_conn_open(IqWireConnSet *set)
{
	int			i;

	pthread_mutex_lock(&set->lock);
	for (i = 0; i < IQ_WIRE_CONN_MAX; i++)
		set->conns[i].fd = -1;
	set->stopping = false;
	pthread_mutex_unlock(&set->lock);
}

/* iq_wire_conn_serve: a thread for fd if a slot is free, else a refusal */
void
iq_wire_conn_serve(IqWireConnSet *set, int fd, void *close_arg,
				   const char *early, size_t early_len)
{
	pthread_attr_t attr;
	pthread_t	t;
	struct timeval tv = {WIRE_SEND_TIMEOUT_S, 0};
	IqWireConn *slot = NULL;
	char	   *copy = NULL;
	int			rc;
	int			i;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (early_len > 0)
	{
		copy = malloc(early_len);
		if (copy == NULL)
		{
			set->close_fn(fd, close_arg);
			return;
		}
		memcpy(copy, early, early_len);
	}
	pthread_mutex_lock(&set->lock);
	for (i = 0; i < IQ_WIRE_CONN_MAX && !set->stopping; i++)
		if (set->conns[i].fd < 0)
		{
			slot = &set->conns[i];
			break;
		}
	if (slot == NULL)
	{
		bool		stopping = set->stopping;

		pthread_mutex_unlock(&set->lock);
		free(copy);

		/*
		 * Stopping: hang up without a word, as an instance going away does,
		 * so the client waits for the partitions to move (src/channel.c)
		 * rather than take it for a refusal.
		 */
		if (!stopping)
			send_error(fd, IQ_WIRE_INTERNAL, set->full_message);
		set->close_fn(fd, close_arg);
		return;
	}
	slot->fd = fd;
	slot->close_arg = close_arg;
	slot->early = copy;
	slot->early_len = early_len;
	slot->set = set;
	set->nthreads++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, WIRE_STACK_SIZE);
	rc = iq_thread_create(&t, &attr, conn_main, slot);
	pthread_attr_destroy(&attr);
	if (rc != 0)
	{
		slot->fd = -1;
		slot->early = NULL;
		set->nthreads--;
		pthread_mutex_unlock(&set->lock);
		free(copy);
		set->close_fn(fd, close_arg);
		return;
	}
	pthread_mutex_unlock(&set->lock);
}

/*
 * hang_up: shut down the connections of set (its lock held), all of them or
 * only those not answering a request; how many answer still
 */
static int
hang_up(IqWireConnSet *set, bool all)
{
	int			answering = 0;
	int			i;

	for (i = 0; i < IQ_WIRE_CONN_MAX; i++)
	{
		IqWireConn *c = &set->conns[i];

		if (c->fd < 0)
			continue;
		if (!all && __atomic_load_n(&c->answering, __ATOMIC_SEQ_CST))
			answering++;
		else
			shutdown(c->fd, SHUT_RDWR); /* wakes recv() and send() */
	}
	return answering;
}

/*
 * iq_wire_conn_stop: hang up on every connection and wait for its thread.
 * An answer under way may finish within drain_ms: a clean stop (a rolling
 * restart) then cuts no read in flight, and a client whose next request
 * finds the connection gone asks again (src/channel.c).
 */
void
iq_wire_conn_stop(IqWireConnSet *set, int drain_ms)
{
	long long	deadline = iq_conn_now_ms() + drain_ms;

	pthread_mutex_lock(&set->lock);
	__atomic_store_n(&set->stopping, true, __ATOMIC_SEQ_CST);
	while (hang_up(set, false) > 0 && iq_conn_now_ms() < deadline)
	{
		pthread_mutex_unlock(&set->lock);
		usleep(DRAIN_POLL_US);
		pthread_mutex_lock(&set->lock);
	}
	hang_up(set, true);
	while (set->nthreads > 0)
		pthread_cond_wait(&set->gone, &set->lock);
	pthread_mutex_unlock(&set->lock);
}

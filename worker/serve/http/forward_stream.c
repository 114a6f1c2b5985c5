/*-------------------------------------------------------------------------
 * forward_stream.c
 *	  Forwarded gets over pooled iq-wire/1 streams (forwarder thread only).
 *
 * A forwarded get over curl cost the forwarder a transfer set up, an HTTP
 * request built and an answer parsed per get, and the owner a JSON get of
 * its own: the one forwarder thread was the bottleneck (forwarded gets at
 * a fifth of local ones).  Here each peer has up to FSTREAM_PER_PEER
 * connections upgraded with GET /iq/v1/stream (as backends use, common/
 * wire.h), each carrying many pipelined IQ_OP_GET requests, answered in
 * order; what the forwarder finds queued is sent with one send() per
 * stream.  The owner answers from its read handler, without HTTP or JSON;
 * the asking instance renders the JSON exactly as the owner would have
 * (routes.c).  The stream is not served over TLS (upgrade.c), so with TLS
 * on forwarded gets stay curl transfers (forwarded_get.c).
 *
 * Every get keeps iq_fdw.peer_timeout from its submission: a stream whose
 * oldest get is past it is closed (answers come in order, a later one
 * cannot pass it), the expired gets fail as timed out and the others are
 * sent again on a new stream.  A stream the owner closed (idle timeout, a
 * stop) has its gets sent again once; connection refused fails them as
 * refused, as curl's did.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/peer_api.h"
#include "common/wire.h"
#include "worker/serve/http/forward_internal.h"

#define FSTREAM_PER_PEER	4
#define FSTREAM_SHARE		64	/* gets in flight on a stream before the next is used */
#define FSTREAM_PEERS		IQ_HTTP_MAX_MEMBERS
#define FSTREAM_HEAD_MAX	4096	/* the 101 answer's head */

typedef enum
{
	FS_CLOSED,
	FS_CONNECTING,
	FS_UPGRADING,				/* the upgrade sent, its 101 awaited */
	FS_READY
} FsState;

typedef struct FStream
{
	int			fd;
	int			id;				/* peer * FSTREAM_PER_PEER + slot: its epoll tag */
	FsState		state;
	uint32_t	mask;			/* epoll events asked for */
	IqBuf		out;			/* bytes to send now */
	size_t		out_off;
	IqBuf		pending;		/* requests waiting for the 101 */
	IqBuf		head;			/* the upgrade's answer, until its blank line */
	IqWireReader rd;
	IqForwardJob *first;		/* in flight, oldest first: answers come in order */
	IqForwardJob *last;
	int			n;
	bool		dirty;			/* out grew: send at the next flush */
} FStream;

typedef struct FPeer
{
	char		host[IQ_HTTP_HOST_LEN];
	int			port;
	FStream		s[FSTREAM_PER_PEER];
} FPeer;

static FPeer peers[FSTREAM_PEERS];
static int	npeers = 0;
static int	ep_fd = -1;

static void stream_close(FStream *st);

/* iq_fstream_init: the forwarder's epoll set, before any submit */
void
iq_fstream_init(int epoll_fd)
{
	ep_fd = epoll_fd;
	npeers = 0;
}

/* set_mask: the events to wait for on st (EPOLLOUT only while bytes wait) */
static void
set_mask(FStream *st, uint32_t mask, int op)
{
	struct epoll_event ev;

	if (op == EPOLL_CTL_MOD && mask == st->mask)
		return;
	memset(&ev, 0, sizeof(ev));
	ev.events = mask;
	ev.data.u64 = IQ_FSTREAM_TAG | (uint64_t) st->id;
	epoll_ctl(ep_fd, op, st->fd, &ev);
	st->mask = mask;
}

/* take_jobs: st's gets, its FIFO emptied */
static IqForwardJob *
take_jobs(FStream *st)
{
	IqForwardJob *jobs = st->first;

	st->first = st->last = NULL;
	st->n = 0;
	return jobs;
}

/*
 * stream_broke: st is closed; its gets are sent again once on a new stream
 * when resend allows (the owner hung up on a kept stream), else fail with
 * what happened
 */
static void
stream_broke(FStream *st, bool resend, bool refused, const char *what)
{
	IqForwardJob *job = take_jobs(st);

	stream_close(st);
	while (job)
	{
		IqForwardJob *next = job->next;

		if (resend && !job->resent)
		{
			job->resent = true;
			iq_fstream_submit(job);
		}
		else
			iq_forward_fail(job, false, refused, what);
		job = next;
	}
}

/* stream_close: the socket and buffers of st released (its jobs taken before) */
static void
stream_close(FStream *st)
{
	if (st->fd >= 0)
	{
		epoll_ctl(ep_fd, EPOLL_CTL_DEL, st->fd, NULL);
		close(st->fd);
	}
	st->fd = -1;
	st->state = FS_CLOSED;
	st->mask = 0;
	iq_buf_free(&st->out);
	iq_buf_free(&st->pending);
	iq_buf_free(&st->head);
	iq_wire_reader_free(&st->rd);
	st->out_off = 0;
	st->dirty = false;
}

/* stream_open: a non-blocking connect to the peer (false: failed at once) */
static bool
stream_open(FPeer *peer, FStream *st, char *err, size_t errsize, bool *refused)
{
	struct addrinfo hints;
	struct addrinfo *ai = NULL;
	char		port[16];
	int			one = 1;
	int			rc;
	char		req[IQ_PEER_AUTHORITY_LEN + 160];
	char		authority[IQ_PEER_AUTHORITY_LEN];

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	snprintf(port, sizeof(port), "%d", peer->port);
	/* peers are named by address or by a name resolved once per connection */
	rc = getaddrinfo(peer->host, port, &hints, &ai);
	if (rc != 0)
	{
		snprintf(err, errsize, "Could not resolve host: %s (%s)", peer->host, gai_strerror(rc));
		return false;
	}
	st->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (st->fd < 0)
	{
		snprintf(err, errsize, "could not create a socket: %s", strerror(errno));
		freeaddrinfo(ai);
		return false;
	}
	setsockopt(st->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	rc = connect(st->fd, ai->ai_addr, ai->ai_addrlen);
	freeaddrinfo(ai);
	if (rc != 0 && errno != EINPROGRESS)
	{
		*refused = (errno == ECONNREFUSED);
		snprintf(err, errsize, "Failed to connect to %s port %d: %s", peer->host, peer->port,
				 strerror(errno));
		close(st->fd);
		st->fd = -1;
		return false;
	}
	iq_buf_init(&st->out);
	iq_buf_init(&st->pending);
	iq_buf_init(&st->head);
	iq_wire_reader_init(&st->rd);
	st->out_off = 0;
	(void) iq_peer_authority(authority, sizeof(authority), peer->host, peer->port);
	snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\n\r\n",
			 IQ_PEER_STREAM_PATH, authority, IQ_PEER_STREAM_PROTOCOL);
	iq_buf_append(&st->out, req, strlen(req));
	st->state = FS_CONNECTING;
	st->mask = 0;
	set_mask(st, EPOLLOUT, EPOLL_CTL_ADD);
	return true;
}

/* peer_of: the pool of host:port, made on first use (NULL: too many peers) */
static FPeer *
peer_of(const char *host, int port)
{
	FPeer	   *peer;
	int			i;

	for (i = 0; i < npeers; i++)
		if (peers[i].port == port && strcmp(peers[i].host, host) == 0)
			return &peers[i];
	/* a peer gone (every stream closed) leaves its place to a new one */
	for (i = 0, peer = NULL; i < npeers && peer == NULL; i++)
	{
		int			j;

		peer = &peers[i];
		for (j = 0; j < FSTREAM_PER_PEER; j++)
			if (peers[i].s[j].state != FS_CLOSED)
				peer = NULL;
	}
	if (peer == NULL && npeers == FSTREAM_PEERS)
		return NULL;
	if (peer == NULL)
		peer = &peers[npeers++];
	memset(peer, 0, sizeof(*peer));
	snprintf(peer->host, sizeof(peer->host), "%s", host);
	peer->port = port;
	for (i = 0; i < FSTREAM_PER_PEER; i++)
	{
		peer->s[i].fd = -1;
		peer->s[i].id = (int) (peer - peers) * FSTREAM_PER_PEER + i;
	}
	return peer;
}

/*
 * pick: the first open stream with fewer than FSTREAM_SHARE gets in
 * flight, else a closed one, else the least busy.
 *
 * Gets that share a stream share its sends, the owner's wake-ups and its
 * answers' sends.  Spread evenly over every stream, each wake-up of an
 * owner's stream thread answered only a few: with 64 connections of wrk,
 * filling one stream per peer first took forwarded gets from 0.44-0.48
 * to 0.50-0.64 of local ones (alternated runs, bench/http_get.sh).  Streams
 * are filled in order, so another one (another thread of the owner) works
 * only under more gets in flight than one stream carries well, and the
 * others go idle until the owner's idle timeout closes them.
 */
static FStream *
pick(FPeer *peer)
{
	FStream    *best = NULL;
	FStream    *closed = NULL;
	int			i;

	for (i = 0; i < FSTREAM_PER_PEER; i++)
	{
		FStream    *st = &peer->s[i];

		if (st->state == FS_CLOSED)
		{
			if (closed == NULL)
				closed = st;
			continue;
		}
		if (st->n < FSTREAM_SHARE)
			return st;
		if (best == NULL || st->n < best->n)
			best = st;
	}
	return closed ? closed : best;
}

/* iq_fstream_submit: the get queued on a stream to its owner */
void
iq_fstream_submit(IqForwardJob *job)
{
	FPeer	   *peer = peer_of(job->host, job->port);
	FStream    *st;
	char		err[256];
	bool		refused = false;

	if (peer == NULL)
	{
		iq_forward_fail(job, false, false, "too many peers for the forwarder's streams");
		return;
	}
	st = pick(peer);
	if (st->state == FS_CLOSED && !stream_open(peer, st, err, sizeof(err), &refused))
	{
		iq_forward_fail(job, false, refused, err);
		return;
	}
	job->next = NULL;
	if (st->last)
		st->last->next = job;
	else
		st->first = job;
	st->last = job;
	st->n++;
	if (st->state == FS_READY)
	{
		iq_buf_append(&st->out, job->request.data, job->request.len);
		st->dirty = true;
	}
	else
		iq_buf_append(&st->pending, job->request.data, job->request.len);
}

/* stream_send: as much of out as the socket takes; false: the stream broke */
static bool
stream_send(FStream *st)
{
	while (st->out_off < st->out.len)
	{
		ssize_t		w = send(st->fd, st->out.data + st->out_off, st->out.len - st->out_off,
							 MSG_NOSIGNAL);

		if (w < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			return false;
		}
		st->out_off += (size_t) w;
	}
	if (st->out_off == st->out.len)
		st->out.len = st->out_off = 0;
	set_mask(st, EPOLLIN | (st->out.len > 0 ? EPOLLOUT : 0), EPOLL_CTL_MOD);
	return true;
}

/* iq_fstream_flush: what the last submits queued, one send per stream */
void
iq_fstream_flush(void)
{
	int			i,
				j;

	for (i = 0; i < npeers; i++)
		for (j = 0; j < FSTREAM_PER_PEER; j++)
		{
			FStream    *st = &peers[i].s[j];

			if (!st->dirty || st->state != FS_READY)
				continue;
			st->dirty = false;
			if (!stream_send(st))
				stream_broke(st, true, false, "the owner closed the connection");
		}
}

/* answer_head: the oldest get's answer came (an event of the reader) */
static void
answer_head(FStream *st, IqWireEvent ev)
{
	IqForwardJob *job = st->first;

	st->first = job->next;
	if (st->first == NULL)
		st->last = NULL;
	st->n--;
	iq_forward_finish_wire(job, ev == IQ_EV_END ? NULL : &st->rd);
}

/* next_answer: a fresh reader for the next answer, given the bytes left over */
static void
next_answer(FStream *st)
{
	IqWireReader next;

	iq_wire_reader_init(&next);
	if (st->rd.buf.len > st->rd.pos)
		iq_wire_reader_feed(&next, st->rd.buf.data + st->rd.pos, st->rd.buf.len - st->rd.pos);
	iq_wire_reader_free(&st->rd);
	st->rd = next;
}

/* read_answers: the answers in bytes arrived; false: the stream broke */
static bool
read_answers(FStream *st, const char *data, size_t len)
{
	iq_wire_reader_feed(&st->rd, data, len);
	for (;;)
	{
		IqWireEvent ev = iq_wire_reader_next(&st->rd);

		if (ev == IQ_EV_NEED_MORE)
			return true;
		if (st->first == NULL || (ev == IQ_EV_ERROR && st->rd.corrupt))
			return false;
		if (ev == IQ_EV_ROW)
		{
			IqBuf	   *v = &st->first->result.body;

			v->len = 0;
			if (st->rd.value_len > 0)
				iq_buf_append(v, st->rd.value, (size_t) st->rd.value_len);
			st->first->result.found = st->rd.value_len >= 0;
			if (v->oom)
				return false;
		}
		else if (ev == IQ_EV_END || ev == IQ_EV_ERROR)
		{
			answer_head(st, ev);
			next_answer(st);
		}
	}
}

/* read_upgrade: the 101's head; then the requests waiting go out */
static bool
read_upgrade(FStream *st, const char *data, size_t len, char *err, size_t errsize)
{
	char	   *end;
	size_t		used;

	iq_buf_append(&st->head, data, len);
	iq_buf_u8(&st->head, 0);
	st->head.len--;
	if (st->head.oom)
		return false;
	end = strstr(st->head.data, "\r\n\r\n");
	if (end == NULL)
	{
		snprintf(err, errsize, "the owner's answer to the upgrade is too long");
		return st->head.len < FSTREAM_HEAD_MAX;
	}
	if (strncmp(st->head.data, "HTTP/1.1 101 ", 13) != 0)
	{
		size_t		n = strcspn(st->head.data, "\r\n");

		snprintf(err, errsize, "the owner refused the stream: %.*s", (int) (n > 200 ? 200 : n),
				 st->head.data);
		return false;
	}
	used = (size_t) (end + 4 - st->head.data);
	st->state = FS_READY;
	iq_buf_append(&st->out, st->pending.data, st->pending.len);
	iq_buf_free(&st->pending);
	if (st->head.len > used && !read_answers(st, st->head.data + used, st->head.len - used))
		return false;
	iq_buf_free(&st->head);
	return stream_send(st);
}

/* on_connected: the connect's outcome; the upgrade goes out */
static void
on_connected(FPeer *peer, FStream *st)
{
	int			soerr = 0;
	socklen_t	sl = sizeof(soerr);
	char		err[256];

	getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
	if (soerr != 0)
	{
		snprintf(err, sizeof(err), "Failed to connect to %s port %d: %s", peer->host,
				 peer->port, strerror(soerr));
		stream_broke(st, false, soerr == ECONNREFUSED, err);
		return;
	}
	st->state = FS_UPGRADING;
	if (!stream_send(st))
		stream_broke(st, false, false, "the owner closed the connection");
}

/* on_readable: bytes from the owner, or its hang-up */
static void
on_readable(FStream *st)
{
	char		buf[64 * 1024];
	char		err[256] = "the owner closed the connection";
	ssize_t		r = recv(st->fd, buf, sizeof(buf), 0);
	bool		ok;

	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (r <= 0)
	{
		if (r < 0)
			snprintf(err, sizeof(err), "Recv failure: %s", strerror(errno));
		/* a kept stream hung up on (idle timeout, a stop): send again once */
		stream_broke(st, st->state == FS_READY, false, err);
		return;
	}
	if (st->state == FS_UPGRADING)
		ok = read_upgrade(st, buf, (size_t) r, err, sizeof(err));
	else
	{
		ok = read_answers(st, buf, (size_t) r);
		if (!ok)
			snprintf(err, sizeof(err), "corrupt answer from the owner: %s", st->rd.message);
	}
	if (!ok)
		stream_broke(st, false, false, err);
}

/* iq_fstream_event: epoll says tag's stream can go on */
void
iq_fstream_event(uint64_t tag, uint32_t events)
{
	uint64_t	i = tag & ~IQ_FSTREAM_TAG;
	FPeer	   *peer = &peers[i / FSTREAM_PER_PEER];
	FStream    *st = &peer->s[i % FSTREAM_PER_PEER];

	if (st->state == FS_CLOSED)
		return;
	if (st->state == FS_CONNECTING)
	{
		/* an event of a socket closed earlier in this batch has no EPOLLOUT */
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			on_connected(peer, st);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		on_readable(st);
	if (st->state != FS_CLOSED && (events & EPOLLOUT) && !stream_send(st))
		stream_broke(st, true, false, "the owner closed the connection");
}

/*
 * expire: st's oldest get is past its deadline; the stream cannot answer
 * later ones before it, so it is closed: the expired gets time out, the
 * others go again on a new stream
 */
static void
expire(FStream *st, long long now)
{
	IqForwardJob *job = take_jobs(st);
	char		err[160];

	stream_close(st);
	while (job)
	{
		IqForwardJob *next = job->next;

		if (job->deadline <= now)
		{
			snprintf(err, sizeof(err), "Operation timed out after %d milliseconds",
					 iq_http_config.peer_timeout_ms);
			iq_forward_fail(job, true, false, err);
		}
		else
			iq_fstream_submit(job);
		job = next;
	}
}

/* iq_fstream_tick: every stream whose oldest get is past its deadline */
void
iq_fstream_tick(void)
{
	long long	now = iq_http_now_ms();
	int			i,
				j;

	for (i = 0; i < npeers; i++)
		for (j = 0; j < FSTREAM_PER_PEER; j++)
		{
			FStream    *st = &peers[i].s[j];

			if (st->first && st->first->deadline <= now)
				expire(st, now);
		}
	iq_fstream_flush();
}

/* iq_fstream_next_deadline: the earliest deadline in flight, -1 if none */
long long
iq_fstream_next_deadline(void)
{
	long long	next = -1;
	int			i,
				j;

	for (i = 0; i < npeers; i++)
		for (j = 0; j < FSTREAM_PER_PEER; j++)
		{
			IqForwardJob *job = peers[i].s[j].first;

			if (job && (next < 0 || job->deadline < next))
				next = job->deadline;
		}
	return next;
}

/* iq_fstream_shutdown: every get in flight failed, every stream closed */
void
iq_fstream_shutdown(void)
{
	int			i,
				j;

	for (i = 0; i < npeers; i++)
		for (j = 0; j < FSTREAM_PER_PEER; j++)
			stream_broke(&peers[i].s[j], false, false, "the server is stopping");
	npeers = 0;
}

/*-------------------------------------------------------------------------
 * gather.c
 *	  ?scope=all: the seed's all / range / approximate-num-entries over
 *	  every instance, not only this one.
 *
 * Each member that owns partitions is asked for exactly those partitions
 * over the compact endpoint (this instance answers itself through the same
 * read handler), so a partition that moved meanwhile gives NOT_HELD and a
 * 503 instead of a silently partial answer.
 *
 * A scan is streamed, as the FDW's reads are: every member's answer
 * arrives in its own sorted stream, all of them in flight at once on one
 * curl multi handle per request, and the merge hands out one row at a
 * time in key byte order as MHD asks for more of the chunked response.
 * Memory is bounded per request: a peer's bytes not yet merged pause its
 * transfer beyond GATHER_INBOX_MAX, this instance's rows are produced a
 * chunk at a time, and the JSON goes out a chunk at a time.  Statuses
 * (503 for a partition moved or restoring, or a peer refusing the
 * connection as one stopping does; 502 or 504 for a peer) are
 * decided from every member's header and first row, before the 200; a
 * member failing after that breaks the chunked stream, so a client never
 * takes a truncated list for a whole one.
 *
 * Server threads only: no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "common/stores.h"
#include "worker/serve/http/gather.h"
#include "worker/serve/read_handler.h"

/* A peer's answer received but not yet merged, beyond which it is paused. */
#define GATHER_INBOX_MAX	(256 * 1024)
/* This instance's answer is produced this much at a time. */
#define GATHER_LOCAL_CHUNK	(64 * 1024)
/* JSON handed to MHD per callback, at least. */
#define GATHER_OUT_CHUNK	(64 * 1024)
/* Longest single wait for peers, so the idle timeout is checked often. */
#define GATHER_POLL_MS		100

typedef struct Source
{
	char		name[IQ_HTTP_HOST_LEN + 16];	/* host:port */
	IqWireReader reader;
	bool		has_row;

	/* this instance */
	IqReadStream *local;
	bool		local_more;

	/* a peer */
	CURL	   *easy;
	struct curl_slist *headers;
	IqBuf		request;		/* the body: curl reads it while in flight */
	IqBuf		inbox;			/* arrived, not yet fed to the reader */
	bool		paused;
	bool		done;			/* the transfer ended (see rc) */
	CURLcode	rc;
	long		http_status;
	long long	last_progress;	/* ms, for the peer timeout */
	size_t		partial;		/* bytes received since then */
	char		errbuf[CURL_ERROR_SIZE];
} Source;

typedef struct Gather
{
	CURLM	   *multi;
	Source	   *src;
	int			n;
	IqStoreId	store;
	IqBuf		out;			/* JSON not yet handed to MHD */
	size_t		off;
	bool		first;
	int			direction;		/* of the merge: 1 ascending, -1 descending */
	bool		done;
	bool		failed;
} Gather;

/* Why a source could not give its next event, for the status and message. */
typedef struct SourceError
{
	unsigned int status;		/* HTTP status to answer with */
	const char *owner;			/* the instance at fault, host:port */
	char		message[600];
} SourceError;

/* progress: src's answer moved on (a frame, or IQ_WIRE_PROGRESS_BYTES) */
static void
progress(Source *src)
{
	src->last_progress = iq_http_now_ms();
	src->partial = 0;
}

/* write_cb: curl hands a peer's bytes; beyond the bound, pause the peer */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	Source	   *src = userdata;
	size_t		n = size * nmemb;

	if (src->http_status == 0)
		curl_easy_getinfo(src->easy, CURLINFO_RESPONSE_CODE, &src->http_status);
	if (src->inbox.len >= GATHER_INBOX_MAX)
	{
		src->paused = true;
		return CURL_WRITEFUNC_PAUSE;	/* curl keeps the bytes for later */
	}
	iq_buf_append(&src->inbox, ptr, n);
	/* bytes alone are progress only by the bulk: a trickle is not */
	src->partial += n;
	if (src->partial >= IQ_WIRE_PROGRESS_BYTES)
		progress(src);
	return src->inbox.oom ? 0 : n;
}

/* start_peer: POST the request to member host:port, added to the multi */
static bool
start_peer(Gather *g, Source *src, const IqHttpMember *member)
{
	char		url[IQ_PEER_URL_LEN];
	int			n = iq_peer_url(url, sizeof(url), iq_http_config.tls.on,
								member->host, member->port, IQ_PEER_READ_PATH);

	if (n < 0 || (size_t) n >= sizeof(url))
		return false;
	src->easy = curl_easy_init();
	if (src->easy == NULL)
		return false;
	src->headers = iq_http_peer_setup(src->easy, url, true);
	curl_easy_setopt(src->easy, CURLOPT_POSTFIELDS, src->request.data);
	curl_easy_setopt(src->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) src->request.len);
	curl_easy_setopt(src->easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(src->easy, CURLOPT_WRITEDATA, src);
	curl_easy_setopt(src->easy, CURLOPT_PRIVATE, src);
	curl_easy_setopt(src->easy, CURLOPT_ERRORBUFFER, src->errbuf);
	progress(src);		/* the peer timeout runs from the request */
	return curl_multi_add_handle(g->multi, src->easy) == CURLM_OK;
}

/* free_source: stop its transfer or close its cursor, free its buffers */
static void
free_source(Gather *g, Source *src)
{
	if (src->easy)
	{
		curl_multi_remove_handle(g->multi, src->easy);
		curl_easy_cleanup(src->easy);
		src->easy = NULL;
	}
	curl_slist_free_all(src->headers);
	src->headers = NULL;
	if (src->local)
		iq_read_finish(src->local);
	src->local = NULL;
	iq_buf_free(&src->request);
	iq_buf_free(&src->inbox);
	iq_wire_reader_free(&src->reader);
}

/* gather_free: everything of a gather, whatever state it is in */
static void
gather_free(Gather *g)
{
	for (int i = 0; i < g->n; i++)
		free_source(g, &g->src[i]);
	free(g->src);
	iq_http_multi_give(g->multi);	/* its connections kept for the next */
	iq_buf_free(&g->out);
	free(g);
}

/* drive: let curl move every transfer, waiting up to wait_ms for bytes */
static void
drive(Gather *g, int wait_ms)
{
	int			running = 0;
	int			left;
	CURLMsg    *msg;

	curl_multi_perform(g->multi, &running);
	while ((msg = curl_multi_info_read(g->multi, &left)) != NULL)
	{
		Source	   *src = NULL;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **) &src);
		if (src == NULL)
			continue;
		src->done = true;
		src->rc = msg->data.result;
		if (src->http_status == 0)
			curl_easy_getinfo(src->easy, CURLINFO_RESPONSE_CODE, &src->http_status);
	}
	if (wait_ms > 0 && running > 0)
		curl_multi_poll(g->multi, NULL, 0, wait_ms, NULL);
}

/* peer_failed: the error for a peer whose answer cannot be read on */
static void
peer_failed(Source *src, SourceError *e)
{
	e->owner = src->name;
	if (src->http_status != 0 && src->http_status != 200)
	{
		e->status = MHD_HTTP_BAD_GATEWAY;
		snprintf(e->message, sizeof(e->message), "instance %s answered HTTP %ld",
				 src->name, src->http_status);
	}
	else if (!src->done)
	{
		e->status = MHD_HTTP_GATEWAY_TIMEOUT;
		snprintf(e->message, sizeof(e->message),
				 "instance %s did not answer in time: no complete row (nor %d kB) for %d ms",
				 src->name, IQ_WIRE_PROGRESS_BYTES / 1024, iq_http_config.peer_timeout_ms);
	}
	else if (src->rc != CURLE_OK)
	{
		/* refused: the member stops or stopped, its partitions move (503, as NOT_HELD) */
		e->status = src->rc == CURLE_OPERATION_TIMEDOUT ? MHD_HTTP_GATEWAY_TIMEOUT :
			src->rc == CURLE_COULDNT_CONNECT ? MHD_HTTP_SERVICE_UNAVAILABLE :
			MHD_HTTP_BAD_GATEWAY;
		snprintf(e->message, sizeof(e->message), "instance %s is unreachable: %s",
				 src->name, src->errbuf[0] ? src->errbuf : curl_easy_strerror(src->rc));
	}
	else
	{
		e->status = MHD_HTTP_BAD_GATEWAY;
		snprintf(e->message, sizeof(e->message), "instance %s: the answer ended early",
				 src->name);
	}
}

/*
 * more_bytes: feed src's reader what has arrived, waiting for it up to the
 * peer timeout without progress (a frame, or IQ_WIRE_PROGRESS_BYTES),
 * however often a byte arrives; false with *e when there will be none.
 */
static bool
more_bytes(Gather *g, Source *src, SourceError *e)
{
	e->owner = src->name;
	if (src->local)
	{
		IqBuf		chunk;

		if (!src->local_more)
		{
			e->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
			snprintf(e->message, sizeof(e->message), "this instance's answer ended early");
			return false;
		}
		iq_buf_init(&chunk);
		src->local_more = iq_read_produce(src->local, &chunk, GATHER_LOCAL_CHUNK);
		if (!chunk.oom)
			iq_wire_reader_feed(&src->reader, chunk.data ? chunk.data : "", chunk.len);
		iq_buf_free(&chunk);
		if (chunk.oom || src->reader.buf.oom)
		{
			e->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
			snprintf(e->message, sizeof(e->message), "out of memory");
			return false;
		}
		return true;
	}
	for (;;)
	{
		if (src->http_status != 0 && src->http_status != 200)
		{
			peer_failed(src, e);
			return false;
		}
		if (src->inbox.len > 0)
		{
			iq_wire_reader_feed(&src->reader, src->inbox.data, src->inbox.len);
			src->inbox.len = 0;
			if (src->paused)
			{
				src->paused = false;
				progress(src);	/* our pause is no fault of the peer's */
				curl_easy_pause(src->easy, CURLPAUSE_CONT);
			}
			if (src->reader.buf.oom)
			{
				e->status = MHD_HTTP_INTERNAL_SERVER_ERROR;
				snprintf(e->message, sizeof(e->message), "out of memory");
				return false;
			}
			return true;
		}
		if (src->done || src->inbox.oom ||
			iq_http_now_ms() - src->last_progress >= iq_http_config.peer_timeout_ms)
		{
			peer_failed(src, e);
			return false;
		}
		drive(g, GATHER_POLL_MS);
	}
}

/* next_event: src's next complete wire event, or false with *e */
static bool
next_event(Gather *g, Source *src, IqWireEvent *ev, SourceError *e)
{
	e->owner = src->name;
	for (;;)
	{
		*ev = iq_wire_reader_next(&src->reader);
		if (*ev != IQ_EV_NEED_MORE)
		{
			if (!src->local)
				progress(src);
			break;
		}
		if (!more_bytes(g, src, e))
			return false;
	}
	if (*ev == IQ_EV_ERROR)
	{
		IqWireStatus st = src->reader.status;

		e->status = (st == IQ_WIRE_NOT_HELD || st == IQ_WIRE_RESTORING) ?
			MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_GATEWAY;
		snprintf(e->message, sizeof(e->message), "instance %s: %s", src->name,
				 src->reader.message[0] ? src->reader.message : "truncated answer");
		return false;
	}
	return true;
}

/* next_row: advance src to its next row or its end; false with *e */
static bool
next_row(Gather *g, Source *src, SourceError *e)
{
	IqWireEvent ev;

	if (!next_event(g, src, &ev, e))
		return false;
	if (ev == IQ_EV_HEADER)
	{
		e->status = MHD_HTTP_BAD_GATEWAY;
		snprintf(e->message, sizeof(e->message), "instance %s: a second header in its answer",
				 src->name);
		return false;
	}
	src->has_row = (ev == IQ_EV_ROW);
	return true;
}

/*
 * gather_start: ask every member for its partitions, all at once, and read
 * every header and first row; NULL with a response queued on failure.
 */
static Gather *
gather_start(struct MHD_Connection *conn, const IqWireRequest *tmpl,
			 enum MHD_Result *ret)
{
	static __thread IqHttpOwnership o;
	int			count[IQ_HTTP_MAX_MEMBERS];
	Gather	   *g;
	SourceError e;
	int			p;

	iq_http_ownership(&o);
	memset(count, 0, sizeof(count));
	for (p = 0; p < o.partition_count && p < IQ_HTTP_MAX_PARTITIONS; p++)
	{
		if (o.owner[p] < 0 || o.owner[p] >= o.nmembers)
		{
			*ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "no instance owns partition %d yet", p);
			return NULL;
		}
		count[o.owner[p]]++;
	}
	g = calloc(1, sizeof(Gather));
	if (g)
	{
		g->src = calloc(o.nmembers + 1, sizeof(Source));
		g->multi = iq_http_multi_take();
	}
	if (g == NULL || g->src == NULL || g->multi == NULL)
	{
		if (g)
			gather_free(g);
		*ret = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
		return NULL;
	}
	iq_buf_init(&g->out);
	g->store = (IqStoreId) tmpl->store;
	g->first = true;

	for (int m = 0; m < o.nmembers; m++)
	{
		uint16_t	parts[IQ_HTTP_MAX_PARTITIONS];
		IqWireRequest req = *tmpl;
		Source	   *src = &g->src[g->n];
		bool		ok;

		if (count[m] == 0)
			continue;
		req.npartitions = 0;
		req.partitions = parts;
		for (p = 0; p < o.partition_count && p < IQ_HTTP_MAX_PARTITIONS; p++)
			if (o.owner[p] == m)
				parts[req.npartitions++] = (uint16_t) p;
		snprintf(src->name, sizeof(src->name), "%s:%d", o.members[m].host, o.members[m].port);
		iq_wire_reader_init(&src->reader);
		iq_buf_init(&src->inbox);
		iq_buf_init(&src->request);
		iq_wire_encode_request(&req, &src->request);
		g->n++;
		if (src->request.oom)
			ok = false;
		else if (m == o.self)
		{
			src->local = iq_read_begin(src->request.data, src->request.len);
			src->local_more = true;
			ok = src->local != NULL;
		}
		else
			ok = start_peer(g, src, &o.members[m]);
		if (!ok)
		{
			gather_free(g);
			*ret = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
									  "out of memory asking %s", src->name);
			return NULL;
		}
	}

	/* every header, then every first row: until here a status can still tell */
	for (int i = 0; i < g->n; i++)
	{
		IqWireEvent ev;

		if (!next_event(g, &g->src[i], &ev, &e))
			goto failed;
		if (ev != IQ_EV_HEADER)
		{
			e.status = MHD_HTTP_BAD_GATEWAY;
			snprintf(e.message, sizeof(e.message),
					 "instance %s: the answer did not start with a header", g->src[i].name);
			goto failed;
		}
	}
	for (int i = 0; i < g->n; i++)
		if (!next_row(g, &g->src[i], &e))
			goto failed;
	return g;

failed:
	*ret = iq_http_send_error(conn, e.status, e.owner, "%s", e.message);
	gather_free(g);
	return NULL;
}

/* fill: merge the next rows into g->out as JSON, a chunk or the end */
static void
fill(Gather *g)
{
	SourceError e;

	g->out.len = 0;
	g->off = 0;
	while (!g->done && g->out.len < GATHER_OUT_CHUNK && !g->out.oom)
	{
		Source	   *best = NULL;

		for (int i = 0; i < g->n; i++)
			if (g->src[i].has_row &&
				(best == NULL || iq_key_cmp(g->src[i].reader.key, g->src[i].reader.key_len,
											best->reader.key, best->reader.key_len) *
				 g->direction < 0))
				best = &g->src[i];
		if (best == NULL)
		{
			iq_buf_append(&g->out, "]}", 2);
			g->done = true;
			break;
		}
		iq_buf_append(&g->out, g->first ? "{\"key\":" : ",{\"key\":", g->first ? 7 : 8);
		g->first = false;
		iq_json_append(&g->out, iq_json_bytes(best->reader.key, best->reader.key_len));
		iq_buf_append(&g->out, ",\"value\":", 9);
		iq_json_append(&g->out, iq_json_value(g->store, best->reader.value,
											  best->reader.value_len < 0 ? 0 :
											  (size_t) best->reader.value_len));
		iq_buf_u8(&g->out, '}');
		if (!next_row(g, best, &e))
		{
			/* too late for a status: break the stream rather than end it */
			g->failed = true;
			break;
		}
	}
}

/* gather_reader: MHD's content callback: the next piece of the JSON */
static ssize_t
gather_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
	Gather	   *g = cls;

	(void) pos;
	if (g->off >= g->out.len)
	{
		if (g->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		fill(g);
	}
	if (g->failed || g->out.oom)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return iq_http_take(&g->out, &g->off, buf, max);
}

/* gather_done: MHD is done with the response (sent or dropped) */
static void
gather_done(void *cls)
{
	gather_free(cls);
}

/*
 * iq_http_gather_scan: all / range over every instance, merged by key (in
 * descending order when asked: every instance reads backwards), streamed
 */
enum MHD_Result
iq_http_gather_scan(struct MHD_Connection *conn, const IqStoreInfo *store,
					const char *from, size_t from_len,
					const char *to, size_t to_len, bool descending)
{
	IqWireRequest req;
	Gather	   *g;
	enum MHD_Result ret = MHD_NO;

	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_SCAN;
	req.store = (uint8_t) store->id;
	if (from)
	{
		req.flags |= IQ_FLAG_LOWER | IQ_FLAG_LOWER_INCL;
		req.lower = from;
		req.lower_len = (uint32_t) from_len;
	}
	if (to)
	{
		req.flags |= IQ_FLAG_UPPER | IQ_FLAG_UPPER_INCL;
		req.upper = to;
		req.upper_len = (uint32_t) to_len;
	}
	if (descending)
		req.flags |= IQ_FLAG_REVERSE;
	g = gather_start(conn, &req, &ret);
	if (g == NULL)
		return ret;
	g->direction = descending ? -1 : 1;
	iq_buf_append(&g->out, "{\"result\":[", 11);
	return iq_http_send_stream(conn, "application/json", GATHER_OUT_CHUNK,
							   gather_reader, g, gather_done);
}

/* iq_http_gather_count: approximate-num-entries summed over every instance */
enum MHD_Result
iq_http_gather_count(struct MHD_Connection *conn, const IqStoreInfo *store)
{
	IqWireRequest req;
	Gather	   *g;
	long long	total = 0;
	enum MHD_Result ret = MHD_NO;

	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_COUNT;
	req.store = (uint8_t) store->id;
	g = gather_start(conn, &req, &ret);
	if (g == NULL)
		return ret;
	/* each answer is one row: the count of that member's partitions */
	for (int i = 0; i < g->n; i++)
		if (g->src[i].has_row && g->src[i].reader.value_len == 8)
			total += iq_decode_int64((const unsigned char *) g->src[i].reader.value);
	gather_free(g);
	return iq_http_send_json(conn, MHD_HTTP_OK,
							 json_pack("{s:I}", "result", (json_int_t) total));
}

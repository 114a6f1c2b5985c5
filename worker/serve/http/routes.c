/*-------------------------------------------------------------------------
 * routes.c
 *	  The seed's JSON endpoints:
 *		GET /metadata
 *		GET /metrics (metrics.c)
 *		GET /metadata/stores/:store
 *		GET /metadata/stores/:store/key/:k
 *		GET /stores/:store/get/:k
 *		GET /stores/:store/all					[?scope=all][&order=desc]
 *		GET /stores/:store/range?from=&to=		[&scope=all][&order=desc]
 *		GET /stores/:store/approximate-num-entries	[?scope=all]
 *
 * As in the seed, all, range and approximate-num-entries answer for the
 * partitions this instance holds; ?scope=all gathers every instance's
 * (gather.c); order=desc lists keys in descending byte order, as Kafka
 * Streams' reverseAll and reverseRange do.  A get of a key another
 * instance owns is forwarded to the owner (forwarded_get.c, without blocking a server thread) and its
 * answer returned as it is.  Keys are
 * everything after ".../get/" or ".../key/", percent-decoded, so a key may
 * hold '/', '%', NUL or any byte.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/partitioner.h"
#include "common/standby.h"
#include "worker/counters.h"
#include "worker/serve/http/gather.h"
#include "worker/serve/http/http_internal.h"
#include "worker/store/store.h"

/* Local scans are streamed to the client in pieces of about this size. */
#define STREAM_CHUNK (64 * 1024)

/* A streamed {"result":[...]} over a local store cursor. */
typedef struct JsonStream
{
	IqStoreCursor *cursor;
	IqStoreId	store;
	IqBuf		buf;
	size_t		off;
	bool		first;
	bool		done;
	bool		failed;			/* the cursor failed: break the stream */
} JsonStream;

/* member_json: the seed's host info of a member */
static json_t *
member_json(const IqHttpMember *m)
{
	json_t	   *names = json_array();
	int			i;

	for (i = 0; i < IQ_NUM_STORES; i++)
		json_array_append_new(names, json_string(iq_stores[i].name));
	return json_pack("{s:o,s:i,s:o}",
					 "host", iq_json_bytes(m->host, strlen(m->host)),
					 "port", m->port,
					 "state-store-names", names);
}

/* members_holding: per member, how many partitions it owns in o */
static void
members_holding(const IqHttpOwnership *o, int *count)
{
	int			p;

	memset(count, 0, sizeof(int) * IQ_HTTP_MAX_MEMBERS);
	for (p = 0; p < o->partition_count && p < IQ_HTTP_MAX_PARTITIONS; p++)
		if (o->owner[p] >= 0 && o->owner[p] < o->nmembers)
			count[o->owner[p]]++;
}

/* route_metadata: every instance that holds partitions (all hold every store) */
static enum MHD_Result
route_metadata(struct MHD_Connection *conn)
{
	static __thread IqHttpOwnership o;
	int			count[IQ_HTTP_MAX_MEMBERS];
	json_t	   *list = json_array();
	int			i;

	iq_http_ownership(&o);
	members_holding(&o, count);
	for (i = 0; i < o.nmembers; i++)
		if (count[i] > 0)
			json_array_append_new(list, member_json(&o.members[i]));
	return iq_http_send_json(conn, MHD_HTTP_OK, json_pack("{s:o}", "result", list));
}

/* key_partition: partition of key, or -1 when the topics are not known yet */
static int
key_partition(const IqHttpOwnership *o, const char *key, size_t len)
{
	return iq_partition_for_key(iq_http_config.partitioner, key, len,
								o->partition_count);
}

/* route_key_metadata: the one instance that owns key, whether it exists or not */
static enum MHD_Result
route_key_metadata(struct MHD_Connection *conn, const char *key, size_t len)
{
	static __thread IqHttpOwnership o;
	int			p;

	iq_http_ownership(&o);
	p = key_partition(&o, key, len);
	if (p < 0 || p >= IQ_HTTP_MAX_PARTITIONS || o.owner[p] < 0 || o.owner[p] >= o.nmembers)
		return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
								  "no instance owns the key's partition yet (rebalance or startup in progress)");
	return iq_http_send_json(conn, MHD_HTTP_OK,
							 json_pack("{s:o}", "result",
									   member_json(&o.members[o.owner[p]])));
}

/* send_passthrough: an owner's answer, returned as it came */
static enum MHD_Result
send_passthrough(struct MHD_Connection *conn, IqForwardResult *res)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	resp = MHD_create_response_from_buffer(res->body.len, res->body.data,
										   MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
	{
		iq_buf_free(&res->body);
		return MHD_NO;
	}
	iq_buf_init(&res->body);	/* MHD owns the data now */
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (res->status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(resp, "Retry-After", "1");
	ret = MHD_queue_response(conn, (unsigned int) res->status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * forward_get: hand the get to the forwarder and suspend the connection;
 * iq_http_forward_answer answers once the owner has.
 */
static enum MHD_Result
forward_get(struct MHD_Connection *conn, IqGetCtx *ctx, const IqHttpMember *owner,
			const IqStoreInfo *store, const char *key, size_t len, int partition)
{
	snprintf(ctx->owner, sizeof(ctx->owner), "%s:%d", owner->host, owner->port);
	ctx->partition = partition;
	/* a forwarded request that is not ours either: ownership is moving */
	if (MHD_lookup_connection_value(conn, MHD_HEADER_KIND, IQ_PEER_FORWARDED_HEADER))
		return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, ctx->owner,
								  "partition %d moved while the request was forwarded",
								  partition);

	/*
	 * over a pooled peer stream, or with TLS on in a batch of gets over
	 * HTTPS; the JSON rendered here (forward_stream.c, forward_batch.c)
	 */
	ctx->job = iq_forward_submit_get(conn, owner->host, owner->port, store->id, key, len);
	if (ctx->job == NULL)
		return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, ctx->owner,
								  "cannot forward to the owner of partition %d now (server stopping?)",
								  partition);
	iq_count_forward(ctx->owner, false);
	return MHD_YES;
}

/*
 * send_store_read: the answer of a get read here (owned or standby)
 */
static enum MHD_Result
send_store_read(struct MHD_Connection *conn, IqReadStatus st, const IqStoreInfo *store,
				int p, char *value, size_t value_len, char *err)
{
	enum MHD_Result ret;

	switch (st)
	{
		case IQ_READ_OK:
			ret = iq_http_send_get(conn, store->id, value, value_len);
			break;
		case IQ_READ_NOT_FOUND:
			ret = iq_http_send_get(conn, store->id, NULL, 0);
			break;
		case IQ_READ_RESTORING:
			ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									 "partition %d is still restoring", p);
			break;
		case IQ_READ_NOT_HELD:
			ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									 "partition %d is being handed over", p);
			break;
		default:
			ret = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
									 "reading partition %d failed: %s", p,
									 err ? err : "unknown error");
			break;
	}
	free(value);
	free(err);
	return ret;
}

/*
 * standby_here: whether this instance keeps a standby replica of p within
 * the server's lag bound; *lag says how far behind it is.
 */
static bool
standby_here(int p, int64_t *lag)
{
	IqPartitionPosition pos;

	if (iq_http_config.standby_replicas == 0 ||
		!iq_store_standby_position(p, iq_store_read_clock(), &pos))
		return false;
	*lag = pos.end_offset - pos.consumed_offset;
	if (*lag < 0)
		*lag = 0;
	return *lag <= iq_http_config.standby_max_lag;
}

/*
 * read_standby: a get answered by the standby replica kept here
 */
static enum MHD_Result
read_standby(struct MHD_Connection *conn, const IqStoreInfo *store, int p,
			 const char *key, size_t len)
{
	char	   *value = NULL;
	size_t		value_len = 0;
	char	   *err = NULL;
	IqReadStatus st = iq_store_get_as(store->id, p, key, len, true, &value, &value_len, &err);

	return send_store_read(conn, st, store, p, value, value_len, err);
}

/*
 * first_standby: the first instance other than this one that the
 * placement gives a standby of p (common/standby.c); -1 if none.
 */
static int
first_standby(const IqHttpOwnership *o, int p)
{
	const char *hosts[IQ_STANDBY_MAX_MEMBERS];
	int			ports[IQ_STANDBY_MAX_MEMBERS];
	int			out[IQ_STANDBY_MAX_MEMBERS];
	int			n;

	if (o->nmembers > IQ_STANDBY_MAX_MEMBERS)
		return -1;
	for (int i = 0; i < o->nmembers; i++)
	{
		hosts[i] = o->members[i].host;
		ports[i] = o->members[i].port;
	}
	n = iq_standby_place(hosts, ports, o->nmembers, o->owner, o->partition_count, p,
						 iq_http_config.standby_replicas, out);
	for (int i = 0; i < n; i++)
		if (out[i] != o->self)
			return out[i];
	return -1;
}

/*
 * ask_standby
 *		The owner of a get's key cannot answer: a standby can, the one kept
 *		here when it is within the bound, else the first one elsewhere,
 *		asked with ?from=standby.  MHD_NO-or-answer in *ret when it did;
 *		false when there is none to ask.
 */
static bool
ask_standby(struct MHD_Connection *conn, IqGetCtx *ctx, enum MHD_Result *ret)
{
	static __thread IqHttpOwnership o;
	int64_t		lag;
	int			s;
	IqBuf		url;
	char		base[IQ_PEER_URL_LEN];

	if (ctx->to_standby || ctx->key == NULL || iq_http_config.standby_replicas == 0 ||
		MHD_lookup_connection_value(conn, MHD_HEADER_KIND, IQ_PEER_FORWARDED_HEADER))
		return false;
	if (standby_here(ctx->partition, &lag))
	{
		*ret = read_standby(conn, ctx->store, ctx->partition, ctx->key, ctx->key_len);
		return true;
	}
	iq_http_ownership(&o);
	s = first_standby(&o, ctx->partition);
	if (s < 0)
		return false;
	(void) iq_peer_url(base, sizeof(base), iq_http_config.tls.on, o.members[s].host,
					   o.members[s].port, "/stores/");
	iq_buf_init(&url);
	iq_buf_append(&url, base, strlen(base));
	iq_url_encode(&url, ctx->store->name, strlen(ctx->store->name));
	iq_buf_append(&url, "/get/", 5);
	iq_url_encode(&url, ctx->key, ctx->key_len);
	iq_buf_append(&url, "?from=standby", 13);
	iq_buf_u8(&url, 0);
	if (url.oom)
	{
		iq_buf_free(&url);
		return false;
	}
	iq_forward_job_free(ctx->job);
	ctx->to_standby = true;
	snprintf(ctx->owner, sizeof(ctx->owner), "%s:%d", o.members[s].host, o.members[s].port);
	ctx->job = iq_forward_submit(conn, url.data);
	iq_buf_free(&url);
	if (ctx->job == NULL)
		*ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, ctx->owner,
								  "cannot forward to the standby of partition %d now (server stopping?)",
								  ctx->partition);
	else
		*ret = MHD_YES;
	return true;
}

/*
 * send_wire_answer: the owner's answer over a peer stream, as the owner's
 * JSON get would have given it (send_store_read; a partition it no longer
 * holds as forward_get's refusal of a forward)
 */
static enum MHD_Result
send_wire_answer(struct MHD_Connection *conn, IqGetCtx *ctx, IqForwardResult *res)
{
	switch (res->wire_status)
	{
		case IQ_WIRE_OK:
			return iq_http_send_get(conn, ctx->store->id,
									res->found ? res->body.data : NULL,
									res->found ? res->body.len : 0);
		case IQ_WIRE_NOT_HELD:
			return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, ctx->owner,
									  "partition %d moved while the request was forwarded",
									  ctx->partition);
		case IQ_WIRE_RESTORING:
			return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "partition %d is still restoring", ctx->partition);
		default:
			return iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
									  "reading partition %d failed: %s", ctx->partition,
									  res->error);
	}
}

/* iq_http_forward_answer: the owner's answer to a forwarded get, as it came */
enum MHD_Result
iq_http_forward_answer(struct MHD_Connection *conn, IqGetCtx *ctx)
{
	IqForwardResult *res = iq_forward_job_result(ctx->job);
	enum MHD_Result ret;

	if (res->status == 0)
		iq_count_forward(ctx->owner, true);
	/* an owner down, cut off or handing over: a standby answers if it can */
	if ((res->status == 0 || res->status == MHD_HTTP_SERVICE_UNAVAILABLE) &&
		ask_standby(conn, ctx, &ret))
		return ret;
	if (res->status == 0)
	{
		/*
		 * An owner that refuses the connection is stopping or stopped: its
		 * partitions are moving, which a client retries as a rebalance (503)
		 */
		unsigned int status = res->timed_out ? MHD_HTTP_GATEWAY_TIMEOUT :
			res->refused ? MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_GATEWAY;

		return iq_http_send_error(conn, status, ctx->owner,
								  "owner %s of partition %d %s: %s", ctx->owner, ctx->partition,
								  res->timed_out ? "did not answer in time" : "is unreachable",
								  res->error);
	}
	if (res->wire)
		return send_wire_answer(conn, ctx, res);
	return send_passthrough(conn, res);
}

/* route_get: the value of key, from this instance or from its owner */
static enum MHD_Result
route_get(struct MHD_Connection *conn, IqGetCtx *ctx, const IqStoreInfo *store,
		  const char *key, size_t len)
{
	static __thread IqHttpOwnership o;
	int			p;
	int			owner;
	char	   *value = NULL;
	size_t		value_len = 0;
	char	   *err = NULL;
	IqReadStatus st;
	const char *s;
	bool		from_standby;

	iq_http_ownership(&o);
	p = key_partition(&o, key, len);
	if (p < 0 || p >= IQ_HTTP_MAX_PARTITIONS)
		return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
								  "the partitions of the input topics are not known yet (startup in progress)");
	if (o.owner[p] < 0 || o.owner[p] >= o.nmembers)
		return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
								  "no instance owns partition %d yet (rebalance or startup in progress)", p);
	owner = o.owner[p];
	from_standby = (s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "from")) != NULL &&
		strcmp(s, "standby") == 0;
	if (owner != o.self)
	{
		int64_t		lag;

		/* asked for its standby by an instance whose owner did not answer */
		if (from_standby)
		{
			if (standby_here(p, &lag))
				return read_standby(conn, store, p, key, len);
			return iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "no standby replica of partition %d here within %d records of its input",
									  p, iq_http_config.standby_max_lag);
		}
		/* kept for a standby's answer, should the owner not give one */
		if (iq_http_config.standby_replicas != 0 && (ctx->key = malloc(len + 1)) != NULL)
		{
			memcpy(ctx->key, key, len);
			ctx->key_len = len;
		}
		ctx->store = store;
		return forward_get(conn, ctx, &o.members[owner], store, key, len, p);
	}

	st = iq_store_get(store->id, p, key, len, &value, &value_len, &err);
	return send_store_read(conn, st, store, p, value, value_len, err);
}

/* stream_fill: the next rows of a streamed result as JSON text */
static void
stream_fill(JsonStream *js)
{
	IqStoreRow row;

	js->buf.len = 0;
	js->off = 0;
	while (!js->done && js->buf.len < STREAM_CHUNK && !js->buf.oom)
	{
		if (!iq_store_cursor_next(js->cursor, &row))
		{
			char	   *err = NULL;

			/*
			 * Too late for a status: a failed iterator breaks the chunked
			 * stream instead, so the answer is never a valid but partial
			 * list.
			 */
			if (iq_store_cursor_close(js->cursor, &err) != IQ_READ_OK)
				js->failed = true;
			free(err);
			js->cursor = NULL;
			iq_buf_append(&js->buf, "]}", 2);
			js->done = true;
			break;
		}
		iq_buf_append(&js->buf, js->first ? "{\"key\":" : ",{\"key\":",
					  js->first ? 7 : 8);
		js->first = false;
		iq_json_append(&js->buf, iq_json_bytes(row.key, row.key_len));
		iq_buf_append(&js->buf, ",\"value\":", 9);
		iq_json_append(&js->buf, iq_json_value(js->store, row.value, row.value_len));
		iq_buf_u8(&js->buf, '}');
	}
}

/* stream_reader: MHD's content callback for a streamed result */
static ssize_t
stream_reader(void *cls, uint64_t pos, char *out, size_t max)
{
	JsonStream *js = cls;

	if (js->off >= js->buf.len)
	{
		if (js->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		stream_fill(js);
	}
	if (js->buf.oom || js->failed)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return iq_http_take(&js->buf, &js->off, out, max);
}

/* stream_free: MHD is done with the response (sent or dropped) */
static void
stream_free(void *cls)
{
	JsonStream *js = cls;

	if (js->cursor)
	{
		char	   *err = NULL;

		iq_store_cursor_close(js->cursor, &err);
		free(err);
	}
	iq_buf_free(&js->buf);
	free(js);
}

/*
 * local_partitions: the partitions this instance owns, all readable; false
 * with a 503 queued when one is still restoring or being opened, so a
 * local answer never silently lacks a partition.
 */
static bool
local_partitions(struct MHD_Connection *conn, int *held, int *nheld,
				 enum MHD_Result *ret)
{
	static __thread IqHttpOwnership o;
	int			p;
	int			i;

	*nheld = iq_store_held_partitions(held, IQ_HTTP_MAX_PARTITIONS);
	iq_http_ownership(&o);
	if (o.self < 0)
		return true;
	for (p = 0; p < o.partition_count; p++)
	{
		if (o.owner[p] != o.self)
			continue;
		for (i = 0; i < *nheld; i++)
			if (held[i] == p)
				break;
		if (i == *nheld)
		{
			*ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "partition %d of this instance is not readable yet (restoring or being opened)",
									  p);
			return false;
		}
	}
	return true;
}

/* route_scan_local: all / range over this instance's partitions, streamed */
static enum MHD_Result
route_scan_local(struct MHD_Connection *conn, const IqStoreInfo *store,
				 const char *from, size_t from_len,
				 const char *to, size_t to_len, bool descending)
{
	int			held[IQ_HTTP_MAX_PARTITIONS];
	int			nheld;
	IqReadStatus st = IQ_READ_OK;
	char	   *err = NULL;
	JsonStream *js;
	enum MHD_Result ret = MHD_NO;

	if (!local_partitions(conn, held, &nheld, &ret))
		return ret;
	if (nheld == 0)
		return iq_http_send_json(conn, MHD_HTTP_OK, json_pack("{s:[]}", "result"));
	js = calloc(1, sizeof(JsonStream));
	if (js == NULL)
		return MHD_NO;
	js->cursor = iq_store_cursor_open(store->id, held, nheld,
									  from, from_len, true, to, to_len, true,
									  &st, &err);
	if (js->cursor == NULL)
	{
		free(js);
		ret = iq_http_send_error(conn, st == IQ_READ_ERROR ? MHD_HTTP_INTERNAL_SERVER_ERROR :
								 MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
								 "cannot read store %s: %s", store->name,
								 err ? err : (st == IQ_READ_RESTORING ? "a partition is restoring" :
											  "a partition is being handed over"));
		free(err);
		return ret;
	}
	if (descending)
		iq_store_cursor_set_reverse(js->cursor);
	js->store = store->id;
	js->first = true;
	iq_buf_init(&js->buf);
	iq_buf_append(&js->buf, "{\"result\":[", 11);
	return iq_http_send_stream(conn, "application/json", STREAM_CHUNK,
							   stream_reader, js, stream_free);
}

/*
 * path_key: the key at the end of a path, decoded (%HH; a '+' stays one),
 * malloc'd with *len set; NULL when out of memory.  A key may hold NUL bytes.
 */
static char *
path_key(const char *escaped, size_t *len)
{
	char	   *key = strdup(escaped);

	if (key != NULL)
		*len = iq_url_decode(key, false);
	return key;
}

/* query_arg: a decoded query argument (malloc'd, *len set), NULL if absent or empty */
static char *
query_arg(struct MHD_Connection *conn, const char *name, size_t *len)
{
	const char *raw = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
	char	   *v;

	if (raw == NULL || raw[0] == '\0')
		return NULL;
	v = strdup(raw);
	if (v)
		*len = iq_url_decode(v, true);
	return v;
}

/*
 * choice_arg: whether query argument name is on_value rather than
 * off_value, its default when absent; *bad for any other value
 */
static bool
choice_arg(struct MHD_Connection *conn, const char *name,
		   const char *off_value, const char *on_value, bool *bad)
{
	const char *v = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);

	*bad = false;
	if (v == NULL || strcmp(v, off_value) == 0)
		return false;
	if (strcmp(v, on_value) == 0)
		return true;
	*bad = true;
	return false;
}

/* route_store: the /stores/:store/... endpoints */
static enum MHD_Result
route_store(struct MHD_Connection *conn, IqGetCtx *ctx, const IqStoreInfo *store,
			const char *rest)
{
	bool		all;
	bool		bad;

	if (strncmp(rest, "get/", 4) == 0)
	{
		size_t		len;
		char	   *key = path_key(rest + 4, &len);
		enum MHD_Result ret;

		if (key == NULL)
			return MHD_NO;
		ret = route_get(conn, ctx, store, key, len);
		free(key);
		return ret;
	}

	/* ?scope=all: every instance's partitions */
	all = choice_arg(conn, "scope", "local", "all", &bad);
	if (bad)
		return iq_http_send_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
								  "scope must be \"local\" (the default) or \"all\"");
	if (strcmp(rest, "all") == 0 || strcmp(rest, "range") == 0)
	{
		size_t		from_len = 0;
		size_t		to_len = 0;
		char	   *from = NULL;
		char	   *to = NULL;
		enum MHD_Result ret;
		bool		desc = choice_arg(conn, "order", "asc", "desc", &bad);

		if (bad)
			return iq_http_send_error(conn, MHD_HTTP_BAD_REQUEST, NULL,
									  "order must be \"asc\" (the default) or \"desc\"");
		if (rest[0] == 'r')
		{
			from = query_arg(conn, "from", &from_len);
			to = query_arg(conn, "to", &to_len);
		}
		if (all)
			ret = iq_http_gather_scan(conn, store, from, from_len, to, to_len, desc);
		else
			ret = route_scan_local(conn, store, from, from_len, to, to_len, desc);
		free(from);
		free(to);
		return ret;
	}
	if (strcmp(rest, "approximate-num-entries") == 0)
	{
		int			held[IQ_HTTP_MAX_PARTITIONS];
		int			nheld;
		enum MHD_Result ret = MHD_NO;

		if (all)
			return iq_http_gather_count(conn, store);
		if (!local_partitions(conn, held, &nheld, &ret))
			return ret;
		return iq_http_send_json(conn, MHD_HTTP_OK,
								 json_pack("{s:I}", "result", (json_int_t)
										   (nheld > 0 ? iq_store_approximate_count(store->id, held, nheld) : 0)));
	}
	return iq_http_send_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint");
}

/*
 * lookup_store: the store named by the segment at *p (decoded), advancing
 * *p past it and its '/'; NULL if unknown (*name gets the decoded name).
 */
static const IqStoreInfo *
lookup_store(const char **p, char *name, size_t namelen)
{
	const char *slash = strchr(*p, '/');
	size_t		n = slash ? (size_t) (slash - *p) : strlen(*p);

	if (n >= namelen)
		n = namelen - 1;
	memcpy(name, *p, n);
	name[n] = '\0';
	iq_url_decode(name, false);
	*p = slash ? slash + 1 : *p + strlen(*p);
	return iq_store_by_name(name);
}

/* iq_http_route_get: dispatch a GET by its (still escaped) path */
enum MHD_Result
iq_http_route_get(struct MHD_Connection *conn, const char *url, IqGetCtx *ctx)
{
	char		name[256];
	const IqStoreInfo *store;
	const char *p;

	if (strcmp(url, "/metadata") == 0 || strcmp(url, "/metadata/") == 0)
		return route_metadata(conn);
	if (strcmp(url, "/metrics") == 0)
		return iq_http_metrics(conn);

	if (strncmp(url, "/metadata/stores/", 17) == 0)
	{
		p = url + 17;
		store = lookup_store(&p, name, sizeof(name));
		if (store == NULL)
			return iq_http_send_error(conn, MHD_HTTP_NOT_FOUND, NULL,
									  "unknown store \"%s\"", name);
		if (*p == '\0')
			return route_metadata(conn);	/* every member holds every store */
		if (strncmp(p, "key/", 4) == 0)
		{
			size_t		len;
			char	   *key = path_key(p + 4, &len);
			enum MHD_Result ret;

			if (key == NULL)
				return MHD_NO;
			ret = route_key_metadata(conn, key, len);
			free(key);
			return ret;
		}
		return iq_http_send_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint");
	}

	if (strncmp(url, "/stores/", 8) == 0)
	{
		p = url + 8;
		store = lookup_store(&p, name, sizeof(name));
		if (store == NULL)
			return iq_http_send_error(conn, MHD_HTTP_NOT_FOUND, NULL,
									  "unknown store \"%s\"", name);
		return route_store(conn, ctx, store, p);
	}

	if (url[0] != '/')
		return iq_http_send_error(conn, MHD_HTTP_BAD_REQUEST, NULL, "malformed request target");
	return iq_http_send_error(conn, MHD_HTTP_NOT_FOUND, NULL, "no such endpoint");
}

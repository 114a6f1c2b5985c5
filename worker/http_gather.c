/*-------------------------------------------------------------------------
 * http_gather.c
 *	  ?scope=all: the seed's all / range / approximate-num-entries over
 *	  every instance, not only this one.
 *
 * Each member that owns partitions is asked for exactly those partitions
 * over the compact endpoint (this instance answers itself through the same
 * read handler), so a partition that moved meanwhile gives NOT_HELD and a
 * 503 instead of a silently partial answer.  Answers are collected whole
 * and merged in key byte order; this is a convenience for people with
 * curl, the FDW streams instead.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_gather.h"
#include "read_handler.h"

typedef struct Source
{
	char		name[IQ_HTTP_HOST_LEN + 16]; /* host:port */
	IqBuf		raw;
	IqWireReader reader;
	bool		has_row;
} Source;

/* ask_member: the whole wire answer of member m for its partitions */
static bool
ask_member(struct MHD_Connection *conn, const IqHttpOwnership *o, int m,
		   const IqWireRequest *tmpl, Source *src, enum MHD_Result *ret)
{
	uint16_t	parts[IQ_HTTP_MAX_PARTITIONS];
	IqWireRequest req = *tmpl;
	IqBuf		body;
	int			p;

	req.npartitions = 0;
	req.partitions = parts;
	for (p = 0; p < o->partition_count && p < IQ_HTTP_MAX_PARTITIONS; p++)
		if (o->owner[p] == m)
			parts[req.npartitions++] = (uint16_t) p;
	snprintf(src->name, sizeof(src->name), "%s:%d", o->members[m].host, o->members[m].port);
	iq_buf_init(&src->raw);
	iq_wire_reader_init(&src->reader);

	iq_buf_init(&body);
	iq_wire_encode_request(&req, &body);
	if (body.oom)
	{
		iq_buf_free(&body);
		*ret = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
		return false;
	}
	if (m == o->self)
	{
		IqReadStream *s = iq_read_begin(body.data, body.len);

		if (s == NULL)
			src->raw.oom = true;
		else
		{
			while (iq_read_produce(s, &src->raw, SIZE_MAX))
				;
			iq_read_finish(s);
		}
	}
	else
	{
		IqForwardResult res;

		iq_forward_post(o->members[m].host, o->members[m].port, "/iq/v1/read",
						body.data, body.len, &res);
		if (res.status != 200)
		{
			unsigned int status = res.timed_out ? MHD_HTTP_GATEWAY_TIMEOUT : MHD_HTTP_BAD_GATEWAY;

			iq_buf_free(&body);
			if (res.status == 0)
				*ret = iq_http_send_error(conn, status, src->name,
										  "instance %s %s: %s", src->name,
										  res.timed_out ? "did not answer in time" : "is unreachable",
										  res.error);
			else
				*ret = iq_http_send_error(conn, MHD_HTTP_BAD_GATEWAY, src->name,
										  "instance %s answered HTTP %ld", src->name, res.status);
			iq_buf_free(&res.body);
			return false;
		}
		src->raw = res.body;
	}
	iq_buf_free(&body);
	if (src->raw.oom)
	{
		*ret = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
		return false;
	}
	iq_wire_reader_feed(&src->reader, src->raw.data, src->raw.len);
	if (iq_wire_reader_next(&src->reader) != IQ_EV_HEADER)
	{
		IqWireStatus st = src->reader.status;

		*ret = iq_http_send_error(conn,
								  (st == IQ_WIRE_NOT_HELD || st == IQ_WIRE_RESTORING) ?
								  MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_GATEWAY,
								  src->name, "instance %s: %s", src->name,
								  src->reader.message);
		return false;
	}
	return true;
}

/* next_row: advance a source; false with an error sent if its stream failed */
static bool
next_row(struct MHD_Connection *conn, Source *src, enum MHD_Result *ret)
{
	switch (iq_wire_reader_next(&src->reader))
	{
		case IQ_EV_ROW:
			src->has_row = true;
			return true;
		case IQ_EV_END:
			src->has_row = false;
			return true;
		default:
			*ret = iq_http_send_error(conn, (src->reader.status == IQ_WIRE_NOT_HELD ||
											 src->reader.status == IQ_WIRE_RESTORING) ?
									  MHD_HTTP_SERVICE_UNAVAILABLE : MHD_HTTP_BAD_GATEWAY,
									  src->name, "instance %s: %s", src->name,
									  src->reader.message[0] ? src->reader.message :
									  "truncated answer");
			return false;
	}
}

/* key_cmp: byte order, a prefix first (as RocksDB's default comparator) */
static int
key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int			c = memcmp(a, b, alen < blen ? alen : blen);

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

/* gather: ask all members; false with a response queued on failure */
static bool
gather(struct MHD_Connection *conn, const IqWireRequest *req, IqHttpOwnership *o,
	   Source **sources, int *nsources, enum MHD_Result *ret)
{
	int			count[IQ_HTTP_MAX_MEMBERS];
	Source	   *src;
	int			n = 0;
	int			m;
	int			p;

	iq_http_ownership(o);
	memset(count, 0, sizeof(count));
	for (p = 0; p < o->partition_count && p < IQ_HTTP_MAX_PARTITIONS; p++)
	{
		if (o->owner[p] < 0 || o->owner[p] >= o->nmembers)
		{
			*ret = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "no instance owns partition %d yet", p);
			return false;
		}
		count[o->owner[p]]++;
	}
	src = calloc(o->nmembers + 1, sizeof(Source));
	if (src == NULL)
		return (*ret = MHD_NO), false;
	for (m = 0; m < o->nmembers; m++)
	{
		if (count[m] == 0)
			continue;
		if (!ask_member(conn, o, m, req, &src[n], ret))
		{
			iq_buf_free(&src[n].raw);
			iq_wire_reader_free(&src[n].reader);
			while (n-- > 0)
			{
				iq_buf_free(&src[n].raw);
				iq_wire_reader_free(&src[n].reader);
			}
			free(src);
			return false;
		}
		n++;
	}
	*sources = src;
	*nsources = n;
	return true;
}

/* free_sources: release what gather collected */
static void
free_sources(Source *src, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		iq_buf_free(&src[i].raw);
		iq_wire_reader_free(&src[i].reader);
	}
	free(src);
}

/* append_json: a JSON value's text, appended (the value is taken) */
static void
append_json(IqBuf *out, json_t *j)
{
	char	   *text = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

	if (text == NULL)
		out->oom = true;
	else
		iq_buf_append(out, text, strlen(text));
	free(text);
	json_decref(j);
}

/* iq_http_gather_scan: all / range over every instance, merged by key */
enum MHD_Result
iq_http_gather_scan(struct MHD_Connection *conn, const IqStoreInfo *store,
					const char *from, size_t from_len,
					const char *to, size_t to_len)
{
	static __thread IqHttpOwnership o;
	IqWireRequest req;
	Source	   *src = NULL;
	int			n = 0;
	int			i;
	IqBuf		out;
	bool		first = true;
	enum MHD_Result ret = MHD_NO;
	struct MHD_Response *resp;

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
	if (!gather(conn, &req, &o, &src, &n, &ret))
		return ret;
	for (i = 0; i < n; i++)
		if (!next_row(conn, &src[i], &ret))
		{
			free_sources(src, n);
			return ret;
		}

	iq_buf_init(&out);
	iq_buf_append(&out, "{\"result\":[", 11);
	for (;;)
	{
		Source	   *best = NULL;

		for (i = 0; i < n; i++)
			if (src[i].has_row &&
				(best == NULL || key_cmp(src[i].reader.key, src[i].reader.key_len,
										 best->reader.key, best->reader.key_len) < 0))
				best = &src[i];
		if (best == NULL)
			break;
		iq_buf_append(&out, first ? "{\"key\":" : ",{\"key\":", first ? 7 : 8);
		first = false;
		append_json(&out, iq_json_bytes(best->reader.key, best->reader.key_len));
		iq_buf_append(&out, ",\"value\":", 9);
		append_json(&out, iq_json_value(store->id, best->reader.value,
										best->reader.value_len < 0 ? 0 : (size_t) best->reader.value_len));
		iq_buf_u8(&out, '}');
		if (!next_row(conn, best, &ret))
		{
			iq_buf_free(&out);
			free_sources(src, n);
			return ret;
		}
	}
	iq_buf_append(&out, "]}", 2);
	free_sources(src, n);
	if (out.oom)
	{
		iq_buf_free(&out);
		return iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
	}
	resp = MHD_create_response_from_buffer(out.len, out.data, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
	{
		iq_buf_free(&out);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* iq_http_gather_count: approximate-num-entries summed over every instance */
enum MHD_Result
iq_http_gather_count(struct MHD_Connection *conn, const IqStoreInfo *store)
{
	static __thread IqHttpOwnership o;
	IqWireRequest req;
	Source	   *src = NULL;
	int			n = 0;
	int			i;
	long long	total = 0;
	enum MHD_Result ret = MHD_NO;

	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_COUNT;
	req.store = (uint8_t) store->id;
	if (!gather(conn, &req, &o, &src, &n, &ret))
		return ret;
	for (i = 0; i < n; i++)
	{
		if (!next_row(conn, &src[i], &ret))
		{
			free_sources(src, n);
			return ret;
		}
		if (src[i].has_row && src[i].reader.value_len == 8)
			total += iq_decode_int64((const unsigned char *) src[i].reader.value);
	}
	free_sources(src, n);
	return iq_http_send_json(conn, MHD_HTTP_OK,
							 json_pack("{s:I}", "result", (json_int_t) total));
}

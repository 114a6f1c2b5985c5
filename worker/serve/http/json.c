/*-------------------------------------------------------------------------
 * json.c
 *	  JSON values and responses for the HTTP server, and URL escaping.
 *
 * Keys and values are bytes as produced to Kafka; JSON strings must be
 * valid UTF-8.  Valid UTF-8 is passed through (non-ASCII unescaped, as
 * jansson writes it; quotes, backslashes, control characters and NUL are
 * escaped by jansson).  Each maximal ill-formed subpart is replaced by
 * U+FFFD, as Kafka Streams' StringDeserializer (and a text column in SQL)
 * shows it (common/utf8.h), so a response is always valid JSON; the compact
 * endpoint (and a bytea column) still see the exact bytes.
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "worker/serve/http/http_internal.h"

/* iq_json_append: a JSON value's compact text, appended; the value is taken */
void
iq_json_append(IqBuf *out, json_t *value)
{
	char	   *text = value ? json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;

	if (text == NULL)
		out->oom = true;
	else
		iq_buf_append(out, text, strlen(text));
	free(text);
	json_decref(value);
}

/* iq_json_bytes: a JSON string for arbitrary bytes (see the file header) */
json_t *
iq_json_bytes(const char *data, size_t len)
{
	char	   *fixed;
	json_t	   *j;

	/* the common case: already valid, no copy */
	if (iq_utf8_valid_prefix(data, len, true) == len)
		return json_stringn_nocheck(data, len);

	fixed = malloc(IQ_UTF8_REPLACED_MAX(len));
	if (fixed == NULL)
		return NULL;
	j = json_stringn_nocheck(fixed, iq_utf8_replace(data, len, fixed, true));
	free(fixed);
	return j;
}

/* iq_json_value: a store's value as the seed shows it (counts as numbers) */
json_t *
iq_json_value(IqStoreId store, const char *value, size_t len)
{
	if (value == NULL)
		return json_null();
	if (iq_stores[store].value_kind == IQ_VALUE_INT64 && len == 8)
		return json_integer((json_int_t) iq_decode_int64((const unsigned char *) value));
	return iq_json_bytes(value, len);
}

/* send_text: queue a JSON text with status, as MHD is told to hold it */
static enum MHD_Result
send_text(struct MHD_Connection *conn, unsigned int status, const char *text,
		  size_t len, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (text == NULL)
	{
		static const char oom[] = "{\"error\":\"out of memory\",\"status\":500}";

		status = MHD_HTTP_INTERNAL_SERVER_ERROR;
		text = oom;
		len = sizeof(oom) - 1;
		mode = MHD_RESPMEM_PERSISTENT;
	}
	resp = MHD_create_response_from_buffer(len, (void *) text, mode);
	if (resp == NULL)
	{
		if (mode == MHD_RESPMEM_MUST_FREE)
			free((void *) text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
		MHD_add_response_header(resp, "Retry-After", "1");
	if (status == MHD_HTTP_UNAUTHORIZED)	/* RFC 9110: say which credential */
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
	if (status == MHD_HTTP_UPGRADE_REQUIRED)	/* RFC 9110: say to what */
		MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, IQ_PEER_STREAM_PROTOCOL);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/*
 * iq_http_send_stream
 *		Queue a 200 answer that reader produces as the client takes it
 *		(chunked, chunk bytes at a time).  state is MHD's from here: done
 *		frees it when the answer ends, or at once when it cannot be queued.
 */
enum MHD_Result
iq_http_send_stream(struct MHD_Connection *conn, const char *content_type,
					size_t chunk, MHD_ContentReaderCallback reader, void *state,
					MHD_ContentReaderFreeCallback done)
{
	struct MHD_Response *resp;

	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, chunk, reader, state, done);
	if (resp == NULL)
	{
		done(state);
		return MHD_NO;
	}
	return iq_http_queue(conn, MHD_HTTP_OK, resp, content_type);
}

/* iq_http_queue: queue resp (taken) with status and its content type */
enum MHD_Result
iq_http_queue(struct MHD_Connection *conn, unsigned int status,
			  struct MHD_Response *resp, const char *content_type)
{
	enum MHD_Result ret;

	MHD_add_response_header(resp, "Content-Type", content_type);
	ret = MHD_queue_response(conn, status, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* iq_http_send_json: queue body (taken) with status; 500 if it cannot be dumped */
enum MHD_Result
iq_http_send_json(struct MHD_Connection *conn, unsigned int status, json_t *body)
{
	char	   *text = body ? json_dumps(body, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;

	json_decref(body);
	return send_text(conn, status, text, text ? strlen(text) : 0, MHD_RESPMEM_MUST_FREE);
}

/*
 * iq_http_send_get: the answer of a get, {"response": value}.  A count, the
 * hot case, is formatted here: building and dumping a JSON tree for one
 * number cost more than the RocksDB read.
 */
enum MHD_Result
iq_http_send_get(struct MHD_Connection *conn, IqStoreId store,
				 const char *value, size_t len)
{
	static const char null_answer[] = "{\"response\":null}";
	char		text[64];
	int			n;

	if (value == NULL)
		return send_text(conn, MHD_HTTP_OK, null_answer, sizeof(null_answer) - 1,
						 MHD_RESPMEM_PERSISTENT);
	if (iq_stores[store].value_kind != IQ_VALUE_INT64 || len != 8)
		return iq_http_send_json(conn, MHD_HTTP_OK,
								 json_pack("{s:o}", "response", iq_json_value(store, value, len)));
	n = snprintf(text, sizeof(text), "{\"response\":%lld}",
				 iq_decode_int64((const unsigned char *) value));
	return send_text(conn, MHD_HTTP_OK, text, (size_t) n, MHD_RESPMEM_MUST_COPY);
}

/*
 * iq_http_take: an MHD content reader's next piece of buf, from *off and
 * at most max bytes; the caller refills buf once *off reaches its end.
 */
ssize_t
iq_http_take(const IqBuf *buf, size_t *off, char *out, size_t max)
{
	size_t		n = buf->len - *off;

	if (n > max)
		n = max;
	memcpy(out, buf->data + *off, n);
	*off += n;
	return (ssize_t) n;
}

/* iq_http_send_error: {"error": text, "status": n[, "owner": "host:port"]} */
enum MHD_Result
iq_http_send_error(struct MHD_Connection *conn, unsigned int status,
				   const char *owner, const char *fmt,...)
{
	char		msg[1024];
	va_list		ap;
	json_t	   *body;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/*
	 * Never call jansson's json_object() here: the postgres executable
	 * exports a json_object() of its own (the SQL function), which wins
	 * symbol resolution in a loaded module.  json_pack builds the object
	 * inside libjansson, where the call is bound to jansson's.
	 */
	if (owner)
		body = json_pack("{s:o,s:i,s:o}", "error", iq_json_bytes(msg, strlen(msg)),
						 "status", (int) status,
						 "owner", iq_json_bytes(owner, strlen(owner)));
	else
		body = json_pack("{s:o,s:i}", "error", iq_json_bytes(msg, strlen(msg)),
						 "status", (int) status);
	return iq_http_send_json(conn, status, body);
}

/* hexval: a hex digit's value, -1 if not one */
static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * iq_url_decode: %HH decoding in place (and '+' in query strings); returns
 * the new length (the result may hold NUL bytes).  A '%' not followed by
 * two hex digits is kept as it is, as browsers do.
 */
size_t
iq_url_decode(char *s, bool plus_is_space)
{
	char	   *r = s;
	char	   *w = s;

	while (*r)
	{
		if (r[0] == '%' && hexval(r[1]) >= 0 && hexval(r[2]) >= 0)
		{
			*w++ = (char) (hexval(r[1]) * 16 + hexval(r[2]));
			r += 3;
		}
		else if (plus_is_space && *r == '+')
		{
			*w++ = ' ';
			r++;
		}
		else
			*w++ = *r++;
	}
	*w = '\0';
	return (size_t) (w - s);
}

/* iq_url_encode: percent-encode all but RFC 3986 unreserved characters */
void
iq_url_encode(IqBuf *out, const char *data, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t		i;

	for (i = 0; i < len; i++)
	{
		unsigned char c = (unsigned char) data[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			(c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~')
			iq_buf_u8(out, c);
		else
		{
			char		e[3] = {'%', hex[c >> 4], hex[c & 15]};

			iq_buf_append(out, e, 3);
		}
	}
}

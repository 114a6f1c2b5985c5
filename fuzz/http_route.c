/*-------------------------------------------------------------------------
 * http_route.c
 *	  libFuzzer target: the HTTP server's URL dispatch (worker/serve/http/routes.c
 *	  and worker/serve/http/json.c as they are): store names, keys after get/ and
 *	  key/, from/to and scope query arguments, forwarding of a get.
 *
 * libmicrohttpd, the stores, ownership, the forwarder and the gather are
 * replaced by small shims below, so a request is routed in-process without
 * a server.  The shims behave like the real ones where the routes can
 * tell: MHD hands the path still escaped (the server's no-op unescape
 * callback) and query arguments with '+' made a space; a response is
 * queued at most once per request.  Checks: no crash, no bad memory
 * access, no leak; every response is JSON (a streamed one unless it broke
 * off on purpose); exactly one response per request routed; a forwarded
 * get's URL names the same key bytes the client asked for.
 *
 * Input: byte 0 sets the shims (bit 0: the request carries X-IQ-Forwarded,
 * bit 1: crc32 partitioner, bits 2-3: which member this instance is, bits
 * 4-6: how many partitions); the rest, up to a NUL, is the request target.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/partitioner.h"
#include "worker/counters.h"
#include "worker/serve/http/gather.h"
#include "worker/serve/http/http_internal.h"
#include "worker/store/store.h"

IqServerConfig iq_http_config;

struct MHD_Connection
{
	const char *query;			/* after '?', NULL if none */
	bool		forwarded;
	int			queued;			/* responses queued for this request */
	char		args[4][1024];	/* looked-up arguments, '+' made ' ' */
	int			nargs;
};

struct MHD_Response
{
	char	   *data;			/* a buffer response's bytes (ours) */
	size_t		len;
	MHD_ContentReaderCallback crc;
	void	   *crc_cls;
	MHD_ContentReaderFreeCallback crfc;
};

static int	self_member;
static int	npartitions;

/* ---- libmicrohttpd ---------------------------------------------------- */

struct MHD_Response *
MHD_create_response_from_buffer(size_t size, void *buffer, enum MHD_ResponseMemoryMode mode)
{
	struct MHD_Response *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->data = malloc(size + 1);
	if (r->data == NULL)
	{
		free(r);
		return NULL;
	}
	memcpy(r->data, buffer, size);
	r->data[size] = '\0';
	r->len = size;
	if (mode == MHD_RESPMEM_MUST_FREE)
		free(buffer);
	return r;
}

struct MHD_Response *
MHD_create_response_from_callback(uint64_t size, size_t block_size,
								  MHD_ContentReaderCallback crc, void *crc_cls,
								  MHD_ContentReaderFreeCallback crfc)
{
	struct MHD_Response *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return NULL;
	r->crc = crc;
	r->crc_cls = crc_cls;
	r->crfc = crfc;
	return r;
}

enum MHD_Result
MHD_add_response_header(struct MHD_Response *response, const char *header,
						const char *content)
{
	if (strchr(header, '\n') || strchr(content, '\n'))
		abort();
	return MHD_YES;
}

void
MHD_destroy_response(struct MHD_Response *r)
{
	if (r->crfc)
		r->crfc(r->crc_cls);
	free(r->data);
	free(r);
}

/* MHD_queue_response: the whole body at once, and it must be JSON */
enum MHD_Result
MHD_queue_response(struct MHD_Connection *c, unsigned int status, struct MHD_Response *r)
{
	IqBuf		body;
	bool		broken = false;
	json_error_t error;
	json_t	   *j;

	if (c->queued++ > 0)
		abort();				/* MHD refuses a second response */
	if (status < 100 || status > 599)
		abort();
	iq_buf_init(&body);
	if (r->crc == NULL)
		iq_buf_append(&body, r->data, r->len);
	else
	{
		char		block[4096];

		for (;;)
		{
			ssize_t		n = r->crc(r->crc_cls, body.len, block, sizeof(block));

			if (n == MHD_CONTENT_READER_END_OF_STREAM)
				break;
			if (n == MHD_CONTENT_READER_END_WITH_ERROR)
			{
				broken = true;
				break;
			}
			if (n < 0 || (size_t) n > sizeof(block))
				abort();
			iq_buf_append(&body, block, (size_t) n);
		}
	}
	if (body.oom)
		abort();
	if (!broken)
	{
		j = json_loadb(body.data ? body.data : "", body.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
		if (j == NULL)
			abort();
		json_decref(j);
	}
	iq_buf_free(&body);
	return MHD_YES;
}

/* MHD_lookup_connection_value: a query argument as MHD gives it */
const char *
MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
							const char *key)
{
	const char *p;
	size_t		klen = strlen(key);

	if (kind == MHD_HEADER_KIND)
		return (c->forwarded && strcmp(key, IQ_PEER_FORWARDED_HEADER) == 0) ? "1" : NULL;
	if (kind != MHD_GET_ARGUMENT_KIND || c->query == NULL || c->nargs == 4)
		return NULL;
	for (p = c->query; *p; p = strchr(p, '&') ? strchr(p, '&') + 1 : p + strlen(p))
	{
		const char *end = strchr(p, '&');
		const char *eq;
		size_t		n = end ? (size_t) (end - p) : strlen(p);
		char	   *v;
		size_t		vlen;

		eq = memchr(p, '=', n);
		if ((size_t) ((eq ? eq : p + n) - p) != klen || strncmp(p, key, klen) != 0)
			continue;
		if (eq == NULL)
			return "";
		vlen = n - (size_t) (eq + 1 - p);
		if (vlen >= sizeof(c->args[0]))
			vlen = sizeof(c->args[0]) - 1;
		v = c->args[c->nargs++];
		memcpy(v, eq + 1, vlen);
		v[vlen] = '\0';
		for (char *s = v; *s; s++)
			if (*s == '+')
				*s = ' ';
		return v;
	}
	return NULL;
}

/* ---- ownership, stores, forwarder, gather ----------------------------- */

void
iq_http_ownership(IqHttpOwnership *o)
{
	memset(o, 0, sizeof(*o));
	o->generation = 1;
	o->partition_count = npartitions;
	o->nmembers = 2;
	o->self = self_member;
	strcpy(o->members[0].host, "localhost");
	o->members[0].port = 5400;
	strcpy(o->members[1].host, "::1");
	o->members[1].port = 6400;
	for (int p = 0; p < IQ_HTTP_MAX_PARTITIONS; p++)
		o->owner[p] = (p < npartitions && p != 5) ? p % 2 : -1;
}

int
iq_store_held_partitions(int *partitions, int max)
{
	int			n = 0;

	for (int p = 0; p < npartitions && n < max; p++)
		if (p % 2 == self_member && p != 3)		/* 3: still restoring */
			partitions[n++] = p;
	return n;
}

/* iq_store_get: a status by the key's first byte; the key as its value */
IqReadStatus
iq_store_get(IqStoreId store, int partition, const char *key, size_t key_len,
			 char **value, size_t *value_len, char **err)
{
	IqReadStatus st = key_len ? (IqReadStatus) ((unsigned char) key[0] % 5) : IQ_READ_OK;

	if (st == IQ_READ_ERROR)
		*err = strdup("injected failure");
	if (st != IQ_READ_OK)
		return st;
	*value_len = store == IQ_STORE_ORDER_COUNT ? 8 : key_len;
	*value = malloc(*value_len + 1);
	if (*value == NULL)
		abort();
	if (store == IQ_STORE_ORDER_COUNT)
		iq_encode_int64((long long) key_len, (unsigned char *) *value);
	else
		memcpy(*value, key, key_len);
	return IQ_READ_OK;
}

/* iq_store_get_as: a standby's answer is read as an owner's */
IqReadStatus
iq_store_get_as(IqStoreId store, int partition, const char *key, size_t key_len,
				bool standby_ok, char **value, size_t *value_len, char **err)
{
	return iq_store_get(store, partition, key, key_len, value, value_len, err);
}

/* iq_store_standby_position: partitions 0 and 3 kept here, one behind by many */
bool
iq_store_standby_position(int partition, int64_t since, IqPartitionPosition *pos)
{
	if (partition != 0 && partition != 3)
		return false;
	pos->partition = partition;
	pos->consumed_offset = 100;
	pos->end_offset = partition == 0 ? 100 : 1000000;
	return true;
}

/* iq_store_read_clock: the real one's clock does not matter here */
int64_t
iq_store_read_clock(void)
{
	return 0;
}

/* iq_standby_place: the member after the owner */
int
iq_standby_place(const char *const *hosts, const int *ports, int nmembers,
				 const int16_t *owner, int partition_count, int p, int want, int *out)
{
	if (nmembers < 2 || p < 0 || p >= partition_count || owner[p] < 0)
		return 0;
	out[0] = (owner[p] + 1) % nmembers;
	return 1;
}

struct IqStoreCursor
{
	char	   *keys[3];
	size_t		lens[3];
	int			next;
	IqStoreId	store;
};

IqStoreCursor *
iq_store_cursor_open(IqStoreId store, const int *partitions, int npart,
					 const char *lower, size_t lower_len, bool lower_incl,
					 const char *upper, size_t upper_len, bool upper_incl,
					 IqReadStatus *status, char **err)
{
	IqStoreCursor *c;

	if (lower_len > 0 && lower[0] == 'R')
	{
		*status = IQ_READ_RESTORING;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		abort();
	c->store = store;
	/* rows made of the bounds (read whole: ASan checks their length) */
	c->keys[0] = malloc(lower_len + 1);
	c->keys[1] = malloc(upper_len + 1);
	c->keys[2] = strdup("\xff\xfe\x80 invalid UTF-8");
	if (lower_len)
		memcpy(c->keys[0], lower, lower_len);
	if (upper_len)
		memcpy(c->keys[1], upper, upper_len);
	c->lens[0] = lower_len;
	c->lens[1] = upper_len;
	c->lens[2] = strlen(c->keys[2]);
	return c;
}

void
iq_store_cursor_set_reverse(IqStoreCursor *c)
{
	(void) c;					/* the rows are the bounds either way */
}

bool
iq_store_cursor_next(IqStoreCursor *c, IqStoreRow *row)
{
	if (c->next == 3)
		return false;
	row->key = c->keys[c->next];
	row->key_len = c->lens[c->next];
	row->value = c->keys[c->next];
	row->value_len = c->lens[c->next];
	row->partition = 0;
	c->next++;
	return true;
}

IqReadStatus
iq_store_cursor_close(IqStoreCursor *c, char **err)
{
	for (int i = 0; i < 3; i++)
		free(c->keys[i]);
	free(c);
	return IQ_READ_OK;
}

uint64_t
iq_store_approximate_count(IqStoreId store, const int *partitions, int npart)
{
	return 42;
}

static char expected_key[8192];
static size_t expected_len;
static bool expect_forward;
static IqForwardResult forward_result;
static int	forward_job;
static bool owner_down;			/* the first forward fails: a standby is asked */
static int	forwards;
static int	wire_store = -1;	/* the store of a get forwarded over a peer stream */

/*
 * iq_forward_submit_get: a get forwarded to its owner (a peer stream, or a
 * batch over HTTPS with TLS on) names the key asked for, as the route
 * decoded it
 */
IqForwardJob *
iq_forward_submit_get(struct MHD_Connection *conn, const char *host, int port,
					  int store, const char *key, size_t len)
{
	if (!expect_forward || host == NULL || port <= 0 ||
		len != expected_len || memcmp(key, expected_key, len) != 0)
		abort();
	wire_store = store;
	return (IqForwardJob *) &forward_job;
}

/* iq_forward_submit: the URL must name the key asked for, escaped */
IqForwardJob *
iq_forward_submit(struct MHD_Connection *conn, const char *url)
{
	const char *get = strstr(url, "/get/");
	char	   *key;
	size_t		n;

	if (strncmp(url, "http://", 7) != 0 || get == NULL || !expect_forward)
		abort();
	key = strdup(get + 5);
	if (key == NULL)
		abort();
	/* the second forward goes to a standby, and says so */
	if (forwards > 0)
	{
		char	   *q = strrchr(key, '?');

		if (q == NULL || strcmp(q, "?from=standby") != 0)
			abort();
		*q = '\0';
	}
	n = iq_url_decode(key, false);
	if (n != expected_len || memcmp(key, expected_key, n) != 0)
		abort();
	free(key);
	return (IqForwardJob *) &forward_job;
}

/* iq_forward_job_free: the job is static, its answer's body is not */
void
iq_forward_job_free(IqForwardJob *job)
{
	if (job != NULL)
		iq_buf_free(&forward_result.body);
}

IqForwardResult *
iq_forward_job_result(IqForwardJob *job)
{
	static const char body[] = "{\"response\":\"from the owner\"}";

	memset(&forward_result, 0, sizeof(forward_result));
	forward_result.status = (owner_down && forwards++ == 0) ? 0 : 200;
	forward_result.refused = forward_result.status == 0;
	iq_buf_init(&forward_result.body);
	if (wire_store >= 0 && forward_result.status != 0)
	{
		unsigned char count[8];

		/* the owner's value, which the asking instance renders as JSON */
		forward_result.wire = true;
		forward_result.wire_status = IQ_WIRE_OK;
		forward_result.found = true;
		if (wire_store == IQ_STORE_ORDER_COUNT)
		{
			iq_encode_int64((long long) expected_len, count);
			iq_buf_append(&forward_result.body, count, sizeof(count));
		}
		else
			iq_buf_append(&forward_result.body, expected_key, expected_len);
	}
	else
		iq_buf_append(&forward_result.body, body, sizeof(body) - 1);
	wire_store = -1;			/* a standby is asked by URL */
	return &forward_result;
}

enum MHD_Result
iq_http_gather_scan(struct MHD_Connection *conn, const IqStoreInfo *store,
					const char *from, size_t from_len, const char *to, size_t to_len,
					bool descending)
{
	volatile char sink = descending;

	for (size_t i = 0; i < from_len; i++)
		sink ^= from[i];
	for (size_t i = 0; i < to_len; i++)
		sink ^= to[i];
	(void) sink;
	return iq_http_send_json(conn, MHD_HTTP_OK, json_pack("{s:[]}", "result"));
}

enum MHD_Result
iq_http_gather_count(struct MHD_Connection *conn, const IqStoreInfo *store)
{
	return iq_http_send_json(conn, MHD_HTTP_OK, json_pack("{s:i}", "result", 0));
}

/* GET /metrics (metrics.c) reads the engine's shared memory: not fuzzed here */
enum MHD_Result
iq_http_metrics(struct MHD_Connection *conn)
{
	return iq_http_send_json(conn, MHD_HTTP_OK, json_pack("{}"));
}

/* counters.c: the counts of forwarded gets, nothing to count here */
void
iq_count_forward(const char *peer, bool failed)
{
	(void) peer;
	(void) failed;
}

/* ---- the target ------------------------------------------------------- */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct MHD_Connection conn;
	IqGetCtx	ctx;
	char	   *url;
	char	   *q;
	const char *get;
	enum MHD_Result ret;

	if (size < 1 || size > 16384)
		return 0;
	memset(&conn, 0, sizeof(conn));
	memset(&ctx, 0, sizeof(ctx));
	conn.forwarded = data[0] & 1;
	iq_http_config.partitioner = (data[0] >> 1) & 1;
	self_member = ((data[0] >> 2) & 3) == 3 ? -1 : ((data[0] >> 2) & 3) % 2;
	npartitions = (data[0] >> 4) & 7;
	owner_down = (data[0] >> 7) & 1;
	iq_http_config.standby_replicas = owner_down;
	iq_http_config.standby_max_lag = 1000;
	forwards = 0;
	wire_store = -1;

	url = malloc(size);
	if (url == NULL)
		return 0;
	memcpy(url, data + 1, size - 1);
	url[size - 1] = '\0';
	q = strchr(url, '?');
	if (q)
	{
		*q = '\0';
		conn.query = q + 1;
	}

	/* what a get forwarded to its owner must carry */
	expect_forward = false;
	get = strstr(url, "/get/");
	if (strncmp(url, "/stores/", 8) == 0 && get != NULL && strlen(get + 5) < sizeof(expected_key))
	{
		const char *slash = strchr(url + 8, '/');

		/* only the first "/get/" after the store's name is the key's start */
		if (slash && strncmp(slash, "/get/", 5) == 0)
		{
			strcpy(expected_key, slash + 5);
			expected_len = iq_url_decode(expected_key, false);
			expect_forward = true;
		}
	}

	ret = iq_http_route_get(&conn, url, &ctx);
	if (ctx.job != NULL)
	{
		if (ret != MHD_YES || conn.queued != 0)
			abort();
		ret = iq_http_forward_answer(&conn, &ctx);
		/* asked again of a standby: its answer */
		if (conn.queued == 0 && ret == MHD_YES)
			iq_http_forward_answer(&conn, &ctx);
		ret = MHD_YES;
	}
	if (ret == MHD_YES && conn.queued != 1)
		abort();
	/* as request_completed does */
	iq_forward_job_free(ctx.job);
	free(ctx.key);
	free(url);
	return 0;
}

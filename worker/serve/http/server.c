/*-------------------------------------------------------------------------
 * server.c
 *	  The worker's HTTP server: libmicrohttpd with its own polling threads
 *	  (a pool of iq_fdw.http_threads), bounded connections, request sizes
 *	  and idle time; requests are dispatched to routes.c (the seed's
 *	  JSON API), peer_read.c (the compact endpoint for peers) and
 *	  upgrade.c (the same, upgraded to a stream of requests).
 *
 * Bounds on what clients can make us hold: connections per client address
 * and whole-request deadlines (conns.c); request bodies, whose
 * Content-Length is checked before any byte of them is read: over
 * IQ_WIRE_MAX_REQUEST 413, beyond what iq_fdw.request_memory has left for
 * all bodies together 503, at once (conn_limits.h).
 *
 * MHD's threads never call PostgreSQL.  Signals are blocked while MHD
 * creates its threads, so they inherit a full mask and every signal meant
 * for the worker (SIGTERM, SIGHUP, the latch's SIGURG) reaches its main
 * thread.  URLs are left escaped by MHD (a no-op unescape callback) so that
 * an escaped '/' in a key (%2F) does not split the path: the routes split
 * first and decode each segment.  With TLS on (tls_server.c) the port
 * speaks HTTPS only; upgraded streams then pass through MHD's TLS relay.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker/counters.h"
#include "worker/serve/conn_limits.h"
#include "worker/serve/http/http_internal.h"
#include "worker/serve/read_handler.h"

IqServerConfig iq_http_config;

static struct MHD_Daemon *http_daemon = NULL;

/* Per-request state, made when its request line arrives. */
typedef struct RequestCtx
{
	bool		seen;			/* the access handler saw its head */
	IqAccessRefusal refusal;	/* status 0: access.c let it through */
	IqBuf		body;			/* POST /iq/v1/read */
	size_t		reserved;		/* of iq_fdw.request_memory, for the body */
	IqGetCtx	get;			/* a GET's forward */
	IqEndpoint	endpoint;		/* what GET /metrics counts it under */
	double		started;		/* its request line, monotonic seconds */
} RequestCtx;

/* no_unescape: keep MHD from decoding the URL; the routes do it per segment */
static size_t
no_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	return strlen(s);
}

/* request_started: MHD's URI log callback: the request line arrived */
static void *
request_started(void *cls, const char *uri, struct MHD_Connection *conn)
{
	RequestCtx *ctx = calloc(1, sizeof(RequestCtx));

	iq_http_conn_request_line(conn);
	if (ctx)
	{
		iq_buf_init(&ctx->body);
		ctx->started = iq_counters_now();
	}
	return ctx;					/* the access handler's *con_cls */
}

/*
 * count_request: a request that ended, by route and the status it was
 * answered with (none: it ended before an answer, counted as "other")
 */
static void
count_request(struct MHD_Connection *conn, const RequestCtx *ctx)
{
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_HTTP_STATUS);

	iq_count_request(ctx->endpoint, info ? info->http_status : 0,
					 iq_counters_now() - ctx->started);
}

/* request_completed: free what a request allocated, however it ended */
static void
request_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
				  enum MHD_RequestTerminationCode toe)
{
	RequestCtx *ctx = *con_cls;

	if (ctx)
	{
		if (ctx->seen)
			count_request(conn, ctx);
		iq_forward_job_free(ctx->get.job);
		free(ctx->get.key);
		iq_buf_free(&ctx->body);
		iq_request_memory_release(ctx->reserved);
		free(ctx);
		*con_cls = NULL;
	}
	iq_http_conn_completed(conn);
}

/*
 * body_admit: at the head of POST /iq/v1/read, before any byte of its
 * body is read: refuse a body we would not keep, else charge its size to
 * iq_fdw.request_memory and make room for it.  MHD_YES to go on reading;
 * otherwise *refusal is the answer queued (MHD then closes the connection
 * without reading the body).
 */
static bool
body_admit(struct MHD_Connection *conn, RequestCtx *ctx, enum MHD_Result *refusal)
{
	const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												 MHD_HTTP_HEADER_CONTENT_LENGTH);
	unsigned long long len;
	char	   *end;

	if (cl == NULL || MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												  MHD_HTTP_HEADER_TRANSFER_ENCODING))
	{
		*refusal = iq_http_send_error(conn, MHD_HTTP_LENGTH_REQUIRED, NULL,
									  "the body of POST %s needs a Content-Length "
									  "(and no Transfer-Encoding)", IQ_PEER_READ_PATH);
		return false;
	}
	errno = 0;
	len = strtoull(cl, &end, 10);
	if (errno != 0 || end == cl || *end != '\0' || len > IQ_WIRE_MAX_REQUEST)
	{
		*refusal = iq_http_send_error(conn, MHD_HTTP_CONTENT_TOO_LARGE, NULL,
									  "request body larger than %d bytes", IQ_WIRE_MAX_REQUEST);
		return false;
	}
	if (!iq_request_memory_reserve((size_t) len))
	{
		*refusal = iq_http_send_error(conn, MHD_HTTP_SERVICE_UNAVAILABLE, NULL,
									  "the server is receiving too many large requests at once "
									  "(iq_fdw.request_memory); retry later");
		return false;
	}
	ctx->reserved = (size_t) len;
	if (len > 0 && !iq_buf_reserve(&ctx->body, (size_t) len))
	{
		*refusal = iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
									  "out of memory reading the request");
		return false;
	}
	return true;
}

/* access_handler: MHD's entry point for every request (and body chunk) */
static enum MHD_Result
access_handler(void *cls, struct MHD_Connection *conn, const char *url,
			   const char *method, const char *version,
			   const char *upload_data, size_t *upload_data_size,
			   void **con_cls)
{
	RequestCtx *ctx = *con_cls;
	bool		first = false;

	if (ctx == NULL)
	{
		/* request_started could not allocate it */
		ctx = calloc(1, sizeof(RequestCtx));
		if (ctx == NULL)
			return MHD_NO;
		iq_buf_init(&ctx->body);
		ctx->started = iq_counters_now();
		*con_cls = ctx;
	}
	if (!ctx->seen)
	{
		ctx->seen = true;
		first = true;
		ctx->endpoint = iq_endpoint_of(method, url);
	}

	if (strlen(url) > IQ_HTTP_MAX_URL)
		return iq_http_send_error(conn, MHD_HTTP_URI_TOO_LONG, NULL,
								  "URL longer than %d bytes", IQ_HTTP_MAX_URL);

	/*
	 * Who may ask, judged at the head, before a body is admitted; the
	 * refusal waits for the end of any body, so that the connection stays
	 * usable and the client reads it rather than a reset.
	 */
	if (first && !iq_http_access_check(conn, url, &ctx->refusal))
		return MHD_YES;
	if (ctx->refusal.status != 0)
	{
		if (*upload_data_size > 0)
		{
			*upload_data_size = 0;
			return MHD_YES;
		}
		iq_http_conn_answering(conn);
		return iq_http_access_refuse(conn, method, url, &ctx->refusal);
	}

	if (strcmp(method, "POST") == 0 && strcmp(url, IQ_PEER_READ_PATH) == 0)
	{
		if (first)
		{
			enum MHD_Result refusal;

			if (!body_admit(conn, ctx, &refusal))
				return refusal;
			return MHD_YES;		/* MHD calls again with the body */
		}
		if (*upload_data_size > 0)
		{
			/* MHD holds the body to its Content-Length, charged whole */
			if (ctx->body.len + *upload_data_size > ctx->reserved)
				return MHD_NO;	/* cannot happen: close the connection */
			iq_buf_append(&ctx->body, upload_data, *upload_data_size);
			*upload_data_size = 0;
			return MHD_YES;
		}
		iq_http_conn_answering(conn);
		if (ctx->body.oom)
			return iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL,
									  "out of memory reading the request");
		return iq_http_peer_read(conn, ctx->body.data ? ctx->body.data : "",
								 ctx->body.len);
	}

	/*
	 * Answering on the first call, before MHD knows the request has no
	 * body, would make it close the connection: answer on the second.  A
	 * body we do not want (any method but POST /iq/v1/read) is swallowed,
	 * within the request's deadline.
	 */
	if (first)
		return MHD_YES;
	if (*upload_data_size > 0)
	{
		*upload_data_size = 0;
		return MHD_YES;
	}
	iq_http_conn_answering(conn);
	if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
		return iq_http_send_error(conn, MHD_HTTP_METHOD_NOT_ALLOWED, NULL,
								  "method %s not allowed on %s", method,
								  strcmp(url, IQ_PEER_READ_PATH) == 0 ? url : "this path");
	if (strcmp(url, IQ_PEER_STREAM_PATH) == 0)
		return iq_http_stream_upgrade(conn, version);
	if (ctx->get.job)
	{
		/* resumed: the owner answered a forwarded get */
		if (!iq_forward_job_done(ctx->get.job))
			return MHD_YES;
		return iq_http_forward_answer(conn, &ctx->get);
	}
	return iq_http_route_get(conn, url, &ctx->get);
}

/* open_listener: bind host:port ourselves, so a port in use is reported clearly */
static int
open_listener(const char *host, int port, char **err)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	char		portstr[16];
	char		msg[512];
	int			fd = -1;
	int			rc;
	int			saved = 0;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if (strcmp(host, "*") == 0 || host[0] == '\0')
		host = NULL;
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0)
	{
		snprintf(msg, sizeof(msg), "iq_fdw.http_listen: cannot resolve \"%s\": %s",
				 host ? host : "*", gai_strerror(rc));
		*err = strdup(msg);
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next)
	{
		int			one = 1;

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
					ai->ai_protocol);
		if (fd < 0)
		{
			saved = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0)
	{
		snprintf(msg, sizeof(msg), "iq_fdw.http_listen: cannot listen on %s:%d: %s",
				 host ? host : "*", port, strerror(saved));
		*err = strdup(msg);
	}
	return fd;
}

/*
 * connection_limit: what the process's file limit allows, at most our
 * maximum.  The soft limit is first raised toward IQ_HTTP_FD_WANTED, as
 * far as the hard limit lets it: a soft limit of 1024 (a common default)
 * would leave 512 connections, and a few busy clients could take them.
 * This process polls nothing with select(), so descriptors above 1024 are
 * safe; other processes of the instance keep their limit.
 */
static unsigned int
connection_limit(void)
{
	struct rlimit rl;
	unsigned int limit = IQ_HTTP_MAX_CONNECTIONS;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		rl.rlim_cur < IQ_HTTP_FD_WANTED)
	{
		rlim_t		want = IQ_HTTP_FD_WANTED;

		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want)
			want = rl.rlim_max;
		if (want > rl.rlim_cur)
		{
			rl.rlim_cur = want;
			(void) setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	/* leave half of the descriptors to RocksDB, Kafka and PostgreSQL */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		rl.rlim_cur / 2 < limit)
		limit = rl.rlim_cur / 2 > 16 ? (unsigned int) (rl.rlim_cur / 2) : 16;
	return limit;
}

/* iq_http_start: listen and start the pool; false with *err (malloc'd) */
bool
iq_http_start(const IqServerConfig *config, char **err)
{
	sigset_t	all;
	sigset_t	old;
	int			fd;
	unsigned int threads;
	unsigned int tls_flags;
	struct MHD_OptionItem tls_opts[IQ_HTTP_TLS_OPTIONS];

	*err = NULL;
	if (http_daemon != NULL)
		return true;
	iq_http_config = *config;
	iq_read_set_partitioner(config->partitioner);

	fd = open_listener(config->listen_host, config->listen_port, err);
	if (fd < 0)
		return false;

	threads = config->threads > 0 ? (unsigned int) config->threads : 1;
	iq_http_peer_init();
	if (!iq_forwarder_start(err))
	{
		close(fd);
		iq_http_peer_shutdown();
		return false;
	}

	if (!iq_http_conns_start())
	{
		char		msg[256];

		snprintf(msg, sizeof(msg), "could not start the HTTP connection watchdog: %s",
				 strerror(errno));
		*err = strdup(msg);
		close(fd);
		iq_forwarder_stop();
		iq_http_peer_shutdown();
		return false;
	}
	iq_http_stream_open();
	tls_flags = iq_http_tls_options(&config->tls, tls_opts);
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	http_daemon = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
								   MHD_USE_TURBO | MHD_ALLOW_SUSPEND_RESUME |
								   MHD_ALLOW_UPGRADE | tls_flags,
								   0,	/* port: we pass our own socket */
								   iq_http_conn_admit, NULL,
								   access_handler, NULL,
								   MHD_OPTION_LISTEN_SOCKET, fd,
								   MHD_OPTION_THREAD_POOL_SIZE, threads,
								   MHD_OPTION_CONNECTION_LIMIT, connection_limit(),
								   MHD_OPTION_CONNECTION_TIMEOUT,
								   (unsigned int) IQ_HTTP_CONN_TIMEOUT_S,
								   MHD_OPTION_CONNECTION_MEMORY_LIMIT,
								   (size_t) IQ_HTTP_MEMORY_LIMIT,
								   MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL,
								   MHD_OPTION_NOTIFY_COMPLETED, request_completed, NULL,
								   MHD_OPTION_NOTIFY_CONNECTION, iq_http_conn_notify, NULL,
								   MHD_OPTION_URI_LOG_CALLBACK, request_started, NULL,
								   MHD_OPTION_ARRAY, tls_opts,
								   MHD_OPTION_END);
	pthread_sigmask(SIG_SETMASK, &old, NULL);

	if (http_daemon == NULL)
	{
		char		msg[512];

		close(fd);
		iq_http_conns_stop();
		iq_forwarder_stop();
		iq_http_peer_shutdown();
		snprintf(msg, sizeof(msg),
				 "iq_fdw.http_listen: could not start the HTTP%s server on %s:%d (iq_fdw.http_threads = %d)",
				 config->tls.on ? "S" : "", config->listen_host, config->listen_port,
				 config->threads);
		*err = strdup(msg);
		return false;
	}
	return true;
}

/*
 * drain: stop accepting connections and let the answers under way finish,
 * for up to IQ_SERVE_DRAIN_MS (a clean stop, a rolling restart, cuts no
 * read in flight); the listening socket, now ours to close, or
 * MHD_INVALID_SOCKET
 */
static MHD_socket
drain(void)
{
	long long	deadline = iq_conn_now_ms() + IQ_SERVE_DRAIN_MS;
	MHD_socket	listen = MHD_quiesce_daemon(http_daemon);

	/* the upgraded streams drain meanwhile, within the same bound */
	iq_http_stream_stop();
	while (iq_http_conns_answering() > 0 && iq_conn_now_ms() < deadline)
		usleep(10 * 1000);
	return listen;
}

/* iq_http_stop: stop accepting, finish or drop connections, join threads */
void
iq_http_stop(void)
{
	MHD_socket	listen;

	if (http_daemon == NULL)
		return;
	/* MHD must not stop with upgraded connections still open: drain closes them */
	listen = drain();
	/* then answer every suspended (forwarding) connection still waiting */
	iq_forwarder_stop();
	MHD_stop_daemon(http_daemon);	/* closes the listening socket, unless quiesced */
	if (listen != MHD_INVALID_SOCKET)
		close(listen);
	http_daemon = NULL;
	iq_http_conns_stop();		/* MHD closed every connection: no records left */
	iq_http_peer_shutdown();
}

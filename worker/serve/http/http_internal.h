/*-------------------------------------------------------------------------
 * http_internal.h
 *	  What the HTTP server's files share (every file of serve/http/).
 *	  Server threads only: no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_HTTP_INTERNAL_H
#define IQ_HTTP_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include "common/peer_api.h"
#include "common/stores.h"
#include "common/wire.h"
#include "worker/serve/servers.h"

/* Longest URL we answer; longer ones get 414 (MHD's own 414 beyond its pool). */
#define IQ_HTTP_MAX_URL			8192
#define IQ_HTTP_MEMORY_LIMIT	(16 * 1024)	/* MHD clears it per request */
/* MHD's idle timeout; also the longest wait for a kept-alive connection's next request line */
#define IQ_HTTP_CONN_TIMEOUT_S	30
#define IQ_HTTP_MAX_CONNECTIONS 1000
#define IQ_HTTP_FD_WANTED		4096	/* soft descriptor limit the worker raises itself to */

/*
 * Ownership as the server threads need it: a plain-C copy of ownership.h's
 * snapshot (whose header pulls in PostgreSQL's, whose snprintf and friends
 * these threads must not call), made by ownership_view.c.
 */
#define IQ_HTTP_MAX_MEMBERS		64
#define IQ_HTTP_MAX_PARTITIONS	256
#define IQ_HTTP_HOST_LEN		256

typedef struct IqHttpMember
{
	char		host[IQ_HTTP_HOST_LEN];
	int			port;
} IqHttpMember;

typedef struct IqHttpOwnership
{
	uint64_t	generation;		/* 0: never copied */
	int			partition_count;
	int			nmembers;
	int			self;			/* member index, -1 if this instance holds nothing */
	IqHttpMember members[IQ_HTTP_MAX_MEMBERS];
	int16_t		owner[IQ_HTTP_MAX_PARTITIONS];	/* member index or -1 */
} IqHttpOwnership;

/* in ownership_view.c */
extern void iq_http_ownership(IqHttpOwnership *out);

/*
 * What GET /metrics shows of shared memory (common/shmem.h), the same
 * numbers iq_stats() reads, in plain C: copied by stats_view.c.
 */
typedef struct IqHttpPartitionStats
{
	int			partition;
	bool		assigned;
	bool		restoring;
	bool		standby;
	int64_t		customer_offset;
	int64_t		customer_end;
	int64_t		order_offset;
	int64_t		order_end;
	int64_t		changelog_offset;
	int64_t		records_processed;
	int64_t		orders_joined;
	int64_t		orders_without_customer;
	int64_t		dropped_null_key;
	int64_t		dropped_malformed;
	int64_t		dropped_unprocessable;
	int64_t		wrong_partition;
	int64_t		restored_records;
	int64_t		restore_total;
	int64_t		state_rebuilds;
	int64_t		standby_applied;
} IqHttpPartitionStats;

#define IQ_HTTP_STATES			7	/* IqWorkerState's values */

typedef struct IqHttpWorkerView
{
	int			state;			/* IqWorkerState */
	const char *state_names[IQ_HTTP_STATES];
	double		state_since;	/* Unix time, seconds */
	int			npartitions;	/* entries of partitions[] used */
	IqHttpPartitionStats partitions[IQ_HTTP_MAX_PARTITIONS];
	bool		value_cache;	/* iq_fdw.value_cache > 0 */
	uint64_t	value_cache_hits;
	uint64_t	value_cache_misses;
	int64_t		memory_budget;	/* iq_fdw.memory_budget, bytes */
} IqHttpWorkerView;

/* in stats_view.c */
extern void iq_http_worker_view(IqHttpWorkerView *out);

/* in metrics.c: GET /metrics */
extern enum MHD_Result iq_http_metrics(struct MHD_Connection *conn);

/* The running server's settings (copied at start; read-only afterwards). */
extern IqServerConfig iq_http_config;

/* in json.c */
extern json_t *iq_json_bytes(const char *data, size_t len);
extern json_t *iq_json_value(IqStoreId store, const char *value, size_t len);
extern enum MHD_Result iq_http_send_json(struct MHD_Connection *conn,
										 unsigned int status, json_t *body);
extern enum MHD_Result iq_http_send_get(struct MHD_Connection *conn, IqStoreId store,
										const char *value, size_t len);
extern enum MHD_Result iq_http_send_error(struct MHD_Connection *conn,
										  unsigned int status,
										  const char *owner,
										  const char *fmt,...)
			__attribute__((format(printf, 4, 5)));
extern enum MHD_Result iq_http_send_stream(struct MHD_Connection *conn,
										   const char *content_type, size_t chunk,
										   MHD_ContentReaderCallback reader,
										   void *state,
										   MHD_ContentReaderFreeCallback done);
extern enum MHD_Result iq_http_queue(struct MHD_Connection *conn, unsigned int status,
									 struct MHD_Response *resp,
									 const char *content_type);
extern void iq_json_append(IqBuf *out, json_t *value);
extern size_t iq_url_decode(char *s, bool plus_is_space);
extern void iq_url_encode(IqBuf *out, const char *data, size_t len);

/* in forwarded_get.c: gets forwarded without blocking a server thread */
typedef struct IqForwardJob IqForwardJob;
typedef struct IqForwardResult IqForwardResult;

extern bool iq_forwarder_start(char **err);
extern void iq_forwarder_stop(void);
extern IqForwardJob *iq_forward_submit(struct MHD_Connection *conn, const char *url);
extern IqForwardJob *iq_forward_submit_get(struct MHD_Connection *conn, const char *host,
										   int port, int store, const char *key, size_t len);
extern bool iq_forward_job_done(IqForwardJob *job);
extern IqForwardResult *iq_forward_job_result(IqForwardJob *job);
extern void iq_forward_job_free(IqForwardJob *job);

/* A GET's state across the access handler's calls. */
typedef struct IqGetCtx
{
	IqForwardJob *job;			/* a forward in flight or done */
	char		owner[IQ_HTTP_HOST_LEN + 16];	/* host:port it went to */
	int			partition;
	/* for a standby's answer when the owner cannot give one (routes.c) */
	const struct IqStoreInfo *store;
	char	   *key;			/* malloc'd; freed with the request */
	size_t		key_len;
	bool		to_standby;		/* job went to a standby */
} IqGetCtx;

/* in routes.c */
extern enum MHD_Result iq_http_route_get(struct MHD_Connection *conn,
										 const char *url, IqGetCtx *ctx);
extern enum MHD_Result iq_http_forward_answer(struct MHD_Connection *conn,
											  IqGetCtx *ctx);

/* in peer_read.c */
extern enum MHD_Result iq_http_peer_read(struct MHD_Connection *conn,
										 const char *body, size_t len);

/* in conns.c: per-client caps and whole-request deadlines */
extern bool iq_http_conns_start(void);
extern void iq_http_conns_stop(void);
extern int	iq_http_conns_answering(void);
extern enum MHD_Result iq_http_conn_admit(void *cls, const struct sockaddr *addr,
										  socklen_t addrlen);
extern void iq_http_conn_notify(void *cls, struct MHD_Connection *conn,
								void **socket_context,
								enum MHD_ConnectionNotificationCode toe);
extern void iq_http_conn_request_line(struct MHD_Connection *conn);
extern void iq_http_conn_answering(struct MHD_Connection *conn);
extern void iq_http_conn_completed(struct MHD_Connection *conn);
extern void iq_http_conn_upgraded(struct MHD_Connection *conn);
extern void iq_http_conn_authenticated(struct MHD_Connection *conn);
extern bool iq_http_conn_verified(struct MHD_Connection *conn);

/* in access.c: who may call which endpoint (the main thread's side: access.h) */
typedef struct IqAccessRefusal
{
	unsigned int status;		/* 401, 403, 421, 503 */
	char		message[256];
} IqAccessRefusal;

extern bool iq_http_access_check(struct MHD_Connection *conn, const char *url,
								 IqAccessRefusal *refusal);
extern enum MHD_Result iq_http_access_refuse(struct MHD_Connection *conn,
											 const char *method, const char *url,
											 const IqAccessRefusal *refusal);

/* in upgrade.c: GET IQ_PEER_STREAM_PATH, upgraded to the compact stream */
extern enum MHD_Result iq_http_stream_upgrade(struct MHD_Connection *conn,
											  const char *version);
extern void iq_http_stream_open(void);
extern void iq_http_stream_stop(void);

/* A forwarded get's outcome (forwarded_get.c) */
struct IqForwardResult
{
	long		status;			/* HTTP status, 0 if the transfer failed */
	bool		timed_out;
	bool		refused;		/* nothing listens there: the owner stops or stopped */
	char		error[256];		/* curl's text when status == 0; a wire error's message */
	IqBuf		body;			/* the owner's JSON; over a stream the value found */
	/*
	 * Over a peer stream (iq_forward_submit_get): the owner's wire status
	 * when status != 0, and whether the key was found; the JSON is then
	 * rendered here as the owner would (routes.c)
	 */
	bool		wire;
	int			wire_status;	/* IqWireStatus */
	bool		found;
};

/* in tls_server.c: HTTPS with the material of iq_http_config.tls (check: servers.h) */
#define IQ_HTTP_TLS_OPTIONS		5	/* MHD options it sets, with the end */
extern unsigned int iq_http_tls_options(const IqTls *tls, struct MHD_OptionItem *opts);

/* in peer_call.c: what the server's calls to peers share (URLs: peer_api.h) */
extern void iq_http_peer_init(void);
extern void iq_http_peer_shutdown(void);
extern long long iq_http_now_ms(void);
extern ssize_t iq_http_take(const IqBuf *buf, size_t *off, char *out, size_t max);
extern struct curl_slist *iq_http_peer_setup(void *curl, const char *url, bool post);
extern void *iq_http_multi_take(void);
extern void iq_http_multi_give(void *multi);

#endif							/* IQ_HTTP_INTERNAL_H */

/*-------------------------------------------------------------------------
 * servers.h
 *	  The worker's two servers: the HTTP endpoints (the seed's API plus the
 *	  compact peer endpoint, per request or upgraded to a stream) and the
 *	  local Unix-socket channel that backends of this instance use to read
 *	  its state.
 *
 * Both run on their own threads, read state through store.h and
 * ownership.h only, and never call a PostgreSQL function.  The worker's
 * main thread starts them once its stores are set up and stops them before
 * it closes the stores.  Start functions return false with a malloc'd
 * *err that names the setting at fault (e.g. a port in use).  With
 * iq_fdw.ssl_cert_file set the HTTP server speaks HTTPS only, and its
 * calls to peers are HTTPS clients presenting the instance's certificate;
 * a reload that changes the TLS files restarts the HTTP server alone.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_SERVERS_H
#define IQ_SERVERS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/tls.h"

typedef struct IqServerConfig
{
	char		listen_host[256];	/* iq_fdw.http_listen */
	int			listen_port;
	char		advertised_host[256];	/* iq_fdw.advertised_endpoint */
	int			advertised_port;
	int			threads;		/* iq_fdw.http_threads */
	int			peer_timeout_ms;	/* for forwarded requests */
	char		socket_path[108];	/* the local channel, relative to the
									 * data directory (see local_server.c) */
	int			partitioner;	/* iq_fdw.partitioner (IqPartitioner); 0 =
								 * murmur2 */
	int			standby_replicas;	/* iq_fdw.standby_replicas */
	int			standby_max_lag;	/* iq_fdw.max_lag, or standby_max_lag if -1 */
	IqTls		tls;			/* iq_fdw.ssl_*_file's bytes: HTTPS and the
								 * calls to peers; the caller's, kept until
								 * the HTTP server is stopped */
} IqServerConfig;

extern bool iq_http_start(const IqServerConfig *config, char **err);
/* whether the HTTP server can start with tls; false with why in err */
extern bool iq_http_tls_check(const IqTls *tls, char *err, size_t errlen);
extern void iq_http_stop(void);

extern bool iq_local_server_start(const IqServerConfig *config, char **err);
extern void iq_local_server_stop(void);
extern const char *iq_local_server_path(void);	/* the name it listens on */

/* The servers' limits (settings applied at start and on reload). */
extern void iq_servers_apply_settings(void);

/* in servers.c: the worker's main thread starts, retries and stops them */
extern void iq_servers_try_start(int64_t now);
extern void iq_servers_show_failure(void);
extern void iq_servers_reload_tls(void);
extern void iq_servers_stop(void);
extern void iq_servers_reload_listen(void);	/* before iq_servers_reload_tls */
extern void iq_servers_reload_access(void); /* after it */

#endif							/* IQ_SERVERS_H */

/*-------------------------------------------------------------------------
 * peer_api.h
 *	  How one instance reaches another over HTTP: the peer endpoints'
 *	  paths, the stream's upgrade token, the header that marks a forwarded
 *	  request, and the one builder of a peer's URL.
 *
 * Both sides use it: a backend opening a stream to another instance
 * (src/channel_tcp.c) and the worker's HTTP server answering and calling
 * peers (worker/serve/http/).  Plain C with no PostgreSQL calls: the
 * worker's server threads use it.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_PEER_API_H
#define IQ_PEER_API_H

#include <stdbool.h>
#include <stddef.h>

/* The longest host name (RFC 1035), and room for one with its port */
#define IQ_PEER_HOST_MAX		255
#define IQ_PEER_AUTHORITY_LEN	(IQ_PEER_HOST_MAX + 16)
#define IQ_PEER_URL_LEN			(IQ_PEER_AUTHORITY_LEN + 64)	/* with a peer path */

/* POST a wire request (common/wire.h), get the wire answer as the body */
#define IQ_PEER_READ_PATH		"/iq/v1/read"

/*
 * GET with "Connection: Upgrade" and "Upgrade: iq-wire/1": after the 101,
 * the connection carries wire requests and answers as the local socket does
 */
#define IQ_PEER_STREAM_PATH		"/iq/v1/stream"
#define IQ_PEER_STREAM_PROTOCOL "iq-wire/1"

/* Set on a get one instance forwards to another (never forwarded twice) */
#define IQ_PEER_FORWARDED_HEADER "X-IQ-Forwarded"

/*
 * host:port, an IPv6 literal in brackets (what a Host header carries), and
 * "http://host:port/path" ("https://" when tls: iq_fdw.ssl_cert_file is
 * set, and then every instance of the cluster speaks TLS).  Both return what snprintf returns (size or
 * more: the result was cut); iq_peer_url -1 for a host over 255 bytes.
 */
extern int	iq_peer_authority(char *out, size_t size, const char *host, int port);
extern int	iq_peer_url(char *out, size_t size, bool tls, const char *host,
						int port, const char *path);

#endif							/* IQ_PEER_API_H */

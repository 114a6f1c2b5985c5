/*-------------------------------------------------------------------------
 * channel_conn.h
 *	  The three kinds of connection a channel (channel.c) rides on: the
 *	  Unix socket of this instance's worker (channel_unix.c); a TCP
 *	  connection to another instance, opened by libcurl and upgraded to the
 *	  wire stream (channel_tcp.c), with the bytes in and out of either
 *	  (channel_io.c); and, when iq_fdw.ssl_cert_file is set, a kept-alive
 *	  HTTPS connection carrying one POST /iq/v1/read per request
 *	  (channel_post.c).  Backend code.
 *
 * Neither raises an error: a failure is a false return and a sentence in
 * the caller's buffer, so the caller can free everything before reporting.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_CHANNEL_CONN_H
#define IQ_CHANNEL_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/tls.h"
#include "common/wire.h"

/* A connected socket, and what owns it. */
typedef struct IqChanConn
{
	int			fd;				/* -1 when none */
	void	   *easy;			/* CURL * that opened it (TCP); NULL for Unix */
	void	   *multi;			/* CURLM * its connect ran in */
	bool		tls;			/* bytes go through curl (TLS), not the socket */
	struct IqPost *post;		/* requests are POSTs (channel_post.c), or NULL */
} IqChanConn;

/* in channel_io.c: like send() and recv() on a non-blocking socket */
extern ssize_t iq_conn_send(IqChanConn *conn, const void *data, size_t len,
							const char **why);
extern ssize_t iq_conn_recv(IqChanConn *conn, void *buf, size_t size,
							const char **why);

/* in channel_unix.c */
extern bool iq_unix_socket_path(char *path, size_t size);
extern bool iq_unix_connect(IqChanConn *conn, const char *path,
							char *error, size_t errlen);

/* in channel_tcp.c */
typedef enum IqUpgradeCheck
{
	IQ_UPGRADE_MORE,			/* the head is not complete yet */
	IQ_UPGRADE_DONE,			/* 101: the stream starts at *end */
	IQ_UPGRADE_REFUSED,			/* another status */
	IQ_UPGRADE_NOT_HTTP
} IqUpgradeCheck;

/* why a TCP connect failed */
typedef enum IqConnectFailure
{
	IQ_CONNECT_FAILED,			/* no such name, out of memory ... */
	IQ_CONNECT_REFUSED,			/* refused, or no route: nothing listens there */
	IQ_CONNECT_RESET,			/* closed or reset by the peer */
	IQ_CONNECT_TIMED_OUT,
	IQ_CONNECT_TLS				/* the TLS handshake: a certificate, or not TLS */
} IqConnectFailure;

extern bool iq_tcp_handles(IqChanConn *conn, const char *url, const IqTls *tls,
						   int timeout_ms, char *error, size_t errlen);
extern void iq_tcp_perform(void *multi);
extern IqConnectFailure iq_tcp_failure(int rc);
extern const char *iq_tcp_why(void *easy, int rc, const char *curl_error);
extern bool iq_tcp_connect(IqChanConn *conn, const char *host, int port,
						   const IqTls *tls, int timeout_ms, char *error,
						   size_t errlen, IqConnectFailure *failure);
extern void iq_tcp_close(IqChanConn *conn);
extern size_t iq_tcp_upgrade_head(char *head, size_t size, const char *host, int port);
extern IqUpgradeCheck iq_tcp_upgrade_check(const char *head, size_t len,
										   size_t *end, int *status);

/* in channel_post.c: where a POST is */
typedef enum IqPostState
{
	IQ_POST_RUNNING,			/* more of the answer may come */
	IQ_POST_DONE,				/* the whole answer arrived (HTTP 200) */
	IQ_POST_FAILED,				/* see the error and the failure */
	IQ_POST_REFUSED				/* an HTTP status other than 200 */
} IqPostState;

extern bool iq_post_open(IqChanConn *conn, const char *host, int port,
						 const IqTls *tls, char *error, size_t errlen);
extern bool iq_post_begin(IqChanConn *conn, const IqBuf *request, IqBuf *inbox,
						  int timeout_ms);
extern IqPostState iq_post_pump(IqChanConn *conn, char *error, size_t errlen,
								IqConnectFailure *failure, int *status);
extern bool iq_post_sent(IqChanConn *conn);
extern size_t iq_post_received(IqChanConn *conn);
extern void iq_post_wait(IqChanConn *conn, int timeout_ms);
extern bool iq_post_end(IqChanConn *conn);
extern void iq_post_close(IqChanConn *conn);

#endif							/* IQ_CHANNEL_CONN_H */

/*-------------------------------------------------------------------------
 * http_access.c
 *	  libFuzzer target: who may call which endpoint (worker/serve/http/
 *	  access.c as it is): the rules made from iq_fdw.http_allowed_hosts,
 *	  then a request's Host and Authorization headers judged against them.
 *
 * libmicrohttpd is replaced by shims below: a connection is its two
 * headers, without TLS (a TLS session cannot be made up, so client
 * certificates are not reached).  The server listens on 127.0.0.1:5400 and
 * is advertised as iq1.example:5401; the token file holds "s3cret".
 * Checks: no crash, no bad memory access, no leak; a refusal is 401, 403
 * or 421 with a message; a Host naming "evil" is refused unless the
 * allowed hosts name it; localhost with our port, and the right token,
 * are let through.
 *
 * Input: byte 0 (bit 0: iq_fdw.http_auth = required, bit 1: a peer path);
 * the rest is three NUL-separated strings: iq_fdw.http_allowed_hosts, the
 * Host header (none if empty), the Authorization header (none if empty).
 *-------------------------------------------------------------------------
 */
#define _GNU_SOURCE				/* strcasestr */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/settings.h"
#include "worker/serve/http/access.h"
#include "worker/serve/http/http_internal.h"

/* the settings access.c reads (common/settings_access.c in the server) */
char	   *iq_ssl_cert_file = "";
int			iq_http_auth;
char	   *iq_http_token_file = "";
bool		iq_http_insecure;
char	   *iq_http_allowed_hosts = "";

struct MHD_Connection
{
	const char *host;
	const char *authorization;
};

/* ---- libmicrohttpd and the rest of the server ---------------------------- */

const char *
MHD_lookup_connection_value(struct MHD_Connection *c, enum MHD_ValueKind kind,
							const char *key)
{
	if (strcasecmp(key, MHD_HTTP_HEADER_HOST) == 0)
		return c->host;
	if (strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION) == 0)
		return c->authorization;
	return NULL;
}

const union MHD_ConnectionInfo *
MHD_get_connection_info(struct MHD_Connection *c, enum MHD_ConnectionInfoType type, ...)
{
	return NULL;				/* not TLS */
}

/* no connection here ever showed a certificate: they are not TLS */
bool
iq_http_conn_verified(struct MHD_Connection *conn)
{
	return false;
}

/* what the judgement must never reach: responses are access.c's caller's */
void
iq_http_conn_authenticated(struct MHD_Connection *conn)
{
	abort();					/* only a client certificate authenticates */
}

struct MHD_Response *
MHD_create_response_from_buffer(size_t size, void *buffer, enum MHD_ResponseMemoryMode mode)
{
	abort();
}

enum MHD_Result
iq_http_queue(struct MHD_Connection *conn, unsigned int status,
			  struct MHD_Response *resp, const char *content_type)
{
	abort();
}

enum MHD_Result
iq_http_send_error(struct MHD_Connection *conn, unsigned int status,
				   const char *owner, const char *fmt,...)
{
	abort();
}

/* ---- the target ----------------------------------------------------------- */

static char token_path[64];

static void
token_remove(void)
{
	unlink(token_path);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int			fd;

	snprintf(token_path, sizeof(token_path), "/tmp/iq_fuzz_token.XXXXXX");
	fd = mkstemp(token_path);	/* 0600, ours: as access.c asks */
	if (fd < 0 || write(fd, "s3cret\n", 7) != 7)
		abort();
	close(fd);
	atexit(token_remove);
	return 0;
}

/* next: the string at *p (up to a NUL or the end), malloc'd; *p moves past it */
static char *
next(const uint8_t **p, const uint8_t *end)
{
	const uint8_t *nul = memchr(*p, 0, (size_t) (end - *p));
	size_t		len = (nul ? nul : end) - *p;
	char	   *s = malloc(len + 1);

	memcpy(s, *p, len);
	s[len] = '\0';
	*p = nul ? nul + 1 : end;
	return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *p = data + 1;
	const uint8_t *end = data + size;
	IqServerConfig config;
	struct MHD_Connection conn;
	IqAccessRefusal refusal;
	char		err[512];
	char	   *allowed;
	char	   *host;
	char	   *auth;
	bool		ok;

	if (size < 1)
		return 0;
	iq_http_auth = (data[0] & 1) ? IQ_HTTP_AUTH_REQUIRED : IQ_HTTP_AUTH_NONE;
	iq_http_token_file = token_path;
	allowed = next(&p, end);
	host = next(&p, end);
	auth = next(&p, end);
	iq_http_allowed_hosts = allowed;

	memset(&config, 0, sizeof(config));
	strcpy(config.listen_host, "127.0.0.1");
	config.listen_port = 5400;
	strcpy(config.advertised_host, "iq1.example");
	config.advertised_port = 5401;
	if (iq_access_configure(&config, false, err, sizeof(err)))
	{
		conn.host = host[0] ? host : NULL;
		conn.authorization = auth[0] ? auth : NULL;
		memset(&refusal, 0, sizeof(refusal));
		ok = iq_http_access_check(&conn, (data[0] & 2) ? IQ_PEER_READ_PATH : "/metadata",
								  &refusal);
		if (!ok && ((refusal.status != 401 && refusal.status != 403 &&
					 refusal.status != 421) || refusal.message[0] == '\0'))
			abort();
		if (ok && strcasestr(host, "evil") && !strcasestr(allowed, "evil"))
			abort();			/* a name we never allowed */
		if (!ok && strcmp(host, "localhost:5400") == 0 &&
			(!(data[0] & 1) || (data[0] & 2) || strcmp(auth, "Bearer s3cret") == 0))
			abort();			/* ours, and open or with the token */
		iq_access_clear();
	}
	else if (strlen(err) == 0)
		abort();
	free(allowed);
	free(host);
	free(auth);
	return 0;
}

/*-------------------------------------------------------------------------
 * access.c
 *	  Who may call which endpoint: the Host check, a peer's certificate
 *	  for /iq/v1/..., a credential for the seed's endpoints, and whether
 *	  the listen address may be served at all (see access.h).
 *
 * Every request is judged once, at its head, before it is dispatched:
 *
 * 1. Host, against DNS rebinding: a page of evil.example whose name is
 *    made to resolve to 127.0.0.1 reaches this port from the browser with
 *    "Host: evil.example:PORT", which we refuse.  Allowed: localhost,
 *    127.0.0.1, [::1], the advertised host, the listen host (unless a
 *    wildcard) and iq_fdw.http_allowed_hosts, with the listen or the
 *    advertised port.  A name without a port is accepted too: a browser
 *    writes the page's port unless it is the scheme's default, so the
 *    name is what tells a rebound page apart, and hand-written clients
 *    write "Host: localhost".  The refusal is 421 Misdirected Request:
 *    the name is not one this server answers for (RFC 9110 15.5.20);
 *    403 stays the answer to a missing or wrong credential.  A request
 *    without Host is let through: MHD refuses one in HTTP/1.1 (400), and
 *    an HTTP/1.0 request without Host cannot come from a browser, the
 *    only client rebinding can use (load balancers' health checks do
 *    send them).
 *
 * 2. /iq/v1/... (peer reads and streams), over TLS: a client
 *    certificate that verifies against the cluster's CA (and may serve as
 *    a TLS client), else 403; a token is no use there.  MHD requests a
 *    client certificate at the handshake without requiring one, so that
 *    the seed's clients need none: the check is ours, per path.
 *
 * 3. The seed's endpoints (everything else), when iq_fdw.http_auth =
 *    required: such a certificate, or "Authorization: Bearer <token>"
 *    equal to the token of iq_fdw.http_token_file (compared in constant
 *    time).  No credential: 401 with "WWW-Authenticate: Bearer"; a wrong
 *    one: 403.
 *
 * A refused POST /iq/v1/read is answered in the wire's form too
 * (IQ_WIRE_FORBIDDEN), since its client reads the body as wire bytes.
 *
 * Whether TLS is on is the connection's own say (it has a TLS session or
 * not), so the server restarted with TLS turned on or off by a reload
 * (servers.c) is never judged by rules made for the other.
 *
 * The rules are made by the main thread (at start and on reload) and
 * shared with the server threads by reference count: a request keeps the
 * rules it started with even if a reload replaces them meanwhile.  Server
 * threads call no PostgreSQL function; the main thread reads the
 * settings' globals only.
 *-------------------------------------------------------------------------
 */
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "common/settings.h"
#include "common/tls.h"
#include "worker/serve/http/access.h"
#include "worker/serve/http/http_internal.h"

#define PEER_PREFIX			"/iq/v1/"

/* What requests are judged by; never changed once shared. */
typedef struct AccessRules
{
	int			refs;			/* under rules_lock */
	bool		auth_required;	/* iq_fdw.http_auth = required */
	IqTlsBlob	token;			/* data NULL: no token is accepted */
	int			ports[2];		/* listen and advertised */
	int			nnames;
	char	  **names;			/* lower case, IPv6 literals bracketed */
} AccessRules;

static pthread_mutex_t rules_lock = PTHREAD_MUTEX_INITIALIZER;
static AccessRules *rules = NULL;	/* holds a reference */

/* The server's addresses as started, for reloads (main thread only). */
static IqServerConfig started;

/* A credential's verdict. */
typedef enum Credential
{
	CRED_NONE,					/* none presented */
	CRED_WRONG,					/* presented, and refused */
	CRED_VALID
} Credential;

/* rules_free: a set of rules nobody holds any more */
static void
rules_free(AccessRules *r)
{
	int			i;

	if (r == NULL)
		return;
	for (i = 0; i < r->nnames; i++)
		free(r->names[i]);
	free(r->names);
	iq_tls_blob_free(&r->token);
	free(r);
}

/* rules_release: drop a reference taken by rules_acquire or held by "rules" */
static void
rules_release(AccessRules *r)
{
	bool		last;

	if (r == NULL)
		return;
	pthread_mutex_lock(&rules_lock);
	last = --r->refs == 0;
	pthread_mutex_unlock(&rules_lock);
	if (last)
		rules_free(r);
}

/* rules_acquire: the rules in force, referenced; NULL when none are set */
static AccessRules *
rules_acquire(void)
{
	AccessRules *r;

	pthread_mutex_lock(&rules_lock);
	r = rules;
	if (r)
		r->refs++;
	pthread_mutex_unlock(&rules_lock);
	return r;
}

/* rules_install: make r (or none) the rules in force */
static void
rules_install(AccessRules *r)
{
	AccessRules *old;

	if (r)
		r->refs = 1;
	pthread_mutex_lock(&rules_lock);
	old = rules;
	rules = r;
	pthread_mutex_unlock(&rules_lock);
	rules_release(old);
}

/*
 * add_name
 *		One allowed host name, as a Host header writes it: lower case, an
 *		IPv6 literal in brackets.  false when out of memory.
 */
static bool
add_name(AccessRules *r, const char *name, size_t len)
{
	bool		bracket = memchr(name, ':', len) != NULL && name[0] != '[';
	char	  **names = realloc(r->names, (r->nnames + 1) * sizeof(char *));
	char	   *s;
	size_t		i;

	if (names == NULL)
		return false;
	r->names = names;
	s = malloc(len + 3);
	if (s == NULL)
		return false;
	i = 0;
	if (bracket)
		s[i++] = '[';
	while (len-- > 0)
		s[i++] = (char) tolower((unsigned char) *name++);
	if (bracket)
		s[i++] = ']';
	s[i] = '\0';
	r->names[r->nnames++] = s;
	return true;
}

/*
 * add_allowed_hosts
 *		The names of iq_fdw.http_allowed_hosts.  One with a port (a single
 *		colon outside brackets) is refused: the ports are the server's, and
 *		a name with one would never match.
 */
static bool
add_allowed_hosts(AccessRules *r, const char *list, char *err, size_t errlen)
{
	const char *p = list;

	while (*p)
	{
		const char *end = strchr(p, ',');
		size_t		len = end ? (size_t) (end - p) : strlen(p);
		const char *colon;

		while (len > 0 && *p == ' ')
			p++, len--;
		while (len > 0 && p[len - 1] == ' ')
			len--;
		colon = memchr(p, ':', len);
		if (len > 0 && p[0] != '[' && colon && !memchr(colon + 1, ':', len - (colon + 1 - p)))
		{
			snprintf(err, errlen, "iq_fdw.http_allowed_hosts: \"%.*s\" has a port: "
					 "list names only, the server's ports are added", (int) len, p);
			return false;
		}
		if (len > 0 && !add_name(r, p, len))
		{
			snprintf(err, errlen, "out of memory reading iq_fdw.http_allowed_hosts");
			return false;
		}
		if (end == NULL)
			break;
		p = end + 1;
	}
	return true;
}

/* wildcard: a listen host that is every address, which no Host names */
static bool
wildcard(const char *host)
{
	return host[0] == '\0' || strcmp(host, "*") == 0 ||
		strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

/*
 * credentials_read
 *		What the seed's endpoints accept with iq_fdw.http_auth = required:
 *		the token, read here in the main thread (never by a server thread),
 *		and client certificates when TLS is on.  With neither, every client
 *		would be locked out: an error, not a server nobody can use.
 */
static bool
credentials_read(AccessRules *r, bool tls, char *err, size_t errlen)
{
	if (iq_http_token_file && iq_http_token_file[0])
		return iq_secret_file_read("iq_fdw.http_token_file", iq_http_token_file, true,
								   &r->token, err, errlen);
	if (tls)
		return true;
	snprintf(err, errlen, "iq_fdw.http_auth = required accepts no credential: "
			 "set iq_fdw.http_token_file, or iq_fdw.ssl_cert_file for client certificates");
	return false;
}

/*
 * rules_make
 *		The rules from the settings now in force; NULL with err.
 */
static AccessRules *
rules_make(const IqServerConfig *config, bool tls, char *err, size_t errlen)
{
	static const char *const loopback[] = {"localhost", "127.0.0.1", "[::1]"};
	AccessRules *r = calloc(1, sizeof(AccessRules));
	bool		ok;
	int			i;

	if (r == NULL)
	{
		snprintf(err, errlen, "out of memory setting up the HTTP server's access rules");
		return NULL;
	}
	r->auth_required = iq_http_auth == IQ_HTTP_AUTH_REQUIRED;
	r->ports[0] = config->listen_port;
	r->ports[1] = config->advertised_port;
	ok = true;
	for (i = 0; i < 3 && ok; i++)
		ok = add_name(r, loopback[i], strlen(loopback[i]));
	ok = ok && add_name(r, config->advertised_host, strlen(config->advertised_host));
	if (ok && !wildcard(config->listen_host))
		ok = add_name(r, config->listen_host, strlen(config->listen_host));
	if (!ok)
		snprintf(err, errlen, "out of memory setting up the HTTP server's access rules");
	if (ok && iq_http_allowed_hosts)
		ok = add_allowed_hosts(r, iq_http_allowed_hosts, err, errlen);
	if (ok && r->auth_required)
		ok = credentials_read(r, tls, err, errlen);
	if (!ok)
	{
		rules_free(r);
		return NULL;
	}
	return r;
}

/* iq_access_configure: see access.h */
bool
iq_access_configure(const IqServerConfig *config, bool tls, char *err, size_t errlen)
{
	AccessRules *r = rules_make(config, tls, err, errlen);

	if (r == NULL)
		return false;
	memset(&started, 0, sizeof(started));
	strcpy(started.listen_host, config->listen_host);
	started.listen_port = config->listen_port;
	strcpy(started.advertised_host, config->advertised_host);
	started.advertised_port = config->advertised_port;
	rules_install(r);
	return true;
}

/* iq_access_reload: see access.h */
bool
iq_access_reload(bool tls, bool *listen_refused, char *err, size_t errlen)
{
	AccessRules *r;

	*listen_refused = false;
	if (!iq_access_listen_allowed(&started, tls, err, errlen))
	{
		*listen_refused = true;
		return false;
	}
	r = rules_make(&started, tls, err, errlen);
	if (r == NULL)
		return false;
	rules_install(r);
	return true;
}

/* iq_access_clear: see access.h */
void
iq_access_clear(void)
{
	rules_install(NULL);
}

/* loopback_address: whether a resolved address is one of the host's own */
static bool
loopback_address(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6)
	{
		const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
			(IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

/*
 * loopback_host
 *		Whether listening on host reaches this machine only: localhost, or
 *		a host every address of which is loopback (a wildcard is not).
 */
static bool
loopback_host(const char *host)
{
	struct addrinfo hints;
	struct addrinfo *res = NULL;
	struct addrinfo *ai;
	bool		loopback;

	if (strcasecmp(host, "localhost") == 0)
		return true;
	if (wildcard(host))
		return false;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	if (getaddrinfo(host, NULL, &hints, &res) != 0)
		return false;			/* the listener reports what is wrong */
	loopback = res != NULL;
	for (ai = res; ai != NULL; ai = ai->ai_next)
		loopback = loopback && loopback_address(ai->ai_addr);
	freeaddrinfo(res);
	return loopback;
}

/* iq_access_listen_allowed: see access.h */
bool
iq_access_listen_allowed(const IqServerConfig *config, bool tls, char *err, size_t errlen)
{
	bool		auth = iq_http_auth == IQ_HTTP_AUTH_REQUIRED;

	if (iq_http_insecure || (tls && auth) || loopback_host(config->listen_host))
		return true;
	snprintf(err, errlen,
			 "iq_fdw.http_listen: refusing to serve %s:%d, not a loopback address, %s: "
			 "set iq_fdw.ssl_cert_file, iq_fdw.ssl_key_file, iq_fdw.ssl_ca_file and "
			 "iq_fdw.http_auth = required, or iq_fdw.http_insecure = on to serve it unprotected",
			 config->listen_host[0] ? config->listen_host : "*", config->listen_port,
			 !tls ? "with TLS off (iq_fdw.ssl_cert_file is empty)"
			 : "with no credential asked (iq_fdw.http_auth = none)");
	return false;
}

/*
 * host_allowed
 *		Whether a Host header names this server: one of the names, with one
 *		of the ports or with none.
 */
static bool
host_allowed(const AccessRules *r, const char *host)
{
	const char *rest;
	size_t		namelen;
	long		port;
	int			i;

	if (host[0] == '[')
	{
		rest = strchr(host, ']');
		if (rest == NULL)
			return false;
		rest++;
	}
	else
		rest = host + strcspn(host, ":");
	namelen = (size_t) (rest - host);
	if (*rest != '\0')
	{
		char	   *end;

		if (rest[0] != ':' || !isdigit((unsigned char) rest[1]) || strlen(rest) > 6)
			return false;
		port = strtol(rest + 1, &end, 10);
		if (*end != '\0' || (port != r->ports[0] && port != r->ports[1]))
			return false;
	}
	for (i = 0; i < r->nnames; i++)
		if (strlen(r->names[i]) == namelen && strncasecmp(r->names[i], host, namelen) == 0)
			return true;
	return false;
}

/*
 * client_certificate
 *		The client's certificate judged against the cluster's CA (the trust
 *		MHD was given), and as fit for a TLS client when it says what it is
 *		for.  With TLS off there is none.
 */
static Credential
client_certificate(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	gnutls_session_t session;
	unsigned int n = 0;
	unsigned int status = 0;
	gnutls_typed_vdata_st purpose;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (info == NULL || info->tls_session == NULL)
		return CRED_NONE;
	session = (gnutls_session_t) info->tls_session;
	if (gnutls_certificate_get_peers(session, &n) == NULL || n == 0)
		return CRED_NONE;
	memset(&purpose, 0, sizeof(purpose));
	purpose.type = GNUTLS_DT_KEY_PURPOSE_OID;
	purpose.data = (unsigned char *) GNUTLS_KP_TLS_WWW_CLIENT;
	if (gnutls_certificate_verify_peers(session, &purpose, 1, &status) != GNUTLS_E_SUCCESS ||
		status != 0)
		return CRED_WRONG;
	return CRED_VALID;
}

/*
 * bearer_token
 *		"Authorization: Bearer <token>" against the token.  Another scheme
 *		is no credential of ours (so a 401 tells the client which to use).
 */
static Credential
bearer_token(struct MHD_Connection *conn, const AccessRules *r)
{
	const char *h = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
												MHD_HTTP_HEADER_AUTHORIZATION);
	size_t		len;

	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return CRED_NONE;
	h += 7;
	while (*h == ' ')
		h++;
	len = strlen(h);
	while (len > 0 && h[len - 1] == ' ')
		len--;
	if (r->token.data == NULL || !iq_token_equal(h, len, &r->token))
		return CRED_WRONG;
	return CRED_VALID;
}

/* refuse: fill a refusal; false, for the caller to return */
static bool
refuse(IqAccessRefusal *refusal, unsigned int status, const char *message)
{
	refusal->status = status;
	snprintf(refusal->message, sizeof(refusal->message), "%s", message);
	return false;
}

/* judge: the three steps of the file's header, under rules r */
static bool
judge(struct MHD_Connection *conn, const char *url, const AccessRules *r,
	  IqAccessRefusal *refusal)
{
	const char *host = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
	bool		peer_path = strncmp(url, PEER_PREFIX, strlen(PEER_PREFIX)) == 0;
	bool		tls;
	Credential	cert;
	Credential	token;

	if (host != NULL && !host_allowed(r, host))
		return refuse(refusal, MHD_HTTP_MISDIRECTED_REQUEST,
					  "the Host header names no host of this server: "
					  "add the name to iq_fdw.http_allowed_hosts");
	tls = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
	if (!tls && (peer_path || !r->auth_required))
		return true;
	cert = !tls ? CRED_NONE :
		iq_http_conn_verified(conn) ? CRED_VALID : client_certificate(conn);
	if (cert == CRED_VALID)
	{
		iq_http_conn_authenticated(conn);
		return true;
	}
	if (peer_path)
		return refuse(refusal, MHD_HTTP_FORBIDDEN,
					  cert == CRED_NONE ?
					  "this endpoint is for peers: present a client certificate "
					  "signed by the cluster's CA (iq_fdw.ssl_ca_file)" :
					  "the client certificate is not signed by the cluster's CA "
					  "(iq_fdw.ssl_ca_file) or not for TLS clients");
	if (!r->auth_required)
		return true;
	token = bearer_token(conn, r);
	if (token == CRED_VALID)
		return true;
	if (token == CRED_WRONG || cert == CRED_WRONG)
		return refuse(refusal, MHD_HTTP_FORBIDDEN,
					  "the credential is not valid (iq_fdw.http_auth = required)");
	return refuse(refusal, MHD_HTTP_UNAUTHORIZED,
				  "a credential is required (iq_fdw.http_auth = required): "
				  "Authorization: Bearer <token>, or a client certificate");
}

/* iq_http_access_check: see http_internal.h */
bool
iq_http_access_check(struct MHD_Connection *conn, const char *url,
					 IqAccessRefusal *refusal)
{
	AccessRules *r = rules_acquire();
	bool		ok;

	if (r == NULL)
		return refuse(refusal, MHD_HTTP_SERVICE_UNAVAILABLE, "the server is stopping");
	ok = judge(conn, url, r, refusal);
	rules_release(r);
	return ok;
}

/* iq_http_access_refuse: see http_internal.h */
enum MHD_Result
iq_http_access_refuse(struct MHD_Connection *conn, const char *method, const char *url,
					  const IqAccessRefusal *refusal)
{
	IqBuf		body;
	struct MHD_Response *resp;

	if (strcmp(method, "POST") != 0 || strcmp(url, IQ_PEER_READ_PATH) != 0)
		return iq_http_send_error(conn, refusal->status, NULL, "%s", refusal->message);
	iq_buf_init(&body);
	iq_wire_response_error(&body, IQ_WIRE_FORBIDDEN, refusal->message);
	if (body.oom)
	{
		iq_buf_free(&body);
		return MHD_NO;
	}
	resp = MHD_create_response_from_buffer(body.len, body.data, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
	{
		iq_buf_free(&body);
		return MHD_NO;
	}
	return iq_http_queue(conn, refusal->status, resp, "application/octet-stream");
}

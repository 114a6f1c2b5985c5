/*-------------------------------------------------------------------------
 * tls_server.c
 *	  HTTPS for the worker's HTTP server: the TLS material judged before a
 *	  server is started with it, and the libmicrohttpd options that make
 *	  the server speak TLS only with that material.
 *
 * The material (common/tls.h) is read by the main thread and handed to
 * iq_http_start; MHD keeps pointers into it, so it lives as long as the
 * server (servers.c frees it only once the server is stopped).  It is
 * judged with GnuTLS, MHD's own TLS library, before MHD sees it: MHD only
 * says that it could not start, while a key that does not belong to its
 * certificate, or a CA file GnuTLS cannot use, must be an error naming the
 * setting at fault.  The server *requests* a client certificate at the
 * handshake (MHD_OPTION_HTTPS_MEM_TRUST) without requiring one: peers
 * present theirs, a seed's client may come with a token instead, and the
 * access rules judge per path what was presented.  No PostgreSQL here.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include <gnutls/gnutls.h>

#include "worker/serve/http/http_internal.h"

/* TLS 1.2 and 1.3 only, GnuTLS's usual ciphers within them */
#define IQ_HTTP_TLS_PRIORITIES	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

/* datum: a blob as GnuTLS takes it */
static gnutls_datum_t
datum(const IqTlsBlob *b)
{
	gnutls_datum_t d;

	d.data = (unsigned char *) b->data;
	d.size = (unsigned int) b->len;
	return d;
}

/*
 * iq_http_tls_check
 *		Whether a server can start with this material: the key belongs to
 *		the certificate, the CA file holds a certificate GnuTLS takes.
 *		Nothing to judge when TLS is off.  false with why in err.
 */
bool
iq_http_tls_check(const IqTls *tls, char *err, size_t errlen)
{
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	gnutls_datum_t cert;
	gnutls_datum_t key;
	gnutls_datum_t ca;
	int			rc;

	if (!tls->on)
		return true;
	if (gnutls_certificate_allocate_credentials(&cred) != GNUTLS_E_SUCCESS)
	{
		snprintf(err, errlen, "Out of memory judging the TLS material.");
		return false;
	}
	cert = datum(&tls->cert);
	key = datum(&tls->key);
	ca = datum(&tls->ca);
	rc = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM,
											  NULL, 0);
	if (rc == GNUTLS_E_CERTIFICATE_KEY_MISMATCH)
		snprintf(err, errlen, "The key of iq_fdw.ssl_key_file does not belong to the "
				 "certificate of iq_fdw.ssl_cert_file.");
	else if (rc < 0)
		snprintf(err, errlen, "The certificate of iq_fdw.ssl_cert_file or the key of "
				 "iq_fdw.ssl_key_file is not usable: %s.", gnutls_strerror(rc));
	else if ((rc = gnutls_certificate_set_x509_trust_mem(cred, &ca, GNUTLS_X509_FMT_PEM)) <= 0)
		snprintf(err, errlen, "The file of iq_fdw.ssl_ca_file holds no usable CA certificate%s%s.",
				 rc < 0 ? ": " : "", rc < 0 ? gnutls_strerror(rc) : "");
	else if ((rc = gnutls_priority_init(&prio, IQ_HTTP_TLS_PRIORITIES, NULL)) < 0)
		snprintf(err, errlen, "GnuTLS does not take the priorities \"%s\": %s.",
				 IQ_HTTP_TLS_PRIORITIES, gnutls_strerror(rc));
	else
	{
		gnutls_priority_deinit(prio);
		rc = 0;
	}
	gnutls_certificate_free_credentials(cred);
	return rc >= 0;
}

/*
 * iq_http_tls_options
 *		MHD's options for tls, in opts (room for IQ_HTTP_TLS_OPTIONS items,
 *		the last MHD_OPTION_END), for MHD_OPTION_ARRAY; returns the flags
 *		to add to the daemon's (MHD_USE_TLS, or none when tls is off).
 */
unsigned int
iq_http_tls_options(const IqTls *tls, struct MHD_OptionItem *opts)
{
	int			n = 0;

	if (tls->on)
	{
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_MEM_KEY, 0, tls->key.data};
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_MEM_CERT, 0, tls->cert.data};
		/* a client certificate is requested, verified per path (access rules) */
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_MEM_TRUST, 0, tls->ca.data};
		opts[n++] = (struct MHD_OptionItem) {MHD_OPTION_HTTPS_PRIORITIES, 0,
											 (void *) IQ_HTTP_TLS_PRIORITIES};
	}
	opts[n] = (struct MHD_OptionItem) {MHD_OPTION_END, 0, NULL};
	return tls->on ? MHD_USE_TLS : 0;
}

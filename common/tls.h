/*-------------------------------------------------------------------------
 * tls.h
 *	  The TLS material of an instance (its certificate, key and the
 *	  cluster's CA) and the bearer token: read from the files the
 *	  settings name, judged, and handed to libcurl as a client's.
 *
 * Plain C with no PostgreSQL call: a backend, the worker's main thread and
 * its server threads all use it.  Errors are a false return and a sentence
 * in the caller's buffer naming the setting, so the caller reports them
 * its own way (ereport in a backend, the worker's state in the worker).
 * Nothing here ever puts a secret in a message.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_TLS_H
#define IQ_TLS_H

#include <stdbool.h>
#include <stddef.h>

/* a file's bytes, malloc'd, with a NUL after them */
typedef struct IqTlsBlob
{
	char	   *data;
	size_t		len;
} IqTlsBlob;

/* an instance's TLS: off when no certificate is set */
typedef struct IqTls
{
	bool		on;
	IqTlsBlob	cert;			/* iq_fdw.ssl_cert_file */
	IqTlsBlob	key;			/* iq_fdw.ssl_key_file */
	IqTlsBlob	ca;				/* iq_fdw.ssl_ca_file */
} IqTls;

/* files over this are refused: no certificate chain or token is so long */
#define IQ_TLS_FILE_MAX		(1024 * 1024)

/*
 * Read the three files (paths as the settings hold them; relative ones
 * from the data directory, every process's working directory).  An empty
 * cert_path is TLS off; then key and CA must be empty too.  On false,
 * *tls is left off and err names the setting at fault.
 */
extern bool iq_tls_load(IqTls *tls, const char *cert_path, const char *key_path,
						const char *ca_path, char *err, size_t errlen);
extern void iq_tls_free(IqTls *tls);
extern bool iq_tls_same(const IqTls *a, const IqTls *b);

/*
 * A secret's file (a key, a token): regular, and readable by this user
 * only (or owned by root and at most group-readable), as PostgreSQL asks
 * of ssl_key_file.  trim drops trailing white space (a token's newline).
 */
extern bool iq_secret_file_read(const char *setting, const char *path, bool trim,
								IqTlsBlob *out, char *err, size_t errlen);
extern void iq_tls_blob_free(IqTlsBlob *b);

/* Compare a presented token with the expected one in time independent of where they differ. */
extern bool iq_token_equal(const char *given, size_t given_len, const IqTlsBlob *expected);

/*
 * Make curl (a CURL *) a client of another instance: present our
 * certificate, trust the cluster's CA alone, verify the peer's certificate
 * and that it names the host called.  Nothing when tls is off.  The
 * blobs are copied by curl: tls may be freed after.
 */
extern void iq_tls_curl_client(void *curl, const IqTls *tls);

#endif							/* IQ_TLS_H */

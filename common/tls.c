/*-------------------------------------------------------------------------
 * tls.c
 *	  Reading and judging the TLS files and the token file, and the
 *	  options that make libcurl a client of another instance.
 *
 * Files are read whole into memory, once when the worker starts its
 * servers or a backend first calls a peer, and again on reload: what is
 * used afterwards is the bytes, never the path, so a file replaced on disk
 * changes nothing until the next reload, and both sides of a reload see
 * one version of it.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>

#include "common/tls.h"

/* iq_tls_blob_free: free a file's bytes */
void
iq_tls_blob_free(IqTlsBlob *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
}

/* read_file: path's bytes into out; false with why (naming setting) in err */
static bool
read_file(const char *setting, const char *path, const struct stat *st,
		  IqTlsBlob *out, char *err, size_t errlen)
{
	int			fd;
	size_t		got = 0;

	if (st->st_size > IQ_TLS_FILE_MAX)
	{
		snprintf(err, errlen, "File \"%s\" of %s is larger than %d bytes.",
				 path, setting, IQ_TLS_FILE_MAX);
		return false;
	}
	out->data = malloc((size_t) st->st_size + 1);
	if (out->data == NULL)
	{
		snprintf(err, errlen, "Out of memory reading \"%s\" of %s.", path, setting);
		return false;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	while (fd >= 0 && got < (size_t) st->st_size)
	{
		ssize_t		r = read(fd, out->data + got, (size_t) st->st_size - got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t) r;
	}
	if (fd < 0 || got != (size_t) st->st_size)
	{
		snprintf(err, errlen, "Could not read file \"%s\" of %s: %s.", path, setting,
				 fd < 0 ? strerror(errno) : "it changed while read");
		if (fd >= 0)
			close(fd);
		iq_tls_blob_free(out);
		return false;
	}
	close(fd);
	out->data[got] = '\0';
	out->len = got;
	return true;
}

/* stat_file: a regular file at path; false with why in err */
static bool
stat_file(const char *setting, const char *path, struct stat *st, char *err, size_t errlen)
{
	if (stat(path, st) != 0)
	{
		snprintf(err, errlen, "Could not access file \"%s\" of %s: %s.", path, setting,
				 strerror(errno));
		return false;
	}
	if (!S_ISREG(st->st_mode))
	{
		snprintf(err, errlen, "\"%s\" of %s is not a regular file.", path, setting);
		return false;
	}
	return true;
}

/*
 * iq_secret_file_read
 *		A key's or a token's file, refused when others may read it: the
 *		rule PostgreSQL applies to ssl_key_file.
 */
bool
iq_secret_file_read(const char *setting, const char *path, bool trim,
					IqTlsBlob *out, char *err, size_t errlen)
{
	struct stat st;

	out->data = NULL;
	out->len = 0;
	if (!stat_file(setting, path, &st, err, errlen))
		return false;
	if (st.st_uid != geteuid() && st.st_uid != 0)
	{
		snprintf(err, errlen, "File \"%s\" of %s must be owned by the database user or root.",
				 path, setting);
		return false;
	}
	if ((st.st_uid == geteuid() && (st.st_mode & (S_IRWXG | S_IRWXO))) ||
		(st.st_uid == 0 && (st.st_mode & (S_IWGRP | S_IXGRP | S_IRWXO))))
	{
		snprintf(err, errlen, "File \"%s\" of %s has group or world access: it must be "
				 "u=rw (0600) or less if owned by the database user, or u=rw,g=r (0640) "
				 "or less if owned by root.", path, setting);
		return false;
	}
	if (!read_file(setting, path, &st, out, err, errlen))
		return false;
	while (trim && out->len > 0 &&
		   (out->data[out->len - 1] == '\n' || out->data[out->len - 1] == '\r' ||
			out->data[out->len - 1] == ' ' || out->data[out->len - 1] == '\t'))
		out->data[--out->len] = '\0';
	if (out->len == 0)
	{
		snprintf(err, errlen, "File \"%s\" of %s is empty.", path, setting);
		iq_tls_blob_free(out);
		return false;
	}
	return true;
}

/* public_file_read: a certificate's file, which anyone may read */
static bool
public_file_read(const char *setting, const char *path, IqTlsBlob *out,
				 char *err, size_t errlen)
{
	struct stat st;

	out->data = NULL;
	out->len = 0;
	if (!stat_file(setting, path, &st, err, errlen) ||
		!read_file(setting, path, &st, out, err, errlen))
		return false;
	if (strstr(out->data, "-----BEGIN CERTIFICATE-----") == NULL)
	{
		snprintf(err, errlen, "File \"%s\" of %s holds no PEM certificate.", path, setting);
		iq_tls_blob_free(out);
		return false;
	}
	return true;
}

/*
 * iq_tls_load
 *		The instance's TLS material, all three files or none.
 */
bool
iq_tls_load(IqTls *tls, const char *cert_path, const char *key_path,
			const char *ca_path, char *err, size_t errlen)
{
	memset(tls, 0, sizeof(*tls));
	if (cert_path == NULL || cert_path[0] == '\0')
	{
		if ((key_path && key_path[0]) || (ca_path && ca_path[0]))
		{
			snprintf(err, errlen, "iq_fdw.ssl_key_file or iq_fdw.ssl_ca_file is set "
					 "without iq_fdw.ssl_cert_file: set all three for TLS, or none.");
			return false;
		}
		return true;
	}
	if (key_path == NULL || key_path[0] == '\0' || ca_path == NULL || ca_path[0] == '\0')
	{
		snprintf(err, errlen, "iq_fdw.ssl_cert_file is set but iq_fdw.%s is not: TLS "
				 "between instances needs the instance's key and the cluster's CA.",
				 (key_path == NULL || key_path[0] == '\0') ? "ssl_key_file" : "ssl_ca_file");
		return false;
	}
	if (!public_file_read("iq_fdw.ssl_cert_file", cert_path, &tls->cert, err, errlen) ||
		!iq_secret_file_read("iq_fdw.ssl_key_file", key_path, false, &tls->key, err, errlen) ||
		!public_file_read("iq_fdw.ssl_ca_file", ca_path, &tls->ca, err, errlen))
	{
		iq_tls_free(tls);
		return false;
	}
	if (strstr(tls->key.data, "PRIVATE KEY-----") == NULL)
	{
		snprintf(err, errlen, "File \"%s\" of iq_fdw.ssl_key_file holds no PEM private key.",
				 key_path);
		iq_tls_free(tls);
		return false;
	}
	tls->on = true;
	return true;
}

/* iq_tls_free: free the material; tls is off after */
void
iq_tls_free(IqTls *tls)
{
	iq_tls_blob_free(&tls->cert);
	iq_tls_blob_free(&tls->key);
	iq_tls_blob_free(&tls->ca);
	tls->on = false;
}

/* blob_same: same bytes */
static bool
blob_same(const IqTlsBlob *a, const IqTlsBlob *b)
{
	return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
}

/* iq_tls_same: whether two loads read the same material */
bool
iq_tls_same(const IqTls *a, const IqTls *b)
{
	return a->on == b->on && blob_same(&a->cert, &b->cert) &&
		blob_same(&a->key, &b->key) && blob_same(&a->ca, &b->ca);
}

/*
 * iq_token_equal
 *		Every byte of the expected token is compared whatever the given one
 *		holds, so the time taken tells nothing of how much matched.
 */
bool
iq_token_equal(const char *given, size_t given_len, const IqTlsBlob *expected)
{
	unsigned char diff = given_len != expected->len;
	size_t		i;

	for (i = 0; i < expected->len; i++)
		diff |= (unsigned char) (expected->data[i] ^ (i < given_len ? given[i] : 0));
	return diff == 0 && expected->len > 0;
}

/* set_blob: curl option opt to a copy of b */
static void
set_blob(CURL *curl, CURLoption opt, const IqTlsBlob *b)
{
	struct curl_blob blob;

	blob.data = b->data;
	blob.len = b->len;
	blob.flags = CURL_BLOB_COPY;
	curl_easy_setopt(curl, opt, &blob);
}

/*
 * iq_tls_curl_client
 *		The system's CA bundle is switched off: only the cluster's CA makes
 *		a peer, never a certificate some public CA signed.
 */
void
iq_tls_curl_client(void *curl, const IqTls *tls)
{
	if (!tls->on)
		return;
	set_blob(curl, CURLOPT_SSLCERT_BLOB, &tls->cert);
	curl_easy_setopt(curl, CURLOPT_SSLCERTTYPE, "PEM");
	set_blob(curl, CURLOPT_SSLKEY_BLOB, &tls->key);
	curl_easy_setopt(curl, CURLOPT_SSLKEYTYPE, "PEM");
	curl_easy_setopt(curl, CURLOPT_CAINFO, NULL);
	curl_easy_setopt(curl, CURLOPT_CAPATH, NULL);
	set_blob(curl, CURLOPT_CAINFO_BLOB, &tls->ca);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(curl, CURLOPT_SSLVERSION, (long) CURL_SSLVERSION_TLSv1_2);
}

/*-------------------------------------------------------------------------
 * settings_access.c
 *	  The iq_fdw.* settings that decide who may read: TLS between
 *	  instances, the credential the seed's endpoints ask for, the names a
 *	  Host header may carry, and librdkafka's own security properties.
 *
 * Every one is PGC_SIGHUP, so only a superuser (postgresql.conf, ALTER
 * SYSTEM) sets it.  Secrets are never setting values, which reach
 * postgresql.auto.conf and pg_read_all_settings: a setting names a file,
 * readable only by the PostgreSQL user, and the file holds the secret
 * (common/tls_files.c reads it).  The check hooks only judge the value;
 * the files are read and judged where they are used, with an error that
 * names the setting.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "common/settings.h"

char	   *iq_ssl_cert_file;
char	   *iq_ssl_key_file;
char	   *iq_ssl_ca_file;
int			iq_http_auth;
char	   *iq_http_token_file;
bool		iq_http_insecure;
char	   *iq_http_allowed_hosts;
char	   *iq_kafka_properties_file;

static const struct config_enum_entry http_auth_options[] = {
	{"none", IQ_HTTP_AUTH_NONE, false},
	{"required", IQ_HTTP_AUTH_REQUIRED, false},
	{NULL, 0, false}
};

/*
 * check_allowed_hosts
 *		A comma-separated list of host names or addresses, without ports:
 *		characters a Host header may carry and nothing else.
 */
static bool
check_allowed_hosts(char **newval, void **extra, GucSource source)
{
	const char *p;

	for (p = *newval; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '.' || *p == '-' ||
			  *p == ',' || *p == ' ' || *p == ':' || *p == '[' || *p == ']'))
		{
			GUC_check_errdetail("Character \"%c\" is not allowed in a host name.", *p);
			GUC_check_errhint("Write a comma-separated list of names such as 'iq1.example.com,10.0.0.5'.");
			return false;
		}
	}
	return true;
}

/*
 * iq_define_access_settings
 *		Called by iq_define_settings.
 */
void
iq_define_access_settings(void)
{
	DefineCustomStringVariable("iq_fdw.ssl_cert_file",
							   "This instance's certificate (PEM): its HTTPS server's, and its own as a client of other instances.",
							   "Empty turns TLS off.  Relative paths are relative to the data directory.",
							   &iq_ssl_cert_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.ssl_key_file",
							   "The private key (PEM) of iq_fdw.ssl_cert_file.",
							   "The file must be readable by the PostgreSQL user only (0600), or owned by root and 0640.",
							   &iq_ssl_key_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.ssl_ca_file",
							   "The cluster's certificate authority (PEM): peers' certificates, as servers and as clients, must be signed by it.",
							   NULL,
							   &iq_ssl_ca_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("iq_fdw.http_auth",
							 "Whether the seed's HTTP endpoints (/stores, /instances) require a client credential.",
							 "required: a client certificate signed by iq_fdw.ssl_ca_file, or the bearer token of iq_fdw.http_token_file.",
							 &iq_http_auth, IQ_HTTP_AUTH_NONE,
							 http_auth_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.http_token_file",
							   "File holding the bearer token the seed's HTTP endpoints accept (Authorization: Bearer <token>).",
							   "The file must be readable by the PostgreSQL user only.",
							   &iq_http_token_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomBoolVariable("iq_fdw.http_insecure",
							 "Allow the HTTP endpoints on a non-loopback address without TLS and a client credential.",
							 NULL,
							 &iq_http_insecure, false,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.http_allowed_hosts",
							   "Host names, besides localhost, loopback and the advertised host, a request's Host header may name.",
							   "A comma-separated list, without ports: the listen and advertised ports are appended.",
							   &iq_http_allowed_hosts, "",
							   PGC_SIGHUP, 0, check_allowed_hosts, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.kafka_properties_file",
							   "File of librdkafka properties (key=value lines) for every Kafka client of the worker: security.protocol, sasl.*, ssl.*.",
							   "Secrets such as sasl.password belong in this file, readable by the PostgreSQL user only.",
							   &iq_kafka_properties_file, "",
							   PGC_SIGHUP, 0, NULL, NULL, NULL);
}

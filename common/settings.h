/*-------------------------------------------------------------------------
 * settings.h
 *	  The iq_fdw.* configuration parameters (GUCs).
 *
 * Worker settings are PGC_SIGHUP: the worker notices a change on reload and
 * restarts itself.  Query settings are PGC_USERSET.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_SETTINGS_H
#define IQ_SETTINGS_H

#include <stdbool.h>

/*
 * The consumer group's session timeout (worker/README.md, "Membership"):
 * how long a member that stopped heartbeating keeps its partitions.  Set
 * by the worker, named in the errors of backends waiting for an owner.
 */
#define IQ_GROUP_SESSION_TIMEOUT_MS		10000
#define IQ_GROUP_HEARTBEAT_MS			2000

typedef enum IqPartitioner
{
	IQ_PARTITIONER_MURMUR2,		/* Java client default, Kafka Streams */
	IQ_PARTITIONER_CRC32		/* librdkafka's "consistent" */
} IqPartitioner;

typedef enum IqGuarantee
{
	IQ_AT_LEAST_ONCE,
	IQ_EXACTLY_ONCE
} IqGuarantee;

typedef enum IqHttpAuth
{
	IQ_HTTP_AUTH_NONE,			/* the seed's endpoints are open */
	IQ_HTTP_AUTH_REQUIRED		/* a client certificate or the bearer token */
} IqHttpAuth;

typedef enum IqLagPolicy
{
	IQ_LAG_FAIL,				/* a partition beyond max_lag fails the query */
	IQ_LAG_WAIT					/* wait up to max_lag_wait, then fail */
} IqLagPolicy;

/* iq_fdw.read_from: where a read of a partition may be answered */
typedef enum IqReadFrom
{
	IQ_READ_FROM_OWNER,			/* only the owner, as before standbys */
	IQ_READ_FROM_OWNER_OR_STANDBY,	/* a standby when the owner cannot answer */
	IQ_READ_FROM_NEAREST		/* this instance's own standby first */
} IqReadFrom;

/* iq_fdw.rebalance_protocol */
typedef enum IqRebalanceProtocol
{
	IQ_REBALANCE_EAGER,			/* range assignor: every rebalance revokes all */
	IQ_REBALANCE_COOPERATIVE	/* cooperative-sticky: only what moves pauses */
} IqRebalanceProtocol;

/* iq_fdw.standby_replicas = all */
#define IQ_STANDBY_ALL	(-1)

/* worker */
extern char *iq_bootstrap_servers;
extern char *iq_application_id;
extern char *iq_customer_topic;
extern char *iq_order_topic;
extern char *iq_state_dir;		/* "" means $PGDATA/iq_fdw */
extern char *iq_http_listen;	/* host:port */
extern char *iq_advertised_endpoint;	/* "" means http_listen */
extern int	iq_partitioner;
extern int	iq_processing_guarantee;
extern int	iq_memory_budget_mb;
extern bool iq_rocksdb_statistics;
extern int	iq_value_cache_mb;
extern int	iq_scan_snapshot_memory_mb;
extern int	iq_http_threads;
extern int	iq_commit_interval_ms;
/* the servers' limits: applied on reload, without a worker restart */
extern int	iq_request_timeout_ms;
extern int	iq_stream_idle_timeout_ms;
extern int	iq_http_connections_per_client;
extern int	iq_request_memory_mb;

/* backends */
extern int	iq_peer_timeout_ms;
extern int	iq_stall_timeout_ms;
extern int	iq_ownership_wait_ms;
extern int	iq_max_lag;
extern int	iq_lag_policy;
extern int	iq_max_lag_wait_ms;
extern int	iq_read_from;
extern int	iq_standby_max_lag;
extern int	iq_standby_after_ms;
extern int	iq_standby_replicas;	/* IQ_STANDBY_ALL or 0.. */
extern int	iq_rebalance_protocol;	/* IqRebalanceProtocol */

/* access (settings_access.c): paths, never secrets themselves */
extern char *iq_ssl_cert_file;	/* "" means TLS off */
extern char *iq_ssl_key_file;
extern char *iq_ssl_ca_file;
extern int	iq_http_auth;		/* IqHttpAuth, for the seed's endpoints */
extern char *iq_http_token_file;
extern bool iq_http_insecure;
extern char *iq_http_allowed_hosts;
extern char *iq_kafka_properties_file;

extern void iq_define_settings(void);
extern void iq_define_access_settings(void);

/* Resolved values (defaults filled in); palloc'd in the caller's context. */
extern char *iq_state_dir_path(void);
extern char *iq_advertised(void);
extern char *iq_changelog_topic(void);

/* "host:port" parsing shared by checks and users; false on bad syntax */
extern bool iq_parse_host_port(const char *spec, char *host, int hostlen, int *port);

#endif							/* IQ_SETTINGS_H */

/*-------------------------------------------------------------------------
 * settings.c
 *	  Definition and validation of the iq_fdw.* parameters.
 *
 * Every check hook names what is wrong and how to fix it, so that a bad
 * postgresql.conf line is caught when it is loaded, not when the worker
 * first trips over it.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include "miscadmin.h"
#include "utils/guc.h"

#include "common/compat.h"
#include "common/settings.h"
#include "common/shmem.h"

char	   *iq_bootstrap_servers;
char	   *iq_application_id;
char	   *iq_customer_topic;
char	   *iq_order_topic;
char	   *iq_state_dir;
char	   *iq_http_listen;
char	   *iq_advertised_endpoint;
int			iq_partitioner;
int			iq_processing_guarantee;
int			iq_memory_budget_mb;
int			iq_value_cache_mb;
int			iq_scan_snapshot_memory_mb;
int			iq_http_threads;
int			iq_commit_interval_ms;
int			iq_request_timeout_ms;
int			iq_stream_idle_timeout_ms;
int			iq_http_connections_per_client;
int			iq_request_memory_mb;
bool		iq_rocksdb_statistics;

int			iq_peer_timeout_ms;
int			iq_ownership_wait_ms;
int			iq_max_lag;
int			iq_lag_policy;
int			iq_max_lag_wait_ms;
int			iq_read_from;
int			iq_standby_max_lag;
int			iq_standby_after_ms;
int			iq_standby_replicas;
int			iq_rebalance_protocol;
static char *standby_replicas_text;
int			iq_stall_timeout_ms;

static const struct config_enum_entry partitioner_options[] = {
	{"murmur2", IQ_PARTITIONER_MURMUR2, false},
	{"crc32", IQ_PARTITIONER_CRC32, false},
	{"consistent", IQ_PARTITIONER_CRC32, true},
	{NULL, 0, false}
};

static const struct config_enum_entry guarantee_options[] = {
	{"at_least_once", IQ_AT_LEAST_ONCE, false},
	{"exactly_once", IQ_EXACTLY_ONCE, false},
	{"exactly_once_v2", IQ_EXACTLY_ONCE, true},
	{NULL, 0, false}
};

static const struct config_enum_entry lag_policy_options[] = {
	{"fail", IQ_LAG_FAIL, false},
	{"wait", IQ_LAG_WAIT, false},
	{NULL, 0, false}
};

static const struct config_enum_entry rebalance_protocol_options[] = {
	{"eager", IQ_REBALANCE_EAGER, false},
	{"cooperative", IQ_REBALANCE_COOPERATIVE, false},
	{NULL, 0, false}
};

static const struct config_enum_entry read_from_options[] = {
	{"owner", IQ_READ_FROM_OWNER, false},
	{"owner_or_standby", IQ_READ_FROM_OWNER_OR_STANDBY, false},
	{"nearest", IQ_READ_FROM_NEAREST, false},
	{NULL, 0, false}
};

/*
 * standby_replicas_check
 *		"all" or a count of other instances, 0 to IQ_MAX_MEMBERS - 1.
 */
static bool
standby_replicas_check(char **newval, void **extra, GucSource source)
{
	char	   *end;
	long		n;
	int		   *parsed;

	if (pg_strcasecmp(*newval, "all") == 0)
		n = IQ_STANDBY_ALL;
	else
	{
		errno = 0;
		n = strtol(*newval, &end, 10);
		if (errno != 0 || end == *newval || *end != '\0' || n < 0 || n >= IQ_MAX_MEMBERS)
		{
			GUC_check_errdetail("iq_fdw.standby_replicas is \"all\" or a number of other instances from 0 to %d.",
								IQ_MAX_MEMBERS - 1);
			return false;
		}
	}
	parsed = iq_guc_malloc(sizeof(int));
	if (parsed == NULL)
		return false;
	*parsed = (int) n;
	*extra = parsed;
	return true;
}

static void
standby_replicas_assign(const char *newval, void *extra)
{
	iq_standby_replicas = *(int *) extra;
}

/*
 * host_chars_ok
 *		Whether host has only the characters of a host name, an IPv4
 *		address or an IPv6 literal: what can go into a URL and a Host
 *		header as it is (no space, CR/LF, '/', '@', '?', '#', quote, '%').
 */
static bool
host_chars_ok(const char *host, int len)
{
	for (int i = 0; i < len; i++)
		if (!isalnum((unsigned char) host[i]) && host[i] != '.' && host[i] != '-' &&
			host[i] != '_' && host[i] != ':')
			return false;
	return true;
}

/*
 * iq_parse_host_port
 *		Split "host:port" (or "[v6]:port"); false on bad syntax, or on a
 *		host with characters no host name or address has.  Group members
 *		name their endpoints themselves (ownership.c): what is let through
 *		here ends up in URLs and Host headers.
 */
bool
iq_parse_host_port(const char *spec, char *host, int hostlen, int *port)
{
	const char *colon;
	const char *h = spec;
	int			hlen;
	char	   *end;
	long		p;

	if (spec == NULL || *spec == '\0')
		return false;
	if (*spec == '[')
	{
		const char *close = strchr(spec, ']');

		if (close == NULL || close[1] != ':')
			return false;
		h = spec + 1;
		hlen = close - h;
		colon = close + 1;
	}
	else
	{
		colon = strrchr(spec, ':');
		if (colon == NULL)
			return false;
		hlen = colon - spec;
	}
	if (hlen <= 0 || hlen >= hostlen || !host_chars_ok(h, hlen))
		return false;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	if (errno != 0 || *end != '\0' || end == colon + 1 || p < 1 || p > 65535)
		return false;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (int) p;
	return true;
}

static bool
check_host_port(char **newval, void **extra, GucSource source)
{
	char		host[256];
	int			port;

	if (iq_parse_host_port(*newval, host, sizeof(host), &port))
		return true;
	GUC_check_errdetail("\"%s\" is not of the form host:port.", *newval);
	GUC_check_errhint("Write for example '127.0.0.1:5400'.");
	return false;
}

static bool
check_advertised(char **newval, void **extra, GucSource source)
{
	if (**newval == '\0')
		return true;			/* use http_listen */
	return check_host_port(newval, extra, source);
}

/*
 * check_bootstrap_servers
 *		A comma-separated list of host:port, as librdkafka takes it.
 */
static bool
check_bootstrap_servers(char **newval, void **extra, GucSource source)
{
	char	   *copy;
	char	   *tok;
	char	   *save = NULL;
	bool		ok = true;
	int			n = 0;

	if (**newval == ',' || strstr(*newval, ",,") != NULL ||
		(**newval && (*newval)[strlen(*newval) - 1] == ','))
	{
		GUC_check_errdetail("The list of brokers has an empty entry.");
		GUC_check_errhint("Write a comma-separated list such as '127.0.0.1:9092,127.0.0.1:9093'.");
		return false;
	}
	copy = strdup(*newval);
	if (copy == NULL)
		return false;
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
	{
		char		host[256];
		int			port;

		while (*tok == ' ')
			tok++;
		/* librdkafka takes (and ignores) a listener's protocol before it */
		if (strstr(tok, "://") != NULL)
			tok = strstr(tok, "://") + 3;
		if (!iq_parse_host_port(tok, host, sizeof(host), &port))
		{
			GUC_check_errdetail("Broker \"%s\" is not of the form host:port.", tok);
			ok = false;
			break;
		}
		n++;
	}
	free(copy);
	if (ok && n == 0)
	{
		GUC_check_errdetail("The list of brokers is empty.");
		ok = false;
	}
	if (!ok)
		GUC_check_errhint("Write a comma-separated list such as '127.0.0.1:9092,127.0.0.1:9093'.");
	return ok;
}

/*
 * check_kafka_name
 *		Topic names and the application id: Kafka's legal characters only.
 */
static bool
check_kafka_name(char **newval, void **extra, GucSource source)
{
	const char *p;
	size_t		len = strlen(*newval);

	if (len == 0 || len > 200)
	{
		GUC_check_errdetail("The name must have 1 to 200 characters.");
		return false;
	}
	if (strcmp(*newval, ".") == 0 || strcmp(*newval, "..") == 0)
	{
		GUC_check_errdetail("\"%s\" is not a legal Kafka name.", *newval);
		return false;
	}
	for (p = *newval; *p; p++)
	{
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
		{
			GUC_check_errdetail("Character \"%c\" is not allowed in a Kafka name.", *p);
			GUC_check_errhint("Use letters, digits, '.', '_' and '-'.");
			return false;
		}
	}
	return true;
}

/*
 * check_state_dir
 *		An absolute path whose nearest existing ancestor we can write to.
 *
 * Catching an unwritable directory here gives the error at reload or
 * startup, naming the setting, instead of a worker stuck in a retry loop.
 */
static bool
check_state_dir(char **newval, void **extra, GucSource source)
{
	char		path[MAXPGPATH];
	char	   *slash;

	if (**newval == '\0')
		return true;			/* under the data directory */
	if (!is_absolute_path(*newval))
	{
		GUC_check_errdetail("\"%s\" is not an absolute path.", *newval);
		GUC_check_errhint("Leave it empty to keep state under the data directory.");
		return false;
	}
	strlcpy(path, *newval, sizeof(path));
	for (;;)
	{
		struct stat st;

		if (stat(path, &st) == 0)
		{
			if (!S_ISDIR(st.st_mode))
			{
				GUC_check_errdetail("\"%s\" exists and is not a directory.", path);
				return false;
			}
			if (access(path, W_OK | X_OK) != 0)
			{
				GUC_check_errdetail("Directory \"%s\" is not writable by the server.", path);
				GUC_check_errhint("Give the PostgreSQL user write access, or choose another directory.");
				return false;
			}
			return true;
		}
		slash = strrchr(path, '/');
		if (slash == NULL || slash == path)
			return true;
		*slash = '\0';
	}
}

/*
 * iq_define_settings
 *		Called from _PG_init; the parameters exist in every process.
 */
void
iq_define_settings(void)
{
	DefineCustomStringVariable("iq_fdw.bootstrap_servers",
							   "Kafka brokers the worker connects to.",
							   "A comma-separated list of host:port.",
							   &iq_bootstrap_servers, "127.0.0.1:9092",
							   PGC_SIGHUP, 0,
							   check_bootstrap_servers, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.application_id",
							   "Application id: the consumer group and changelog prefix.",
							   NULL,
							   &iq_application_id, "food-server",
							   PGC_SIGHUP, 0,
							   check_kafka_name, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.customer_topic",
							   "Compacted topic of customers (the table).",
							   NULL,
							   &iq_customer_topic, "customer",
							   PGC_SIGHUP, 0,
							   check_kafka_name, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.order_topic",
							   "Topic of orders (the stream).",
							   NULL,
							   &iq_order_topic, "order",
							   PGC_SIGHUP, 0,
							   check_kafka_name, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.state_dir",
							   "Directory of the RocksDB state stores.",
							   "Empty means iq_fdw under the data directory.",
							   &iq_state_dir, "",
							   PGC_SIGHUP, 0,
							   check_state_dir, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.http_listen",
							   "Address the HTTP endpoints listen on.",
							   NULL,
							   &iq_http_listen, "127.0.0.1:5400",
							   PGC_SIGHUP, 0,
							   check_host_port, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.advertised_endpoint",
							   "host:port under which other instances reach this one.",
							   "Empty means iq_fdw.http_listen.",
							   &iq_advertised_endpoint, "",
							   PGC_SIGHUP, 0,
							   check_advertised, NULL, NULL);
	DefineCustomEnumVariable("iq_fdw.partitioner",
							 "How keys map to partitions.",
							 "murmur2 is the Java client's default (Kafka Streams, kafka-console-producer).",
							 &iq_partitioner, IQ_PARTITIONER_MURMUR2,
							 partitioner_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("iq_fdw.processing_guarantee",
							 "at_least_once, or exactly_once with Kafka transactions.",
							 NULL,
							 &iq_processing_guarantee, IQ_AT_LEAST_ONCE,
							 guarantee_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.memory_budget",
							"Memory of the stream worker: RocksDB, key cache, Kafka queues and batch.",
							NULL,
							&iq_memory_budget_mb, 256, 16, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.scan_snapshot_memory",
							"Memory of the worker's in-memory copies of partitions made by full scans; 0 turns them off.",
							"A full scan of a partition keeps its rows in memory while nothing is written to it; "
							"the next scans read them instead of RocksDB (worker/store/scan_snapshot.c). "
							"A copy that would not fit is not kept.",
							&iq_scan_snapshot_memory_mb, 64, 0, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomBoolVariable("iq_fdw.rocksdb_statistics",
							 "Keep RocksDB's statistics (block cache hits, write stalls) for GET /metrics.",
							 "They cost the ingest a few percent (README, \"Metrics\"); off, /metrics shows RocksDB's sizes only.",
							 &iq_rocksdb_statistics, false,
							 PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.value_cache",
							"Shared memory caching point-lookup answers for this instance's backends; 0 turns it off.",
							NULL,
							&iq_value_cache_mb, 16, 0, 64 * 1024,
							PGC_POSTMASTER, GUC_UNIT_MB, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.http_threads",
							"Threads serving the HTTP endpoints; 0 is one per CPU, at least 2.",
							NULL,
							&iq_http_threads, 0, 0, 256,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("iq_fdw.standby_replicas",
							   "How many other instances keep a standby replica of each partition: a number, or all.",
							   "A standby keeps the partition's state from its changelog and customer topic, "
							   "continuously, in its own RocksDB: reads can fall back to it "
							   "(iq_fdw.read_from) and a failover onto it restores only what it had not read.",
							   &standby_replicas_text, "0",
							   PGC_SIGHUP, 0, standby_replicas_check, standby_replicas_assign, NULL);
	DefineCustomEnumVariable("iq_fdw.rebalance_protocol",
							 "How the consumer group moves partitions when an instance joins or leaves.",
							 "eager: the range assignor; every rebalance revokes every partition of "
							 "every instance.  cooperative: cooperative-sticky; only the partitions "
							 "that move pause, the customer topic is read beside the group.  Every "
							 "instance of an application must use the same: change it with all of "
							 "them stopped.",
							 &iq_rebalance_protocol, IQ_REBALANCE_EAGER,
							 rebalance_protocol_options,
							 PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.commit_interval",
							"Longest time a counted record waits, under a backlog, before its state is written and its offset committed.",
							"-1: 30 s under at_least_once (Kafka Streams' commit.interval.ms), 1 s under exactly_once (worker/config.c says why not Kafka Streams' 100 ms).",
							&iq_commit_interval_ms, -1, -1, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.request_timeout",
							"Longest time the worker's servers take to receive one request whole.",
							"HTTP: the head and body, from accept (on a kept-alive connection, from its request line); "
							"a stream: a request from its first byte to its last.  The connection is closed past it.",
							&iq_request_timeout_ms, 10000, 100, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.stream_idle_timeout",
							"How long a stream connection (local socket, upgraded HTTP) may wait idle for its next request.",
							"The worker closes it after that; a backend reconnects on its next query.",
							&iq_stream_idle_timeout_ms, 60000, 100, 24 * 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.http_connections_per_client",
							"HTTP connections, upgraded streams included, that one unauthenticated client address may hold.",
							"IPv6 addresses count per /64.  Beyond it new connections are closed at once.",
							&iq_http_connections_per_client, 256, 1, 100000,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.request_memory",
							"Memory that request bodies being received may take, all connections together.",
							"POST /iq/v1/read bodies and stream requests over 64 kB; one that does not fit is refused at once.",
							&iq_request_memory_mb, 64, 16, 64 * 1024,
							PGC_SIGHUP, GUC_UNIT_MB, NULL, NULL, NULL);

	DefineCustomIntVariable("iq_fdw.peer_timeout",
							"Time limit of a call to another instance: to the first byte of its answer, then of each wait without progress.",
							"Progress is a complete frame of the answer (header, row, end) or 64 kB received; "
							"only the time the query waits for the instance counts.",
							&iq_peer_timeout_ms, 5000, 1, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.stall_timeout",
							"How long the worker may make no progress while it has work before iq_worker() calls it stalled.",
							NULL,
							&iq_stall_timeout_ms, 30000, 1000, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.ownership_wait",
							"How long a query waits for a partition without owner (rebalance, restore).",
							NULL,
							&iq_ownership_wait_ms, 10000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.max_lag",
							"Largest lag, in records, of a partition a query may read; -1 for no bound.",
							NULL,
							&iq_max_lag, -1, -1, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("iq_fdw.lag_policy",
							 "What a read from a partition beyond max_lag does: fail or wait.",
							 NULL,
							 &iq_lag_policy, IQ_LAG_FAIL,
							 lag_policy_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomEnumVariable("iq_fdw.read_from",
							 "Which copy of a partition a read may be answered from.",
							 "owner: only the instance that owns it.  owner_or_standby: a standby "
							 "replica when the owner cannot answer (down, cut off, rebalancing, "
							 "restoring).  nearest: this instance's own standby first, with no "
							 "network hop.  A standby is read only within iq_fdw.max_lag, or "
							 "iq_fdw.standby_max_lag when max_lag is -1.",
							 &iq_read_from, IQ_READ_FROM_OWNER,
							 read_from_options,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.standby_after",
							"With iq_fdw.read_from other than owner, how long a read waits for an owner's first byte (connecting included) before it asks the partition's standbys.",
							"An owner that stalls (a host cut off, an engine frozen) is then left after this rather than iq_fdw.peer_timeout; "
							"one that refuses or answers that it cannot is left at once.",
							&iq_standby_after_ms, 1000, 1, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.standby_max_lag",
							"Largest lag, in records, of a standby replica a read may use when iq_fdw.max_lag is -1.",
							"A standby is never read without a bound on its lag.",
							&iq_standby_max_lag, 10000, 0, INT_MAX,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("iq_fdw.max_lag_wait",
							"With lag_policy = wait, how long to wait for a partition to catch up.",
							NULL,
							&iq_max_lag_wait_ms, 5000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS, NULL, NULL, NULL);

	iq_define_access_settings();
	MarkGUCPrefixReserved("iq_fdw");
}

char *
iq_state_dir_path(void)
{
	if (iq_state_dir[0] != '\0')
		return pstrdup(iq_state_dir);
	return psprintf("%s/iq_fdw", DataDir);
}

char *
iq_advertised(void)
{
	return pstrdup(iq_advertised_endpoint[0] ? iq_advertised_endpoint : iq_http_listen);
}

char *
iq_changelog_topic(void)
{
	return psprintf("%s-order-count-changelog", iq_application_id);
}

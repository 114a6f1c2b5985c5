/*-------------------------------------------------------------------------
 * kafka_conf.c
 *	  What every librdkafka handle of the worker shares: its names, its
 *	  configuration (and what the two consumers share on top), its
 *	  creation, the error callback, log queues drained by the main thread,
 *	  and metadata requests cut in slices.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/kafka_conf.h"
#include "worker/kafka_props.h"
#include "worker/state.h"


/* the least time between two metadata requests of one wait */
#define METADATA_RETRY_MS	100

/*
 * fetch.queue.backoff.ms appeared in librdkafka 2.2.0 (rd_kafka_version()
 * is 0xMMmmrrpp: pp is 0xff for a release, lower for its pre-releases).
 */
#define FETCH_QUEUE_BACKOFF_SINCE	0x02020000

/*
 * fetch.queue.backoff.ms: how long a partition whose fetch found the
 * consumer queue full waits before it looks again.  librdkafka's default,
 * 1000 ms, is the second-long stall fetch_wake.c was written against: the
 * queue, bounded by iq_fdw.memory_budget, holds a fraction of a second of
 * work.  fetch_wake.c wakes the fetcher as soon as a poll has taken records
 * off a full queue, so the next fetch travels while they are joined and
 * counted; 10 ms keeps that (processing a poll's records takes longer),
 * and a queue looked at a hundred times a second while full costs nothing
 * measurable.  Not 0: librdkafka then schedules no backoff at all, and its
 * broker thread would look at a full queue again without ever waiting.
 */
#define FETCH_QUEUE_BACKOFF_MS	10

/* the longest group.instance.id Kafka accepts */
#define KAFKA_ID_MAX	249

/* the broker error recorded (iq_w->broker_reason) refused our credentials */
static bool broker_refused = false;

/*
 * iq_metadata
 *		rd_kafka_metadata in slices (iq_wait_slice), up to timeout_ms in
 *		all.  A down broker answers __TRANSPORT once a slice is over, as a
 *		slow one answers __TIMED_OUT: both are tried again.  Why it does
 *		not answer: iq_broker_failure.
 */
rd_kafka_resp_err_t
iq_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt,
			const struct rd_kafka_metadata **md, int timeout_ms)
{
	int64		deadline = iq_now_ms() + timeout_ms;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
	int			slice;

	*md = NULL;
	while ((slice = iq_wait_slice(deadline, IQ_WAIT_START)) > 0)
	{
		int64		began = iq_now_ms();

		err = rd_kafka_metadata(rk, 0, rkt, md, slice);
		if (err != RD_KAFKA_RESP_ERR__TIMED_OUT && err != RD_KAFKA_RESP_ERR__TRANSPORT)
			break;
		/* a producer's errors (a refused password) come with its callbacks */
		if (rd_kafka_type(rk) == RD_KAFKA_PRODUCER)
			rd_kafka_poll(rk, 0);
		iq_drain_logs();
		/* a connection that fails at once is not retried in a busy loop */
		if (iq_now_ms() - began < METADATA_RETRY_MS)
			pg_usleep(METADATA_RETRY_MS * 1000L);
	}
	return err;
}

/*
 * iq_error_cb
 *		librdkafka's error callback, served by our polls (main thread).
 */
void
iq_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
	if (err == RD_KAFKA_RESP_ERR__FATAL)
	{
		char		buf[256];

		rd_kafka_fatal_error(rk, buf, sizeof(buf));
		iq_fail("Kafka client failed: %s", buf);
	}
	else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN ||
			 err == RD_KAFKA_RESP_ERR__TRANSPORT ||
			 err == RD_KAFKA_RESP_ERR__RESOLVE ||
			 err == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
			 err == RD_KAFKA_RESP_ERR__SSL)
	{
		/* a refused credential is what matters, not the "all brokers down" after it */
		if (iq_w->broker_error && broker_refused &&
			err != RD_KAFKA_RESP_ERR__AUTHENTICATION && err != RD_KAFKA_RESP_ERR__SSL)
			return;
		iq_w->broker_error = true;
		broker_refused = err == RD_KAFKA_RESP_ERR__AUTHENTICATION ||
			err == RD_KAFKA_RESP_ERR__SSL;
		strlcpy(iq_w->broker_reason, reason ? reason : rd_kafka_err2str(err),
				sizeof(iq_w->broker_reason));
	}
}

/*
 * iq_broker_failure
 *		Why the broker did not answer, into buf: the last error the
 *		callback recorded, or else err.  A refused credential or TLS
 *		handshake names the properties file rather than the brokers.
 */
void
iq_broker_failure(char *buf, size_t len, rd_kafka_resp_err_t err)
{
	const char *why = iq_w->broker_error ? iq_w->broker_reason : rd_kafka_err2str(err);

	if (iq_w->broker_error && broker_refused)
		snprintf(buf, len, "cannot authenticate to Kafka at %s (iq_fdw.kafka_properties_file): %s",
				 iq_w->cfg.brokers, why);
	else
		snprintf(buf, len, "cannot reach Kafka at %s (iq_fdw.bootstrap_servers): %s",
				 iq_w->cfg.brokers, why);
}

/*
 * iq_conf_set
 *		Set one librdkafka property; false with *err (the conf stays the
 *		caller's to destroy).
 */
bool
iq_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value, char **err)
{
	char		errstr[512];

	if (rd_kafka_conf_set(conf, name, value, errstr, sizeof(errstr)) == RD_KAFKA_CONF_OK)
		return true;
	*err = strdup(errstr);
	return false;
}

/*
 * iq_conf_new
 *		What every handle shares: the operator's properties (security,
 *		iq_fdw.kafka_properties_file), then ours: brokers, client id, logs
 *		to a queue.
 */
rd_kafka_conf_t *
iq_conf_new(char **err)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	if (!iq_kafka_props_apply(&iq_w->cfg.kafka_props, conf, err) ||
		!iq_conf_set(conf, "bootstrap.servers", iq_w->cfg.brokers, err) ||
		!iq_conf_set(conf, "client.id", iq_w->client_id, err) ||
		!iq_conf_set(conf, "log.queue", "true", err) ||
		!iq_conf_set(conf, "log.connection.close", "false", err) ||
		!iq_conf_set(conf, "socket.timeout.ms", "30000", err))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	rd_kafka_conf_set_error_cb(conf, (void (*) (rd_kafka_t *, int, const char *, void *)) iq_error_cb);
	return conf;
}

/*
 * iq_conf_set_int
 *		iq_conf_set of a number.
 */
bool
iq_conf_set_int(rd_kafka_conf_t *conf, const char *name, int value, char **err)
{
	char		buf[32];

	snprintf(buf, sizeof(buf), "%d", value);
	return iq_conf_set(conf, name, buf, err);
}

/*
 * iq_consumer_conf_new
 *		What the group consumer and the restore consumer share on top of
 *		iq_conf_new: offsets that only we store and commit, committed
 *		records only, and a prefetch queue (queued.max.messages.kbytes,
 *		queued.min.messages) and fetches (fetch.max.bytes, and per
 *		partition) within the handle's share of iq_fdw.memory_budget.
 *		Each adds what is its own.
 */
rd_kafka_conf_t *
iq_consumer_conf_new(const char *group_id, int fetch_wait_ms, int queue_kbytes,
					 int queue_messages, int fetch_bytes, char **err)
{
	rd_kafka_conf_t *conf = iq_conf_new(err);

	if (conf == NULL)
		return NULL;
	if (!iq_conf_set(conf, "group.id", group_id, err) ||
		!iq_conf_set(conf, "enable.auto.commit", "false", err) ||
		!iq_conf_set(conf, "enable.auto.offset.store", "false", err) ||
		!iq_conf_set(conf, "auto.offset.reset", "earliest", err) ||
		!iq_conf_set(conf, "isolation.level", "read_committed", err) ||
		!iq_conf_set_int(conf, "fetch.wait.max.ms", fetch_wait_ms, err) ||
		!iq_conf_set_int(conf, "queued.max.messages.kbytes", queue_kbytes, err) ||
		!iq_conf_set_int(conf, "queued.min.messages", queue_messages, err) ||
		!iq_conf_set_int(conf, "fetch.max.bytes", fetch_bytes, err) ||
		!iq_conf_set_int(conf, "max.partition.fetch.bytes", fetch_bytes, err) ||
		/* or librdkafka raises fetch.max.bytes to it */
		!iq_conf_set_int(conf, "message.max.bytes", fetch_bytes, err) ||
		/* a failed fetch is retried soon (a full queue: below) */
		!iq_conf_set(conf, "fetch.error.backoff.ms", "20", err) ||
		(iq_fetch_queue_backoff() &&
		 !iq_conf_set_int(conf, "fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS, err)))
	{
		rd_kafka_conf_destroy(conf);
		return NULL;
	}
	return conf;
}

/*
 * iq_fetch_queue_backoff
 *		Whether the librdkafka the worker runs with has
 *		fetch.queue.backoff.ms, which iq_consumer_conf_new then sets; if
 *		not, the consumers wake the fetcher themselves (fetch_wake.c).
 *
 * Asked of the library loaded, not of the headers built against: Debian
 * upgrades librdkafka under an installed extension, and 2.x keeps its ABI.
 */
bool
iq_fetch_queue_backoff(void)
{
	return rd_kafka_version() >= FETCH_QUEUE_BACKOFF_SINCE;
}

/*
 * iq_kafka_log_versions
 *		Once, when the worker starts: the librdkafka it runs with and how a
 *		full consumer queue is refilled, so a slow ingest can be traced to
 *		the library; and which properties the operator's file adds.
 */
void
iq_kafka_log_versions(void)
{
	int			built = RD_KAFKA_VERSION;
	char		built_str[32];

	snprintf(built_str, sizeof(built_str), "%d.%d.%d",
			 (built >> 24) & 0xff, (built >> 16) & 0xff, (built >> 8) & 0xff);
	if (iq_fetch_queue_backoff())
		ereport(LOG,
				(errmsg("iq_fdw worker: librdkafka %s: a consumer whose queue is full fetches again after fetch.queue.backoff.ms = %d ms",
						rd_kafka_version_str(), FETCH_QUEUE_BACKOFF_MS),
				 errdetail("Built with librdkafka %s.", built_str)));
	else
		ereport(LOG,
				(errmsg("iq_fdw worker: librdkafka %s has no fetch.queue.backoff.ms (2.2.0 and later): the worker wakes the fetcher when a full consumer queue has room",
						rd_kafka_version_str()),
				 errdetail("Built with librdkafka %s.", built_str)));
	iq_kafka_props_log(&iq_w->cfg.kafka_props);
}

/*
 * iq_kafka_new
 *		Create a handle of type from conf, its logs going to the queue of
 *		h; NULL with *err.  conf is taken either way: the handle owns it
 *		once made, and it is destroyed here when it could not be.
 */
rd_kafka_t *
iq_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, IqHandle h, char **err)
{
	char		errstr[512];
	rd_kafka_t *rk = rd_kafka_new(type, conf, errstr, sizeof(errstr));

	if (rk == NULL)
	{
		rd_kafka_conf_destroy(conf);
		*err = strdup(errstr);
		return NULL;
	}
	iq_log_attach(rk, h);
	return rk;
}

/*
 * kafka_id_chars
 *		Replace in id, from its character start on, what Kafka does not
 *		allow in a group.instance.id (letters, digits, '.', '_', '-'): the
 *		advertised endpoint's ':' and '/', say.
 */
static void
kafka_id_chars(char *id, size_t start)
{
	for (char *c = id + start; *c; c++)
		if (!isalnum((unsigned char) *c) && *c != '.' && *c != '_' && *c != '-')
			*c = '_';
}

/*
 * iq_kafka_names
 *		This instance's client.id, transactional.id and group.instance.id,
 *		from the settings it runs with: the advertised endpoint tells the
 *		group's members apart, and stays the same across restarts, which
 *		is what a transactional.id (fencing a zombie) and a static member
 *		(getting its partitions back without a rebalance) need.  In both,
 *		the endpoint keeps only the characters Kafka allows in a
 *		group.instance.id; in that one, the application id too, and the
 *		whole is at most 249 long.
 */
void
iq_kafka_names(void)
{
	snprintf(iq_w->client_id, sizeof(iq_w->client_id), "iq_fdw|%s", iq_w->cfg.advertised);
	snprintf(iq_w->transactional_id, sizeof(iq_w->transactional_id), "%s-%s",
			 iq_w->cfg.app_id, iq_w->cfg.advertised);
	kafka_id_chars(iq_w->transactional_id, strlen(iq_w->cfg.app_id) + 1);
	/* too long: its end, where the endpoint tells the instances apart */
	StaticAssertStmt(sizeof(iq_w->group_instance_id) > KAFKA_ID_MAX, "group.instance.id fits");
	strlcpy(iq_w->group_instance_id,
			iq_w->transactional_id + Max((int) strlen(iq_w->transactional_id) - KAFKA_ID_MAX, 0),
			KAFKA_ID_MAX + 1);
	kafka_id_chars(iq_w->group_instance_id, 0);
}

/*
 * iq_log_attach
 *		A handle's logs go to a queue of ours, drained by iq_drain_logs.
 */
void
iq_log_attach(rd_kafka_t *rk, IqHandle h)
{
	iq_w->log_q[h] = rd_kafka_queue_new(rk);
	rd_kafka_set_log_queue(rk, iq_w->log_q[h]);
}

/*
 * drain_one
 *		Every log event queued on q into the server log.
 */
static void
drain_one(rd_kafka_queue_t *q)
{
	rd_kafka_event_t *ev;

	while ((ev = rd_kafka_queue_poll(q, 0)) != NULL)
	{
		const char *fac = NULL;
		const char *str = NULL;
		int			level = 7;

		/* librdkafka's own text: passed on as it is, not translated */
		if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_LOG &&
			rd_kafka_event_log(ev, &fac, &str, &level) == 0)
			ereport(level <= 4 ? LOG : (level <= 6 ? DEBUG1 : DEBUG2),
					(errmsg_internal("iq_fdw worker: librdkafka %s: %s",
									 fac ? fac : "", str ? str : "")));
		rd_kafka_event_destroy(ev);
	}
}

/*
 * iq_drain_logs
 *		librdkafka's logs, emitted from our thread only.
 */
void
iq_drain_logs(void)
{
	for (int h = 0; h < IQ_H_COUNT; h++)
		if (iq_w->log_q[h])
			drain_one(iq_w->log_q[h]);
}

/*
 * iq_log_detach
 *		The last of a handle's logs, then its queue goes.
 */
void
iq_log_detach(IqHandle h)
{
	if (iq_w->log_q[h] == NULL)
		return;
	drain_one(iq_w->log_q[h]);
	rd_kafka_queue_destroy(iq_w->log_q[h]);
	iq_w->log_q[h] = NULL;
}

/*-------------------------------------------------------------------------
 * kafka_props.c
 *	  The operator's librdkafka properties: iq_fdw.kafka_properties_file
 *	  read, judged line by line, applied to every client, its keys logged.
 *
 * What a broker asks of its clients (security.protocol, sasl.*, ssl.*)
 * varies from one site to the next and librdkafka knows it all, so the
 * file passes its lines to librdkafka as they are, like a Kafka client's
 * client.properties, except the properties iq_fdw sets itself: what names
 * the group and its members, what makes offsets and transactions correct,
 * what the memory budget sizes.  Those are refused, by their name or any
 * alias librdkafka has for them, rather than silently overridden.
 *
 * The whole file is judged when the worker starts, so that a mistake
 * shows as the worker's error naming the file and the line, before any
 * client is made.  Its contents are kept, compared at every reload (a
 * change restarts the worker, as a changed setting does: config.c).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"

#include "common/settings.h"
#include "common/tls.h"
#include "worker/kafka_props.h"

#define SETTING "iq_fdw.kafka_properties_file"

/* the properties iq_fdw sets on its clients, and the setting behind each */
static const struct
{
	const char *name;
	const char *from;			/* the setting that decides it, or NULL */
}			owned[] =
{
	/* names: of the group, its members, their transactions */
	{"bootstrap.servers", "iq_fdw.bootstrap_servers"},
	{"client.id", "iq_fdw.advertised_endpoint"},
	{"group.id", "iq_fdw.application_id"},
	{"group.instance.id", NULL},
	{"transactional.id", "iq_fdw.processing_guarantee"},
	/* the group protocol the rebalance and ownership code are written for */
	{"group.protocol", NULL},
	{"group.remote.assignor", NULL},
	{"partition.assignment.strategy", NULL},
	{"session.timeout.ms", NULL},
	{"heartbeat.interval.ms", NULL},
	{"max.poll.interval.ms", NULL},
	{"topic.metadata.refresh.interval.ms", NULL},
	/* offsets and transactions: what makes the counts correct */
	{"enable.auto.commit", NULL},
	{"enable.auto.offset.store", NULL},
	{"auto.offset.reset", NULL},
	{"isolation.level", NULL},
	{"enable.partition.eof", NULL},
	{"enable.idempotence", NULL},
	{"acks", NULL},
	{"transaction.timeout.ms", NULL},
	{"message.timeout.ms", NULL},
	/* queues and batches: shares of the memory budget */
	{"queued.max.messages.kbytes", "iq_fdw.memory_budget"},
	{"queued.min.messages", "iq_fdw.memory_budget"},
	{"fetch.max.bytes", "iq_fdw.memory_budget"},
	{"max.partition.fetch.bytes", "iq_fdw.memory_budget"},
	{"message.max.bytes", "iq_fdw.memory_budget"},
	{"queue.buffering.max.messages", "iq_fdw.memory_budget"},
	{"queue.buffering.max.kbytes", "iq_fdw.memory_budget"},
	{"batch.num.messages", NULL},
	{"linger.ms", NULL},
	{"compression.type", NULL},
	{"fetch.wait.max.ms", NULL},
	{"fetch.error.backoff.ms", NULL},
	{"fetch.queue.backoff.ms", NULL},
	/* how logs and errors reach the main thread */
	{"log.queue", NULL},
	{"log.connection.close", NULL},
	{"socket.timeout.ms", NULL},
	/* code loaded into the server process, beyond what the extension is */
	{"plugin.library.paths", NULL},
};

/*
 * owned_index
 *		The index of name in owned, -1 if iq_fdw leaves it to the operator.
 */
static int
owned_index(const char *name)
{
	for (int i = 0; i < (int) lengthof(owned); i++)
		if (strcmp(owned[i].name, name) == 0)
			return i;
	return -1;
}

/*
 * mask_value
 *		librdkafka's text with the value, wherever it quotes it, hidden:
 *		a mistyped line may hold a password.  Only whole occurrences (not
 *		inside a word of librdkafka's) are hidden, so a short value does
 *		not garble the sentence.
 */
static char *
mask_value(const char *text, const char *value)
{
	StringInfoData s;
	size_t		vlen = strlen(value);
	const char *p = text;
	const char *from = text;
	const char *hit;

	initStringInfo(&s);
	while (vlen > 0 && (hit = strstr(from, value)) != NULL)
	{
		if ((hit > text && isalnum((unsigned char) hit[-1])) ||
			isalnum((unsigned char) hit[vlen]))
		{
			from = hit + 1;
			continue;
		}
		appendBinaryStringInfo(&s, p, hit - p);
		appendStringInfoString(&s, "(value hidden)");
		p = from = hit + vlen;
	}
	appendStringInfoString(&s, p);
	return s.data;
}

/*
 * conf_with_topic_conf
 *		An empty conf with a default topic conf, so that rd_kafka_conf_get
 *		answers topic-level properties (acks, ...) on every conf alike.
 */
static rd_kafka_conf_t *
conf_with_topic_conf(void)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();

	rd_kafka_conf_set_default_topic_conf(conf, rd_kafka_topic_conf_new());
	return conf;
}

/*
 * aliased_owned
 *		The owned property that setting a line changed on conf, compared
 *		with base (librdkafka's defaults), or -1: librdkafka has aliases
 *		(metadata.broker.list, request.required.acks, ...).
 */
static int
aliased_owned(const rd_kafka_conf_t *base, const rd_kafka_conf_t *conf)
{
	for (int i = 0; i < (int) lengthof(owned); i++)
	{
		char		a[512];
		char		b[512];
		size_t		alen = sizeof(a);
		size_t		blen = sizeof(b);
		rd_kafka_conf_res_t ra = rd_kafka_conf_get(base, owned[i].name, a, &alen);
		rd_kafka_conf_res_t rb = rd_kafka_conf_get(conf, owned[i].name, b, &blen);

		/* a value too long for the buffer compares by its length */
		if (ra != rb || alen != blen || (ra == RD_KAFKA_CONF_OK && strcmp(a, b) != 0))
			return i;
	}
	return -1;
}

/*
 * judge_line
 *		Whether librdkafka takes the line and it is the operator's to set;
 *		NULL, or why not, with the file and the line, never the value.
 *		conf gathers the lines judged so far.
 */
static char *
judge_line(const IqKafkaProps *kp, const IqKafkaProp *p,
		   const rd_kafka_conf_t *base, rd_kafka_conf_t *conf)
{
	char		errstr[512];
	int			i = owned_index(p->name);

	if (i < 0 && rd_kafka_conf_set(conf, p->name, p->value, errstr,
								   sizeof(errstr)) != RD_KAFKA_CONF_OK)
		return psprintf(SETTING " \"%s\" line %d: %s", kp->path, p->line,
						mask_value(errstr, p->value));
	if (i < 0 && (i = aliased_owned(base, conf)) < 0)
		return NULL;
	if (strcmp(owned[i].name, p->name) != 0)
		return psprintf(SETTING " \"%s\" line %d: property \"%s\" sets \"%s\", which iq_fdw sets itself%s%s",
						kp->path, p->line, p->name, owned[i].name,
						owned[i].from ? " from " : "", owned[i].from ? owned[i].from : "");
	return psprintf(SETTING " \"%s\" line %d: property \"%s\" is set by iq_fdw itself%s%s; remove it from the file",
					kp->path, p->line, p->name,
					owned[i].from ? " from " : "", owned[i].from ? owned[i].from : "");
}

/*
 * parse
 *		kp->buf's lines into kp->props: "key=value", white space around
 *		either trimmed, '#' comments and blank lines skipped.  NULL, or the
 *		first line that is not a property.
 */
static char *
parse(IqKafkaProps *kp)
{
	char	   *line = kp->buf;
	int			lineno = 0;
	int			max = 1;

	for (char *c = kp->buf; *c; c++)
		max += *c == '\n';
	kp->props = palloc0(sizeof(IqKafkaProp) * max);
	while (line != NULL)
	{
		char	   *next = strchr(line, '\n');
		char	   *eq;
		char	   *end;

		if (next)
			*next++ = '\0';
		lineno++;
		for (end = line + strlen(line); end > line && isspace((unsigned char) end[-1]); end--)
			*(end - 1) = '\0';
		while (isspace((unsigned char) *line))
			line++;
		if (*line != '\0' && *line != '#')
		{
			if ((eq = strchr(line, '=')) == NULL || eq == line)
				return psprintf(SETTING " \"%s\" line %d: not a property; write key=value",
								kp->path, lineno);
			for (end = eq; end > line && isspace((unsigned char) end[-1]); end--)
				*(end - 1) = '\0';
			*eq++ = '\0';
			while (isspace((unsigned char) *eq))
				eq++;
			kp->props[kp->nprops].name = line;
			kp->props[kp->nprops].value = eq;
			kp->props[kp->nprops++].line = lineno;
		}
		line = next;
	}
	return NULL;
}

/*
 * judge
 *		Every property through judge_line; NULL, or the first refusal.
 */
static char *
judge(const IqKafkaProps *kp)
{
	rd_kafka_conf_t *base = conf_with_topic_conf();
	rd_kafka_conf_t *conf = conf_with_topic_conf();
	char	   *why = NULL;

	for (int i = 0; i < kp->nprops && why == NULL; i++)
		why = judge_line(kp, &kp->props[i], base, conf);
	rd_kafka_conf_destroy(conf);
	rd_kafka_conf_destroy(base);
	return why;
}

/*
 * iq_kafka_props_load
 *		Read the file at path, parse and judge it, in the current memory
 *		context.  A file that cannot be used leaves no property and
 *		->error set: the worker shows it and makes no client.
 */
void
iq_kafka_props_load(IqKafkaProps *kp, const char *path)
{
	IqTlsBlob	blob;
	char		err[1024];

	memset(kp, 0, sizeof(*kp));
	kp->path = pstrdup(path);
	if (path[0] == '\0')
		return;
	if (!iq_secret_file_read(SETTING, path, false, &blob, err, sizeof(err)))
	{
		kp->error = psprintf("cannot use the Kafka properties: %s", err);
		return;
	}
	kp->buflen = (int) blob.len + 1;
	kp->buf = palloc(kp->buflen);
	memcpy(kp->buf, blob.data, kp->buflen);
	explicit_bzero(blob.data, blob.len);
	iq_tls_blob_free(&blob);
	if ((kp->error = parse(kp)) == NULL)
		kp->error = judge(kp);
	if (kp->error != NULL)
		kp->nprops = 0;
}

/*
 * iq_kafka_props_differ
 *		Whether b would make clients other than a's, or show another
 *		error: comments and blank lines do not count.
 */
bool
iq_kafka_props_differ(const IqKafkaProps *a, const IqKafkaProps *b)
{
	if (strcmp(a->path, b->path) != 0 || a->nprops != b->nprops ||
		(a->error == NULL) != (b->error == NULL) ||
		(a->error && strcmp(a->error, b->error) != 0))
		return true;
	for (int i = 0; i < a->nprops; i++)
		if (strcmp(a->props[i].name, b->props[i].name) != 0 ||
			strcmp(a->props[i].value, b->props[i].value) != 0)
			return true;
	return false;
}

/*
 * iq_kafka_props_forget
 *		Zero the file's bytes before the memory holding them is freed.
 */
void
iq_kafka_props_forget(IqKafkaProps *kp)
{
	if (kp->buf)
		explicit_bzero(kp->buf, kp->buflen);
	kp->nprops = 0;
}

/*
 * iq_kafka_props_apply
 *		Every property onto conf, before iq_fdw's own; false with *err when
 *		the file could not be used (judged at load, so librdkafka takes
 *		every line of a usable one).  conf stays the caller's.
 */
bool
iq_kafka_props_apply(const IqKafkaProps *kp, rd_kafka_conf_t *conf, char **err)
{
	char		errstr[512];

	if (kp->error != NULL)
	{
		*err = strdup(kp->error);
		return false;
	}
	for (int i = 0; i < kp->nprops; i++)
	{
		const IqKafkaProp *p = &kp->props[i];

		if (rd_kafka_conf_set(conf, p->name, p->value, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK)
		{
			char	   *masked = mask_value(errstr, p->value);
			char	   *why = psprintf(SETTING " \"%s\" line %d: %s", kp->path, p->line, masked);

			*err = strdup(why);
			pfree(why);
			pfree(masked);
			return false;
		}
	}
	return true;
}

/*
 * iq_kafka_props_log
 *		Which properties the clients get from the file: keys only.
 */
void
iq_kafka_props_log(const IqKafkaProps *kp)
{
	StringInfoData s;

	if (kp->path[0] == '\0' || kp->error != NULL)
		return;
	initStringInfo(&s);
	for (int i = 0; i < kp->nprops; i++)
		appendStringInfo(&s, "%s%s", i > 0 ? ", " : "", kp->props[i].name);
	ereport(LOG,
			(errmsg("iq_fdw worker: Kafka clients take %d properties from \"%s\" (%s)",
					kp->nprops, kp->path, SETTING),
			 errdetail("Properties: %s.", kp->nprops > 0 ? s.data : "none")));
	pfree(s.data);
}

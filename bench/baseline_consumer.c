/*
 * bench/baseline_consumer.c: the bare librdkafka consumer the worker's ingest
 * and restore are compared with.  It reads a topic from the beginning to the
 * end the topic had when it started, and does nothing with the records but
 * count them and their bytes: what this machine's broker and librdkafka can
 * hand a C program, with no join, no state and no changelog.
 *
 *   baseline_consumer BOOTSTRAP TOPIC [PARTITION] [key=value...]
 *
 * Every partition unless PARTITION is given (-1: every one); key=value pairs
 * are librdkafka settings (e.g. isolation.level=read_committed, as the
 * restore reads a changelog).  Prints one line:
 *   records N bytes B seconds S records/s R
 * timed from the first record to the last, so that connecting and metadata
 * are not counted (the worker's figures start at its first record too).
 *
 * Built by bench/ingest.sh (bench/run): cc -O2 bench/baseline_consumer.c
 * -o bench/.build/baseline_consumer -lrdkafka
 */
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void
fail(const char *what, const char *detail)
{
	fprintf(stderr, "baseline_consumer: %s: %s\n", what, detail);
	exit(1);
}

static double
now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
set(rd_kafka_conf_t *conf, const char *key, const char *value)
{
	char		err[512];

	if (rd_kafka_conf_set(conf, key, value, err, sizeof(err)) != RD_KAFKA_CONF_OK)
		fail(key, err);
}

int
main(int argc, char **argv)
{
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *rk;
	const struct rd_kafka_metadata *md;
	rd_kafka_topic_partition_list_t *parts;
	rd_kafka_resp_err_t err;
	char		errstr[512];
	const char *topic;
	int			only = -1;
	int			argi = 3;
	int			remaining;
	long long	records = 0,
				bytes = 0;
	double		first = 0,
				last = 0;

	if (argc < 3)
	{
		fprintf(stderr, "usage: %s BOOTSTRAP TOPIC [PARTITION] [key=value...]\n", argv[0]);
		return 2;
	}
	topic = argv[2];
	if (argc > 3 && strchr(argv[3], '=') == NULL)
		only = atoi(argv[argi++]);

	set(conf, "bootstrap.servers", argv[1]);
	/* no group coordination, no commits: partitions are assigned by hand */
	set(conf, "group.id", "iq-bench-baseline");
	set(conf, "enable.auto.commit", "false");
	set(conf, "enable.partition.eof", "true");

	/*
	 * Room for a whole backlog in the local queue: librdkafka 2.0 stops
	 * fetching when the queue reaches its bound and looks again up to a
	 * second later (worker/stream/fetch_wake.c wakes the worker's fetcher
	 * for the same reason).  With the defaults this consumer read 0.3 to
	 * 0.45 M records/s, with these 1.46 to 1.52 M (1 M records, 3
	 * partitions, same run): a baseline must not be held back by that.
	 */
	set(conf, "queued.min.messages", "1000000");
	set(conf, "queued.max.messages.kbytes", "1048576");
	for (; argi < argc; argi++)
	{
		char	   *kv = strdup(argv[argi]);
		char	   *eq = strchr(kv, '=');

		if (eq == NULL)
			fail("setting without '='", kv);
		*eq = '\0';
		set(conf, kv, eq + 1);
		free(kv);
	}
	rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
	if (rk == NULL)
		fail("rd_kafka_new", errstr);
	rd_kafka_poll_set_consumer(rk);

	/* the partitions, each with the end it has now */
	{
		rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);

		err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
		if (err)
			fail("metadata", rd_kafka_err2str(err));
		if (md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt == 0)
			fail("no such topic", topic);
		parts = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
		for (int i = 0; i < md->topics[0].partition_cnt; i++)
		{
			int			p = md->topics[0].partitions[i].id;
			int64_t		low,
						high;

			if (only >= 0 && p != only)
				continue;
			err = rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, 10000);
			if (err)
				fail("watermarks", rd_kafka_err2str(err));
			if (high > low)
			{
				rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(parts, topic, p);

				tp->offset = RD_KAFKA_OFFSET_BEGINNING;
				/* the end to reach, kept beside the partition */
				tp->opaque = (void *) (intptr_t) high;
			}
		}
		rd_kafka_metadata_destroy(md);
		rd_kafka_topic_destroy(rkt);
	}
	remaining = parts->cnt;
	err = rd_kafka_assign(rk, parts);
	if (err)
		fail("assign", rd_kafka_err2str(err));

	while (remaining > 0)
	{
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
		rd_kafka_topic_partition_t *tp;
		int			done = 0;

		if (m == NULL)
			continue;
		tp = rd_kafka_topic_partition_list_find(parts, topic, m->partition);
		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			done = 1;
		else if (m->err)
			fail("consume", rd_kafka_message_errstr(m));
		else
		{
			last = now_seconds();
			if (records == 0)
				first = last;
			records++;
			bytes += m->len + m->key_len;
			/*
			 * Under read_committed the last offsets may be transaction
			 * markers, never delivered: EOF ends those partitions.
			 */
			done = tp != NULL && m->offset + 1 >= (int64_t) (intptr_t) tp->opaque;
		}
		if (done && tp != NULL && tp->offset != -1000)
		{
			tp->offset = -1000;	/* this partition is finished */
			remaining--;
		}
		rd_kafka_message_destroy(m);
	}
	{
		double		seconds = last - first;

		printf("records %lld bytes %lld seconds %.3f records/s %.0f\n",
			   records, bytes, seconds, seconds > 0 ? records / seconds : 0.0);
	}
	rd_kafka_topic_partition_list_destroy(parts);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return 0;
}

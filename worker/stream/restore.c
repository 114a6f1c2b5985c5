/*-------------------------------------------------------------------------
 * restore.c
 *	  Bring a partition's stores up to date before its input is processed.
 *
 * order-count is replayed from the changelog partition, customer from the
 * customer topic's partition, each from the checkpoint of the local store
 * (or from the beginning when there was none) to the end (read_committed,
 * so an aborted transaction is never restored).  A separate consumer
 * without a group reads in large fetches and the records go into RocksDB
 * in large write batches, each with the checkpoint it reached, so an
 * interrupted restore resumes where it stopped.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/kafka_conf.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stream/fetch_wake.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/key_order.h"
#include "worker/stream/stream.h"

#define RESTORE_STALL_MS	60000
#define WATERMARKS_TIMEOUT_MS	15000
/* fetch.wait.max.ms of the restore consumer */
#define RESTORE_FETCH_WAIT_MS	20
/* a restore longer than this logs its progress this often */
#define RESTORE_REPORT_MS	10000

/*
 * iq_restore_report_ms
 *		How often a restore, or a standby's catch-up, logs its progress:
 *		RESTORE_REPORT_MS, or the environment's IQ_TEST_RESTORE_REPORT_MS: a
 *		hidden hook for the test, which cannot afford a restore of ten
 *		seconds (a million records a second here) on a shared machine.
 */
int64
iq_restore_report_ms(void)
{
	static int64 interval = -1;

	if (interval < 0)
	{
		const char *hook = getenv("IQ_TEST_RESTORE_REPORT_MS");
		long		ms = hook != NULL ? strtol(hook, NULL, 10) : 0;

		interval = ms > 0 ? ms : RESTORE_REPORT_MS;
	}
	return interval;
}

/*
 * iq_restorer_start
 *		The restore consumer: no group of its own to join, large fetches.
 */
bool
iq_restorer_start(char **err)
{
	char		group[600];
	rd_kafka_conf_t *conf;

	/* librdkafka wants a group for its consumer queue; it never joins it */
	snprintf(group, sizeof(group), "%s-restore", iq_w->cfg.app_id);
	/*
	 * Large fetches make a fast restore, within the restore's share; half
	 * of it when standby replicas have the other half (standby.c).
	 */
	conf = iq_consumer_conf_new(group, RESTORE_FETCH_WAIT_MS,
								iq_restore_share(iq_w->mem.restore_queue_kbytes, 256),
								iq_restore_share(iq_w->mem.restore_queue_messages, 1000),
								iq_restore_share(iq_w->mem.restore_fetch_bytes, 16 * 1024), err);
	if (conf == NULL)
		return false;
	/* the end of a partition ends its restore */
	if (!iq_conf_set(conf, "enable.partition.eof", "true", err))
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	iq_w->restorer = iq_kafka_new(RD_KAFKA_CONSUMER, conf, IQ_H_RESTORER, err);
	if (iq_w->restorer == NULL)
		return false;
	rd_kafka_poll_set_consumer(iq_w->restorer);
	return true;
}

/*
 * iq_restorer_stop
 *		Drop the restore consumer; it holds no group to leave.
 */
void
iq_restorer_stop(void)
{
	if (iq_w->restorer == NULL)
		return;
	rd_kafka_assign(iq_w->restorer, NULL);
	iq_log_detach(IQ_H_RESTORER);
	rd_kafka_destroy_flags(iq_w->restorer, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	iq_w->restorer = NULL;
}

/*
 * The records of a restore are gathered in chunks (sized by memory.c): a
 * large chunk is sorted, reduced to the last record per key and
 * bulk-loaded as an SST file; a small one (the usual catch-up after a
 * restart) is a plain WriteBatch.
 */
#define SST_MIN_RECORDS	20000

typedef struct Rec
{
	size_t		koff;			/* the key in the arena, its value after it */
	size_t		klen;
	size_t		vlen;
	bool		del;
} Rec;

typedef struct Chunk
{
	Rec		   *recs;
	int			n;
	char	   *arena;
	size_t		used;
	size_t		cap;
} Chunk;

/* rec_key: IqKeyAt over a chunk */
static const char *
rec_key(const void *ctx, int i, size_t *len)
{
	const Chunk *c = ctx;

	*len = c->recs[i].klen;
	return c->arena + c->recs[i].koff;
}

static bool
chunk_append(Chunk *c, const void *key, size_t klen, const void *val, size_t vlen, bool del)
{
	Rec		   *r;

	if (c->used + klen + vlen > c->cap)
	{
		size_t		ncap = Max(c->cap * 2, c->used + klen + vlen + 1024 * 1024);
		char	   *na = realloc(c->arena, ncap);

		if (na == NULL)
			return false;
		c->arena = na;
		c->cap = ncap;
	}
	r = &c->recs[c->n];
	r->koff = c->used;
	r->klen = klen;
	if (klen)
		memcpy(c->arena + c->used, key, klen);
	c->used += klen;
	r->vlen = vlen;
	if (vlen)
		memcpy(c->arena + c->used, val, vlen);
	c->used += vlen;
	r->del = del;
	c->n++;
	return true;
}

/*
 * cache_customer
 *		A restored customer's presence, for the joins that follow.
 */
static void
cache_customer(int p, const char *key, size_t len, bool present)
{
	IqCacheEntry *ce = iq_cache_upsert(p, key, len);

	if (ce != NULL)
		ce->customer = present ? IQ_CUSTOMER_PRESENT : IQ_CUSTOMER_ABSENT;
}

/*
 * chunk_flush
 *		Make a chunk durable with the checkpoint it reached.
 */
static bool
chunk_flush(Chunk *c, int p, IqStoreId store, const IqCheckpoint *ck, char **err)
{
	uint8_t    *same_as_next = malloc(c->n > 0 ? c->n : 1);
	uint32_t   *order = same_as_next ? iq_key_order(c->n, rec_key, c, same_as_next) : NULL;
	bool		ok;

	if (order == NULL)
	{
		free(same_as_next);
		*err = strdup("out of memory");
		return false;
	}
	if (c->n >= SST_MIN_RECORDS)
	{
		IqKV	   *kvs = malloc(sizeof(IqKV) * c->n);
		int			m = 0;

		if (kvs == NULL)
		{
			free(order);
			free(same_as_next);
			*err = strdup("out of memory");
			return false;
		}
		for (int i = 0; i < c->n; i++)
		{
			Rec		   *r = &c->recs[order[i]];

			/* the last record of a key wins */
			if (same_as_next[i])
				continue;
			kvs[m].key = c->arena + r->koff;
			kvs[m].key_len = r->klen;
			kvs[m].value = r->del ? NULL : c->arena + r->koff + r->klen;
			kvs[m].value_len = r->vlen;
			m++;
		}
		ok = iq_store_ingest(p, store, kvs, m, ck, err);
		if (ok && store == IQ_STORE_CUSTOMER)
			for (int i = 0; i < m; i++)
				cache_customer(p, kvs[i].key, kvs[i].key_len, kvs[i].value != NULL);
		free(kvs);
	}
	else
	{
		IqStoreBatch *b = iq_store_batch_begin(p);

		/* in key order (stable: the last record of a key still wins) */
		for (int i = 0; i < c->n; i++)
		{
			Rec		   *r = &c->recs[order[i]];

			if (r->del)
				iq_store_batch_delete(b, store, c->arena + r->koff, r->klen);
			else
				iq_store_batch_put(b, store, c->arena + r->koff, r->klen,
								   c->arena + r->koff + r->klen, r->vlen);
		}
		iq_store_batch_checkpoint(b, ck);
		ok = iq_store_batch_commit(b, err);
		for (int i = 0; ok && store == IQ_STORE_CUSTOMER && i < c->n; i++)
			cache_customer(p, c->arena + c->recs[i].koff, c->recs[i].klen, !c->recs[i].del);
	}
	free(order);
	free(same_as_next);
	c->n = 0;
	c->used = 0;
	return ok;
}

/*
 * One restore of a topic's partition into a store, while it runs.
 */
typedef struct Restore
{
	rd_kafka_t *rk;
	const char *topic;
	int			p;
	IqStoreId	store;
	IqCheckpoint *ck;			/* its order_next follows the flushes' marks */
	int64_t    *next;			/* after the last record written */
	int64_t		start;			/* the first offset read */
	int64_t		hi;				/* the end it reads up to */
	int64_t		last;			/* the last offset taken, -1 none */
	IqPart	   *part;
	rd_kafka_queue_t *q;
	rd_kafka_message_t **msgs;	/* a batch from q, restore_batch of them */
	Chunk		chunk;
	int64		stalled_since;	/* when records last came */
	int64		began;
	int64		reported;		/* when progress was last logged */
	int64		writing_ms;		/* of which sorting and writing chunks */
	int64		records;
	bool		done;
	int			result;			/* 1 done, 0 failed (iq_fail called) */
} Restore;

/*
 * topic_bounds
 *		The low and high watermarks of topic's partition p, asked in slices
 *		(a stop or the postmaster's death ends the wait); false after
 *		iq_fail().
 */
static bool
topic_bounds(rd_kafka_t *rk, const char *topic, int p, int64_t *lo, int64_t *hi)
{
	int64		deadline = iq_now_ms() + WATERMARKS_TIMEOUT_MS;
	int			slice;
	rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;

	while ((slice = iq_wait_slice(deadline, IQ_WAIT_START)) > 0 &&
		   ((err = rd_kafka_query_watermark_offsets(rk, topic, p, lo, hi, slice)) ==
			RD_KAFKA_RESP_ERR__TIMED_OUT || err == RD_KAFKA_RESP_ERR__TRANSPORT))
		iq_drain_logs();
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not read the offsets of \"%s\" partition %d to restore from: %s",
				topic, p, rd_kafka_err2str(err));
		return false;
	}
	return true;
}

/*
 * restore_begin
 *		Show the restore, point the restore consumer at its start, and get
 *		the memory it reads into; false after iq_fail() when the consumer
 *		could not be pointed (a chunk that could not be had fails the
 *		restore after it has begun, so that restore_end cleans up).
 */
static bool
restore_begin(Restore *r)
{
	rd_kafka_topic_partition_list_t *list;
	rd_kafka_resp_err_t err;

	r->began = iq_now_ms();
	r->reported = r->began;
	r->part->stats.restoring = true;
	r->part->stats.restore_total += r->hi - r->start;
	memset(&iq_w->restore, 0, sizeof(iq_w->restore));
	iq_w->restore.running = true;
	iq_w->restore.partition = r->p;
	strlcpy(iq_w->restore.topic, r->topic, sizeof(iq_w->restore.topic));
	iq_w->restore.started_ms = r->began;
	iq_w->restore.total = r->hi - r->start;
	iq_set_worker_state(IQ_WORKER_RESTORING, "restoring partition %d of \"%s\" (%lld records)",
						r->p, r->topic, (long long) (r->hi - r->start));
	iq_stats_publish();

	list = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(list, r->topic, r->p)->offset = r->start;
	err = rd_kafka_assign(r->rk, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_w->restore.running = false;
		iq_fail("could not read \"%s\" partition %d to restore: %s", r->topic, r->p,
				rd_kafka_err2str(err));
		return false;
	}
	r->q = rd_kafka_queue_get_consumer(r->rk);
	r->msgs = palloc(sizeof(rd_kafka_message_t *) * iq_w->mem.restore_batch);
	r->chunk.recs = malloc(sizeof(Rec) * (iq_w->mem.restore_chunk_records + iq_w->mem.restore_batch));
	if (r->chunk.recs == NULL)
	{
		iq_fail("out of memory restoring partition %d", r->p);
		r->result = 0;
		r->done = true;
	}
	return true;
}

/*
 * restore_take
 *		What is queued, without waiting: a batch call with a timeout waits
 *		for a full batch, and a queue bounded by the memory budget holds
 *		little more than one, so the restore idled most of its time.  Only
 *		an empty queue is waited on, briefly, for one record.
 */
static ssize_t
restore_take(Restore *r)
{
	IqQueueWatch watch;
	ssize_t		n;

	iq_queue_watch_begin(&watch, !iq_fetch_queue_backoff(), r->q,
						 iq_w->mem.restore_queue_messages,
						 iq_w->mem.restore_queue_kbytes);
	n = rd_kafka_consume_batch_queue(r->q, 0, r->msgs, iq_w->mem.restore_batch);
	if (n == 0)
		n = rd_kafka_consume_batch_queue(r->q, 100, r->msgs, 1);
	iq_queue_watch_took(&watch, r->msgs, n);
	/* the next fetch comes while this one is sorted and written */
	if (iq_queue_watch_reopened(&watch, r->q))
		iq_wake_fetcher(r->rk, r->topic, r->p);
	iq_drain_logs();
	return n;
}

/*
 * take_mark
 *		A flush's mark (changelog.c): the checkpoint records the order
 *		offset the restored counts cover, as the owner's own flush does, so
 *		that a standby kept from this store knows its lag, and an owner
 *		under at_least_once resumes after what the changelog holds.
 */
static void
take_mark(Restore *r, const rd_kafka_message_t *m)
{
	int64		next;
	int64		end;

	if (iq_changelog_mark(m, &next, &end) && next > r->ck->order_next)
		r->ck->order_next = next;
}

/*
 * restore_apply
 *		Take n records into the chunk, each destroyed; the end of the
 *		partition marks the restore done.  A record with no key is dropped
 *		as the stream drops it, a count that is not 8 bytes as malformed.
 */
static void
restore_apply(Restore *r, ssize_t n)
{
	for (ssize_t i = 0; i < n; i++)
	{
		rd_kafka_message_t *m = r->msgs[i];

		if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF)
			r->done = true;
		else if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR)
		{
			if (r->result == 1)
				iq_fail("could not read \"%s\" partition %d to restore: %s",
						r->topic, r->p, rd_kafka_message_errstr(m));
			r->result = 0;
		}
		else if (m->offset >= r->start && m->offset > r->last)
		{
			r->last = m->offset;
			if (r->store == IQ_STORE_ORDER_COUNT)
				take_mark(r, m);
			if (m->key == NULL)
				r->part->stats.dropped_null_key++;
			else if (m->payload != NULL && r->store == IQ_STORE_ORDER_COUNT && m->len != 8)
				r->part->stats.dropped_malformed++;
			else if (!chunk_append(&r->chunk, m->key, m->key_len,
								   m->payload, m->payload ? m->len : 0,
								   m->payload == NULL))
			{
				if (r->result == 1)
					iq_fail("out of memory restoring partition %d", r->p);
				r->result = 0;
			}
			r->part->stats.restored_records++;
			if (r->store == IQ_STORE_ORDER_COUNT)
				r->part->counts_restored = true;
		}
		rd_kafka_message_destroy(m);
	}
}

/*
 * restore_write
 *		Make the chunk durable with the checkpoint it reached; false after
 *		iq_fail().
 */
static bool
restore_write(Restore *r)
{
	int64		flush_began = iq_now_ms();
	char	   *werr = NULL;
	bool		ok;

	if (r->last >= 0)
		*r->next = r->last + 1;
	r->records += r->chunk.n;
	ok = chunk_flush(&r->chunk, r->p, r->store, r->ck, &werr);
	r->writing_ms += iq_now_ms() - flush_began;
	if (!ok)
	{
		iq_fail("could not write the restored state of partition %d under iq_fdw.state_dir: %s",
				r->p, werr ? werr : "?");
		free(werr);
		r->result = 0;
	}
	return ok;
}

/*
 * restore_progress
 *		Show how far the restore is in iq_worker() (published with the
 *		stats) and, every RESTORE_REPORT_MS, in the log: offsets read of
 *		those to read, the rate since the start and the time left at that
 *		rate.  Nothing is logged for a restore shorter than one interval.
 */
static void
restore_progress(Restore *r)
{
	int64		now = iq_now_ms();
	int64		done = r->last >= 0 ? r->last + 1 - r->start : 0;
	int64		total = r->hi - r->start;
	double		secs = Max(now - r->began, 1) / 1000.0;
	double		rate = done / secs;
	char		left[64] = "no record read yet";

	iq_w->restore.records = done;
	if (now - r->reported < iq_restore_report_ms())
		return;
	r->reported = now;
	if (rate > 0)
		snprintf(left, sizeof(left), "about %.0f s left", (total - done) / rate);
	ereport(LOG,
			(errmsg("iq_fdw worker: restoring partition %d of \"%s\": %lld of %lld records (%.0f %%), %.0f records/s, %s",
					r->p, r->topic, (long long) done, (long long) total,
					total > 0 ? done * 100.0 / total : 100.0, rate, left),
			 errdetail("%.1f s since the restore began, %.1f s of it sorting and writing the state.",
					   secs, r->writing_ms / 1000.0)));
}

/*
 * restore_end
 *		Let go of the partition and the memory; after a restore that wrote
 *		records, log its rate.
 */
static void
restore_end(Restore *r)
{
	free(r->chunk.recs);
	free(r->chunk.arena);
	pfree(r->msgs);
	rd_kafka_assign(r->rk, NULL);
	rd_kafka_queue_destroy(r->q);
	iq_w->restore.running = false;
	if (r->result == 1 && *r->next < r->hi)
		*r->next = r->hi;		/* only control records were left */
	if (r->result == 1 && r->records > 0)
	{
		int64		took = Max(iq_now_ms() - r->began, 1);

		/* whether the broker or the disk set the pace, for whoever tunes it */
		ereport(LOG,
				(errmsg("iq_fdw worker: restored partition %d of \"%s\": %lld records in %.1f s (%.0f records/s)",
						r->p, r->topic, (long long) r->records, took / 1000.0,
						r->records * 1000.0 / took),
				 errdetail("%.1f s sorting and writing the state, the rest reading the topic.",
						   r->writing_ms / 1000.0)));
	}
}

/*
 * restore_topic
 *		Replay topic's partition into store from *next up to the end;
 *		*next is left after the last record applied.  -1 = from the start.
 *		Returns 1 done, 0 failed (iq_fail called), -1 when the checkpoint is
 *		beyond the topic's end (the topic was recreated: wipe and retry).
 */
static int
restore_topic(const char *topic, int p, IqStoreId store, IqCheckpoint *ck,
			  int64_t *next)
{
	Restore		r;
	int64_t		lo;

	memset(&r, 0, sizeof(r));
	r.rk = iq_w->restorer;
	r.topic = topic;
	r.p = p;
	r.store = store;
	r.ck = ck;
	r.next = next;
	r.last = -1;
	r.part = &iq_w->parts[p];
	r.stalled_since = iq_now_ms();
	r.result = 1;

	iq_step(IQ_STEP_RESTORING, p);
	if (!topic_bounds(r.rk, topic, p, &lo, &r.hi))
		return 0;
	if (*next > r.hi)
		return -1;
	r.start = (*next < 0 || *next < lo) ? lo : *next;
	if (r.start >= r.hi)
	{
		*next = r.hi;
		return 1;
	}
	if (!restore_begin(&r))
		return 0;

	while (!r.done)
	{
		ssize_t		n;

		if (iq_got_sigterm || iq_postmaster_gone())
		{
			iq_fail("shutting down during restore");
			r.result = 0;
			break;
		}
		n = restore_take(&r);
		restore_progress(&r);
		if (n <= 0)
		{
			if (iq_now_ms() - r.stalled_since > RESTORE_STALL_MS)
			{
				iq_fail("restore of \"%s\" partition %d stalled at offset %lld of %lld",
						topic, p, (long long) (r.last >= 0 ? r.last + 1 : r.start),
						(long long) r.hi);
				r.result = 0;
				break;
			}
			continue;
		}
		r.stalled_since = iq_now_ms();
		iq_progress();
		restore_apply(&r, n);
		if (r.result != 1)
			break;
		restore_progress(&r);
		if (r.last >= r.hi - 1)
			r.done = true;
		if ((r.done || r.chunk.n >= iq_w->mem.restore_chunk_records ||
			 r.chunk.used >= iq_w->mem.restore_chunk_bytes) &&
			!restore_write(&r))
			break;
		iq_stats_publish();
	}
	restore_end(&r);
	return r.result;
}

/*
 * set_aside
 *		Move a partition's store out of the way as "<n>.<why>-<time>"
 *		(*moved_to); false after iq_fail().
 */
static bool
set_aside(int p, const char *why, char *moved_to, size_t moved_to_len)
{
	char	   *err = NULL;

	if (iq_store_set_aside(p, why, moved_to, moved_to_len, &err))
		return true;
	iq_fail("could not move the state of partition %d aside under iq_fdw.state_dir: %s",
			p, err ? err : "?");
	free(err);
	return false;
}

/*
 * open_empty
 *		Open the empty store that replaces one set aside, counted as a
 *		rebuild; false after iq_fail().
 */
static bool
open_empty(int p, IqCheckpoint *ck, bool *existed)
{
	char	   *err = NULL;

	iq_w->parts[p].stats.state_rebuilds++;
	if (!iq_store_open(p, ck, existed, &err))
	{
		iq_fail("could not create the state of partition %d under iq_fdw.state_dir: %s",
				p, err ? err : "?");
		free(err);
		return false;
	}
	*existed = false;
	return true;
}

/*
 * check_format
 *		Set aside a closed partition's store written in a format this build
 *		does not read (a newer release's, say); *unreadable with the
 *		RocksDB error that kept its format from being read, for the caller
 *		to judge.  False after iq_fail().
 */
static bool
check_format(int p, bool *set, char **unreadable)
{
	int			format;
	char		moved_to[4200];
	char		why[32];

	*set = false;
	if (iq_store_is_open(p) || !iq_store_format_on_disk(p, &format, unreadable))
		return true;
	if (format == IQ_STORE_FORMAT_NONE ||
		(format >= IQ_STORE_FORMAT_OLDEST && format <= IQ_STORE_FORMAT))
		return true;
	snprintf(why, sizeof(why), "format-%d", format);
	if (!set_aside(p, why, moved_to, sizeof(moved_to)))
		return false;
	ereport(LOG,
			(errmsg("iq_fdw worker: the state of partition %d is in store format %d, which this build does not read; moved it to \"%s\" and rebuilding it from topics \"%s\" and \"%s\"",
					p, format, moved_to, iq_w->cfg.changelog_topic, iq_w->cfg.customer_topic),
			 errdetail("This build reads store formats %d to %d; format -1 is a store without a readable format.",
					   IQ_STORE_FORMAT_OLDEST, IQ_STORE_FORMAT),
			 errhint("A newer iq_fdw wrote it. Delete \"%s\" once that release is not going to run here again.",
					 moved_to)));
	*set = true;
	return true;
}

/*
 * iq_restore_open
 *		Open a partition's store for its restore.  A store this build
 *		cannot read as it is, because RocksDB finds it corrupt or it is in a
 *		format this build does not read, is moved aside and started empty,
 *		so that the restore rebuilds it from the changelog and the customer
 *		topic.  False after iq_fail().
 *
 * Retrying a corrupt store would fail the same way on every attempt and
 * keep the partition, and the whole pipeline with it, in the error state;
 * everything in it can be rebuilt from Kafka, so it is.  A store of a
 * newer format is never opened for writing (format.c says why).  Other
 * open errors (permissions, no space, a lock) are left to the retry with
 * backoff: moving the data aside would not fix them.
 */
bool
iq_restore_open(int p, IqCheckpoint *ck, bool *existed)
{
	char	   *err = NULL;
	char		moved_to[4200];
	bool		newer;

	if (!check_format(p, &newer, &err))
		return false;
	if (newer)
		return open_empty(p, ck, existed);
	if (err == NULL && iq_store_open(p, ck, existed, &err))
		return true;
	if (!iq_store_error_is_corruption(err))
	{
		iq_fail("could not open the state of partition %d under iq_fdw.state_dir: %s",
				p, err ? err : "?");
		free(err);
		return false;
	}
	if (!set_aside(p, "corrupt", moved_to, sizeof(moved_to)))
	{
		free(err);
		return false;
	}
	ereport(WARNING,
			(errmsg("iq_fdw worker: the state of partition %d is corrupt; moved it to \"%s\" and rebuilding it from topics \"%s\" and \"%s\"",
					p, moved_to, iq_w->cfg.changelog_topic, iq_w->cfg.customer_topic),
			 errdetail_internal("%s", err ? err : "?"),
			 errhint("Check the disk and file system under iq_fdw.state_dir; delete \"%s\" once it is not needed to diagnose the damage.",
					 moved_to)));
	free(err);
	return open_empty(p, ck, existed);
}

/*
 * iq_restore_partition
 *		Restore both stores of a partition; false after iq_fail().
 */
bool
iq_restore_partition(int p, bool existed, IqCheckpoint *ck)
{
	int			r;

	if (!existed)
	{
		ck->changelog_next = -1;
		ck->customer_next = -1;
	}
	r = restore_topic(iq_w->cfg.changelog_topic, p, IQ_STORE_ORDER_COUNT, ck, &ck->changelog_next);
	if (r < 0)
	{
		char	   *err = NULL;
		bool		dummy;

		/* the store claims records the changelog does not have */
		iq_w->parts[p].stats.state_rebuilds++;
		ereport(LOG,
				(errmsg("iq_fdw worker: the state of partition %d is ahead of changelog topic \"%s\"; rebuilding it from the changelog",
						p, iq_w->cfg.changelog_topic)));
		if (!iq_store_destroy(p, &err) || !iq_store_open(p, ck, &dummy, &err))
		{
			iq_fail("could not rebuild the state of partition %d: %s", p, err ? err : "?");
			free(err);
			return false;
		}
		iq_store_set_held(p, true, true);
		ck->changelog_next = -1;
		ck->customer_next = -1;
		r = restore_topic(iq_w->cfg.changelog_topic, p, IQ_STORE_ORDER_COUNT, ck, &ck->changelog_next);
	}
	if (r <= 0)
	{
		if (r < 0)
			iq_fail("changelog topic \"%s\" partition %d ends before the state restored from it", iq_w->cfg.changelog_topic, p);
		return false;
	}
	r = restore_topic(iq_w->cfg.customer_topic, p, IQ_STORE_CUSTOMER, ck, &ck->customer_next);
	if (r < 0)
	{
		/* the customer topic was recreated: read it again from the start */
		ck->customer_next = -1;
		r = restore_topic(iq_w->cfg.customer_topic, p, IQ_STORE_CUSTOMER, ck, &ck->customer_next);
	}
	return r > 0;
}

/*-------------------------------------------------------------------------
 * standby.c
 *	  Standby replicas: the state of partitions other instances own, kept
 *	  here continuously from their changelog and customer topic, so that a
 *	  read can fall back to it and a failover onto it restores little.
 *
 * Which partitions: those common/standby.c places here for the group's
 * ownership and iq_fdw.standby_replicas.  Each is the same RocksDB database
 * an owned partition has (<state_dir>/<app>/<p>), open and marked standby
 * (readers take it only when they ask for a standby: worker/store), fed by
 * a consumer of its own with no group, read_committed, from the store's
 * checkpoint.  Every round of records is one write batch per partition
 * with the checkpoint it reached, as a restore writes, so a standby that
 * becomes the owner is a store whose restore starts where the standby
 * stopped: rebalance.c opens it as it is.
 *
 * How current a standby is: the owner marks the last changelog record of a
 * partition in each flush with the order position the flush covers
 * (IQ_POSITION_HEADER); a thread of ours asks the broker for the order
 * partitions' ends twice a second, and each read asks for its partition's.
 * They ask on a handle of their own: on the standby consumer's connection
 * the broker answers a ListOffsets only after the Fetch before it, which
 * waits up to STANDBY_FETCH_WAIT_MS for records, so every standby read
 * took that long.  A standby's lag is the end minus what
 * its last mark covered, in the owner's own unit (order records), so
 * iq_fdw.max_lag means the same for both.  The thread calls librdkafka only.
 *
 * Main thread only, but for the ends' thread.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>

#include "utils/memutils.h"

#include "common/standby.h"
#include "common/wire.h"
#include "worker/kafka_conf.h"
#include "worker/ownership.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stream/stream.h"
#include "worker/thread.h"

/* fetch.wait.max.ms of the standby consumer: it follows the changelog closely */
#define STANDBY_FETCH_WAIT_MS	50
/* how often the ends' thread asks for the order partitions' ends */
#define ENDS_INTERVAL_MS		500
#define ENDS_TIMEOUT_MS			1000
/* the longest a read waits for its standby's input end (iq_store_standby_position) */
#define FRESH_END_TIMEOUT_MS	1000
/* the most records one round applies, in batches of the restore's size */
#define ROUND_BATCHES			4

static bool kept[IQ_MAX_PARTITIONS];
static IqCheckpoint positions[IQ_MAX_PARTITIONS];
static int64 mark_end[IQ_MAX_PARTITIONS];	/* the end the last mark carried */
static uint64 placed_generation;
static rd_kafka_queue_t *queue;
static rd_kafka_message_t **msgs;
static int	batch_size;

/* the ends' thread: what it watches and what it found, as atomics */
static pthread_t ends_thread;
static bool ends_running;
static bool ends_stop;
static pthread_mutex_t ends_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ends_cond = PTHREAD_COND_INITIALIZER;
static bool watched[IQ_MAX_PARTITIONS];
static int64 order_end[IQ_MAX_PARTITIONS];
static char ends_topic[NAMEDATALEN * 4];
/* the handle readers ask for fresh ends; taken away (write lock) before it goes */
static pthread_rwlock_t fresh_lock = PTHREAD_RWLOCK_INITIALIZER;
static rd_kafka_t *fresh_rk;
/* the handle that asks for the ends: it never fetches */
static rd_kafka_t *ends_rk;
/* the last end readers were given, and when its request was sent (ns) */
static pthread_mutex_t asked_mutex = PTHREAD_MUTEX_INITIALIZER;
static int64_t asked_at[IQ_MAX_PARTITIONS];
static int64_t asked_end[IQ_MAX_PARTITIONS];

/*
 * ask_ends
 *		The ends of the order partitions marked in which, into ends[p]; how
 *		many the broker gave.  One ListOffsets for them all (the latest
 *		offset asked as a time), where rd_kafka_query_watermark_offsets
 *		sends two a partition: its start is not wanted.  Any thread:
 *		librdkafka only.
 */
static int
ask_ends(rd_kafka_t *rk, const bool *which, int64_t *ends, int timeout_ms)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(4);
	int			got = 0;

	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (which[p])
			rd_kafka_topic_partition_list_add(list, ends_topic, p)->offset = RD_KAFKA_OFFSET_END;
	if (list->cnt > 0 &&
		rd_kafka_offsets_for_times(rk, list, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR)
		for (int i = 0; i < list->cnt; i++)
		{
			rd_kafka_topic_partition_t *tp = &list->elems[i];

			if (tp->err == RD_KAFKA_RESP_ERR_NO_ERROR && tp->offset >= 0)
			{
				ends[tp->partition] = tp->offset;
				got++;
			}
		}
	rd_kafka_topic_partition_list_destroy(list);
	return got;
}

/*
 * fresh_end
 *		The end of order partition p at or after since, for a reader of its
 *		standby (any thread: librdkafka only).  Each request asks for every
 *		watched partition; an end from a request sent at or after since is
 *		taken as it is, so a read of several standbys asks once.
 */
static bool
fresh_end(int p, int64_t since, int64_t *end)
{
	bool		which[IQ_MAX_PARTITIONS];
	int64_t		ends[IQ_MAX_PARTITIONS];
	int64_t		sent;
	bool		ok = false;

	if (p < 0 || p >= IQ_MAX_PARTITIONS)
		return false;
	pthread_mutex_lock(&asked_mutex);
	if (asked_at[p] >= since)
	{
		*end = asked_end[p];
		pthread_mutex_unlock(&asked_mutex);
		return true;
	}
	pthread_mutex_unlock(&asked_mutex);

	for (int q = 0; q < IQ_MAX_PARTITIONS; q++)
	{
		which[q] = q == p || __atomic_load_n(&watched[q], __ATOMIC_RELAXED);
		ends[q] = -1;
	}
	sent = iq_store_read_clock();
	pthread_rwlock_rdlock(&fresh_lock);
	if (fresh_rk != NULL)
		ask_ends(fresh_rk, which, ends, FRESH_END_TIMEOUT_MS);
	pthread_rwlock_unlock(&fresh_lock);

	pthread_mutex_lock(&asked_mutex);
	for (int q = 0; q < IQ_MAX_PARTITIONS; q++)
	{
		if (ends[q] < 0)
			continue;
		if (sent > asked_at[q])
		{
			asked_at[q] = sent;
			asked_end[q] = ends[q];
		}
		/* the next round's publish starts from it */
		if (ends[q] > __atomic_load_n(&order_end[q], __ATOMIC_RELAXED))
			__atomic_store_n(&order_end[q], ends[q], __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&asked_mutex);
	if (ends[p] >= 0)
	{
		*end = ends[p];
		ok = true;
	}
	return ok;
}

/*
 * ends_main
 *		Ask the broker for the end of each watched order partition, twice a
 *		second, with a timeout: a slow broker delays the ends, never the
 *		main thread.
 */
static void *
ends_main(void *arg)
{
	rd_kafka_t *rk = arg;

	pthread_mutex_lock(&ends_mutex);
	while (!ends_stop)
	{
		struct timespec until;
		bool		which[IQ_MAX_PARTITIONS];
		int64_t		ends[IQ_MAX_PARTITIONS];

		pthread_mutex_unlock(&ends_mutex);
		for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		{
			which[p] = __atomic_load_n(&watched[p], __ATOMIC_RELAXED);
			ends[p] = -1;
		}
		ask_ends(rk, which, ends, ENDS_TIMEOUT_MS);
		for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
			if (ends[p] >= 0)
				__atomic_store_n(&order_end[p], ends[p], __ATOMIC_RELAXED);
		pthread_mutex_lock(&ends_mutex);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long) ENDS_INTERVAL_MS * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (!ends_stop)
			pthread_cond_timedwait(&ends_cond, &ends_mutex, &until);
	}
	pthread_mutex_unlock(&ends_mutex);
	return NULL;
}

/*
 * iq_restore_share
 *		What the restore consumer, and the standby consumer, may queue of a
 *		bound of the restore's share of the budget: all of it without
 *		standbys, half each with them; never below floor.
 */
int
iq_restore_share(int whole, int floor)
{
	return Max(iq_w->cfg.standby_replicas == 0 ? whole : whole / 2, floor);
}

/*
 * iq_standby_start
 *		The standby consumer and the ends' thread, when standbys are asked
 *		for; false with *err.
 */
bool
iq_standby_start(char **err)
{
	char		group[600];
	rd_kafka_conf_t *conf;

	memset(kept, 0, sizeof(kept));
	memset(watched, 0, sizeof(watched));
	placed_generation = 0;
	if (iq_w->cfg.standby_replicas == 0)
		return true;

	/* never joined: librdkafka wants a group for a consumer queue */
	snprintf(group, sizeof(group), "%s-standby", iq_w->cfg.app_id);
	/* half of the restore's share (memory.c): the two may read at once */
	conf = iq_consumer_conf_new(group, STANDBY_FETCH_WAIT_MS,
								iq_restore_share(iq_w->mem.restore_queue_kbytes, 256),
								iq_restore_share(iq_w->mem.restore_queue_messages, 1000),
								iq_restore_share(iq_w->mem.restore_fetch_bytes, 16 * 1024), err);
	if (conf == NULL)
		return false;
	iq_w->standby = iq_kafka_new(RD_KAFKA_CONSUMER, conf, IQ_H_STANDBY, err);
	if (iq_w->standby == NULL)
		return false;
	rd_kafka_poll_set_consumer(iq_w->standby);
	queue = rd_kafka_queue_get_consumer(iq_w->standby);
	batch_size = Max(iq_w->mem.restore_batch / 2, 500);
	msgs = MemoryContextAlloc(TopMemoryContext, sizeof(rd_kafka_message_t *) * batch_size);

	/* the same ends as the standby consumer's: its last stable offsets */
	conf = iq_conf_new(err);
	if (conf == NULL)
		return false;
	if (!iq_conf_set(conf, "isolation.level", "read_committed", err))
	{
		rd_kafka_conf_destroy(conf);
		return false;
	}
	ends_rk = iq_kafka_new(RD_KAFKA_CONSUMER, conf, IQ_H_STANDBY_ENDS, err);
	if (ends_rk == NULL)
		return false;

	strlcpy(ends_topic, iq_w->cfg.order_topic, sizeof(ends_topic));
	ends_stop = false;
	if (iq_thread_create(&ends_thread, NULL, ends_main, ends_rk) != 0)
	{
		*err = strdup("could not start the thread that follows the standbys' input ends");
		return false;
	}
	ends_running = true;
	pthread_rwlock_wrlock(&fresh_lock);
	fresh_rk = ends_rk;
	pthread_rwlock_unlock(&fresh_lock);
	iq_store_set_standby_end_fn(fresh_end);
	return true;
}

/*
 * drop
 *		Stop keeping p.  close: it is not becoming this instance's own, so
 *		its database is closed, its files kept as a released partition's
 *		are; otherwise it stays open for the owner's restore, which goes on
 *		from the standby's checkpoint.
 */
static void
drop(int p, bool close)
{
	IqPart	   *part = &iq_w->parts[p];

	kept[p] = false;
	iq_catch_up_end(p);
	__atomic_store_n(&watched[p], false, __ATOMIC_RELAXED);
	part->stats.standby = false;
	if (iq_store_is_standby(p))
	{
		iq_store_set_standby(p, false);
		if (close && !part->assigned)
		{
			iq_step(IQ_STEP_CLOSING, p);
			iq_store_close(p);
		}
	}
}

/*
 * iq_standby_stop
 *		Drop every standby, the thread and the consumer.
 */
void
iq_standby_stop(void)
{
	/* no reader asks the broker through the consumer about to go */
	iq_store_set_standby_end_fn(NULL);
	pthread_rwlock_wrlock(&fresh_lock);
	fresh_rk = NULL;
	pthread_rwlock_unlock(&fresh_lock);
	if (ends_running)
	{
		pthread_mutex_lock(&ends_mutex);
		ends_stop = true;
		pthread_cond_signal(&ends_cond);
		pthread_mutex_unlock(&ends_mutex);
		pthread_join(ends_thread, NULL);
		ends_running = false;
	}
	if (ends_rk != NULL)
	{
		iq_log_detach(IQ_H_STANDBY_ENDS);
		rd_kafka_destroy(ends_rk);
		ends_rk = NULL;
	}
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		if (kept[p])
			drop(p, true);
	if (queue != NULL)
	{
		rd_kafka_queue_destroy(queue);
		queue = NULL;
	}
	if (msgs != NULL)
	{
		pfree(msgs);
		msgs = NULL;
	}
	if (iq_w->standby == NULL)
		return;
	rd_kafka_assign(iq_w->standby, NULL);
	iq_log_detach(IQ_H_STANDBY);
	rd_kafka_destroy_flags(iq_w->standby, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
	iq_w->standby = NULL;
}

/*
 * reassign
 *		Point the consumer at every standby's changelog and customer
 *		partitions, from their checkpoints; false after iq_fail().
 */
static bool
reassign(void)
{
	rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(8);
	rd_kafka_resp_err_t err;

	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		if (!kept[p])
			continue;
		rd_kafka_topic_partition_list_add(list, iq_w->cfg.changelog_topic, p)->offset =
			positions[p].changelog_next >= 0 ? positions[p].changelog_next : RD_KAFKA_OFFSET_BEGINNING;
		rd_kafka_topic_partition_list_add(list, iq_w->cfg.customer_topic, p)->offset =
			positions[p].customer_next >= 0 ? positions[p].customer_next : RD_KAFKA_OFFSET_BEGINNING;
	}
	err = rd_kafka_assign(iq_w->standby, list);
	rd_kafka_topic_partition_list_destroy(list);
	if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		iq_fail("could not read the changelog for standby replicas: %s", rd_kafka_err2str(err));
		return false;
	}
	return true;
}

/*
 * iq_standby_release
 *		Partition p is assigned to this instance: its standby, if kept,
 *		becomes the owner's store (rebalance.c restores what it lacks).
 */
void
iq_standby_release(int p)
{
	if (p < 0 || p >= IQ_MAX_PARTITIONS || !kept[p])
		return;
	drop(p, false);
	ereport(LOG,
			(errmsg("iq_fdw worker: partition %d is assigned to this instance, which kept its standby replica up to changelog offset %lld",
					p, (long long) positions[p].changelog_next)));
	if (iq_w->standby != NULL)
		reassign();
}

/* iq_standby_kept: whether p is a standby replica here (main thread) */
bool
iq_standby_kept(int p)
{
	return p >= 0 && p < IQ_MAX_PARTITIONS && kept[p];
}

/*
 * keep
 *		Open p's store as a standby, from its checkpoint; false after
 *		iq_fail().
 */
static bool
keep(int p)
{
	IqPart	   *part = &iq_w->parts[p];
	bool		existed = false;

	iq_step(IQ_STEP_OPENING, p);
	if (!iq_restore_open(p, &positions[p], &existed))
		return false;
	if (!existed)
	{
		positions[p].changelog_next = -1;
		positions[p].customer_next = -1;
		positions[p].order_next = -1;
	}
	mark_end[p] = -1;
	iq_catch_up_begin(p, positions[p].changelog_next, positions[p].customer_next);
	iq_store_set_standby(p, true);
	iq_store_set_position(p, positions[p].order_next, -1);
	kept[p] = true;
	__atomic_store_n(&order_end[p], -1, __ATOMIC_RELAXED);
	__atomic_store_n(&watched[p], true, __ATOMIC_RELAXED);
	part->stats.standby = true;
	part->stats.order_offset = positions[p].order_next;
	part->stats.order_end = -1;
	part->stats.changelog_offset = positions[p].changelog_next - 1;
	part->stats.customer_offset = positions[p].customer_next;
	return true;
}

/*
 * place
 *		Keep what the ownership places here, drop what it no longer does.
 *		While the group moves partitions its ownership can be partial: then
 *		standbys are added, never dropped (they are what answers meanwhile).
 */
static void
place(void)
{
	IqOwnership *o;
	bool		want[IQ_MAX_PARTITIONS];
	bool		complete;
	bool		changed = false;

	/* every main-loop turn: no copy of the ownership unless it moved */
	if (iq_ownership_generation() == placed_generation)
		return;
	o = palloc(sizeof(IqOwnership));
	iq_ownership_snapshot(o);
	complete = o->partition_count > 0 && o->partition_count == iq_w->partition_count;
	memset(want, 0, sizeof(want));
	for (int p = 0; p < o->partition_count && p < IQ_MAX_PARTITIONS; p++)
	{
		if (o->owner[p] < 0)
			complete = false;
		else if (o->self >= 0 && o->owner[p] != o->self && !iq_w->parts[p].assigned)
			want[p] = iq_standby_is_member(o->members, o->nmembers, o->owner,
										   o->partition_count, p,
										   iq_w->cfg.standby_replicas, o->self);
	}
	for (int p = 0; p < IQ_MAX_PARTITIONS && !iq_w->failed; p++)
	{
		if (want[p] && !kept[p] && !iq_w->parts[p].assigned)
		{
			if (!keep(p))
				break;
			changed = true;
		}
		else if (!want[p] && kept[p] && (complete || iq_w->parts[p].assigned))
		{
			drop(p, !iq_w->parts[p].assigned);
			changed = true;
		}
	}
	if (!iq_w->failed)
		placed_generation = o->generation;
	pfree(o);
	if (changed && !iq_w->failed && reassign())
		iq_stats_publish();
}

/*
 * take_mark
 *		The order position a flush's last record carries.
 */
static void
take_mark(int p, const rd_kafka_message_t *m)
{
	int64		next;
	int64		end;

	if (!iq_changelog_mark(m, &next, &end))
		return;
	positions[p].order_next = next;
	mark_end[p] = end;
}

/*
 * apply
 *		n records into one write batch per partition, each with the
 *		checkpoint it reached; false after iq_fail().
 */
static bool
apply(int n)
{
	IqStoreBatch *batch[IQ_MAX_PARTITIONS] = {0};
	bool		ok = true;

	for (int i = 0; i < n; i++)
	{
		rd_kafka_message_t *m = msgs[i];
		int			p = m->partition;
		bool		changelog;
		IqStoreId	store;

		if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR || p < 0 || p >= IQ_MAX_PARTITIONS ||
			!kept[p])
		{
			/* an error is librdkafka's to retry; a dropped standby's leftovers */
			rd_kafka_message_destroy(m);
			continue;
		}
		changelog = strcmp(rd_kafka_topic_name(m->rkt), iq_w->cfg.changelog_topic) == 0;
		store = changelog ? IQ_STORE_ORDER_COUNT : IQ_STORE_CUSTOMER;
		if (batch[p] == NULL)
			batch[p] = iq_store_batch_begin(p);
		if (m->key == NULL)
			;					/* dropped, as the stream drops it */
		else if (m->payload == NULL)
			iq_store_batch_delete(batch[p], store, m->key, m->key_len);
		else if (changelog && m->len != 8)
			iq_w->parts[p].stats.dropped_malformed++;
		else
			iq_store_batch_put(batch[p], store, m->key, m->key_len, m->payload, m->len);
		if (changelog)
		{
			positions[p].changelog_next = m->offset + 1;
			take_mark(p, m);
		}
		else
			positions[p].customer_next = m->offset + 1;
		iq_w->parts[p].stats.standby_applied++;
		rd_kafka_message_destroy(m);
	}
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		char	   *err = NULL;
		IqPart	   *part = &iq_w->parts[p];

		if (batch[p] == NULL)
			continue;
		iq_store_batch_checkpoint(batch[p], &positions[p]);
		if (ok && !iq_store_batch_commit(batch[p], &err))
		{
			iq_fail("could not write the standby replica of partition %d under iq_fdw.state_dir: %s",
					p, err ? err : "?");
			free(err);
			ok = false;
		}
		/* the order offset is publish_positions' */
		part->stats.changelog_offset = positions[p].changelog_next - 1;
		part->stats.customer_offset = positions[p].customer_next;
	}
	return ok;
}

/*
 * publish_positions
 *		What readers and iq_stats see of each standby: the input it covers
 *		and the end of that input, the later of the mark's and the broker's;
 *		and, in the log, how far a standby is in catching up (catch_up.c).
 *		A standby that has read no mark yet (a partition its owner has not
 *		flushed since: no order at all, or none since the checkpoint it
 *		started from) claims to cover offset 0: whatever counts it holds are
 *		true for some later point, so its lag is the whole partition at
 *		most, never less than the truth.
 */
static void
publish_positions(void)
{
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		int64		end;
		int64		covered = Max(positions[p].order_next, 0);

		if (!kept[p])
			continue;
		end = Max(mark_end[p], __atomic_load_n(&order_end[p], __ATOMIC_RELAXED));
		iq_store_set_position(p, covered, end);
		iq_w->parts[p].stats.order_offset = covered;
		iq_w->parts[p].stats.order_end = end;
		iq_catch_up_tick(iq_w->standby, p, positions[p].changelog_next,
						 positions[p].customer_next);
	}
}

/*
 * iq_standby_tick
 *		Main loop: place the standbys, then apply what came for them, a few
 *		batches at most so that the stream's own polls keep their pace.
 */
void
iq_standby_tick(void)
{
	if (iq_w->standby == NULL || iq_w->failed)
		return;
	place();
	for (int round = 0; round < ROUND_BATCHES && !iq_w->failed; round++)
	{
		ssize_t		n = rd_kafka_consume_batch_queue(queue, 0, msgs, batch_size);

		if (n <= 0)
			break;
		if (!apply((int) n))
			break;
		if (n < batch_size)
			break;
	}
	publish_positions();
}

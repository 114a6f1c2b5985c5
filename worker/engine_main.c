/*-------------------------------------------------------------------------
 * engine_main.c
 *	  The stream engine's main loop, in the process the supervisor forked
 *	  (engine_process.c), detached from PostgreSQL's shared memory.
 *
 * One wait (iq_engine_wait) that ends on a signal, the consumer's pipe or
 * the postmaster's death; a reload check.  SIGTERM stops cleanly (commit,
 * leave the group, close the stores); a reload that changes a worker
 * setting stops cleanly too and exits with IQ_ENGINE_EXIT_RELOAD, so that
 * the supervisor starts an engine with the new settings at once.
 *
 * Nothing Kafka, RocksDB or the network does ends the process: a failure
 * tears the pipeline down (state.h), shows the state "error" with a
 * message that names the cause and the setting, and retries with backoff.
 * The wait is on the latch and on a pipe that librdkafka writes when the
 * consumer queue becomes non-empty, so records are taken as soon as they
 * arrive and at full speed while they keep coming.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <unistd.h>

#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "common/value_cache.h"
#include "worker/config.h"
#include "worker/engine_process.h"
#include "worker/kafka_conf.h"
#include "worker/ownership.h"
#include "worker/serve/servers.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stop_watchdog.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/stream.h"

/* the longest wait for records on an idle pipeline */
#define IDLE_WAIT_MS		100
/* the longest a poll gathers records before they are counted */
#define POLL_BUDGET_MS		100
/* how often progress is published while nothing comes */
#define STATS_INTERVAL_MS	1000
/* how often freed memory is given back to the system */
#define RELEASE_INTERVAL_MS	5000

static bool pipeline_up = false;
static IqBackoff pipeline_backoff = IQ_BACKOFF_INIT;
static rd_kafka_message_t **poll_msgs;	/* a poll's records, batch_max of them */
static int64 last_stats = 0;
static int64 last_release = 0;

/*
 * pipeline_stop
 *		Give the partitions up (committing what is done unless we failed),
 *		leave the group, drop the producers and close every store.
 */
static void
pipeline_stop(void)
{
	iq_stop_watchdog_arm(IQ_STOP_DEADLINE_MS);
	iq_step(IQ_STEP_STOPPING, -1);
	iq_rebalance_revoke();
	iq_consumer_stop();
	iq_producer_stop();
	iq_restorer_stop();
	iq_standby_stop();
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
	{
		if (!iq_store_is_open(p))
			continue;
		iq_step(IQ_STEP_CLOSING, p);
		iq_store_close(p);
	}
	iq_cache_clear();
	iq_stats_clear();
	iq_ownership_clear();
	iq_drain_logs();
	pipeline_up = false;
	iq_step(IQ_STEP_IDLE, -1);
	iq_stop_watchdog_disarm();
}

/*
 * pipeline_start
 *		Producer, topics, restorer, consumer; false with *err.
 */
static bool
pipeline_start(char **err)
{
	int			n = 0;

	iq_w->failed = false;
	iq_w->broker_error = false;
	iq_step(IQ_STEP_STARTING, -1);
	iq_set_worker_state(IQ_WORKER_STARTING, "connecting to Kafka at %s", iq_w->cfg.brokers);
	if (!iq_producer_start(err))
		return false;
	if (!iq_changelog_ensure_topic(&n, err))
		return false;
	iq_w->partition_count = n;
	iq_store_set_partition_count(n);
	if (!iq_restorer_start(err))
		return false;
	if (!iq_standby_start(err))
		return false;
	if (!iq_consumer_start(iq_rebalance_cb, err))
		return false;
	iq_w->admin_q = rd_kafka_queue_new(iq_w->consumer);
	iq_w->ownership_due = true;
	iq_w->error_state = false;
	iq_stats_publish();
	iq_set_worker_state(IQ_WORKER_REBALANCING, "joining group \"%s\"", iq_w->cfg.app_id);
	pipeline_up = true;
	return true;
}

/*
 * pipeline_try_start
 *		Build the pipeline if it is down and its next try is due; a start
 *		that fails is torn down at once, without committing anything.
 */
static void
pipeline_try_start(int64 now)
{
	char	   *err = NULL;

	if (pipeline_up || !iq_backoff_due(&pipeline_backoff, now))
		return;
	if (!pipeline_start(&err))
	{
		iq_set_worker_state(IQ_WORKER_ERROR, "%s", err ? err : iq_w->failure);
		free(err);
		iq_w->failed = true;	/* no commit on the way down */
		pipeline_stop();
		iq_backoff_failed(&pipeline_backoff, iq_now_ms());
	}
}

/*
 * pipeline_poll
 *		One poll of the pipeline: count what came (or flush when idle),
 *		serve the producer's reports, publish progress, show what the
 *		broker's errors say.  Returns how many records came.
 */
static int
pipeline_poll(int64 now)
{
	int			n;

	iq_step(IQ_STEP_POLLING, -1);
	n = iq_consumer_poll(poll_msgs, iq_w->mem.batch_max,
						 Min(iq_w->cfg.commit_interval_ms, POLL_BUDGET_MS));
	if (n > 0 && !iq_w->failed)
	{
		iq_step(IQ_STEP_COUNTING, -1);
		iq_topology_process(poll_msgs, n);
	}
	else
	{
		for (int i = 0; i < n; i++)
			rd_kafka_message_destroy(poll_msgs[i]);
		iq_flush_idle();
	}
	if (iq_w->producer)
		rd_kafka_poll(iq_w->producer, 0);
	if (n > 0 || now - last_stats > STATS_INTERVAL_MS)
	{
		iq_consumer_refresh_ends();
		iq_stats_publish();
		last_stats = now;
		if (n > 0 && iq_w->error_state && !iq_w->failed)
		{
			iq_w->error_state = false;
			iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
		}
	}
	if (iq_w->broker_error && !iq_w->failed)
	{
		char		why[IQ_MESSAGE_LEN];

		iq_broker_failure(why, sizeof(why), RD_KAFKA_RESP_ERR_NO_ERROR);
		iq_w->broker_error = false;
		iq_w->error_state = true;
		iq_set_worker_state(IQ_WORKER_ERROR, "%s", why);
	}
	iq_ownership_tick();
	iq_standby_tick();
	return n;
}

/*
 * pipeline_failed
 *		Tear down a pipeline that failed; unless the worker is stopping,
 *		show why and schedule the next try.
 */
static void
pipeline_failed(void)
{
	char		why[IQ_MESSAGE_LEN];

	strlcpy(why, iq_w->failure, sizeof(why));
	pipeline_stop();
	if (iq_got_sigterm)
		return;
	iq_set_worker_state(IQ_WORKER_ERROR, "%s", why);
	iq_backoff_failed(&pipeline_backoff, iq_now_ms());
}

/*
 * worker_cleanup
 *		before_shmem_exit: threads stop before the stores they read close.
 */
static void
worker_cleanup(int code, Datum arg)
{
	iq_servers_stop();

	/*
	 * With the postmaster gone there is no one to write for, and an orphan
	 * must not linger: the stores are closed, librdkafka's handles left to
	 * the exit (destroying a consumer that has not left its group waits
	 * for the broker inside librdkafka).
	 */
	if (pipeline_up && !iq_postmaster_gone())
		pipeline_stop();
	iq_store_shutdown();
	iq_vc_new_generation(iq_value_cache, -1);
	iq_set_worker_state(IQ_WORKER_STOPPED, NULL);
}

/*
 * worker_setup
 *		The worker's state, from the settings it runs with: the memory
 *		budget's split, its Kafka names, the consumer's wake-up pipe, the
 *		cleanup at exit.
 */
static void
worker_setup(void)
{
	iq_w = MemoryContextAllocZero(TopMemoryContext, sizeof(IqWorker));
	iq_worker_config_load(&iq_w->cfg, TopMemoryContext);
	iq_memory_plan((size_t) iq_w->cfg.memory_budget_mb * 1024 * 1024, &iq_w->mem);
	ereport(LOG,
			(errmsg("iq_fdw worker: iq_fdw.memory_budget split: block cache %zu MB, memtables %zu MB, key cache %zu MB, consumer queue %zu MB, batch %zu MB (%d records)",
					iq_w->mem.block_cache >> 20, iq_w->mem.memtables >> 20,
					iq_w->mem.key_cache >> 20, iq_w->mem.consumer_queue >> 20,
					iq_w->mem.batch >> 20, iq_w->mem.batch_max),
			 errdetail("iq_fdw.memory_budget is %d MB.", iq_w->cfg.memory_budget_mb)));
	iq_kafka_names();
	iq_kafka_log_versions();
	if (pipe2(iq_w->wake_fd, O_NONBLOCK | O_CLOEXEC) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("iq_fdw worker: could not create the consumer queue's wake-up pipe: %m")));
	poll_msgs = MemoryContextAlloc(TopMemoryContext,
								   sizeof(rd_kafka_message_t *) * iq_w->mem.batch_max);

	before_shmem_exit(worker_cleanup, 0);
	iq_set_worker_state(IQ_WORKER_STARTING, NULL);
	iq_ownership_init();
	iq_cache_init(iq_w->mem.key_cache);
}

/*
 * stores_init
 *		Set the stores up under iq_fdw.state_dir, waiting for as long as it
 *		takes (an error shown meanwhile) or until SIGTERM.
 */
static void
stores_init(void)
{
	char	   *err = NULL;

	iq_store_snapshot_budget((size_t) iq_w->cfg.scan_snapshot_memory_mb * 1024 * 1024);
	while (!iq_store_init(iq_w->cfg.state_dir, iq_w->mem.block_cache,
						  iq_w->mem.memtables, &err))
	{
		iq_set_worker_state(IQ_WORKER_ERROR, "state directory (iq_fdw.state_dir): %s", err);
		free(err);
		err = NULL;
		(void) iq_engine_wait(-1, IQ_BACKOFF_MAX_MS);
		if (iq_got_sigterm)
			proc_exit(0);
	}
}

/*
 * reload_if_asked
 *		After SIGHUP: the servers' limits apply at once; any other change
 *		of a setting the worker runs with stops it cleanly, to be started
 *		again with the new values, except the TLS files, which restart the
 *		HTTP server alone, and the access settings (iq_fdw.http_auth, its
 *		token, the allowed hosts), which apply at once.
 */
static void
reload_if_asked(void)
{
	if (!iq_engine_reload_pending)
		return;
	iq_engine_reload_pending = false;
	ProcessConfigFile(PGC_SIGHUP);
	iq_servers_apply_settings();	/* the servers' limits: no restart */
	if (iq_worker_config_changed(&iq_w->cfg))
	{
		ereport(LOG,
				(errmsg("iq_fdw worker: restarting to apply changed iq_fdw settings")));
		iq_got_sigterm = true;	/* a stop, with a stop's deadline */
		proc_exit(IQ_ENGINE_EXIT_RELOAD);	/* worker_cleanup stops everything first */
	}
	iq_servers_reload_listen();	/* an address no longer allowed: servers down first */
	iq_servers_reload_tls();	/* new TLS files: the HTTP server alone restarts */
	iq_servers_reload_access(); /* who may call: no restart */
}

/*
 * housekeeping
 *		librdkafka's logs into the server log; now and then, memory freed
 *		by the allocator back to the system.
 */
static void
housekeeping(int64 now)
{
	iq_drain_logs();
	if (now - last_release > RELEASE_INTERVAL_MS)
	{
		iq_memory_release();
		last_release = now;
	}
}

/*
 * wait_for_work
 *		After a poll of n records: more may be behind them, taken without
 *		sleeping; after none, wait for a signal and, with the pipeline up,
 *		for the consumer queue's wake-up pipe.
 */
static void
wait_for_work(int n, int64 now)
{
	int64		timeout;

	if (n > 0)
		return;
	timeout = pipeline_up ? IDLE_WAIT_MS :
		Min(IDLE_WAIT_MS * 5, Max(pipeline_backoff.retry_at - now, 1));
	(void) iq_engine_wait(pipeline_up ? iq_w->wake_fd[0] : -1, timeout);
}

/*
 * iq_engine_main
 *		The engine, once its process is its own: set up, then loop until
 *		SIGTERM over the servers, the pipeline and a wait.
 */
void
iq_engine_main(void)
{
	/* before any thread exists: glibc reads these when it makes arenas */
	iq_memory_tune_malloc();
	iq_step(IQ_STEP_IDLE, -1);
	/* what an earlier engine cached may not be what this one restores */
	iq_vc_new_generation(iq_value_cache, -1);
	worker_setup();
	stores_init();

	while (!iq_got_sigterm)
	{
		int			n = 0;
		int64		now = iq_now_ms();

		reload_if_asked();
		/* without the postmaster no one can use what we do */
		if (iq_postmaster_gone())
			proc_exit(1);
		iq_servers_try_start(now);
		pipeline_try_start(now);
		if (pipeline_up)
		{
			n = pipeline_poll(now);
			if (iq_w->failed)
			{
				pipeline_failed();
				if (iq_got_sigterm)
					break;
			}
			else if (n > 0)
				iq_backoff_reset(&pipeline_backoff);
		}
		housekeeping(now);
		iq_servers_show_failure();
		if (!pipeline_up)
			iq_step(IQ_STEP_IDLE, -1);
		wait_for_work(n, now);
	}

	ereport(LOG, (errmsg("iq_fdw engine: shutting down")));
	(void) iq_wait_slice(0, IQ_WAIT_LEAVE);	/* the stop's deadline starts now */
	proc_exit(0);
}

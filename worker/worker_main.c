/*-------------------------------------------------------------------------
 * worker_main.c
 *	  The stream worker's entry point and main loop.
 *
 * worker_spi's discipline: signal handlers before unblocking signals, one
 * WaitLatch loop that exits on postmaster death, CHECK_FOR_INTERRUPTS, and
 * a reload check.  SIGTERM stops cleanly (commit, leave the group, close
 * the stores); a reload that changes a worker setting stops cleanly too and
 * exits with 1 so the postmaster starts a worker with the new settings.
 *
 * Nothing Kafka, RocksDB or the network does ends the process: a failure
 * tears the pipeline down (worker.h), shows the state "error" with a
 * message that names the cause and the setting, and retries with backoff.
 * The wait is on the latch and on a pipe that librdkafka writes when the
 * consumer queue becomes non-empty, so records are taken as soon as they
 * arrive and at full speed while they keep coming.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "common/settings.h"
#include "common/value_cache.h"
#include "worker/kafka_conf.h"
#include "worker/ownership.h"
#include "worker/serve/servers.h"
#include "worker/state.h"
#include "worker/stats.h"
#include "worker/stream/key_cache.h"
#include "worker/stream/stream.h"

#define IDLE_WAIT_MS		100
/* the longest a poll gathers records before they are counted */
#define POLL_BUDGET_MS		100
/* Kafka Streams' defaults of commit.interval.ms */
#define KSTREAMS_COMMIT_INTERVAL_MS		30000
#define KSTREAMS_EOS_COMMIT_INTERVAL_MS	100
#define BACKOFF_MIN_MS		1000
#define BACKOFF_MAX_MS		30000
#define RELEASE_INTERVAL_MS	5000

PGDLLEXPORT void iq_worker_main(Datum main_arg);


static bool pipeline_up = false;
static int64 retry_at = 0;
static int	backoff_ms = BACKOFF_MIN_MS;
static bool servers_up = false;
static int64 servers_retry_at = 0;
static int	servers_backoff_ms = BACKOFF_MIN_MS;
static char servers_error[IQ_MESSAGE_LEN] = "";

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	iq_got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}


/*
 * http_threads_per_cpu
 *		The default pool.  A server thread is an event loop that hands
 *		forwarded gets to the forwarder thread, so beyond one per CPU more
 *		threads only add switches between them (a fifth fewer local gets
 *		a second with 4 than with 2 on 2 CPUs).  Two at least, because a
 *		?scope=all gather waits on its peers in the thread serving it.
 */
static int
http_threads_per_cpu(void)
{
	long		cpus = sysconf(_SC_NPROCESSORS_ONLN);
	cpu_set_t	allowed;

	/* the CPUs this process may run on (a container's cpuset), if fewer */
	if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0 && CPU_COUNT(&allowed) > 0)
		cpus = CPU_COUNT(&allowed);

	return cpus < 2 ? 2 : (cpus > 64 ? 64 : (int) cpus);
}

/*
 * load_config
 *		The settings this worker runs with, copied into cxt so a reload can
 *		be compared against them.
 */
static void
load_config(IqWorkerConfig *c, MemoryContext cxt)
{
	MemoryContext old = MemoryContextSwitchTo(cxt);
	char	   *dir = iq_state_dir_path();

	c->brokers = pstrdup(iq_bootstrap_servers);
	c->app_id = pstrdup(iq_application_id);
	c->customer_topic = pstrdup(iq_customer_topic);
	c->order_topic = pstrdup(iq_order_topic);
	c->changelog_topic = iq_changelog_topic();
	c->state_dir = psprintf("%s/%s", dir, iq_application_id);
	c->http_listen = pstrdup(iq_http_listen);
	c->advertised = iq_advertised();
	c->partitioner = iq_partitioner;
	c->guarantee = iq_processing_guarantee;
	c->memory_budget_mb = iq_memory_budget_mb;
	c->http_threads = iq_http_threads > 0 ? iq_http_threads : http_threads_per_cpu();
	if (iq_commit_interval_ms >= 0)
		c->commit_interval_ms = iq_commit_interval_ms;
	else
		c->commit_interval_ms = c->guarantee == IQ_EXACTLY_ONCE ?
			KSTREAMS_EOS_COMMIT_INTERVAL_MS : KSTREAMS_COMMIT_INTERVAL_MS;
	pfree(dir);
	MemoryContextSwitchTo(old);
}

/*
 * config_changed
 *		Whether a reload changed a setting the worker runs with.  The new
 *		values are loaded into a context of their own and freed with it:
 *		SIGHUP comes as often as anyone likes.
 */
static bool
config_changed(void)
{
	IqWorkerConfig n;
	IqWorkerConfig *o = &iq_w->cfg;
	bool		changed;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "iq_fdw reload",
											  ALLOCSET_SMALL_SIZES);

	load_config(&n, cxt);
	changed = strcmp(n.brokers, o->brokers) != 0 ||
		strcmp(n.app_id, o->app_id) != 0 ||
		strcmp(n.customer_topic, o->customer_topic) != 0 ||
		strcmp(n.order_topic, o->order_topic) != 0 ||
		strcmp(n.state_dir, o->state_dir) != 0 ||
		strcmp(n.http_listen, o->http_listen) != 0 ||
		strcmp(n.advertised, o->advertised) != 0 ||
		n.partitioner != o->partitioner ||
		n.guarantee != o->guarantee ||
		n.memory_budget_mb != o->memory_budget_mb ||
		n.http_threads != o->http_threads ||
		n.commit_interval_ms != o->commit_interval_ms;
	MemoryContextDelete(cxt);
	return changed;
}

/*
 * pipeline_stop
 *		Leave the group (committing what is done unless we failed), drop
 *		the producers and close every store.
 */
static void
pipeline_stop(void)
{
	iq_step(IQ_STEP_STOPPING, -1);
	iq_consumer_stop();
	iq_producer_stop();
	iq_restorer_stop();
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
	if (!iq_consumer_start(err))
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
 * servers_start
 *		HTTP and the local socket, once the stores are set up.
 */
static bool
servers_start(char **err)
{
	IqServerConfig sc;
	char		buf[IQ_MESSAGE_LEN];	/* no palloc: a failed start repeats for ever */

	memset(&sc, 0, sizeof(sc));
	if (!iq_parse_host_port(iq_w->cfg.http_listen, sc.listen_host,
							sizeof(sc.listen_host), &sc.listen_port) ||
		!iq_parse_host_port(iq_w->cfg.advertised, sc.advertised_host,
							sizeof(sc.advertised_host), &sc.advertised_port))
	{
		*err = strdup("bad host:port");
		return false;
	}
	sc.threads = iq_w->cfg.http_threads;
	sc.peer_timeout_ms = iq_peer_timeout_ms;
	/* in the data directory, our working directory (local_server.c) */
	snprintf(sc.socket_path, sizeof(sc.socket_path), "iq_fdw.sock");
	iq_servers_apply_settings();

	if (!iq_http_start(&sc, err))
	{
		char	   *inner = *err;

		/* the server's own message may already name the setting */
		if (inner && strstr(inner, "iq_fdw.http_listen"))
			snprintf(buf, sizeof(buf), "%s", inner);
		else
			snprintf(buf, sizeof(buf), "HTTP server on %s (iq_fdw.http_listen): %s",
					 iq_w->cfg.http_listen, inner ? inner : "?");
		free(inner);
		*err = strdup(buf);
		return false;
	}
	if (!iq_local_server_start(&sc, err))
	{
		char	   *inner = *err;

		iq_http_stop();
		snprintf(buf, sizeof(buf), "%s (in the data directory %s)",
				 inner ? inner : "local socket: ?", DataDir);
		free(inner);
		*err = strdup(buf);
		return false;
	}
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	strlcpy(iq_shared->local_socket, iq_local_server_path(), sizeof(iq_shared->local_socket));
	LWLockRelease(iq_shared->lock);
	return true;
}

static void
servers_stop(void)
{
	if (!servers_up)
		return;
	iq_step(IQ_STEP_SERVERS, -1);
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	iq_shared->local_socket[0] = '\0';
	LWLockRelease(iq_shared->lock);
	iq_local_server_stop();
	iq_http_stop();
	servers_up = false;
}

/*
 * worker_cleanup
 *		before_shmem_exit: threads stop before the stores they read close.
 */
static void
worker_cleanup(int code, Datum arg)
{
	servers_stop();

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
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	iq_shared->worker_pid = 0;
	LWLockRelease(iq_shared->lock);
	iq_set_worker_state(IQ_WORKER_STOPPED, NULL);
}

/*
 * servers_recovered
 *		The servers listen again: if the state shown is still their error,
 *		it was shown over "running" (see the main loop) and nothing has
 *		changed the state since, so the worker is running again.  Without
 *		this the error stayed until the next rebalance.
 */
static void
servers_recovered(void)
{
	if (servers_error[0] && iq_shared->state == IQ_WORKER_ERROR &&
		strcmp(iq_shared->message, servers_error) == 0)
		iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
	servers_error[0] = '\0';
}

static void
schedule_retry(void)
{
	retry_at = iq_now_ms() + backoff_ms;
	backoff_ms = Min(backoff_ms * 2, BACKOFF_MAX_MS);
}

/*
 * iq_worker_main
 *		Entry point of the stream worker.
 */
void
iq_worker_main(Datum main_arg)
{
	rd_kafka_message_t **msgs;
	char	   *err = NULL;
	int64		last_stats = 0;
	int64		last_release = 0;

	/* before any thread exists: glibc reads these when it makes arenas */
	iq_memory_tune_malloc();
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	BackgroundWorkerUnblockSignals();
	iq_shmem_attach();
	iq_step(IQ_STEP_IDLE, -1);
	/* what an earlier worker cached may not be what this one restores */
	iq_vc_new_generation(iq_value_cache, -1);

	iq_w = MemoryContextAllocZero(TopMemoryContext, sizeof(IqWorker));
	load_config(&iq_w->cfg, TopMemoryContext);
	iq_memory_plan((size_t) iq_w->cfg.memory_budget_mb * 1024 * 1024, &iq_w->mem);
	ereport(LOG,
			(errmsg("iq_fdw worker: iq_fdw.memory_budget %d MB: block cache %zu MB, memtables %zu MB, key cache %zu MB, consumer queue %zu MB, batch %zu MB (%d records)",
					iq_w->cfg.memory_budget_mb, iq_w->mem.block_cache >> 20,
					iq_w->mem.memtables >> 20, iq_w->mem.key_cache >> 20,
					iq_w->mem.consumer_queue >> 20, iq_w->mem.batch >> 20,
					iq_w->mem.batch_max)));
	snprintf(iq_w->client_id, sizeof(iq_w->client_id), "iq_fdw|%s", iq_w->cfg.advertised);
	snprintf(iq_w->transactional_id, sizeof(iq_w->transactional_id), "%s-%s",
			 iq_w->cfg.app_id, iq_w->cfg.advertised);
	for (char *c = iq_w->transactional_id + strlen(iq_w->cfg.app_id) + 1; *c; c++)
		if (!isalnum((unsigned char) *c) && *c != '.' && *c != '_' && *c != '-')
			*c = '_';
	if (pipe2(iq_w->wake_fd, O_NONBLOCK | O_CLOEXEC) != 0)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("iq_fdw worker: could not create a pipe: %m")));
	msgs = MemoryContextAlloc(TopMemoryContext, sizeof(rd_kafka_message_t *) * iq_w->mem.batch_max);

	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	iq_shared->worker_pid = MyProcPid;
	iq_shared->local_socket[0] = '\0';
	LWLockRelease(iq_shared->lock);
	before_shmem_exit(worker_cleanup, 0);
	iq_set_worker_state(IQ_WORKER_STARTING, NULL);
	iq_ownership_init();
	iq_cache_init(iq_w->mem.key_cache);

	while (!iq_store_init(iq_w->cfg.state_dir, iq_w->mem.block_cache,
						  iq_w->mem.memtables, &err))
	{
		iq_set_worker_state(IQ_WORKER_ERROR, "state directory (iq_fdw.state_dir): %s", err);
		free(err);
		err = NULL;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 BACKOFF_MAX_MS, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (iq_got_sigterm)
			proc_exit(0);
	}

	while (!iq_got_sigterm)
	{
		int			n = 0;
		int			events;
		int64		now = iq_now_ms();

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			iq_servers_apply_settings();	/* the servers' limits: no restart */
			if (config_changed())
			{
				ereport(LOG,
						(errmsg("iq_fdw worker: restarting to apply changed iq_fdw settings")));
				iq_got_sigterm = true;	/* a stop, with a stop's deadline */
				proc_exit(1);	/* worker_cleanup stops everything first */
			}
		}

		/* without the postmaster no one can use what we do */
		if (iq_postmaster_gone())
			proc_exit(1);

		if (!servers_up && now >= servers_retry_at)
		{
			iq_step(IQ_STEP_SERVERS, -1);
			if (servers_start(&err))
			{
				servers_up = true;
				servers_backoff_ms = BACKOFF_MIN_MS;
				servers_recovered();
			}
			else
			{
				/* shown over "running" below: see servers_recovered */
				strlcpy(servers_error, err, sizeof(servers_error));
				free(err);
				err = NULL;
				servers_retry_at = now + servers_backoff_ms;
				servers_backoff_ms = Min(servers_backoff_ms * 2, BACKOFF_MAX_MS);
			}
		}

		if (!pipeline_up && now >= retry_at)
		{
			if (!pipeline_start(&err))
			{
				iq_set_worker_state(IQ_WORKER_ERROR, "%s", err ? err : iq_w->failure);
				free(err);
				err = NULL;
				iq_w->failed = true;	/* no commit on the way down */
				pipeline_stop();
				schedule_retry();
			}
		}

		if (pipeline_up)
		{
			iq_step(IQ_STEP_POLLING, -1);
			n = iq_consumer_poll(msgs, iq_w->mem.batch_max,
								 Min(iq_w->cfg.commit_interval_ms, POLL_BUDGET_MS));
			if (n > 0 && !iq_w->failed)
			{
				iq_step(IQ_STEP_COUNTING, -1);
				iq_topology_process(msgs, n);
			}
			else
			{
				for (int i = 0; i < n; i++)
					rd_kafka_message_destroy(msgs[i]);
				iq_flush_idle();
			}
			if (iq_w->producer)
				rd_kafka_poll(iq_w->producer, 0);
			if (n > 0 || now - last_stats > 1000)
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
				iq_w->broker_error = false;
				iq_w->error_state = true;
				iq_set_worker_state(IQ_WORKER_ERROR,
									"cannot reach Kafka at %s (iq_fdw.bootstrap_servers): %s",
									iq_w->cfg.brokers, iq_w->broker_reason);
			}
			iq_ownership_tick();
			if (iq_w->failed)
			{
				char		why[IQ_MESSAGE_LEN];

				strlcpy(why, iq_w->failure, sizeof(why));
				pipeline_stop();
				if (iq_got_sigterm)
					break;
				iq_set_worker_state(IQ_WORKER_ERROR, "%s", why);
				schedule_retry();
			}
			else if (n > 0)
				backoff_ms = BACKOFF_MIN_MS;
		}
		iq_drain_logs();
		if (now - last_release > RELEASE_INTERVAL_MS)
		{
			iq_memory_release();
			last_release = now;
		}

		/*
		 * Stream processing goes on without the servers, but say they are
		 * down: over "running" only, so that the pipeline's own states and
		 * errors are never hidden, and servers_recovered knows what was
		 * under it.
		 */
		if (!servers_up && servers_error[0] && iq_shared->state == IQ_WORKER_RUNNING)
			iq_set_worker_state(IQ_WORKER_ERROR, "%s", servers_error);
		if (!pipeline_up)
			iq_step(IQ_STEP_IDLE, -1);

		/* more may be waiting: take it without sleeping */
		if (n == iq_w->mem.batch_max)
		{
			CHECK_FOR_INTERRUPTS();
			continue;
		}
		events = WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH;
		if (pipeline_up && n == 0)
			events |= WL_SOCKET_READABLE;
		if (n == 0)
			(void) WaitLatchOrSocket(MyLatch, events, iq_w->wake_fd[0],
									 pipeline_up ? IDLE_WAIT_MS : Min(IDLE_WAIT_MS * 5, Max(retry_at - now, 1)),
									 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}

	ereport(LOG, (errmsg("iq_fdw worker: shutting down")));
	(void) iq_wait_slice(0, IQ_WAIT_LEAVE);	/* the stop's deadline starts now */
	proc_exit(0);
}

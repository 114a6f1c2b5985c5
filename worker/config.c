/*-------------------------------------------------------------------------
 * config.c
 *	  The settings the worker runs with, and whether a reload changed them.
 *
 * The worker copies its settings once, at start: a reload that changes one
 * of them stops the worker cleanly so that the postmaster starts one with
 * the new values (engine_main.c), rather than rebuilding a pipeline under
 * settings that moved beneath it.  The Kafka properties file counts as a
 * setting: its contents are read at start and again at every reload.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sched.h>
#include <unistd.h>

#include "utils/memutils.h"

#include "common/settings.h"
#include "worker/config.h"

/* Kafka Streams' default of commit.interval.ms under at_least_once */
#define KSTREAMS_COMMIT_INTERVAL_MS		30000

/*
 * Ours under exactly_once: 1 s, not Kafka Streams' 100 ms.  Kafka Streams
 * sends its records as they are processed, so its transaction is open for
 * the whole interval and read_committed readers of its output wait for it:
 * the interval is their latency.  Ours are produced at the flush, so the
 * transaction is open only while the flush runs, and a worker that has
 * caught up flushes at once whatever the interval (flush.c): the interval
 * only bounds, under a backlog, how old the readable state may get and how
 * much input a crash consumes again.  The transaction's round trips cost
 * little (the same rate as at_least_once at equal intervals); what 100 ms
 * cost is coalescing: a flush of a backlog takes 0.1 to 0.4 s here, so at
 * 100 or 250 ms one followed every poll and wrote each key (2.3 times the
 * changelog records, 0.4 to 0.6 of at_least_once's rate).  At 1 s a flush
 * is a fraction of the interval and the rate is at_least_once's
 * (bench/ingest_eos.sh), while the state under a backlog stays within a
 * second, not 30.
 */
#define IQ_EOS_COMMIT_INTERVAL_MS		1000

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
 * iq_worker_config_load
 *		The settings this worker runs with, copied into cxt so a reload can
 *		be compared against them.
 */
void
iq_worker_config_load(IqWorkerConfig *c, MemoryContext cxt)
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
	c->scan_snapshot_memory_mb = iq_scan_snapshot_memory_mb;
	c->http_threads = iq_http_threads > 0 ? iq_http_threads : http_threads_per_cpu();
	if (iq_commit_interval_ms >= 0)
		c->commit_interval_ms = iq_commit_interval_ms;
	else
		c->commit_interval_ms = c->guarantee == IQ_EXACTLY_ONCE ?
			IQ_EOS_COMMIT_INTERVAL_MS : KSTREAMS_COMMIT_INTERVAL_MS;
	c->standby_replicas = iq_standby_replicas;
	c->rebalance_protocol = iq_rebalance_protocol;
	iq_kafka_props_load(&c->kafka_props, iq_kafka_properties_file);
	pfree(dir);
	MemoryContextSwitchTo(old);
}

/*
 * iq_worker_config_changed
 *		Whether the settings now in force differ from o, those running.  The
 *		new values are loaded into a context of their own and freed with
 *		it: SIGHUP comes as often as anyone likes.
 */
bool
iq_worker_config_changed(const IqWorkerConfig *o)
{
	IqWorkerConfig n;
	bool		changed;
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext, "iq_fdw reload",
											  ALLOCSET_SMALL_SIZES);

	iq_worker_config_load(&n, cxt);
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
		n.scan_snapshot_memory_mb != o->scan_snapshot_memory_mb ||
		n.http_threads != o->http_threads ||
		n.commit_interval_ms != o->commit_interval_ms ||
		n.standby_replicas != o->standby_replicas ||
		n.rebalance_protocol != o->rebalance_protocol ||
		iq_kafka_props_differ(&n.kafka_props, &o->kafka_props);
	iq_kafka_props_forget(&n.kafka_props);
	MemoryContextDelete(cxt);
	return changed;
}

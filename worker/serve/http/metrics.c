/*-------------------------------------------------------------------------
 * metrics.c
 *	  GET /metrics: the instance's numbers in Prometheus' text format
 *	  (version 0.0.4), for a scraper.
 *
 * What it shows, by source:
 *	- per partition held here (as iq_stats(): owned or kept as a standby,
 *	  label role), the numbers of shared memory (stats_view.c): records
 *	  processed, joins, drops by kind, lag per input topic, changelog
 *	  offset, restore progress, state rebuilds;
 *	- the worker's state as a labelled gauge, and seconds in it;
 *	- flushes, their duration, changelog records produced, HTTP requests
 *	  by route and status with their latency, forwarded gets and failures
 *	  by peer (worker/counters.c);
 *	- the value cache's hits and misses (common/value_cache.c);
 *	- RocksDB's memtable, SST and pending compaction sizes per partition
 *	  and store, read under the partition's lock (worker/store/read.c),
 *	  and with iq_fdw.rocksdb_statistics its block cache hits and misses
 *	  and write stalls per partition;
 *	- the process's resident memory and iq_fdw.memory_budget.
 * Everything is read with atomic loads or the seqlock, never a PostgreSQL
 * call: this runs in a server thread.  Label values are fixed names,
 * numbers, or a peer's host:port (escaped); never a key.
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include "worker/counters.h"
#include "worker/serve/http/http_internal.h"
#include "worker/store/store.h"

#define CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

static void put(IqBuf *out, const char *fmt,...) __attribute__((format(printf, 2, 3)));

/* put: append formatted text (lines are short; a long one is cut, never overrun) */
static void
put(IqBuf *out, const char *fmt,...)
{
	char		line[1024];
	va_list		ap;
	int			n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t) n >= sizeof(line))
		n = sizeof(line) - 1;
	iq_buf_append(out, line, (size_t) n);
}

/* family: the HELP and TYPE lines of a metric */
static void
family(IqBuf *out, const char *name, const char *type, const char *help)
{
	put(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* label_escape: a label value as the format wants it (\\, \", \n) */
static void
label_escape(const char *in, char *out, size_t size)
{
	size_t		o = 0;

	for (; *in && o + 2 < size; in++)
	{
		if (*in == '\\' || *in == '"' || *in == '\n')
		{
			out[o++] = '\\';
			out[o++] = *in == '\n' ? 'n' : *in;
		}
		else
			out[o++] = *in;
	}
	out[o] = '\0';
}

/* histogram: one histogram's samples, cumulative buckets, sum and count */
static void
histogram(IqBuf *out, const char *name, const char *labels, const IqHistogram *h,
		  const double *bounds, int nbounds)
{
	uint64_t	counts[IQ_HIST_MAX_BOUNDS + 1];
	uint64_t	sum_ns;
	uint64_t	cumulative = 0;
	const char *sep = labels[0] ? "," : "";

	iq_histogram_read(h, nbounds, counts, &sum_ns);
	for (int i = 0; i <= nbounds; i++)
	{
		cumulative += counts[i];
		if (i < nbounds)
			put(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, bounds[i],
				(unsigned long long) cumulative);
		else
			put(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep,
				(unsigned long long) cumulative);
	}
	if (labels[0])
	{
		put(out, "%s_sum{%s} %.9f\n", name, labels, sum_ns / 1e9);
		put(out, "%s_count{%s} %llu\n", name, labels, (unsigned long long) cumulative);
	}
	else
	{
		put(out, "%s_sum %.9f\n", name, sum_ns / 1e9);
		put(out, "%s_count %llu\n", name, (unsigned long long) cumulative);
	}
}

/* lag: records of a topic not yet consumed; -1 offsets are nothing consumed */
static int64_t
lag(int64_t offset, int64_t end)
{
	if (end < 0)
		return 0;
	if (offset < 0)
		offset = 0;
	return end > offset ? end - offset : 0;
}

#define PART_LABELS "partition=\"%d\",role=\"%s\""
#define ROLE(ps) ((ps)->standby ? "standby" : "owner")

/* a counter or gauge of every partition, from one field */
#define PER_PARTITION(out, v, name, type, help, field) \
	do { \
		family(out, name, type, help); \
		for (int i_ = 0; i_ < (v)->npartitions; i_++) \
		{ \
			const IqHttpPartitionStats *ps_ = &(v)->partitions[i_]; \
			put(out, name "{" PART_LABELS "} %lld\n", ps_->partition, ROLE(ps_), \
				(long long) ps_->field); \
		} \
	} while (0)

static void
partitions(IqBuf *out, const IqHttpWorkerView *v)
{
	static const char *const kinds[] = {"null_key", "malformed", "unprocessable",
	"wrong_partition"};

	PER_PARTITION(out, v, "iq_records_processed_total", "counter",
				  "Input records processed (customer and order), since the worker started.",
				  records_processed);
	PER_PARTITION(out, v, "iq_orders_joined_total", "counter",
				  "Orders joined with their customer.", orders_joined);
	PER_PARTITION(out, v, "iq_orders_without_customer_total", "counter",
				  "Orders whose customer was not known.", orders_without_customer);

	family(out, "iq_records_dropped_total", "counter", "Input records dropped, by kind.");
	for (int i = 0; i < v->npartitions; i++)
	{
		const IqHttpPartitionStats *ps = &v->partitions[i];
		int64_t		n[] = {ps->dropped_null_key, ps->dropped_malformed,
		ps->dropped_unprocessable, ps->wrong_partition};

		for (int k = 0; k < 4; k++)
			put(out, "iq_records_dropped_total{" PART_LABELS ",kind=\"%s\"} %lld\n",
				ps->partition, ROLE(ps), kinds[k], (long long) n[k]);
	}

	family(out, "iq_consumer_lag_records", "gauge",
		   "Records of the input topic not consumed yet (end offset - offset); "
		   "a standby's is on the order topic only, once known.");
	for (int i = 0; i < v->npartitions; i++)
	{
		const IqHttpPartitionStats *ps = &v->partitions[i];

		if (!ps->standby)
			put(out, "iq_consumer_lag_records{" PART_LABELS ",topic=\"customer\"} %lld\n",
				ps->partition, ROLE(ps),
				(long long) lag(ps->customer_offset, ps->customer_end));
		if (!ps->standby || (ps->order_end >= 0 && ps->order_offset >= 0))
			put(out, "iq_consumer_lag_records{" PART_LABELS ",topic=\"order\"} %lld\n",
				ps->partition, ROLE(ps), (long long) lag(ps->order_offset, ps->order_end));
	}

	PER_PARTITION(out, v, "iq_changelog_offset", "gauge",
				  "Last changelog offset written to the local state (-1: none).",
				  changelog_offset);
	PER_PARTITION(out, v, "iq_restore_records", "gauge",
				  "Records restored from the changelog by the current or last restore.",
				  restored_records);
	PER_PARTITION(out, v, "iq_restore_total_records", "gauge",
				  "Records the current or last restore had to read.", restore_total);
	PER_PARTITION(out, v, "iq_partition_restoring", "gauge",
				  "1 while the partition's state is being restored.", restoring);
	PER_PARTITION(out, v, "iq_state_rebuilds_total", "counter",
				  "Times the local state was found unusable and rebuilt.", state_rebuilds);
	PER_PARTITION(out, v, "iq_standby_applied_records_total", "counter",
				  "Changelog records a standby replica applied.", standby_applied);
}

static void
worker_state(IqBuf *out, const IqHttpWorkerView *v)
{
	struct timeval now;
	double		since;

	family(out, "iq_worker_state", "gauge", "The worker's state: 1 for the current one.");
	for (int s = 0; s < IQ_HTTP_STATES; s++)
		put(out, "iq_worker_state{state=\"%s\"} %d\n", v->state_names[s], s == v->state);
	gettimeofday(&now, NULL);
	since = now.tv_sec + now.tv_usec / 1e6 - v->state_since;
	family(out, "iq_worker_state_seconds", "gauge", "Seconds in the current state.");
	put(out, "iq_worker_state_seconds %.3f\n", since > 0 ? since : 0);
}

static void
flushes(IqBuf *out)
{
	family(out, "iq_flushes_total", "counter",
		   "Flushes that made consumed records durable (changelog, state, offsets).");
	put(out, "iq_flushes_total %llu\n",
		(unsigned long long) __atomic_load_n(&iq_counters.flushes, __ATOMIC_RELAXED));
	family(out, "iq_flush_duration_seconds", "histogram", "Duration of the flushes.");
	histogram(out, "iq_flush_duration_seconds", "", &iq_counters.flush_seconds,
			  iq_flush_bounds, IQ_FLUSH_BOUNDS);
	family(out, "iq_changelog_records_produced_total", "counter",
		   "Records produced to the changelog topic.");
	put(out, "iq_changelog_records_produced_total %llu\n",
		(unsigned long long) __atomic_load_n(&iq_counters.changelog_records,
											 __ATOMIC_RELAXED));
}

/* peers: one family of the per-peer counts; the last slot is "other", shown if used */
static void
peers(IqBuf *out, int npeers, const char *name, const char *help, bool errors)
{
	family(out, name, "counter", help);
	for (int i = 0; i <= IQ_PEERS_MAX; i++)
	{
		const IqPeerCounters *pc = &iq_counters.peers[i];
		char		peer[2 * IQ_PEER_NAME_LEN];
		uint64_t	n;

		if (i >= npeers && i < IQ_PEERS_MAX)
			continue;
		if (i == IQ_PEERS_MAX && __atomic_load_n(&pc->forwarded, __ATOMIC_RELAXED) == 0 &&
			__atomic_load_n(&pc->errors, __ATOMIC_RELAXED) == 0)
			continue;
		n = __atomic_load_n(errors ? &pc->errors : &pc->forwarded, __ATOMIC_RELAXED);
		label_escape(i < IQ_PEERS_MAX ? pc->name : "other", peer, sizeof(peer));
		put(out, "%s{peer=\"%s\"} %llu\n", name, peer, (unsigned long long) n);
	}
}

static void
http_requests(IqBuf *out)
{
	char		labels[64];
	int			npeers;

	family(out, "iq_http_requests_total", "counter",
		   "HTTP requests answered, by route and status.");
	for (int e = 0; e < IQ_EP_COUNT; e++)
		for (int s = 0; s < IQ_STATUS_COUNT; s++)
		{
			uint64_t	n = __atomic_load_n(&iq_counters.requests[e][s], __ATOMIC_RELAXED);

			if (n == 0)
				continue;
			if (s < IQ_STATUS_COUNT - 1)
				put(out, "iq_http_requests_total{endpoint=\"%s\",status=\"%d\"} %llu\n",
					iq_endpoint_names[e], iq_status_codes[s], (unsigned long long) n);
			else
				put(out, "iq_http_requests_total{endpoint=\"%s\",status=\"other\"} %llu\n",
					iq_endpoint_names[e], (unsigned long long) n);
		}
	family(out, "iq_http_request_duration_seconds", "histogram",
		   "Time from a request's head to its end, by route.");
	for (int e = 0; e < IQ_EP_COUNT; e++)
	{
		snprintf(labels, sizeof(labels), "endpoint=\"%s\"", iq_endpoint_names[e]);
		histogram(out, "iq_http_request_duration_seconds", labels,
				  &iq_counters.request_seconds[e], iq_request_bounds, IQ_REQUEST_BOUNDS);
	}

	npeers = __atomic_load_n(&iq_counters.npeers, __ATOMIC_ACQUIRE);
	peers(out, npeers, "iq_http_forwarded_gets_total",
		  "Gets forwarded to the partition's owner, by peer.", false);
	peers(out, npeers, "iq_http_peer_errors_total",
		  "Forwarded gets whose transfer failed (unreachable, timed out), by peer.", true);
}

static void
value_cache(IqBuf *out, const IqHttpWorkerView *v)
{
	if (!v->value_cache)
		return;
	family(out, "iq_value_cache_hits_total", "counter",
		   "Point lookups the shared value cache answered (iq_fdw.value_cache).");
	put(out, "iq_value_cache_hits_total %llu\n", (unsigned long long) v->value_cache_hits);
	family(out, "iq_value_cache_misses_total", "counter",
		   "Point lookups the shared value cache could not answer.");
	put(out, "iq_value_cache_misses_total %llu\n", (unsigned long long) v->value_cache_misses);
}

/* scan_snapshots: the full scans' in-memory copies (iq_fdw.scan_snapshot_memory) */
static void
scan_snapshots(IqBuf *out)
{
	IqSnapshotStats st;

	iq_store_snapshot_stats(&st);
	family(out, "iq_scan_snapshot_builds_total", "counter",
		   "Partition snapshots a full scan built and published (iq_fdw.scan_snapshot_memory).");
	put(out, "iq_scan_snapshot_builds_total %llu\n", (unsigned long long) st.builds);
	family(out, "iq_scan_snapshot_hits_total", "counter",
		   "Batches of a partition a scan read from a snapshot instead of RocksDB.");
	put(out, "iq_scan_snapshot_hits_total %llu\n", (unsigned long long) st.hits);
	family(out, "iq_scan_snapshot_drops_total", "counter",
		   "Snapshots and builds dropped: stale (a write, an ingest, a close) or over the budget.");
	put(out, "iq_scan_snapshot_drops_total{kind=\"stale\"} %llu\n",
		(unsigned long long) st.drops_stale);
	put(out, "iq_scan_snapshot_drops_total{kind=\"budget\"} %llu\n",
		(unsigned long long) st.drops_budget);
	family(out, "iq_scan_snapshot_bytes", "gauge",
		   "Memory held by snapshots and builds, of iq_scan_snapshot_budget_bytes.");
	put(out, "iq_scan_snapshot_bytes %llu\n", (unsigned long long) st.bytes);
	family(out, "iq_scan_snapshot_budget_bytes", "gauge",
		   "iq_fdw.scan_snapshot_memory.");
	put(out, "iq_scan_snapshot_budget_bytes %llu\n", (unsigned long long) st.budget);
}

static void
rocksdb_sizes(IqBuf *out, const IqHttpWorkerView *v)
{
	static const char *const names[] = {"iq_rocksdb_memtable_bytes",
		"iq_rocksdb_sst_files_bytes", "iq_rocksdb_pending_compaction_bytes"};
	static const char *const helps[] = {
		"Size of the store's memtables (rocksdb.cur-size-all-mem-tables).",
		"Size of the store's SST files (rocksdb.total-sst-files-size).",
		"Bytes RocksDB estimates compaction must rewrite "
		"(rocksdb.estimate-pending-compaction-bytes)."};
	IqStoreSizes *sizes = calloc((size_t) v->npartitions * IQ_NUM_STORES + 1,
								 sizeof(IqStoreSizes));
	bool	   *open = calloc((size_t) v->npartitions * IQ_NUM_STORES + 1, sizeof(bool));

	if (sizes == NULL || open == NULL)
	{
		free(sizes);
		free(open);
		return;
	}
	for (int i = 0; i < v->npartitions; i++)
		for (int s = 0; s < IQ_NUM_STORES; s++)
			open[i * IQ_NUM_STORES + s] = iq_store_sizes((IqStoreId) s,
														 v->partitions[i].partition,
														 &sizes[i * IQ_NUM_STORES + s]);
	for (int m = 0; m < 3; m++)
	{
		family(out, names[m], "gauge", helps[m]);
		for (int i = 0; i < v->npartitions; i++)
			for (int s = 0; s < IQ_NUM_STORES; s++)
			{
				const IqStoreSizes *z = &sizes[i * IQ_NUM_STORES + s];
				uint64_t	n = m == 0 ? z->memtables : m == 1 ? z->sst_files :
					z->pending_compaction;

				if (open[i * IQ_NUM_STORES + s])
					put(out, "%s{" PART_LABELS ",store=\"%s\"} %llu\n", names[m],
						v->partitions[i].partition, ROLE(&v->partitions[i]),
						iq_stores[s].name, (unsigned long long) n);
			}
	}
	free(sizes);
	free(open);
}

/* rocksdb_statistics: per partition, when iq_fdw.rocksdb_statistics keeps them */
static void
rocksdb_statistics(IqBuf *out, const IqHttpWorkerView *v)
{
	static const char *const names[] = {"iq_rocksdb_block_cache_hits_total",
		"iq_rocksdb_block_cache_misses_total", "iq_rocksdb_write_stall_seconds_total"};
	static const char *const helps[] = {
		"Reads the block cache answered (rocksdb.block.cache.hit).",
		"Reads the block cache missed (rocksdb.block.cache.miss).",
		"Time writes were delayed or stopped by RocksDB (rocksdb.stall.micros)."};
	IqStoreStatistics *st = calloc((size_t) v->npartitions + 1, sizeof(IqStoreStatistics));
	bool	   *kept = calloc((size_t) v->npartitions + 1, sizeof(bool));
	bool		any = false;

	for (int i = 0; st && kept && i < v->npartitions; i++)
	{
		kept[i] = iq_store_statistics(v->partitions[i].partition, &st[i]);
		any = any || kept[i];
	}
	for (int m = 0; any && m < 3; m++)
	{
		family(out, names[m], "counter", helps[m]);
		for (int i = 0; i < v->npartitions; i++)
		{
			if (!kept[i])
				continue;
			if (m < 2)
				put(out, "%s{" PART_LABELS "} %llu\n", names[m], v->partitions[i].partition,
					ROLE(&v->partitions[i]),
					(unsigned long long) (m == 0 ? st[i].block_cache_hits :
										  st[i].block_cache_misses));
			else
				put(out, "%s{" PART_LABELS "} %.6f\n", names[m], v->partitions[i].partition,
					ROLE(&v->partitions[i]), st[i].stall_micros / 1e6);
		}
	}
	free(st);
	free(kept);
}

/* resident_bytes: the process's resident set, from /proc/self/statm; -1 if unknown */
static long long
resident_bytes(void)
{
	FILE	   *f = fopen("/proc/self/statm", "r");
	long long	size,
				resident = -1;

	if (f == NULL)
		return -1;
	if (fscanf(f, "%lld %lld", &size, &resident) != 2)
		resident = -1;
	fclose(f);
	return resident < 0 ? -1 : resident * sysconf(_SC_PAGESIZE);
}

static void
memory(IqBuf *out, const IqHttpWorkerView *v)
{
	long long	rss = resident_bytes();

	if (rss >= 0)
	{
		family(out, "iq_worker_resident_memory_bytes", "gauge",
			   "Resident memory of the worker's process (/proc/self/statm).");
		put(out, "iq_worker_resident_memory_bytes %lld\n", rss);
	}
	family(out, "iq_memory_budget_bytes", "gauge",
		   "The worker's memory budget (iq_fdw.memory_budget).");
	put(out, "iq_memory_budget_bytes %lld\n", (long long) v->memory_budget);
}

/* iq_http_metrics: answer GET /metrics */
enum MHD_Result
iq_http_metrics(struct MHD_Connection *conn)
{
	static __thread IqHttpWorkerView view;
	IqBuf		out;
	struct MHD_Response *resp;

	iq_http_worker_view(&view);
	iq_buf_init(&out);
	partitions(&out, &view);
	worker_state(&out, &view);
	flushes(&out);
	http_requests(&out);
	value_cache(&out, &view);
	scan_snapshots(&out);
	rocksdb_sizes(&out, &view);
	rocksdb_statistics(&out, &view);
	memory(&out, &view);
	if (out.oom)
	{
		iq_buf_free(&out);
		return iq_http_send_error(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, NULL, "out of memory");
	}
	resp = MHD_create_response_from_buffer(out.len, out.data, MHD_RESPMEM_MUST_FREE);
	if (resp == NULL)
	{
		iq_buf_free(&out);
		return MHD_NO;
	}
	return iq_http_queue(conn, MHD_HTTP_OK, resp, CONTENT_TYPE);
}

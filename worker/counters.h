/*-------------------------------------------------------------------------
 * counters.h
 *	  The worker's own counters and latency histograms for GET /metrics
 *	  (worker/serve/http/metrics.c), counted where the work is done: the
 *	  flushes by the main thread, the HTTP requests and forwarded gets by
 *	  the server's threads.
 *
 * Plain C with relaxed atomic adds: a point get counts at 50k/s, so a
 * count must cost no lock and no PostgreSQL call.  The process-wide
 * values live as long as the engine process (a restarted engine starts
 * from zero, which Prometheus' rate() reads as a counter reset).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_COUNTERS_H
#define IQ_WORKER_COUNTERS_H

#include <stdbool.h>
#include <stdint.h>

/* upper bounds in seconds of a histogram's buckets, +Inf implied after them */
#define IQ_HIST_MAX_BOUNDS	16

typedef struct IqHistogram
{
	uint64_t	counts[IQ_HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative */
	uint64_t	sum_ns;
} IqHistogram;

/* The buckets' bounds: requests from 100 µs, flushes from 1 ms. */
#define IQ_REQUEST_BOUNDS	14
#define IQ_FLUSH_BOUNDS		12
extern const double iq_request_bounds[IQ_REQUEST_BOUNDS];
extern const double iq_flush_bounds[IQ_FLUSH_BOUNDS];

/* The routes a request is counted under: a fixed set, never its path. */
typedef enum IqEndpoint
{
	IQ_EP_METADATA = 0,			/* /metadata, /metadata/stores/:store */
	IQ_EP_KEY_METADATA,			/* /metadata/stores/:store/key/:k */
	IQ_EP_GET,					/* /stores/:store/get/:k */
	IQ_EP_SCAN,					/* /stores/:store/all and /range */
	IQ_EP_PEER_READ,			/* POST /iq/v1/read */
	IQ_EP_PEER_STREAM,			/* /iq/v1/stream */
	IQ_EP_METRICS,				/* /metrics */
	IQ_EP_OTHER,				/* anything else (404s and the like) */
	IQ_EP_COUNT
} IqEndpoint;

/* The statuses counted one by one; any other is counted as "other". */
#define IQ_STATUS_CODES		{200, 400, 401, 403, 404, 405, 413, 414, 421, 500, 502, 503, 504}
#define IQ_STATUS_COUNT		14	/* the codes above and "other" */

#define IQ_PEERS_MAX		64	/* peers counted by name; more are counted as "other" */
#define IQ_PEER_NAME_LEN	280

typedef struct IqPeerCounters
{
	char		name[IQ_PEER_NAME_LEN];	/* host:port, "" for a free slot */
	uint64_t	forwarded;
	uint64_t	errors;			/* transfers that failed: unreachable, timed out */
} IqPeerCounters;

typedef struct IqCounters
{
	uint64_t	flushes;
	uint64_t	changelog_records;
	IqHistogram flush_seconds;
	uint64_t	requests[IQ_EP_COUNT][IQ_STATUS_COUNT];
	IqHistogram request_seconds[IQ_EP_COUNT];
	int			npeers;			/* slots used, grows under a lock */
	IqPeerCounters peers[IQ_PEERS_MAX + 1];	/* the last is "other" */
} IqCounters;

extern IqCounters iq_counters;

extern const char *const iq_endpoint_names[IQ_EP_COUNT];
extern const int iq_status_codes[IQ_STATUS_COUNT - 1];

/* the main thread: one flush that produced records to the changelog */
extern void iq_count_flush(double seconds, uint64_t changelog_records);

/* a server thread: one request answered (or ended) */
extern IqEndpoint iq_endpoint_of(const char *method, const char *url);
extern void iq_count_request(IqEndpoint ep, unsigned int status, double seconds);

/* a server thread: a get forwarded to peer ("host:port"), or its failure */
extern void iq_count_forward(const char *peer, bool failed);

/* a consistent-enough copy of one histogram, for the scrape */
extern void iq_histogram_read(const IqHistogram *h, int nbounds,
							  uint64_t *counts, uint64_t *sum_ns);

/* seconds of CLOCK_MONOTONIC */
extern double iq_counters_now(void);

#endif							/* IQ_WORKER_COUNTERS_H */

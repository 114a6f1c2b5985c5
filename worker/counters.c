/*-------------------------------------------------------------------------
 * counters.c
 *	  The worker's counters and histograms (see counters.h).
 *
 * Every count is a relaxed atomic add on a process-wide variable; the
 * scrape reads them the same way.  A histogram's buckets and sum are read
 * one by one, so a scrape racing a request may see its bucket and not yet
 * its sum: Prometheus tolerates that; the buckets it writes are made
 * cumulative from one copy, so they never decrease along the le's.
 * Peers get a slot on their first forwarded get, under a lock (the only
 * one here, taken once per new peer name); their counts are atomic adds.
 *-------------------------------------------------------------------------
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/peer_api.h"
#include "worker/counters.h"

IqCounters	iq_counters;

const double iq_request_bounds[IQ_REQUEST_BOUNDS] = {
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 5
};
const double iq_flush_bounds[IQ_FLUSH_BOUNDS] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10
};

const char *const iq_endpoint_names[IQ_EP_COUNT] = {
	"metadata", "key_metadata", "get", "scan", "peer_read", "peer_stream",
	"metrics", "other"
};
const int	iq_status_codes[IQ_STATUS_COUNT - 1] = IQ_STATUS_CODES;

_Static_assert(IQ_REQUEST_BOUNDS <= IQ_HIST_MAX_BOUNDS, "too many request buckets");
_Static_assert(IQ_FLUSH_BOUNDS <= IQ_HIST_MAX_BOUNDS, "too many flush buckets");
_Static_assert(sizeof((int[]) IQ_STATUS_CODES) / sizeof(int) == IQ_STATUS_COUNT - 1,
			   "IQ_STATUS_COUNT is the codes and other");

static pthread_mutex_t peers_lock = PTHREAD_MUTEX_INITIALIZER;

#define ADD(var, n)	__atomic_fetch_add(&(var), (n), __ATOMIC_RELAXED)

double
iq_counters_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* observe: one value into a histogram */
static void
observe(IqHistogram *h, const double *bounds, int nbounds, double seconds)
{
	int			i = 0;

	if (seconds < 0)
		seconds = 0;
	while (i < nbounds && seconds > bounds[i])
		i++;
	ADD(h->counts[i], 1);
	ADD(h->sum_ns, (uint64_t) (seconds * 1e9));
}

void
iq_histogram_read(const IqHistogram *h, int nbounds, uint64_t *counts, uint64_t *sum_ns)
{
	for (int i = 0; i <= nbounds; i++)
		counts[i] = __atomic_load_n(&h->counts[i], __ATOMIC_RELAXED);
	*sum_ns = __atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED);
}

void
iq_count_flush(double seconds, uint64_t changelog_records)
{
	ADD(iq_counters.flushes, 1);
	ADD(iq_counters.changelog_records, changelog_records);
	observe(&iq_counters.flush_seconds, iq_flush_bounds, IQ_FLUSH_BOUNDS, seconds);
}

/*
 * iq_endpoint_of: the route a request is counted under, from its method
 * and (escaped) path; keys and store names never become label values.
 */
IqEndpoint
iq_endpoint_of(const char *method, const char *url)
{
	const char *rest;

	if (strcmp(url, IQ_PEER_READ_PATH) == 0)
		return IQ_EP_PEER_READ;
	if (strcmp(url, IQ_PEER_STREAM_PATH) == 0)
		return IQ_EP_PEER_STREAM;
	if (strcmp(url, "/metrics") == 0)
		return IQ_EP_METRICS;
	if (strncmp(url, "/metadata", 9) == 0)
		return strstr(url, "/key/") ? IQ_EP_KEY_METADATA : IQ_EP_METADATA;
	if (strncmp(url, "/stores/", 8) == 0 && (rest = strchr(url + 8, '/')) != NULL)
	{
		if (strncmp(rest, "/get/", 5) == 0)
			return IQ_EP_GET;
		if (strncmp(rest, "/all", 4) == 0 || strncmp(rest, "/range", 6) == 0)
			return IQ_EP_SCAN;
	}
	return IQ_EP_OTHER;
}

void
iq_count_request(IqEndpoint ep, unsigned int status, double seconds)
{
	int			s = IQ_STATUS_COUNT - 1;	/* other */

	if (ep < 0 || ep >= IQ_EP_COUNT)
		ep = IQ_EP_OTHER;
	for (int i = 0; i < IQ_STATUS_COUNT - 1; i++)
		if (iq_status_codes[i] == (int) status)
		{
			s = i;
			break;
		}
	ADD(iq_counters.requests[ep][s], 1);
	observe(&iq_counters.request_seconds[ep], iq_request_bounds, IQ_REQUEST_BOUNDS,
			seconds);
}

/* peer_slot: the counters of peer, made on its first use */
static IqPeerCounters *
peer_slot(const char *peer)
{
	int			n = __atomic_load_n(&iq_counters.npeers, __ATOMIC_ACQUIRE);
	IqPeerCounters *slot = NULL;

	for (int i = 0; i < n; i++)
		if (strcmp(iq_counters.peers[i].name, peer) == 0)
			return &iq_counters.peers[i];
	pthread_mutex_lock(&peers_lock);
	n = iq_counters.npeers;
	for (int i = 0; i < n && slot == NULL; i++)
		if (strcmp(iq_counters.peers[i].name, peer) == 0)
			slot = &iq_counters.peers[i];
	if (slot == NULL && n < IQ_PEERS_MAX)
	{
		slot = &iq_counters.peers[n];
		strncpy(slot->name, peer, IQ_PEER_NAME_LEN - 1);
		/* the name is written before the slot is counted in */
		__atomic_store_n(&iq_counters.npeers, n + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&peers_lock);
	return slot ? slot : &iq_counters.peers[IQ_PEERS_MAX];
}

void
iq_count_forward(const char *peer, bool failed)
{
	IqPeerCounters *slot = peer_slot(peer);

	if (failed)
		ADD(slot->errors, 1);
	else
		ADD(slot->forwarded, 1);
}

/*-------------------------------------------------------------------------
 * forward_batch.c
 *	  Forwarded gets over HTTPS in batches (TLS on; forwarder thread only).
 *
 * The iq-wire/1 stream is not served over TLS (upgrade.c), and a curl
 * transfer per get cost the one forwarder thread ~0.2 ms of CPU (curl's
 * request and answer, TLS records, malloc), so forwarded gets over TLS
 * ran at a sixth of plain ones over the stream.  Here the gets the
 * forwarder finds queued for one owner and store go as one IQ_OP_GET of
 * many keys in one POST /iq/v1/read, the endpoint backends read over TLS
 * with (same peer certificate check on the owner), and the owner's rows
 * are handed to the gets by key.  No get waits for a batch to fill: what
 * is queued goes out at once while fewer than FBATCH_FLYING POSTs to its
 * owner and store are in flight; beyond that gets wait for one of them to
 * end, then go together.  So batches grow with the load and a lone get
 * goes alone: a batch a wake-up gave POSTs of ~2 gets (the forwarder
 * wakes at once), hardly cheaper than a transfer each.
 *
 * The owner answers a get of many keys only if it holds every key's
 * partition; when it refuses a batch (a partition moving), each get is
 * asked again alone, so only the gets whose partition moved get the
 * error, as they would have one at a time.  Every get keeps
 * iq_fdw.peer_timeout from its submission, asked alone again included: a
 * POST's timeout is what is left of its earliest get's.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/peer_api.h"
#include "common/wire.h"
#include "worker/serve/http/forward_internal.h"

/*
 * Keys in one POST at most: enough that a busy forwarder sends a few
 * POSTs a wake-up, few enough that a batch's answer stays small and that
 * the owner's sort of the keys (read_handler.c) costs nothing
 */
#define FBATCH_KEYS		64
#define FBATCH_BYTES	(256 * 1024)
#define FBATCH_GROUPS	64
#define FBATCH_FLYING	4		/* POSTs in flight to one owner and store, but full ones */

/* the gets queued for one owner and store, not yet sent */
typedef struct FGroup
{
	char		host[IQ_HTTP_HOST_LEN];
	int			port;
	int			store;
	IqForwardJob *first;
	IqForwardJob *last;
	int			n;
	size_t		bytes;
	int			flying;			/* its POSTs in flight */
} FGroup;

static FGroup groups[FBATCH_GROUPS];
static int	ngroups = 0;
static bool stopping = false;

/* iq_fbatch_init: no group, before the forwarder starts */
void
iq_fbatch_init(void)
{
	ngroups = 0;
	stopping = false;
}

/* fail_all: every get of the list jobs fails so */
static void
fail_all(IqForwardJob *jobs, bool timed_out, bool refused, const char *what)
{
	while (jobs)
	{
		IqForwardJob *next = jobs->next;

		iq_forward_fail(jobs, timed_out, refused, what);
		jobs = next;
	}
}

/* batch_request: the wire request asking every key of jobs (false: out of memory) */
static bool
batch_request(IqForwardJob *jobs, int n, int store, IqBuf *out)
{
	const char **keys = malloc(sizeof(char *) * n);
	uint32_t   *lens = malloc(sizeof(uint32_t) * n);
	IqWireRequest req;
	IqForwardJob *job;
	int			i;

	if (keys == NULL || lens == NULL)
	{
		free(keys);
		free(lens);
		return false;
	}
	for (i = 0, job = jobs; job; job = job->next, i++)
	{
		keys[i] = job->key;
		lens[i] = job->key_len;
	}
	memset(&req, 0, sizeof(req));
	req.op = IQ_OP_GET;
	req.store = (uint8_t) store;
	req.nkeys = (uint32_t) n;
	req.keys = keys;
	req.key_lens = lens;
	iq_buf_init(out);
	iq_wire_encode_request(&req, out);
	free(keys);
	free(lens);
	return !out->oom;
}

/*
 * send_group: g's gets as one POST to their owner; g emptied.  counted:
 * g is a group of the table, whose POSTs in flight are counted
 */
static void
send_group(FGroup *g, bool counted)
{
	IqForwardJob *jobs = g->first;
	IqForwardJob *batch = calloc(1, sizeof(IqForwardJob));
	char		url[IQ_PEER_URL_LEN];

	g->first = g->last = NULL;
	if (batch == NULL ||
		iq_peer_url(url, sizeof(url), true, g->host, g->port, IQ_PEER_READ_PATH) < 0 ||
		(batch->url = strdup(url)) == NULL ||
		!batch_request(jobs, g->n, g->store, &batch->request))
	{
		if (batch)
		{
			iq_buf_free(&batch->request);
			free(batch->url);
			free(batch);
		}
		g->n = 0;
		g->bytes = 0;
		fail_all(jobs, false, false, "out of memory");
		return;
	}
	g->n = 0;
	g->bytes = 0;
	snprintf(batch->host, sizeof(batch->host), "%s", g->host);
	batch->port = g->port;
	batch->store = g->store;
	batch->resent = !counted;	/* not counted in its group */
	if (counted)
		g->flying++;
	batch->members = jobs;
	/* the POST ends by the earliest get's deadline (forwarded_get.c) */
	batch->deadline = jobs->deadline;
	for (; jobs; jobs = jobs->next)
		if (jobs->deadline < batch->deadline)
			batch->deadline = jobs->deadline;
	iq_forward_launch(batch);
}

/* send_alone: job in a POST of its own, counted in no group */
static void
send_alone(IqForwardJob *job)
{
	FGroup		g;

	memset(&g, 0, sizeof(g));
	snprintf(g.host, sizeof(g.host), "%s", job->host);
	g.port = job->port;
	g.store = job->store;
	job->next = NULL;
	g.first = g.last = job;
	g.n = 1;
	send_group(&g, false);
}

/* find_group: the group of an owner and store, NULL if none */
static FGroup *
find_group(const IqForwardJob *job)
{
	int			i;

	for (i = 0; i < ngroups; i++)
	{
		FGroup	   *g = &groups[i];

		if (g->port == job->port && g->store == job->store && strcmp(g->host, job->host) == 0)
			return g;
	}
	return NULL;
}

/* group_of: the group of job's owner and store, made if need be (NULL: no room) */
static FGroup *
group_of(const IqForwardJob *job)
{
	FGroup	   *g = find_group(job);
	int			i;

	if (g)
		return g;
	/* an idle group leaves its place to another owner or store */
	for (i = 0; i < ngroups; i++)
		if (groups[i].n == 0 && groups[i].flying == 0)
			break;
	if (i == FBATCH_GROUPS)
		return NULL;
	if (i == ngroups)
		ngroups++;
	g = &groups[i];
	memset(g, 0, sizeof(*g));
	snprintf(g->host, sizeof(g->host), "%s", job->host);
	g->port = job->port;
	g->store = job->store;
	return g;
}

/* iq_fbatch_add: job joins the batch of its owner and store (sent when full) */
void
iq_fbatch_add(IqForwardJob *job)
{
	FGroup	   *g = group_of(job);

	if (g == NULL)
	{
		/* as many owners and stores busy as groups: it goes alone, uncounted */
		send_alone(job);
		return;
	}
	job->next = NULL;
	if (g->last)
		g->last->next = job;
	else
		g->first = job;
	g->last = job;
	g->n++;
	g->bytes += job->key_len + 8;
	if (g->n >= FBATCH_KEYS || g->bytes >= FBATCH_BYTES)
		send_group(g, true);
}

/* iq_fbatch_launch_all: every batch with gets and room in flight goes out */
void
iq_fbatch_launch_all(void)
{
	int			i;

	for (i = 0; i < ngroups; i++)
		if (groups[i].n > 0 && groups[i].flying < FBATCH_FLYING)
			send_group(&groups[i], true);
}

/* release: a counted batch is over; what waited for it goes out */
static void
release(const IqForwardJob *batch)
{
	FGroup	   *g;

	if (batch->resent || (g = find_group(batch)) == NULL)
		return;
	g->flying--;
	if (g->n > 0 && !stopping)
		send_group(g, true);
}

/* iq_fbatch_shutdown: the gets waiting for a batch fail; none is sent from now on */
void
iq_fbatch_shutdown(void)
{
	int			i;

	stopping = true;
	for (i = 0; i < ngroups; i++)
	{
		IqForwardJob *jobs = groups[i].first;

		groups[i].first = groups[i].last = NULL;
		groups[i].n = 0;
		fail_all(jobs, false, false, "the server is stopping");
	}
}

/* answer_row: a row of the owner's answer, to every get of its key */
static bool
answer_row(IqForwardJob *jobs, const IqWireReader *rd)
{
	IqForwardJob *job;

	for (job = jobs; job; job = job->next)
	{
		if (job->key_len != rd->key_len || memcmp(job->key, rd->key, rd->key_len) != 0)
			continue;
		job->result.body.len = 0;
		if (rd->value_len > 0)
			iq_buf_append(&job->result.body, rd->value, (size_t) rd->value_len);
		job->result.found = rd->value_len >= 0;
		if (job->result.body.oom)
			return false;
	}
	return true;
}

/* finish_all: every get of jobs answered as ok, or with the owner's wire error */
static void
finish_all(IqForwardJob *jobs, const IqWireReader *rd, bool ok)
{
	while (jobs)
	{
		IqForwardJob *next = jobs->next;

		iq_forward_finish_wire(jobs, ok ? NULL : rd);
		jobs = next;
	}
}

/* ask_alone: each get of a refused batch asked again in a POST of its own */
static void
ask_alone(IqForwardJob *jobs)
{
	while (jobs)
	{
		IqForwardJob *next = jobs->next;

		jobs->resent = true;
		send_alone(jobs);
		jobs = next;
	}
}

/* read_answer: the owner's answer to a batch, handed to its gets */
static void
read_answer(IqForwardJob *batch)
{
	IqForwardJob *jobs = batch->members;
	IqWireReader rd;
	char		err[600];

	iq_wire_reader_init(&rd);
	iq_wire_reader_feed(&rd, batch->result.body.data, batch->result.body.len);
	for (;;)
	{
		IqWireEvent ev = iq_wire_reader_next(&rd);

		if (ev == IQ_EV_ROW && answer_row(jobs, &rd))
			continue;
		if (ev == IQ_EV_HEADER)
			continue;
		if (ev == IQ_EV_END)
			finish_all(jobs, &rd, true);
		else if (ev == IQ_EV_ERROR && !rd.corrupt && jobs->next != NULL && !jobs->resent)
			ask_alone(jobs);
		else if (ev == IQ_EV_ERROR && !rd.corrupt)
			finish_all(jobs, &rd, false);
		else
		{
			snprintf(err, sizeof(err), "corrupt answer from the owner (HTTP %ld): %s",
					 batch->result.status, ev == IQ_EV_ROW ? "out of memory" :
					 ev == IQ_EV_NEED_MORE ? "cut short" : rd.message);
			fail_all(jobs, false, false, err);
		}
		break;
	}
	iq_wire_reader_free(&rd);
}

/*
 * iq_fbatch_done: a batch's POST is over (rc, and error when it failed):
 * its gets answered, the batch freed
 */
void
iq_fbatch_done(IqForwardJob *batch, CURLcode rc, const char *error)
{
	IqForwardJob *jobs = batch->members;

	if (rc == CURLE_OK)
		read_answer(batch);
	else
		fail_all(jobs, rc == CURLE_OPERATION_TIMEDOUT, rc == CURLE_COULDNT_CONNECT, error);
	batch->members = NULL;
	release(batch);
	iq_forward_job_free(batch);
}

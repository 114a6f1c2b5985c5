/*-------------------------------------------------------------------------
 * ownership.c
 *	  Which member of the group owns which partition, read from the group.
 *
 * Every member's client.id is "iq_fdw|<advertised endpoint>", so a
 * DescribeConsumerGroups of our own group tells every instance the same
 * thing: who is there, where to reach it, which order partitions it holds.
 * No other service is needed.  The call is asynchronous (a result queue
 * polled by the main loop), after every rebalance and periodically: every
 * 2 s while the group is not stable or a partition has no owner, every
 * 10 s otherwise.  The result goes to shared memory (backends) and to a
 * mutex-protected copy (the worker's server threads).
 *
 * Anyone the broker lets join the group can say anything in its client.id.
 * A member whose client.id is not "iq_fdw|host:port" with a well-formed
 * host (iq_parse_host_port) is left out: it is not listed, nothing is ever
 * sent to it, and the partitions it holds have no owner, as while a
 * rebalance is under way.  It is named in one WARNING (its client.id
 * escaped), not at every describe.  Only the broker's ACLs can keep such a
 * member out of the group (README).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <pthread.h>

#include "common/settings.h"
#include "worker/ownership.h"
#include "worker/state.h"

#define OWNERSHIP_FAST_MS	2000
#define OWNERSHIP_SLOW_MS	10000
#define DESCRIBE_TIMEOUT_MS	5000
#define CLIENT_ID_PREFIX	"iq_fdw|"
/* members ignored and warned about, remembered so each is warned about once */
#define WARNED_MAX			32
#define MEMBER_ID_MAX		256
/* how much of a foreign client.id a warning quotes */
#define CLIENT_ID_SHOWN		120

static pthread_mutex_t own_mutex = PTHREAD_MUTEX_INITIALIZER;
static IqOwnership current;		/* under own_mutex */
static bool pending = false;
static int64 next_due = 0;
static uint64_t published_generation = 0;	/* current.generation, atomic */
static char warned[WARNED_MAX][MEMBER_ID_MAX];	/* a ring of member ids */
static int	warned_next = 0;

/*
 * iq_ownership_snapshot
 *		Any thread: a consistent copy.
 */
void
iq_ownership_snapshot(IqOwnership *out)
{
	pthread_mutex_lock(&own_mutex);
	*out = current;
	pthread_mutex_unlock(&own_mutex);
}

/*
 * iq_ownership_generation
 *		Any thread: the generation of the current ownership, without the
 *		mutex, so that a reader can keep its copy while it does not change.
 */
uint64_t
iq_ownership_generation(void)
{
	return __atomic_load_n(&published_generation, __ATOMIC_ACQUIRE);
}

/*
 * publish
 *		Install a new ownership if it differs; generation grows on change.
 */
static void
publish(IqOwnership *next)
{
	bool		changed;

	changed = next->partition_count != current.partition_count ||
		next->nmembers != current.nmembers ||
		next->self != current.self ||
		memcmp(next->members, current.members, sizeof(IqMember) * next->nmembers) != 0 ||
		memcmp(next->owner, current.owner, sizeof(current.owner)) != 0;
	if (!changed)
		return;
	next->generation = current.generation + 1;
	pthread_mutex_lock(&own_mutex);
	current = *next;
	__atomic_store_n(&published_generation, next->generation, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&own_mutex);

	iq_shared_write_begin();
	iq_shared->generation = next->generation;
	iq_shared->partition_count = next->partition_count;
	iq_shared->nmembers = next->nmembers;
	memcpy(iq_shared->members, next->members, sizeof(IqMember) * IQ_MAX_MEMBERS);
	memcpy(iq_shared->owner, next->owner, sizeof(next->owner));
	iq_shared_write_end();
	ereport(DEBUG1,
			(errmsg("iq_fdw worker: ownership generation " UINT64_FORMAT ": %d members over %d partitions",
					(uint64) next->generation, next->nmembers, next->partition_count)));
}

static void
empty_ownership(IqOwnership *o)
{
	memset(o, 0, sizeof(*o));
	o->self = -1;
	for (int p = 0; p < IQ_MAX_PARTITIONS; p++)
		o->owner[p] = -1;
}

/*
 * iq_ownership_init
 *		Start after the generation a previous worker left in shared memory,
 *		so that backends' cached copies are seen as stale.
 */
void
iq_ownership_init(void)
{
	IqOwnership o;

	empty_ownership(&current);
	current.generation = iq_shared->generation;	/* we are its only writer */
	current.nmembers = -1;		/* forces the first publish */
	empty_ownership(&o);
	publish(&o);
	pending = false;
	next_due = 0;
}

/*
 * iq_ownership_clear
 *		The pipeline is down: nobody is known to own anything.
 */
void
iq_ownership_clear(void)
{
	IqOwnership o;

	if (iq_w->admin_q)
	{
		rd_kafka_event_t *ev;

		while ((ev = rd_kafka_queue_poll(iq_w->admin_q, 0)) != NULL)
			rd_kafka_event_destroy(ev);
	}
	pending = false;
	next_due = 0;
	empty_ownership(&o);
	publish(&o);
}

/*
 * escape_client_id
 *		A client.id (or a member id) fit for the log: printable ASCII only, bytes outside
 *		it (CR, LF, ...) and quotes as \xNN, cut at CLIENT_ID_SHOWN.
 */
static void
escape_client_id(const char *cid, char *out, size_t outlen)
{
	size_t		n = 0;

	for (const char *c = cid; *c && n + 5 < outlen && c - cid < CLIENT_ID_SHOWN; c++)
	{
		unsigned char u = (unsigned char) *c;

		if (u >= 0x20 && u < 0x7f && u != '"' && u != '\\')
			out[n++] = *c;
		else
			n += snprintf(out + n, outlen - n, "\\x%02x", u);
	}
	out[n] = '\0';
}

/*
 * warn_ignored
 *		One WARNING per member left out of the ownership (a member that
 *		rejoins is a new member, with a new member id).
 */
static void
warn_ignored(const char *member_id, const char *cid)
{
	char		shown[CLIENT_ID_SHOWN * 4 + 8];
	char		member[CLIENT_ID_SHOWN * 4 + 8];

	for (int i = 0; i < WARNED_MAX; i++)
		if (strncmp(warned[i], member_id, MEMBER_ID_MAX - 1) == 0 && warned[i][0] != '\0')
			return;
	strlcpy(warned[warned_next], member_id, MEMBER_ID_MAX);
	warned_next = (warned_next + 1) % WARNED_MAX;
	escape_client_id(cid ? cid : "", shown, sizeof(shown));
	/* the broker makes member ids from client ids: as untrusted */
	escape_client_id(member_id, member, sizeof(member));
	ereport(WARNING,
			(errmsg("iq_fdw worker: ignoring member \"%s\" of group \"%s\": its client.id is not an iq_fdw instance's",
					member, iq_w->cfg.app_id),
			 errdetail("Its client.id is \"%s\", not \"%shost:port\"; the partitions of \"%s\" it holds have no owner while it stays.",
					   shown, CLIENT_ID_PREFIX, iq_w->cfg.order_topic),
			 errhint("Let only the cluster's Kafka principal join the group \"%s\" (broker ACLs).",
					 iq_w->cfg.app_id)));
}

typedef struct Found
{
	IqMember	m;
	int			parts[IQ_MAX_PARTITIONS];
	int			nparts;
} Found;

static int
member_cmp(const void *a, const void *b)
{
	const Found *x = a;
	const Found *y = b;
	int			c = strcmp(x->m.host, y->m.host);

	return c != 0 ? c : x->m.port - y->m.port;
}

/*
 * handle_result
 *		Turn a DescribeConsumerGroups result into an ownership; true when
 *		the group is stable and every partition has an owner.
 */
static bool
handle_result(rd_kafka_event_t *ev)
{
	const rd_kafka_DescribeConsumerGroups_result_t *res;
	const rd_kafka_ConsumerGroupDescription_t **groups;
	const rd_kafka_ConsumerGroupDescription_t *g;
	size_t		ngroups = 0;
	size_t		nm;
	Found	   *found;
	int			nfound = 0;
	char	   *myid;
	IqOwnership o;
	bool		complete;

	if (rd_kafka_event_error(ev) != RD_KAFKA_RESP_ERR_NO_ERROR)
	{
		ereport(DEBUG1,
				(errmsg("iq_fdw worker: could not describe group \"%s\": %s",
						iq_w->cfg.app_id, rd_kafka_event_error_string(ev))));
		return false;
	}
	res = rd_kafka_event_DescribeConsumerGroups_result(ev);
	if (res == NULL)
		return false;
	groups = rd_kafka_DescribeConsumerGroups_result_groups(res, &ngroups);
	if (ngroups != 1 || rd_kafka_ConsumerGroupDescription_error(groups[0]) != NULL)
		return false;
	g = groups[0];

	nm = rd_kafka_ConsumerGroupDescription_member_count(g);
	found = palloc0(sizeof(Found) * (nm > 0 ? nm : 1));
	myid = rd_kafka_memberid(iq_w->consumer);
	for (size_t i = 0; i < nm; i++)
	{
		const rd_kafka_MemberDescription_t *md = rd_kafka_ConsumerGroupDescription_member(g, i);
		const char *cid = rd_kafka_MemberDescription_client_id(md);
		const rd_kafka_MemberAssignment_t *ma = rd_kafka_MemberDescription_assignment(md);
		const rd_kafka_topic_partition_list_t *tp = ma ? rd_kafka_MemberAssignment_partitions(ma) : NULL;
		Found	   *f = &found[nfound];

		for (int j = 0; tp && j < tp->cnt; j++)
		{
			int			p = tp->elems[j].partition;

			if (strcmp(tp->elems[j].topic, iq_w->cfg.order_topic) == 0 &&
				p >= 0 && p < IQ_MAX_PARTITIONS && f->nparts < IQ_MAX_PARTITIONS)
				f->parts[f->nparts++] = p;
		}
		if (cid == NULL || strncmp(cid, CLIENT_ID_PREFIX, strlen(CLIENT_ID_PREFIX)) != 0 ||
			!iq_parse_host_port(cid + strlen(CLIENT_ID_PREFIX), f->m.host,
								sizeof(f->m.host), &f->m.port))
		{
			/* not an iq_fdw instance: never asked, its partitions unowned */
			warn_ignored(rd_kafka_MemberDescription_consumer_id(md), cid);
			memset(f, 0, sizeof(*f));
			continue;
		}
		if (f->nparts == 0)
			continue;			/* holds nothing: not in the metadata, as in the seed */
		f->m.npartitions = f->nparts;
		f->m.is_self = myid != NULL &&
			strcmp(myid, rd_kafka_MemberDescription_consumer_id(md)) == 0;
		if (nfound < IQ_MAX_MEMBERS)
			nfound++;
	}
	if (myid)
		rd_kafka_mem_free(iq_w->consumer, myid);

	/* a stable order of members, so that an unchanged group is unchanged */
	qsort(found, nfound, sizeof(Found), member_cmp);
	empty_ownership(&o);
	o.partition_count = iq_w->partition_count;
	o.nmembers = nfound;
	for (int i = 0; i < nfound; i++)
	{
		o.members[i] = found[i].m;
		if (found[i].m.is_self)
			o.self = i;
		for (int j = 0; j < found[i].nparts; j++)
			if (found[i].parts[j] < o.partition_count)
				o.owner[found[i].parts[j]] = i;
	}
	pfree(found);
	publish(&o);

	complete = rd_kafka_ConsumerGroupDescription_state(g) == RD_KAFKA_CONSUMER_GROUP_STATE_STABLE;
	for (int p = 0; p < o.partition_count; p++)
		if (o.owner[p] < 0)
			complete = false;
	return complete;
}

/*
 * iq_ownership_tick
 *		Main loop: collect a finished describe, or send one when due.
 */
void
iq_ownership_tick(void)
{
	int64		now = iq_now_ms();

	if (iq_w->consumer == NULL || iq_w->admin_q == NULL)
		return;
	if (pending)
	{
		rd_kafka_event_t *ev = rd_kafka_queue_poll(iq_w->admin_q, 0);
		bool		complete;

		if (ev == NULL)
			return;
		pending = false;
		complete = handle_result(ev);
		/* the broker answers again: an error shown from the callback is over */
		if (rd_kafka_event_error(ev) == RD_KAFKA_RESP_ERR_NO_ERROR &&
			iq_w->error_state && !iq_w->failed)
		{
			bool		any = false;

			for (int p = 0; p < iq_w->partition_count; p++)
				any |= iq_w->parts[p].assigned;
			iq_w->error_state = false;
			if (any)
				iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
			else
				iq_set_worker_state(IQ_WORKER_REBALANCING, "waiting for partitions");
		}
		rd_kafka_event_destroy(ev);
		if (!iq_w->ownership_due)
			next_due = now + (complete ? OWNERSHIP_SLOW_MS : OWNERSHIP_FAST_MS);
		return;
	}
	if (iq_w->ownership_due || now >= next_due)
	{
		const char *groups[1] = {iq_w->cfg.app_id};
		rd_kafka_AdminOptions_t *opts;
		char		errstr[256];

		opts = rd_kafka_AdminOptions_new(iq_w->consumer, RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS);
		rd_kafka_AdminOptions_set_request_timeout(opts, DESCRIBE_TIMEOUT_MS, errstr, sizeof(errstr));
		rd_kafka_DescribeConsumerGroups(iq_w->consumer, groups, 1, opts, iq_w->admin_q);
		rd_kafka_AdminOptions_destroy(opts);
		pending = true;
		iq_w->ownership_due = false;
		next_due = now + OWNERSHIP_FAST_MS;
	}
}

/*-------------------------------------------------------------------------
 * standby.c
 *	  The placement of standby replicas (standby.h says why it is this one).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/settings.h"
#include "common/standby.h"

StaticAssertDecl(IQ_STANDBY_MAX_MEMBERS == IQ_MAX_MEMBERS, "one bound of members");

/* a member's place in the range assignor's order: its group.instance.id */
typedef struct Ranked
{
	char		id[IQ_HOST_LEN + 16];
	int			index;
} Ranked;

/*
 * instance_id_key
 *		The endpoint part of a member's group.instance.id
 *		(worker/kafka_conf.c, iq_kafka_names): "host:port" with what Kafka
 *		does not allow in an id replaced by '_'.  Every member has the same
 *		application id before it, so this orders them as the assignor does.
 */
static void
instance_id_key(const char *host, int port, char *out, size_t len)
{
	snprintf(out, len, "%s:%d", host, port);
	for (char *c = out; *c; c++)
		if (!isalnum((unsigned char) *c) && *c != '.' && *c != '_' && *c != '-')
			*c = '_';
}

static int
ranked_cmp(const void *a, const void *b)
{
	return strcmp(((const Ranked *) a)->id, ((const Ranked *) b)->id);
}

/*
 * range_owner
 *		The member the range assignor gives partition p to among the
 *		n members of ranked (sorted): each gets a run of
 *		partition_count / n partitions, the first partition_count % n of
 *		them one more.
 */
static int
range_owner(const Ranked *ranked, int n, int partition_count, int p)
{
	int			per = partition_count / n;
	int			extra = partition_count % n;
	int			start = 0;

	for (int i = 0; i < n; i++)
	{
		int			len = per + (i < extra ? 1 : 0);

		if (p >= start && p < start + len)
			return i;
		start += len;
	}
	return n - 1;
}

int
iq_standby_place(const char *const *hosts, const int *ports, int nmembers,
				 const int16_t *owner, int partition_count,
				 int p, int want, int *out)
{
	Ranked	   *ranked;
	int			n = 0;
	int			found = 0;

	if (p < 0 || p >= partition_count || p >= IQ_MAX_PARTITIONS ||
		owner[p] < 0 || owner[p] >= nmembers || nmembers > IQ_MAX_MEMBERS)
		return 0;
	if (want == IQ_STANDBY_ALL || want > nmembers - 1)
		want = nmembers - 1;
	/* malloc: the HTTP server's threads call it too, on small stacks */
	ranked = malloc(sizeof(Ranked) * (nmembers > 0 ? nmembers : 1));
	if (ranked == NULL)
		return 0;
	for (int i = 0; i < nmembers; i++)
		if (i != owner[p])
		{
			instance_id_key(hosts[i], ports[i], ranked[n].id, sizeof(ranked[n].id));
			ranked[n].index = i;
			n++;
		}
	qsort(ranked, n, sizeof(Ranked), ranked_cmp);

	/* who would own p if the owner left; then if that one left too; ... */
	while (found < want && n > 0)
	{
		int			next = range_owner(ranked, n, partition_count, p);

		out[found++] = ranked[next].index;
		memmove(&ranked[next], &ranked[next + 1], sizeof(Ranked) * (n - next - 1));
		n--;
	}
	free(ranked);
	return found;
}

int
iq_standby_members(const IqMember *members, int nmembers,
				   const int16_t *owner, int partition_count,
				   int p, int want, int *out)
{
	const char *hosts[IQ_MAX_MEMBERS];
	int			ports[IQ_MAX_MEMBERS];

	if (nmembers > IQ_MAX_MEMBERS)
		return 0;
	for (int i = 0; i < nmembers; i++)
	{
		hosts[i] = members[i].host;
		ports[i] = members[i].port;
	}
	return iq_standby_place(hosts, ports, nmembers, owner, partition_count, p, want, out);
}

bool
iq_standby_is_member(const IqMember *members, int nmembers,
					 const int16_t *owner, int partition_count,
					 int p, int want, int self)
{
	int			out[IQ_MAX_MEMBERS];
	int			n = iq_standby_members(members, nmembers, owner, partition_count,
									   p, want, out);

	for (int i = 0; i < n; i++)
		if (out[i] == self)
			return true;
	return false;
}

/*-------------------------------------------------------------------------
 * ownership_view.c
 *	  The ownership snapshot in the plain-C form the HTTP threads use.
 *
 * ownership.h reaches shmem.h and so PostgreSQL's headers, which redefine
 * snprintf and friends as PostgreSQL's own; this file is the only one of
 * the server's that includes them, and it only copies fields.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/ownership.h"
#include "worker/serve/http/http_internal.h"

StaticAssertDecl(IQ_HTTP_MAX_MEMBERS == IQ_MAX_MEMBERS, "member limits differ");
StaticAssertDecl(IQ_HTTP_MAX_PARTITIONS == IQ_MAX_PARTITIONS, "partition limits differ");
StaticAssertDecl(IQ_HTTP_HOST_LEN == IQ_HOST_LEN, "host lengths differ");

/*
 * iq_http_ownership: a consistent copy of who owns which partition, into a
 * copy the caller keeps (zeroed the first time) and that is refreshed only
 * when ownership changed.
 */
void
iq_http_ownership(IqHttpOwnership *out)
{
	static __thread IqOwnership o;
	int			i;
	uint64_t	generation = iq_ownership_generation();

	/* 17 kB of members: copy them only when they changed */
	if (generation != 0 && out->generation == generation)
		return;
	iq_ownership_snapshot(&o);
	out->generation = o.generation;
	out->partition_count = o.partition_count;
	if (out->partition_count > IQ_MAX_PARTITIONS)
		out->partition_count = IQ_MAX_PARTITIONS;
	out->nmembers = o.nmembers;
	if (out->nmembers > IQ_MAX_MEMBERS)
		out->nmembers = IQ_MAX_MEMBERS;
	out->self = o.self;
	for (i = 0; i < out->nmembers; i++)
	{
		memcpy(out->members[i].host, o.members[i].host, IQ_HOST_LEN);
		out->members[i].host[IQ_HOST_LEN - 1] = '\0';
		out->members[i].port = o.members[i].port;
	}
	for (i = 0; i < IQ_MAX_PARTITIONS; i++)
		out->owner[i] = (i < out->partition_count) ? o.owner[i] : -1;
}

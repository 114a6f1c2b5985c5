/*-------------------------------------------------------------------------
 * standby.h
 *	  Which instances keep a standby replica of a partition: a placement
 *	  every instance and every backend computes alike from the group's
 *	  ownership, with no word exchanged.
 *
 * The standbys of partition p are the instances that would own p next:
 * the first is the member the range assignor would give p to if p's owner
 * left the group, the second the one it would give p to if the first left
 * too, and so on.  librdkafka's range assignor sorts static members by
 * group.instance.id and gives each a run of partitions, so when an owner
 * stops (or its session expires) the group hands p to its first standby,
 * whose store is warm: the failover restores only what the standby had
 * not read yet.  A join moves partitions to the newcomer, which has none.
 *
 * Plain C, no PostgreSQL call: the engine's threads use it too, the
 * HTTP server's through iq_standby_place, without PostgreSQL's headers.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STANDBY_H
#define IQ_STANDBY_H

#include <stdbool.h>
#include <stdint.h>

/* the most members iq_standby_place ranks (IQ_MAX_MEMBERS) */
#define IQ_STANDBY_MAX_MEMBERS	64

/*
 * The placement over members given by endpoint (hosts[i], ports[i]); as
 * iq_standby_members below.
 */
extern int	iq_standby_place(const char *const *hosts, const int *ports, int nmembers,
							 const int16_t *owner, int partition_count,
							 int p, int want, int *out);

#ifdef PG_VERSION_NUM			/* with PostgreSQL's headers */
#include "common/shmem.h"

/*
 * The standby members of partition p, most preferred first, as indexes into
 * members; returns how many (at most want, or every other member when want
 * is IQ_STANDBY_ALL).  owner is the group's ownership: owner[p] the index
 * of p's owner, -1 if none (then p has no standby either).
 */
extern int	iq_standby_members(const IqMember *members, int nmembers,
							   const int16_t *owner, int partition_count,
							   int p, int want, int *out);

/* Whether member self keeps a standby of p (never of a partition it owns). */
extern bool iq_standby_is_member(const IqMember *members, int nmembers,
								 const int16_t *owner, int partition_count,
								 int p, int want, int self);

#endif							/* PG_VERSION_NUM */

#endif							/* IQ_STANDBY_H */

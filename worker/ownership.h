/*-------------------------------------------------------------------------
 * ownership.h
 *	  Which member of the consumer group owns which partition, for the
 *	  worker's own threads.
 *
 * The worker's main thread learns ownership from the group (member client
 * ids carry the advertised endpoints) after every rebalance, publishes it
 * to shared memory for backends (shmem.h), and keeps this copy for the HTTP
 * and local-socket threads, which must not take PostgreSQL locks.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_OWNERSHIP_H
#define IQ_OWNERSHIP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/shmem.h"

typedef struct IqOwnership
{
	uint64_t	generation;
	int			partition_count;
	int			nmembers;
	IqMember	members[IQ_MAX_MEMBERS];
	int16_t		owner[IQ_MAX_PARTITIONS];	/* member index or -1 */
	int			self;			/* index of this instance, -1 if it holds nothing */
} IqOwnership;

/* Any thread: a consistent copy of the current ownership. */
extern void iq_ownership_snapshot(IqOwnership *out);
extern uint64_t iq_ownership_generation(void);

/* the worker's main thread: describe the group, publish what it says */
extern void iq_ownership_init(void);
extern void iq_ownership_tick(void);
extern void iq_ownership_clear(void);

#endif							/* IQ_OWNERSHIP_H */

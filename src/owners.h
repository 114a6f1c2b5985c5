/*-------------------------------------------------------------------------
 * owners.h
 *	  Which instance owns which partition, as a backend sees it: a copy of
 *	  the worker's shared state, a bounded wait for partitions that have no
 *	  owner yet, and the targets a read is sent to.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_OWNERS_H
#define IQ_OWNERS_H

#include "common/shmem.h"
#include "src/fetch.h"

typedef struct IqOwnerView
{
	uint64		generation;
	IqWorkerState state;
	char		message[IQ_MESSAGE_LEN];
	int			partition_count;
	int			nmembers;
	IqMember	members[IQ_MAX_MEMBERS];
	int16		owner[IQ_MAX_PARTITIONS];
} IqOwnerView;

/* Copy the shared state. */
extern void iq_ownership_read(IqOwnerView *o);

/*
 * Wait (up to iq_fdw.ownership_wait) until the partition count is known
 * and every needed partition has an owner; needed == NULL means all.  The
 * error names the store and what was read ("key '2'", "a full scan").
 * With count_only, wait only for the partition count (to route keys).
 */
extern void iq_ownership_wait(IqOwnerView *o, const bool *needed,
							  bool count_only,
							  const char *store, const char *what);

/*
 * After an answer "not held here": wait (up to iq_fdw.ownership_wait) for
 * a view newer than asked_generation, or routing a needed partition to
 * another instance than in asked[], with every needed partition owned.
 * False if ownership did not change in time.
 */
extern bool iq_ownership_wait_change(IqOwnerView *o, uint64 asked_generation, int wait_ms,
									 const bool *needed,
									 const IqTarget *asked, int nasked);

/* The partition of a key under the configured partitioner. */
/* Whether every needed partition has an owner in o. */
extern bool iq_ownership_complete(const IqOwnerView *o, const bool *needed);

extern int	iq_ownership_partition(const IqOwnerView *o, const char *key, int len);

/* One target per owner of the needed partitions (all if needed == NULL). */
extern IqTarget *iq_ownership_targets(const IqOwnerView *o, const bool *needed,
									  int *ntargets);

/*
 * iq_fdw.read_from = nearest: the partitions of targets this instance
 * keeps a standby of within the bound, moved to one target of its own
 * (the local socket, IQ_FLAG_STANDBY).  The targets as they were otherwise.
 */
extern IqTarget *iq_ownership_nearest(const IqOwnerView *o, IqTarget *targets,
									  int *ntargets);

#endif							/* IQ_OWNERS_H */

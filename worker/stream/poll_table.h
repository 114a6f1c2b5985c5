/*-------------------------------------------------------------------------
 * poll_table.h
 *	  A poll aggregated in memory (topology.c), and what hands it to the
 *	  flush that writes it (flush.c).  Worker main thread only.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_POLL_TABLE_H
#define IQ_POLL_TABLE_H

typedef struct Entry
{
	uint32		hash;			/* 0 = empty slot */
	int			partition;
	const char *key;			/* points into a message of the batch */
	size_t		key_len;
	bool		is_order;
	int64		count;			/* order: the new count */
	bool		joined;			/* order: a customer exists */
	const char *value;			/* customer: new value, NULL = tombstone */
	size_t		value_len;
	bool		through;		/* written by this poll's flush, not the cache's */
} Entry;

typedef struct Table
{
	Entry	   *slots;
	int			size;			/* power of two */
	int			used;
} Table;

/* A poll counted a record of partition p: the next flush checkpoints it. */
extern void iq_flush_note_input(int partition);

/*
 * A poll is counted into the key cache.  t is its table when it holds
 * entries the cache does not (customers, keys it could not take), which
 * are written by a flush now; NULL otherwise, and a flush comes only if
 * one is due.
 */
extern void iq_flush_after_poll(Table *t);

#endif							/* IQ_POLL_TABLE_H */

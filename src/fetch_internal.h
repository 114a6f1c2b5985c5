/*-------------------------------------------------------------------------
 * fetch_internal.h
 *	  What the files of a fetch (fetch.h) share.  Backend code.
 *
 * A fetch asks each target over a channel (channel.h) and reads the
 * answers in parallel.  Its files, each calling only those below it:
 *
 *	 fetch.c		  the API: start, the merge of sorted rows, end, abort
 *	 fetch_prime.c	  headers first: lag policy, restoring wait, re-asking
 *	 fetch_reask.c	  asking the new owners after a partition moved or its owner went
 *	 fetch_standby.c  asking standby replicas when an owner cannot answer
 *					  (iq_fdw.read_from)
 *	 fetch_request.c  one request per target (a get: only its keys)
 *	 fetch_read.c	  a source's next event, waiting per iq_fdw.peer_timeout
 *	 fetch_report.c   errors naming the instance and what it was asked
 *	 fetch_source.c   a source's channel: start, stop, free
 *
 * A source is one target's answer in flight.  Everything a source owns is
 * malloc'd (the socket and curl never see palloc'd memory), so that an
 * abort can free it whatever memory context has been reset meanwhile.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FETCH_INTERNAL_H
#define IQ_FETCH_INTERNAL_H

#include "access/xact.h"
#include "utils/memutils.h"

#include "src/channel.h"
#include "src/fetch.h"
#include "src/owners.h"

typedef struct IqFetchSource
{
	IqTarget	target;			/* copied from the caller */
	IqBuf		request;		/* this target's encoded wire request */
	IqWireReader reader;
	IqChannel	chan;			/* its bytes, and why they stopped */

	/* iq_fdw.peer_timeout (fetch_read.c) */
	int64		call_started;	/* µs: the call began (connect included) */
	bool		answering;		/* the first byte of the answer arrived */
	int64		stalled_us;		/* waited since the last progress */
	size_t		partial;		/* bytes received since the last progress */

	/* the answer */
	bool		header_seen;
	bool		has_row;
	bool		ended;			/* read to its end */

	/*
	 * A scan with a LIMIT asks each source for its share of it
	 * (fetch_request.c) and, when a source returns all of its share while
	 * the merge still wants its rows, asks it for the next batch past its
	 * last key (iq_fetch_continue).
	 */
	uint32		limit;			/* rows this request asked for; 0: no limit */
	uint32		rows;			/* rows of this request read so far */
	uint64		rows_total;		/* rows of all its requests */
	char	   *last_key;		/* malloc'd: the key of the share's last row */
	uint32		last_key_len;
	bool		continued;		/* asked past its first share */

	/* a slot whose source was dropped: replaced by standbys, or refused */
	bool		unused;
	int64		lag;			/* a standby's, when it was accepted */
} IqFetchSource;

struct IqFetch
{
	IqFetch    *next;			/* in active_fetches (fetch.c) */
	IqFetch    *prev;
	SubTransactionId subid;		/* where it was started */
	MemoryContext reqcxt;		/* req, to ask again; never touched on abort */
	IqWireRequest *req;			/* as the caller made it, all targets' */
	uint64		generation;		/* of the ownership when first asked */
	bool		reasked;		/* asked again after an answer NOT_HELD */
	int64		next_batches;	/* iq_fetch_continue's, for EXPLAIN ANALYZE */
	int64		moving_since;	/* µs: a partition first moved, or an owner
								 * could not be reached; 0 before */
	uint8		op;
	uint8		store;
	int			nsources;
	int			capacity;		/* slots in sources: standbys take free ones */
	IqFetchSource *sources;
	IqFetchSource *last;		/* gave the previous row; advance it next */
	bool		primed;
	bool		released;
	bool		any_order;		/* iq_fetch_any_order: no merge by key */
	int			direction;		/* merge order: 1 ascending, -1 IQ_FLAG_REVERSE */
	int			npositions;
	IqWirePosition *positions;

	/* standby replicas (fetch_standby.c), with iq_fdw.read_from not owner */
	IqOwnerView *view;			/* the ownership the standbys are placed by */
	uint64		tried[IQ_MAX_PARTITIONS];	/* members asked for a standby of p */
	char		notes[1024];	/* why standbys tried were refused */
};

/* in fetch_prime.c */
extern void iq_fetch_prime(IqFetch *f);

/* in fetch_reask.c */
extern bool iq_fetch_reask(IqFetch *f, IqFetchSource *moved);
extern bool iq_fetch_await_owner(IqFetch *f, IqFetchSource *gone);

/* in fetch_standby.c */
extern bool iq_fetch_owner_cannot_answer(IqFetchSource *src, IqWireEvent ev);
extern bool iq_fetch_standby_accept(IqFetch *f, IqFetchSource *src, IqWireEvent ev);
extern bool iq_fetch_try_standbys(IqFetch *f, IqFetchSource *failed);
extern void iq_fetch_standby_forget(IqFetch *f, const IqOwnerView *o);
extern void iq_fetch_fail_standby(IqFetch *f, IqFetchSource *src) pg_attribute_noreturn();

/* in fetch_request.c */
extern IqWireRequest *iq_fetch_copy_request(MemoryContext cxt, const IqWireRequest *req);
extern bool iq_fetch_init_source(IqFetch *f, IqFetchSource *src, const IqTarget *t,
								 int partition_count, bool *asked);
extern void iq_fetch_add_sources(IqFetch *f, const IqTarget *targets, int ntargets,
								 int partition_count);
extern bool iq_fetch_wants_more(IqFetch *f, IqFetchSource *src);
extern void iq_fetch_continue(IqFetch *f, IqFetchSource *src);

/* in fetch_read.c */
extern IqWireEvent iq_fetch_next_event(IqFetch *f, IqFetchSource *src);
extern void iq_fetch_advance(IqFetch *f, IqFetchSource *src);
extern int64 iq_fetch_first_byte_us(const IqFetchSource *src);
extern bool iq_fetch_drain(IqFetchSource *src, size_t max_bytes, int64 deadline);

/* in fetch_report.c */
extern char *iq_fetch_describe(IqFetch *f, IqFetchSource *src);
extern char *iq_fetch_instance(IqFetchSource *src);
extern void iq_fetch_fail_transport(IqFetch *f, IqFetchSource *src) pg_attribute_noreturn();
extern void iq_fetch_fail_answer(IqFetch *f, IqFetchSource *src) pg_attribute_noreturn();
extern void iq_fetch_fail_unreachable(IqFetch *f, IqFetchSource *src) pg_attribute_noreturn();

/* in fetch_source.c */
extern void iq_fetch_start_sources(IqFetch *f);
extern void iq_fetch_start_source(IqFetchSource *src);
extern void iq_fetch_restart(IqFetch *f);
extern void iq_fetch_drop_source(IqFetchSource *src);
extern void iq_fetch_release(IqFetch *f);

#endif							/* IQ_FETCH_INTERNAL_H */

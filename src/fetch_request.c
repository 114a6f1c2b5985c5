/*-------------------------------------------------------------------------
 * fetch_request.c
 *	  The request each target of a fetch is sent: the caller's, with the
 *	  target's partitions, and for a get only the keys whose partition the
 *	  target holds.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/partitioner.h"
#include "common/settings.h"
#include "src/fetch_internal.h"

/* target_request: the request for one target; false if it has nothing to ask */
static bool
target_request(const IqWireRequest *req, const IqTarget *t, int partition_count,
			   IqBuf *out, bool *asked)
{
	IqWireRequest r = *req;
	uint16_t	parts[IQ_MAX_PARTITIONS];
	const char **keys = NULL;
	uint32_t   *lens = NULL;
	int			i;

	if (t->standby)
		r.flags |= IQ_FLAG_STANDBY;
	r.npartitions = t->npartitions;
	for (i = 0; i < t->npartitions; i++)
		parts[i] = t->partitions[i];
	r.partitions = parts;
	if (req->op == IQ_OP_GET)
	{
		uint32		k;

		r.nkeys = 0;
		keys = palloc(sizeof(char *) * Max(req->nkeys, 1));
		lens = palloc(sizeof(uint32_t) * Max(req->nkeys, 1));
		for (k = 0; k < req->nkeys; k++)
		{
			int			p = iq_partition_for_key(iq_partitioner, req->keys[k],
												 req->key_lens[k], partition_count);

			for (i = 0; i < t->npartitions; i++)
				if (t->partitions[i] == p)
					break;
			if (i == t->npartitions)
				continue;
			keys[r.nkeys] = req->keys[k];
			lens[r.nkeys] = req->key_lens[k];
			r.nkeys++;
			asked[k] = true;
		}
		r.keys = keys;
		r.key_lens = lens;
		if (r.nkeys == 0)
		{
			pfree(keys);
			pfree(lens);
			return false;
		}
	}
	iq_buf_init(out);
	iq_wire_encode_request(&r, out);
	if (keys)
	{
		pfree(keys);
		pfree(lens);
	}
	if (out->oom)
	{
		iq_buf_free(out);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY),
						errmsg("out of memory encoding an iq_fdw request")));
	}
	return true;
}

/* copy_bytes: len bytes into cxt (NULL stays NULL) */
static const char *
copy_bytes(MemoryContext cxt, const char *p, uint32 len)
{
	char	   *c;

	if (p == NULL)
		return NULL;
	c = MemoryContextAlloc(cxt, Max(len, 1));
	memcpy(c, p, len);
	return c;
}

/* iq_fetch_copy_request: a deep copy of the caller's request, to ask it again */
IqWireRequest *
iq_fetch_copy_request(MemoryContext cxt, const IqWireRequest *req)
{
	IqWireRequest *r = MemoryContextAlloc(cxt, sizeof(IqWireRequest));

	*r = *req;
	r->npartitions = 0;			/* filled in per target */
	r->partitions = NULL;
	if (req->nkeys > 0)
	{
		r->keys = MemoryContextAlloc(cxt, sizeof(char *) * req->nkeys);
		r->key_lens = MemoryContextAlloc(cxt, sizeof(uint32_t) * req->nkeys);
		for (uint32 k = 0; k < req->nkeys; k++)
		{
			r->keys[k] = copy_bytes(cxt, req->keys[k], req->key_lens[k]);
			r->key_lens[k] = req->key_lens[k];
		}
	}
	r->lower = copy_bytes(cxt, req->lower, req->lower_len);
	r->upper = copy_bytes(cxt, req->upper, req->upper_len);
	return r;
}

/*
 * scan_share: how many rows of a scan's LIMIT to ask of a target holding
 * npartitions of partition_count.  Keys spread over the partitions by
 * hash, so the first LIMIT keys of a range fall on a target in proportion
 * to its partitions; it is asked for that share and a margin (a quarter,
 * and 16 rows for small limits), which the merge rarely exceeds, instead of
 * the whole LIMIT, most of which every instance would read and send for
 * nothing.  A target whose share runs out while the merge still wants its
 * rows is asked for the next batch (iq_fetch_continue).
 */
static uint32
scan_share(const IqWireRequest *req, int npartitions, int partition_count)
{
	uint64		share;

	if (req->op != IQ_OP_SCAN || req->limit == 0 ||
		npartitions <= 0 || partition_count <= npartitions)
		return req->limit;
	share = ((uint64) req->limit * npartitions + partition_count - 1) / partition_count;
	share += share / 4 + 16;
	return (uint32) Min(share, (uint64) req->limit);
}

/*
 * iq_fetch_init_source: src (a free slot) set up to ask target t, its
 * request encoded (not sent); false, with the slot free again, if t has
 * nothing to ask.  asked[k] is set for each key of a get t is asked for.
 */
bool
iq_fetch_init_source(IqFetch *f, IqFetchSource *src, const IqTarget *t,
					 int partition_count, bool *asked)
{
	IqWireRequest r = *f->req;

	memset(src, 0, sizeof(IqFetchSource));
	iq_chan_init(&src->chan);
	iq_wire_reader_init(&src->reader);
	memcpy(&src->target, t, sizeof(IqTarget));
	r.limit = scan_share(&r, t->npartitions, partition_count);
	if (!target_request(&r, t, partition_count, &src->request, asked))
	{
		iq_wire_reader_free(&src->reader);
		return false;
	}
	src->limit = r.limit;
	return true;
}

/*
 * iq_fetch_wants_more: whether src, whose answer just ended, may hold
 * rows past its share that the query's LIMIT can still take
 */
bool
iq_fetch_wants_more(IqFetch *f, IqFetchSource *src)
{
	return src->limit > 0 && src->rows == src->limit && src->last_key != NULL &&
		src->rows_total < f->req->limit;
}

/*
 * iq_fetch_continue: ask src, whose share ran out (iq_fetch_wants_more),
 * for the next batch: the same range past its last key (below it in
 * reverse), twice the rows,
 * over the same connection (the answer was read to its end, so it is
 * pooled and taken again).  Rows stay in key order and none comes twice;
 * the batch reads the store as it is now, as a longer answer would have
 * read it a moment later.
 */
void
iq_fetch_continue(IqFetch *f, IqFetchSource *src)
{
	IqWireRequest r = *f->req;
	uint64		left = f->req->limit - src->rows_total;

	if (r.flags & IQ_FLAG_REVERSE)
	{
		r.upper = src->last_key;
		r.upper_len = src->last_key_len;
		r.flags = (r.flags | IQ_FLAG_UPPER) & ~IQ_FLAG_UPPER_INCL;
	}
	else
	{
		r.lower = src->last_key;
		r.lower_len = src->last_key_len;
		r.flags = (r.flags | IQ_FLAG_LOWER) & ~IQ_FLAG_LOWER_INCL;
	}
	r.limit = (uint32) Min(left, (uint64) src->limit * 2);
	iq_chan_finish(&src->chan, true);
	iq_buf_free(&src->request);
	(void) target_request(&r, &src->target, 0, &src->request, NULL);
	free(src->last_key);
	src->last_key = NULL;
	src->limit = r.limit;
	src->continued = true;
	f->next_batches++;
	iq_fetch_start_source(src);
}

/*
 * iq_fetch_add_sources: one source per target that has something to ask, its
 * request encoded (not sent).  Every key of a get must find its target.
 */
void
iq_fetch_add_sources(IqFetch *f, const IqTarget *targets, int ntargets, int partition_count)
{
	const IqWireRequest *req = f->req;
	bool	   *asked = NULL;
	int			i;

	if (req->op == IQ_OP_GET)
		asked = palloc0(sizeof(bool) * Max(req->nkeys, 1));
	for (i = 0; i < ntargets; i++)
	{
		if (iq_fetch_init_source(f, &f->sources[f->nsources], &targets[i],
								 partition_count, asked))
			f->nsources++;
	}
	if (asked)
	{
		uint32		k;

		for (k = 0; k < req->nkeys; k++)
			if (!asked[k])
				elog(ERROR, "no target holds the partition of a key asked (partition count %d)",
					 partition_count);
		pfree(asked);
	}
}

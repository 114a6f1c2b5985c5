/*-------------------------------------------------------------------------
 * read_handler.c
 *	  Answer compact read requests from the stores this instance holds.
 *
 * A request names the partitions the caller believes this instance holds;
 * if one is not held (ownership moved) or still restoring, the answer is
 * NOT_HELD or RESTORING and no rows, so a caller never mistakes a moved
 * partition for an empty one.  Every answer is produced a buffer at a time,
 * so none is built whole: scans from a store cursor (which holds no lock
 * between its batches), gets key after key.  A get answers each distinct
 * key once, in the order of its first appearance, however often it is
 * asked; a partition asked twice is read once.  Memory per request is the
 * decoded request (bounded by IQ_WIRE_MAX_REQUEST), a bitmap of repeated
 * keys and the buffer of the caller's chunk.  Server threads only: malloc,
 * no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* qsort_r */
#endif

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/partitioner.h"
#include "common/stores.h"
#include "worker/serve/http/http_internal.h"		/* iq_http_ownership */
#include "worker/serve/read_handler.h"
#include "worker/store/store.h"

#define MAX_HELD 4096

/*
 * The rows of a get read before its header is written: a partition found
 * moved within them still gives a whole error answer (NOT_HELD, which the
 * caller answers by asking the new owner), and a get that fits is complete
 * at once.  Past it, a failure ends the stream with its status.
 */
#define GET_FIRST_CHUNK (64 * 1024)

struct IqReadStream
{
	IqWireRequest req;
	bool		decoded;		/* req holds arrays to free */
	IqBuf		pending;		/* produced but not yet handed out */
	IqStoreCursor *cursor;		/* open while a scan streams */
	uint32_t	rows;			/* rows sent by the scan */
	bool		done;			/* everything is in pending */
	/* a get streaming its keys */
	bool		get_active;
	uint32_t	next_key;		/* the next key of req.keys to answer */
	uint8_t    *repeated;		/* bitmap: key k was asked before it */
};

static int	read_partitioner = 0;

/* iq_read_set_partitioner: how keys map to partitions for GET */
void
iq_read_set_partitioner(int partitioner)
{
	read_partitioner = partitioner;
}

/* standby_ok: the caller takes a standby replica's answer (wire.h) */
static inline bool
standby_ok(const IqReadStream *s)
{
	return (s->req.flags & IQ_FLAG_STANDBY) != 0;
}

/*
 * held_status
 *		Whether a partition can be read here, with a reason if not: held and
 *		restored, or (standby) a standby replica kept here.
 */
static IqReadStatus
held_status(int partition, const int *held, int nheld, bool standby)
{
	IqPartitionPosition pos;
	int			i;

	for (i = 0; i < nheld; i++)
		if (held[i] == partition)
			return IQ_READ_OK;
	if (standby && iq_store_standby_readable(partition))
		return IQ_READ_OK;
	/* held but not readable yet means it is restoring */
	if (iq_store_position(partition, &pos))
		return IQ_READ_RESTORING;

	/*
	 * Assigned to us but not opened yet (just after a rebalance or a
	 * start): transient like a restore, not a sign that ownership moved.
	 */
	if (partition >= 0 && partition < IQ_HTTP_MAX_PARTITIONS)
	{
		IqHttpOwnership *o = calloc(1, sizeof(IqHttpOwnership));
		bool		ours = false;

		if (o)
		{
			iq_http_ownership(o);
			ours = (o->self >= 0 && partition < o->partition_count &&
					o->owner[partition] == o->self);
			free(o);
		}
		if (ours)
			return IQ_READ_RESTORING;
	}
	return IQ_READ_NOT_HELD;
}

/* wire_status: the wire status for a store read status */
static IqWireStatus
wire_status(IqReadStatus st)
{
	switch (st)
	{
		case IQ_READ_OK:
		case IQ_READ_NOT_FOUND:
			return IQ_WIRE_OK;
		case IQ_READ_NOT_HELD:
		case IQ_READ_MOVED:
			return IQ_WIRE_NOT_HELD;
		case IQ_READ_RESTORING:
			return IQ_WIRE_RESTORING;
		default:
			return IQ_WIRE_INTERNAL;
	}
}

/* fail: replace whatever was produced by an error response */
static void
fail(IqReadStream *s, IqWireStatus status, const char *message)
{
	s->pending.len = 0;
	s->pending.oom = false;
	iq_wire_response_error(&s->pending, status, message);
	s->done = true;
}

/* fail_partition: NOT_HELD / RESTORING for a partition, with its number */
static void
fail_partition(IqReadStream *s, IqReadStatus st, int partition)
{
	char		msg[128];

	if (st == IQ_READ_RESTORING)
		snprintf(msg, sizeof(msg), "partition %d is still restoring (or being opened)", partition);
	else
		snprintf(msg, sizeof(msg), "partition %d is not held by this instance", partition);
	fail(s, wire_status(st), msg);
}

/* header_for: the positions header for a set of partitions */
static void
header_for(IqBuf *out, const int *parts, int nparts)
{
	IqWirePosition *pos = NULL;
	int			n = 0;
	int			i;
	int64_t		since = iq_store_read_clock();

	if (nparts > 0)
		pos = malloc(sizeof(IqWirePosition) * nparts);
	if (nparts > 0 && pos == NULL)
	{
		out->oom = true;
		return;
	}
	for (i = 0; i < nparts; i++)
	{
		IqPartitionPosition pp;

		/* parts were checked: held, or standbys the caller asked for */
		if (!iq_store_position(parts[i], &pp) &&
			!iq_store_standby_position(parts[i], since, &pp))
			continue;
		pos[n].partition = (uint16_t) parts[i];
		pos[n].consumed = pp.consumed_offset;
		pos[n].end = pp.end_offset;
		n++;
	}
	iq_wire_response_header(out, n, pos);
	free(pos);
}

/*
 * asked_partitions: the partitions a SCAN/COUNT/POSITIONS covers (those
 * asked, or all held), checked to be readable; false after fail().
 */
static bool
asked_partitions(IqReadStream *s, int *parts, int *nparts)
{
	int			held[MAX_HELD];
	int			nheld = iq_store_held_partitions(held, MAX_HELD);
	int			i;

	if (s->req.npartitions == 0)
	{
		memcpy(parts, held, sizeof(int) * nheld);
		*nparts = nheld;
		return true;
	}
	*nparts = 0;
	for (i = 0; i < s->req.npartitions; i++)
	{
		int			p = s->req.partitions[i];
		IqReadStatus st;
		int			j;

		/* asked twice, answered once */
		for (j = 0; j < *nparts; j++)
			if (parts[j] == p)
				break;
		if (j < *nparts)
			continue;
		st = held_status(p, held, nheld, standby_ok(s));
		if (st != IQ_READ_OK)
		{
			fail_partition(s, st, p);
			return false;
		}
		parts[(*nparts)++] = p;
	}
	return true;
}

/* key_order: qsort_r comparator of key indexes: bytes, then position */
static int
key_order(const void *a, const void *b, void *arg)
{
	const IqWireRequest *r = arg;
	uint32_t	ia = *(const uint32_t *) a;
	uint32_t	ib = *(const uint32_t *) b;
	uint32_t	la = r->key_lens[ia];
	uint32_t	lb = r->key_lens[ib];
	int			c = memcmp(r->keys[ia], r->keys[ib], la < lb ? la : lb);

	if (c != 0)
		return c;
	if (la != lb)
		return la < lb ? -1 : 1;
	return ia < ib ? -1 : (ia > ib);
}

/*
 * mark_repeated: a bitmap of the keys asked before, so each is answered
 * once; sorting (n log n whatever the keys) rather than hashing, which
 * chosen keys could make quadratic.  False when out of memory.
 */
static bool
mark_repeated(IqReadStream *s)
{
	uint32_t	n = s->req.nkeys;
	uint32_t   *order;
	uint32_t	i;

	if (n < 2)
		return true;
	s->repeated = calloc((n + 7) / 8, 1);
	order = malloc(sizeof(uint32_t) * n);
	if (s->repeated == NULL || order == NULL)
	{
		free(order);
		return false;
	}
	for (i = 0; i < n; i++)
		order[i] = i;
	qsort_r(order, n, sizeof(uint32_t), key_order, &s->req);
	for (i = 1; i < n; i++)
	{
		uint32_t	a = order[i - 1];
		uint32_t	b = order[i];

		if (s->req.key_lens[a] == s->req.key_lens[b] &&
			memcmp(s->req.keys[a], s->req.keys[b], s->req.key_lens[a]) == 0)
			s->repeated[b / 8] |= (uint8_t) (1 << (b % 8));
	}
	free(order);
	return true;
}

/*
 * get_more: rows of the next keys into out, until it holds want bytes or
 * every key is answered; IQ_READ_OK, or the status that stopped it (with
 * *partition, and *err for IQ_READ_ERROR).
 */
static IqReadStatus
get_more(IqReadStream *s, IqBuf *out, size_t want, int *partition, char **err)
{
	int			pc = iq_store_partition_count();

	while (s->next_key < s->req.nkeys && out->len < want && !out->oom)
	{
		uint32_t	k = s->next_key++;
		char	   *value = NULL;
		size_t		value_len = 0;
		IqReadStatus st;
		int			p;

		if (s->repeated && (s->repeated[k / 8] & (1 << (k % 8))))
			continue;
		p = iq_partition_for_key(read_partitioner, s->req.keys[k], s->req.key_lens[k], pc);
		st = iq_store_get_as((IqStoreId) s->req.store, p, s->req.keys[k], s->req.key_lens[k],
							 standby_ok(s), &value, &value_len, err);
		if (st == IQ_READ_OK)
			iq_wire_response_row(out, s->req.keys[k], s->req.key_lens[k],
								 value, (int32_t) value_len);
		free(value);
		if (st != IQ_READ_OK && st != IQ_READ_NOT_FOUND)
		{
			/* a rebalance took it between the check and the read, or RocksDB failed */
			*partition = p;
			return st;
		}
		if (*err)
		{
			free(*err);
			*err = NULL;
		}
	}
	if (out->oom)
	{
		*err = strdup("out of memory");
		return IQ_READ_ERROR;
	}
	return IQ_READ_OK;
}

/* end_get: the end frame of a get that streams past its first chunk */
static void
end_get(IqReadStream *s, IqBuf *out, IqReadStatus st, int partition, char *err)
{
	char		msg[128];

	if (st == IQ_READ_OK)
		iq_wire_response_end(out, IQ_WIRE_OK, "");
	else if (st == IQ_READ_ERROR)
		iq_wire_response_end(out, IQ_WIRE_INTERNAL, err ? err : "store read failed");
	else
	{
		snprintf(msg, sizeof(msg), st == IQ_READ_RESTORING ?
				 "partition %d is still restoring (or being opened)" :
				 "partition %d is not held by this instance", partition);
		iq_wire_response_end(out, wire_status(st), msg);
	}
	free(err);
	s->get_active = false;
	s->done = true;
}

/*
 * do_get: check every key's partition first (no rows if any is elsewhere),
 * then answer the keys, each once, a chunk at a time: the first chunk now,
 * the rest as iq_read_produce is asked for more.
 */
static void
do_get(IqReadStream *s)
{
	int			pc = iq_store_partition_count();
	int			held[MAX_HELD];
	int			nheld = iq_store_held_partitions(held, MAX_HELD);
	int			parts[IQ_HTTP_MAX_PARTITIONS];
	bool		seen[IQ_HTTP_MAX_PARTITIONS];
	int			nparts = 0;
	IqBuf		rows;
	IqReadStatus st;
	int			bad = -1;
	char	   *err = NULL;
	uint32_t	k;

	if (pc <= 0)
	{
		fail(s, IQ_WIRE_NOT_HELD, "this instance holds no partitions yet");
		return;
	}
	memset(seen, 0, sizeof(seen));
	for (k = 0; k < s->req.nkeys; k++)
	{
		int			p = iq_partition_for_key(read_partitioner, s->req.keys[k],
											 s->req.key_lens[k], pc);

		if (p >= 0 && p < IQ_HTTP_MAX_PARTITIONS && seen[p])
			continue;
		st = (p >= 0 && p < IQ_HTTP_MAX_PARTITIONS) ? held_status(p, held, nheld, standby_ok(s)) : IQ_READ_NOT_HELD;
		if (st != IQ_READ_OK)
		{
			fail_partition(s, st, p);
			return;
		}
		seen[p] = true;
		parts[nparts++] = p;
	}
	if (!mark_repeated(s))
	{
		fail(s, IQ_WIRE_INTERNAL, "out of memory");
		return;
	}

	iq_buf_init(&rows);
	st = get_more(s, &rows, GET_FIRST_CHUNK, &bad, &err);
	if (st != IQ_READ_OK)
	{
		iq_buf_free(&rows);
		if (st == IQ_READ_ERROR)
			fail(s, IQ_WIRE_INTERNAL, err ? err : "store read failed");
		else
			fail_partition(s, st, bad);
		free(err);
		return;
	}
	header_for(&s->pending, parts, nparts);
	iq_buf_append(&s->pending, rows.data, rows.len);
	iq_buf_free(&rows);
	if (s->next_key >= s->req.nkeys)
	{
		iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
		s->done = true;
	}
	else
		s->get_active = true;
}

/* do_count: one row with an empty key and the 8-byte approximate count */
static void
do_count(IqReadStream *s, const int *parts, int nparts)
{
	unsigned char v[8];
	uint64_t	n;

	/* nparts 0 means "all held" to the store too; nothing held is 0 */
	n = nparts > 0 ? iq_store_approximate_count((IqStoreId) s->req.store, parts, nparts) : 0;
	iq_encode_int64((long long) n, v);
	header_for(&s->pending, parts, nparts);
	iq_wire_response_row(&s->pending, "", 0, (const char *) v, 8);
	iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
	s->done = true;
}

/* start_scan: open the cursor and write the header */
static void
start_scan(IqReadStream *s, const int *parts, int nparts)
{
	IqReadStatus st = IQ_READ_OK;
	char	   *err = NULL;
	const IqWireRequest *r = &s->req;

	if (nparts == 0)
	{
		/* nothing held: an empty answer, not "all partitions" */
		header_for(&s->pending, parts, 0);
		iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
		s->done = true;
		return;
	}
	s->cursor = iq_store_cursor_open_as((IqStoreId) r->store, parts, nparts,
										(r->flags & IQ_FLAG_LOWER) ? r->lower : NULL,
										r->lower_len,
										(r->flags & IQ_FLAG_LOWER_INCL) != 0,
										(r->flags & IQ_FLAG_UPPER) ? r->upper : NULL,
										r->upper_len,
										(r->flags & IQ_FLAG_UPPER_INCL) != 0,
										standby_ok(s), &st, &err);
	if (s->cursor == NULL)
	{
		if (st == IQ_READ_NOT_HELD || st == IQ_READ_RESTORING)
			fail(s, wire_status(st), err ? err : (st == IQ_READ_RESTORING ?
												  "a partition is still restoring" :
												  "a partition is not held by this instance"));
		else
			fail(s, IQ_WIRE_INTERNAL, err ? err : "could not open a store cursor");
		free(err);
		return;
	}
	if (r->flags & IQ_FLAG_REVERSE)
		iq_store_cursor_set_reverse(s->cursor);
	if (r->limit > 0)
		iq_store_cursor_expect(s->cursor, r->limit);
	header_for(&s->pending, parts, nparts);
}

/* iq_read_begin: decode and answer everything but a scan's rows */
IqReadStream *
iq_read_begin(const char *data, size_t len)
{
	IqReadStream *s = calloc(1, sizeof(IqReadStream));
	const char *derr = NULL;
	char		newer[160];
	int		   *parts;
	int			nparts = 0;

	if (s == NULL)
		return NULL;
	iq_buf_init(&s->pending);
	if (iq_wire_unknown_version(data, len, newer, sizeof(newer)))
	{
		fail(s, IQ_WIRE_UNKNOWN_VERSION, newer);
		return s;
	}
	if (!iq_wire_decode_request(data, len, &s->req, &derr))
	{
		fail(s, IQ_WIRE_BAD_REQUEST, derr);
		return s;
	}
	s->decoded = true;
	if (s->req.store >= IQ_NUM_STORES)
	{
		fail(s, IQ_WIRE_UNKNOWN_STORE, "unknown store");
		return s;
	}
	if (s->req.op == IQ_OP_GET)
	{
		do_get(s);
		return s;
	}
	parts = malloc(sizeof(int) * MAX_HELD);
	if (parts == NULL)
	{
		fail(s, IQ_WIRE_INTERNAL, "out of memory");
		return s;
	}
	if (asked_partitions(s, parts, &nparts))
	{
		switch (s->req.op)
		{
			case IQ_OP_COUNT:
				do_count(s, parts, nparts);
				break;
			case IQ_OP_POSITIONS:
				header_for(&s->pending, parts, nparts);
				iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
				s->done = true;
				break;
			default:
				start_scan(s, parts, nparts);
				break;
		}
	}
	free(parts);
	return s;
}

/* close_cursor: close the scan, ending the stream with its outcome */
static void
close_cursor(IqReadStream *s)
{
	char	   *err = NULL;
	IqReadStatus st = iq_store_cursor_close(s->cursor, &err);

	s->cursor = NULL;
	if (st == IQ_READ_OK)
		iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
	else
		iq_wire_response_end(&s->pending, wire_status(st),
							 err ? err : "store iterator failed");
	free(err);
	s->done = true;
}

/* iq_read_produce: hand out what is produced, scanning rows straight into out */
bool
iq_read_produce(IqReadStream *s, IqBuf *out, size_t want)
{
	if (s->pending.len > 0)
	{
		iq_buf_append(out, s->pending.data, s->pending.len);
		s->pending.len = 0;
	}
	while (s->get_active && !s->done && out->len < want && !out->oom)
	{
		int			bad = -1;
		char	   *err = NULL;
		IqReadStatus st = get_more(s, out, want, &bad, &err);

		if (st != IQ_READ_OK || s->next_key >= s->req.nkeys)
			end_get(s, out, st, bad, err);
		else
			free(err);
	}
	while (!s->done && out->len < want && !out->oom)
	{
		IqStoreRow row;

		if ((s->req.limit > 0 && s->rows >= s->req.limit) ||
			!iq_store_cursor_next(s->cursor, &row))
		{
			close_cursor(s);
			iq_buf_append(out, s->pending.data, s->pending.len);
			s->pending.len = 0;
			break;
		}
		iq_wire_response_row(out, row.key, (uint32_t) row.key_len,
							 row.value, row.value ? (int32_t) row.value_len : -1);
		s->rows++;
	}
	/* out->oom: a half-written stream cannot continue; the caller drops it */
	return !s->done && !out->oom && !s->pending.oom;
}

/* iq_read_finish: free the stream, closing a scan cut short */
void
iq_read_finish(IqReadStream *s)
{
	if (s == NULL)
		return;
	if (s->cursor)
	{
		char	   *err = NULL;

		iq_store_cursor_close(s->cursor, &err);
		free(err);
	}
	if (s->decoded)
		iq_wire_request_free(&s->req);
	free(s->repeated);
	iq_buf_free(&s->pending);
	free(s);
}

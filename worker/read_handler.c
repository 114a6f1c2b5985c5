/*-------------------------------------------------------------------------
 * read_handler.c
 *	  Answer compact read requests from the stores this instance holds.
 *
 * A request names the partitions the caller believes this instance holds;
 * if one is not held (ownership moved) or still restoring, the answer is
 * NOT_HELD or RESTORING and no rows, so a caller never mistakes a moved
 * partition for an empty one.  Scans are produced from a store cursor a
 * buffer at a time.  Server threads only: malloc, no PostgreSQL calls.
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"		/* iq_http_ownership */
#include "partitioner.h"
#include "read_handler.h"
#include "store.h"
#include "stores.h"

#define MAX_HELD 4096

struct IqReadStream
{
	IqWireRequest req;
	bool		decoded;		/* req holds arrays to free */
	IqBuf		pending;		/* produced but not yet handed out */
	IqStoreCursor *cursor;		/* open while a scan streams */
	uint32_t	rows;			/* rows sent by the scan */
	bool		done;			/* everything is in pending */
};

static int	read_partitioner = 0;

/* iq_read_set_partitioner: how keys map to partitions for GET */
void
iq_read_set_partitioner(int partitioner)
{
	read_partitioner = partitioner;
}

/* held_status: whether a partition can be read here, with a reason if not */
static IqReadStatus
held_status(int partition, const int *held, int nheld)
{
	IqPartitionPosition pos;
	int			i;

	for (i = 0; i < nheld; i++)
		if (held[i] == partition)
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

		if (!iq_store_position(parts[i], &pp))
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
	for (i = 0; i < s->req.npartitions; i++)
	{
		IqReadStatus st = held_status(s->req.partitions[i], held, nheld);

		if (st != IQ_READ_OK)
		{
			fail_partition(s, st, s->req.partitions[i]);
			return false;
		}
		parts[i] = s->req.partitions[i];
	}
	*nparts = s->req.npartitions;
	return true;
}

/* do_get: look every key up in its partition; all rows at once (small) */
static void
do_get(IqReadStream *s)
{
	int			pc = iq_store_partition_count();
	int			held[MAX_HELD];
	int			nheld = iq_store_held_partitions(held, MAX_HELD);
	int		   *kpart;
	int		   *parts;
	int			nparts = 0;
	IqBuf		rows;
	uint32_t	k;
	int			i;

	if (pc <= 0)
	{
		fail(s, IQ_WIRE_NOT_HELD, "this instance holds no partitions yet");
		return;
	}
	kpart = malloc(sizeof(int) * (s->req.nkeys + 1));
	parts = malloc(sizeof(int) * (s->req.nkeys + 1));
	if (kpart == NULL || parts == NULL)
	{
		free(kpart);
		free(parts);
		fail(s, IQ_WIRE_INTERNAL, "out of memory");
		return;
	}
	/* check every key's partition first: no rows if any is elsewhere */
	for (k = 0; k < s->req.nkeys; k++)
	{
		IqReadStatus st;

		kpart[k] = iq_partition_for_key(read_partitioner, s->req.keys[k],
										s->req.key_lens[k], pc);
		st = held_status(kpart[k], held, nheld);
		if (st != IQ_READ_OK)
		{
			fail_partition(s, st, kpart[k]);
			free(kpart);
			free(parts);
			return;
		}
		for (i = 0; i < nparts; i++)
			if (parts[i] == kpart[k])
				break;
		if (i == nparts)
			parts[nparts++] = kpart[k];
	}

	iq_buf_init(&rows);
	for (k = 0; k < s->req.nkeys; k++)
	{
		char	   *value = NULL;
		size_t		value_len = 0;
		char	   *err = NULL;
		IqReadStatus st;

		st = iq_store_get((IqStoreId) s->req.store, kpart[k],
						  s->req.keys[k], s->req.key_lens[k],
						  &value, &value_len, &err);
		if (st == IQ_READ_OK)
			iq_wire_response_row(&rows, s->req.keys[k], s->req.key_lens[k],
								 value, (int32_t) value_len);
		free(value);
		if (st == IQ_READ_NOT_HELD || st == IQ_READ_RESTORING)
		{
			/* a rebalance took it between the check and the read */
			free(err);
			iq_buf_free(&rows);
			fail_partition(s, st, kpart[k]);
			free(kpart);
			free(parts);
			return;
		}
		if (st == IQ_READ_ERROR)
		{
			iq_buf_free(&rows);
			fail(s, IQ_WIRE_INTERNAL, err ? err : "store read failed");
			free(err);
			free(kpart);
			free(parts);
			return;
		}
		free(err);
	}
	header_for(&s->pending, parts, nparts);
	iq_buf_append(&s->pending, rows.data, rows.len);
	iq_wire_response_end(&s->pending, IQ_WIRE_OK, "");
	if (rows.oom)
		fail(s, IQ_WIRE_INTERNAL, "out of memory");
	iq_buf_free(&rows);
	free(kpart);
	free(parts);
	s->done = true;
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
	s->cursor = iq_store_cursor_open((IqStoreId) r->store, parts, nparts,
									 (r->flags & IQ_FLAG_LOWER) ? r->lower : NULL,
									 r->lower_len,
									 (r->flags & IQ_FLAG_LOWER_INCL) != 0,
									 (r->flags & IQ_FLAG_UPPER) ? r->upper : NULL,
									 r->upper_len,
									 (r->flags & IQ_FLAG_UPPER_INCL) != 0,
									 &st, &err);
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
	header_for(&s->pending, parts, nparts);
}

/* iq_read_begin: decode and answer everything but a scan's rows */
IqReadStream *
iq_read_begin(const char *data, size_t len)
{
	IqReadStream *s = calloc(1, sizeof(IqReadStream));
	const char *derr = NULL;
	int		   *parts;
	int			nparts = 0;

	if (s == NULL)
		return NULL;
	iq_buf_init(&s->pending);
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
	iq_buf_free(&s->pending);
	free(s);
}

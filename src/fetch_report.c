/*-------------------------------------------------------------------------
 * fetch_report.c
 *	  A fetch's errors: which instance, what it was asked (keys, range,
 *	  partitions), and why its answer cannot be used.
 *
 * Everything a fetch holds is released before the error is raised, so a
 * backend's pooled connections stay usable; what the report needs is
 * copied out first.  A peer's text may echo the bytes of a key: it is
 * escaped where it is not valid in the database encoding.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"

#include "common/settings.h"
#include "common/stores.h"
#include "src/fetch_internal.h"

/* append_key: a key for a message, bytes that are not printable escaped */
static void
append_key(StringInfo s, const char *key, uint32 len)
{
	uint32		i;
	uint32		shown = Min(len, 64);

	appendStringInfoChar(s, '\'');
	for (i = 0; i < shown; i++)
	{
		unsigned char c = (unsigned char) key[i];

		if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'')
			appendStringInfoChar(s, (char) c);
		else
			appendStringInfo(s, "\\x%02x", c);
	}
	if (shown < len)
		appendStringInfoString(s, "...");
	appendStringInfoChar(s, '\'');
}

/*
 * peer_text: a message from a peer or a library, fit for a report: as it
 * is when valid in the database encoding, else with bytes that are not
 * printable ASCII as \xNN (a peer may echo the bytes of a key)
 */
static char *
peer_text(const char *msg)
{
	StringInfoData buf;

	if (pg_verifymbstr(msg, strlen(msg), true))
		return pstrdup(msg);
	initStringInfo(&buf);
	for (const unsigned char *p = (const unsigned char *) msg; *p; p++)
	{
		if (*p >= 0x20 && *p < 0x7f && *p != '\\')
			appendStringInfoChar(&buf, (char) *p);
		else
			appendStringInfo(&buf, "\\x%02x", *p);
	}
	return buf.data;
}

/* append_range: "the range ['a', 'b') of store s", or all its keys */
static void
append_range(StringInfo s, const IqWireRequest *req, const char *store)
{
	if (!(req->flags & (IQ_FLAG_LOWER | IQ_FLAG_UPPER)))
	{
		appendStringInfo(s, "all keys of store %s", store);
		return;
	}
	appendStringInfoString(s, "the range ");
	if (req->flags & IQ_FLAG_LOWER)
	{
		appendStringInfoChar(s, (req->flags & IQ_FLAG_LOWER_INCL) ? '[' : '(');
		append_key(s, req->lower, req->lower_len);
	}
	else
		appendStringInfoString(s, "(-inf");
	appendStringInfoString(s, ", ");
	if (req->flags & IQ_FLAG_UPPER)
	{
		append_key(s, req->upper, req->upper_len);
		appendStringInfoChar(s, (req->flags & IQ_FLAG_UPPER_INCL) ? ']' : ')');
	}
	else
		appendStringInfoString(s, "+inf)");
	appendStringInfo(s, " of store %s", store);
}

/* append_request: what req asks, and of which partitions */
static void
append_request(StringInfo s, const IqWireRequest *req, const char *store)
{
	int			i;

	switch (req->op)
	{
		case IQ_OP_GET:
			appendStringInfo(s, "%s ", req->nkeys == 1 ? "key" : "keys");
			for (i = 0; i < (int) req->nkeys && i < 5; i++)
			{
				if (i > 0)
					appendStringInfoString(s, ", ");
				append_key(s, req->keys[i], req->key_lens[i]);
			}
			if (req->nkeys > 5)
				appendStringInfo(s, " and %u more", req->nkeys - 5);
			appendStringInfo(s, " of store %s", store);
			break;
		case IQ_OP_SCAN:
			append_range(s, req, store);
			break;
		case IQ_OP_COUNT:
			appendStringInfo(s, "the key count of store %s", store);
			break;
		default:
			appendStringInfo(s, "the positions of store %s", store);
			break;
	}
	if (req->npartitions > 0)
	{
		appendStringInfo(s, " (partition%s", req->npartitions > 1 ? "s" : "");
		for (i = 0; i < req->npartitions; i++)
			appendStringInfo(s, "%s%u", i ? ", " : " ", req->partitions[i]);
		appendStringInfoChar(s, ')');
	}
}

/* iq_fetch_describe: "key '1' of store order-count (partition 2)" and the like */
char *
iq_fetch_describe(IqFetch *f, IqFetchSource *src)
{
	StringInfoData s;
	IqWireRequest req;
	const char *err;
	const char *store = f->store < IQ_NUM_STORES ? iq_stores[f->store].name : "?";

	initStringInfo(&s);
	if (src->request.data == NULL ||
		!iq_wire_decode_request(src->request.data, src->request.len, &req, &err))
	{
		appendStringInfo(&s, "store %s", store);
		return s.data;
	}
	append_request(&s, &req, store);
	iq_wire_request_free(&req);
	return s.data;
}

/* iq_fetch_instance: "host:port" of a source, and "(this instance)" for local */
char *
iq_fetch_instance(IqFetchSource *src)
{
	return psprintf("%s:%d%s", src->target.host, src->target.port,
					src->target.is_local ? " (this instance)" : "");
}

/* What a report says, copied out before the fetch is released. */
typedef struct Report
{
	char	   *what;			/* iq_fetch_describe */
	char	   *who;			/* iq_fetch_instance */
	char	   *text;			/* the channel's or the peer's, escaped */
} Report;

/* release_for_report: copy what a report on src needs, then release f */
static Report
release_for_report(IqFetch *f, IqFetchSource *src, const char *text)
{
	Report		r;

	r.what = iq_fetch_describe(f, src);
	r.who = iq_fetch_instance(src);
	r.text = peer_text(text);
	/* iq_fdw.read_from: the standbys asked instead, and why none served */
	if (f->notes[0] != '\0')
		r.text = psprintf("%s%s Standbys tried: %s%s", r.text,
						  r.text[0] && r.text[strlen(r.text) - 1] != '.' ? "." : "",
						  f->notes, f->notes[strlen(f->notes) - 1] != '.' ? "." : "");
	iq_fetch_release(f);
	return r;
}

/*
 * fail_access: the peer failed TLS verification, or refused us: raise.
 * Nothing it sent is used; its endpoint is the one its group member
 * advertises, so a peer that is not an instance of the cluster is named.
 */
static void pg_attribute_noreturn()
fail_access(const Report *r, bool tls_failed, int status)
{
	if (tls_failed)
		ereport(ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("could not make a verified TLS connection to instance %s to read %s",
						r->who, r->what),
				 errdetail_internal("%s", r->text),
				 errhint("Check that the instance advertising %s serves HTTPS with a certificate signed by iq_fdw.ssl_ca_file that names its advertised host.",
						 r->who)));
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("instance %s refused to be read by this instance, asked for %s",
					r->who, r->what),
			 status ? errdetail_internal("%s", r->text) :
			 errdetail("The instance said: %s", r->text),
			 errhint("Check that this instance's iq_fdw.ssl_cert_file is signed by the CA that instance trusts (its iq_fdw.ssl_ca_file).")));
	pg_unreachable();
}

/* iq_fetch_fail_transport: src's bytes cannot be read: release all and raise */
void
iq_fetch_fail_transport(IqFetch *f, IqFetchSource *src)
{
	bool		timed_out = src->chan.timed_out;
	bool		answering = src->answering;
	bool		tls_failed = src->chan.tls_failed;
	int			status = src->chan.refused_status;
	Report		r = release_for_report(f, src, src->chan.error);

	if (tls_failed || status == 401 || status == 403)
		fail_access(&r, tls_failed, status);

	/* no first byte, with standbys to ask: left after standby_after (fetch_read.c) */
	if (timed_out && !answering && iq_read_from != IQ_READ_FROM_OWNER &&
		iq_standby_replicas != 0 && iq_standby_after_ms < iq_peer_timeout_ms)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("instance %s did not answer within iq_fdw.standby_after when asked for %s, and no standby could",
						r.who, r.what),
				 errdetail("%s iq_fdw.standby_after is %d ms.", r.text, iq_standby_after_ms),
				 errhint("Check that the instance is running; raise iq_fdw.standby_after (up to iq_fdw.peer_timeout) for slow networks, or iq_fdw.max_lag for lagging standbys.")));
	/* no first byte: perhaps never connected; after it: the answer stalled */
	if (timed_out)
		ereport(ERROR,
				(errcode(answering ? ERRCODE_FDW_ERROR : ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 answering ?
				 errmsg("instance %s stopped making progress for iq_fdw.peer_timeout in its answer to %s",
						r.who, r.what) :
				 errmsg("instance %s did not answer within iq_fdw.peer_timeout when asked for %s",
						r.who, r.what),
				 errdetail("%s iq_fdw.peer_timeout is %d ms.", r.text, iq_peer_timeout_ms),
				 answering ?
				 errhint("Check the instance and the network to it; raise iq_fdw.peer_timeout for slow networks.") :
				 errhint("Check that the instance is running; raise iq_fdw.peer_timeout for slow networks.")));
	ereport(ERROR,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("could not read %s from instance %s", r.what, r.who),
			 errdetail_internal("%s", r.text),
			 errhint("Check that the instance and its iq_fdw worker are running (iq_worker() there).")));
	pg_unreachable();
}

/*
 * iq_fetch_fail_unreachable: src's instance could not be reached, and its
 * partitions did not move within iq_fdw.ownership_wait: release and raise
 */
void
iq_fetch_fail_unreachable(IqFetch *f, IqFetchSource *src)
{
	Report		r = release_for_report(f, src, src->chan.error);

	ereport(ERROR,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("could not reach instance %s to read %s", r.who, r.what),
			 errdetail("%s Its partitions did not move to another instance within iq_fdw.ownership_wait = %d ms.",
					   r.text, iq_ownership_wait_ms),
			 errhint("The instance may be down: the consumer group gives its partitions to the other instances after its session timeout (%d s). Retry then, or raise iq_fdw.ownership_wait.",
					 IQ_GROUP_SESSION_TIMEOUT_MS / 1000)));
}

/* not_held_detail: why an answer NOT_HELD is final */
static int
not_held_detail(IqFetch *f, const char *message, bool header_seen)
{
	if (f->reasked)
		return errdetail("The instance said: %s. It was asked after ownership had changed, and ownership did not settle within iq_fdw.ownership_wait = %d ms.",
						 message, iq_ownership_wait_ms);
	if (header_seen)
		return errdetail("The instance said: %s. It moved while its answer was being read; rows already returned cannot be taken back, so the query is not asked again.",
						 message);
	return errdetail("The instance said: %s. The ownership this instance knows did not change within iq_fdw.ownership_wait = %d ms.",
					 message, iq_ownership_wait_ms);
}

/* iq_fetch_fail_answer: src answered with an error status: release and raise */
void
iq_fetch_fail_answer(IqFetch *f, IqFetchSource *src)
{
	IqWireStatus status = src->reader.status;
	bool		corrupt = src->reader.corrupt;
	/* a next batch (fetch_request.c) comes after rows were returned */
	bool		header_seen = src->header_seen || src->continued;
	Report		r = release_for_report(f, src, src->reader.message);

	if (corrupt)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("instance %s sent an answer this backend cannot read, when asked for %s",
						r.who, r.what),
				 errdetail_internal("%s", r.text),
				 errhint("Check that every instance runs the same iq_fdw version, and that %s is an iq_fdw instance.",
						 r.who)));
	if (status == IQ_WIRE_FORBIDDEN)
		fail_access(&r, false, 0);
	if (status == IQ_WIRE_NOT_HELD)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("instance %s no longer holds what was asked: %s", r.who, r.what),
				 not_held_detail(f, r.text, header_seen),
				 errhint("Partition ownership is moving in a rebalance; retry the query, or raise iq_fdw.ownership_wait.")));
	if (status == IQ_WIRE_UNKNOWN_VERSION)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("instance %s does not read wire protocol version %d, asked for %s",
						r.who, IQ_WIRE_VERSION, r.what),
				 errdetail_internal("%s", r.text),
				 errhint("Instances of two iq_fdw releases are running; finish upgrading them all to one release.")));
	if (status == IQ_WIRE_RESTORING)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("instance %s is still restoring state needed for %s", r.who, r.what),
				 errdetail_internal("%s", r.text),
				 errhint("Retry when the restore is done; iq_worker() on that instance shows its progress.")));
	ereport(ERROR,
			(errcode(ERRCODE_FDW_ERROR),
			 errmsg("instance %s failed to answer %s", r.who, r.what),
			 errdetail_internal("%s", r.text)));
	pg_unreachable();
}

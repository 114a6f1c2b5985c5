/*-------------------------------------------------------------------------
 * fetch_source.c
 *	  A fetch's sources and their channels: sending every target's request,
 *	  stopping, freeing.
 *
 * A source's channel is pooled when its answer was read to the end (at
 * the end of a fetch, a short rest is read for that: iq_fetch_drain), else
 * closed (the rest of the answer would still be in flight).
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/settings.h"
#include "src/fetch_internal.h"

/* iq_fetch_start_sources: send every source's request, all at once */
void
iq_fetch_start_sources(IqFetch *f)
{
	int			i;

	/* the TLS material first: a file that cannot be used fails the read */
	for (i = 0; i < f->nsources; i++)
		if (!f->sources[i].unused && !f->sources[i].target.is_local)
		{
			iq_chan_tls_prepare();
			break;
		}
	for (i = 0; i < f->nsources; i++)
		if (!f->sources[i].unused)
			iq_fetch_start_source(&f->sources[i]);
}

/*
 * iq_fetch_start_source: send one source's request (the caller has
 * prepared the TLS material if it is remote)
 */
void
iq_fetch_start_source(IqFetchSource *src)
{
	iq_wire_reader_free(&src->reader);
	iq_wire_reader_init(&src->reader);
	src->header_seen = src->has_row = src->ended = false;
	src->rows = 0;
	src->call_started = iq_chan_now_us();
	src->answering = false;
	src->stalled_us = 0;
	src->partial = 0;
	/* connecting and sending are part of the wait for the first byte */
	iq_chan_start(&src->chan, src->target.host, src->target.port,
				  src->target.is_local, &src->request,
				  src->call_started + iq_fetch_first_byte_us(src));
}

/* iq_fetch_restart: drop every answer in flight and ask again */
void
iq_fetch_restart(IqFetch *f)
{
	int			i;

	for (i = 0; i < f->nsources; i++)
		if (!f->sources[i].unused)
			iq_chan_finish(&f->sources[i].chan, f->sources[i].ended);
	iq_fetch_start_sources(f);
}

/* iq_fetch_drop_source: stop a source's transfer and free what it holds */
void
iq_fetch_drop_source(IqFetchSource *src)
{
	iq_chan_finish(&src->chan, src->ended);
	iq_chan_free(&src->chan);
	free(src->last_key);
	src->last_key = NULL;
	iq_wire_reader_free(&src->reader);
	iq_buf_free(&src->request);
}

/* iq_fetch_release: stop every transfer of f and free its buffers (idempotent) */
void
iq_fetch_release(IqFetch *f)
{
	int			i;

	if (f->released)
		return;
	f->released = true;
	for (i = 0; i < f->nsources; i++)
		iq_fetch_drop_source(&f->sources[i]);
}

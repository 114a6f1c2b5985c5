/*-------------------------------------------------------------------------
 * catch_up.c
 *	  A standby replica's catch-up, in the log: the backlog of its
 *	  changelog and customer topic partitions it found when it was kept,
 *	  and how far it has read into it, every iq_restore_report_ms().
 *
 * A standby follows its topics for as long as it is kept, never "done" as
 * a restore is; under a steady load it is always a little behind.  So what
 * is reported is the catch-up of the backlog it found: the ends known at
 * its first fetch are its target, and once it has read up to them it is
 * caught up and says nothing more.  The ends are librdkafka's cached ones
 * (rd_kafka_get_watermark_offsets: no broker call in the main loop).  Main
 * thread only.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "worker/state.h"
#include "worker/stream/stream.h"

typedef struct CatchUp
{
	bool		active;
	bool		reported;		/* a progress line was logged */
	int64		began;
	int64		last_report;
	int64		start[2];		/* changelog, customer: the first offset read */
	int64		target[2];		/* the ends at the first fetch, -1 unknown */
} CatchUp;

static CatchUp catch_up[IQ_MAX_PARTITIONS];

/*
 * iq_catch_up_begin
 *		Partition p is kept as a standby from these offsets (-1: from the
 *		start).
 */
void
iq_catch_up_begin(int p, int64 changelog_next, int64 customer_next)
{
	CatchUp    *c = &catch_up[p];

	memset(c, 0, sizeof(*c));
	c->active = true;
	c->began = c->last_report = iq_now_ms();
	c->start[0] = Max(changelog_next, 0);
	c->start[1] = Max(customer_next, 0);
	c->target[0] = c->target[1] = -1;
}

/* iq_catch_up_end: p is no longer kept */
void
iq_catch_up_end(int p)
{
	catch_up[p].active = false;
}

/*
 * learn_target
 *		The end of topic's partition p as librdkafka last fetched it, once
 *		known.
 */
static void
learn_target(rd_kafka_t *rk, const char *topic, int p, int64 *target)
{
	int64_t		lo;
	int64_t		hi;

	if (*target >= 0)
		return;
	if (rd_kafka_get_watermark_offsets(rk, topic, p, &lo, &hi) == RD_KAFKA_RESP_ERR_NO_ERROR &&
		hi >= 0)
		*target = hi;
}

/*
 * iq_catch_up_tick
 *		After a round of the standby consumer: p has read up to these
 *		offsets.  Logs progress every interval while it catches up, and a
 *		last line when a catch-up that logged progress is over.
 */
void
iq_catch_up_tick(rd_kafka_t *rk, int p, int64 changelog_next, int64 customer_next)
{
	CatchUp    *c = &catch_up[p];
	int64		now = iq_now_ms();
	int64		done;
	int64		total;
	double		secs;
	double		rate;
	char		left[64] = "no record read yet";

	if (!c->active)
		return;
	learn_target(rk, iq_w->cfg.changelog_topic, p, &c->target[0]);
	learn_target(rk, iq_w->cfg.customer_topic, p, &c->target[1]);
	if (c->target[0] < 0 || c->target[1] < 0)
		return;
	done = Max(Min(changelog_next, c->target[0]) - c->start[0], 0) +
		Max(Min(customer_next, c->target[1]) - c->start[1], 0);
	total = Max(c->target[0] - c->start[0], 0) + Max(c->target[1] - c->start[1], 0);
	secs = Max(now - c->began, 1) / 1000.0;
	rate = done / secs;
	if (done >= total)
	{
		c->active = false;
		if (c->reported)
			ereport(LOG,
					(errmsg("iq_fdw worker: the standby replica of partition %d caught up: %lld records in %.1f s (%.0f records/s)",
							p, (long long) total, secs, rate)));
		return;
	}
	if (now - c->last_report < iq_restore_report_ms())
		return;
	c->last_report = now;
	c->reported = true;
	if (rate > 0)
		snprintf(left, sizeof(left), "about %.0f s left", (total - done) / rate);
	ereport(LOG,
			(errmsg("iq_fdw worker: the standby replica of partition %d is catching up: %lld of %lld records (%.0f %%), %.0f records/s, %s",
					p, (long long) done, (long long) total, done * 100.0 / total, rate, left),
			 errdetail("The backlog of \"%s\" and \"%s\" it found when it was kept; %.1f s since.",
					   iq_w->cfg.changelog_topic, iq_w->cfg.customer_topic, secs)));
}

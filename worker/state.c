/*-------------------------------------------------------------------------
 * state.c
 *	  The ground floor of the worker: its state, the failure that tears the
 *	  pipeline down, the clock and the backoff of retries, the watchdog's
 *	  step and progress, and how long a wait on the broker may last.  Every subsystem uses these;
 *	  none of them calls back into worker_main.c.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/pmsignal.h"

#include "worker/state.h"


/*
 * The longest a stop (SIGTERM, or a restart for changed settings) waits for
 * the broker, in all: to write what is counted, commit and leave the group.
 */
#define STOP_TIMEOUT_MS		10000
/* of which the last seconds are kept for leaving the group */
#define LEAVE_RESERVE_MS	3000

volatile sig_atomic_t iq_got_sigterm = false;
IqWorker   *iq_w = NULL;

static int64 stop_deadline = 0;
static uint32 current_step = UINT32_MAX;

/* the clock of every deadline, and of the watchdog's progress_at */
int64
iq_now_ms(void)
{
	return iq_monotonic_ms();
}

/*
 * iq_backoff_due
 *		Whether the time to try again has come.
 */
bool
iq_backoff_due(const IqBackoff *b, int64 now)
{
	return now >= b->retry_at;
}

/*
 * iq_backoff_failed
 *		Another failure at now: the next try waits twice as long as this
 *		one did, up to IQ_BACKOFF_MAX_MS.
 */
void
iq_backoff_failed(IqBackoff *b, int64 now)
{
	b->retry_at = now + b->delay_ms;
	b->delay_ms = Min(b->delay_ms * 2, IQ_BACKOFF_MAX_MS);
}

/*
 * iq_backoff_reset
 *		It works again: the next failure waits the least.
 */
void
iq_backoff_reset(IqBackoff *b)
{
	b->delay_ms = IQ_BACKOFF_MIN_MS;
}

/*
 * iq_progress
 *		The main thread moved on: tell the watchdog (iq_worker()).  A store
 *		of the clock, no lock: called at every step.
 */
void
iq_progress(void)
{
	pg_atomic_write_u64(&iq_shared->progress_at, (uint64) iq_now_ms());
}

/*
 * iq_step
 *		The main thread begins a step (on partition, or -1): that is
 *		progress, unless it is the step it was in already (an idle poll
 *		after an idle poll is not).  The time is written before the step,
 *		so that a reader who sees the new step never sees it with the old
 *		step's time and calls it stalled.
 */
void
iq_step(IqWorkerStep step, int partition)
{
	uint32		word = ((uint32) step << 16) | (uint32) (partition + 1);

	if (word == current_step)
		return;
	current_step = word;
	iq_progress();
	pg_write_barrier();
	pg_atomic_write_u32(&iq_shared->step, word);
}

/*
 * iq_postmaster_gone
 *		True once the postmaster has died: every wait ends, and the worker
 *		exits without waiting for anyone.  Cheap enough for every slice.
 */
bool
iq_postmaster_gone(void)
{
	static bool gone = false;

	/*
	 * Not PostmasterIsAlive(): it trusts a signal that only a child of the
	 * postmaster gets, and the engine is a child of the supervisor.
	 */
	if (!gone && !PostmasterIsAliveInternal())
		gone = true;
	return gone;
}

/*
 * iq_wait_slice
 *		How long the next slice of a wait on the broker that must end by
 *		deadline (iq_now_ms()) may be: at most IQ_WAIT_SLICE_MS, or 0 when
 *		the wait must end now.
 *
 * A wait that starts something (a pipeline, an assignment, a restore) ends
 * at SIGTERM.  One that finishes what is done goes on, but all of a stop's
 * waits together end STOP_TIMEOUT_MS after it: writing what is counted and
 * committing until LEAVE_RESERVE_MS before, leaving the group until then
 * (a consumer destroyed before it has left waits inside librdkafka, for
 * seconds, for a broker that may be gone).  Every wait ends at once when the
 * postmaster is gone.
 */
int
iq_wait_slice(int64 deadline, IqWaitKind kind)
{
	int64		now = iq_now_ms();

	if (iq_postmaster_gone())
		return 0;
	if (iq_got_sigterm)
	{
		if (kind == IQ_WAIT_START)
			return 0;
		if (stop_deadline == 0)
			stop_deadline = now + STOP_TIMEOUT_MS;
		deadline = Min(deadline, kind == IQ_WAIT_LEAVE ? stop_deadline :
					   stop_deadline - LEAVE_RESERVE_MS);
	}
	if (now >= deadline)
		return 0;
	return (int) Min(deadline - now, IQ_WAIT_SLICE_MS);
}

/*
 * iq_fail
 *		Something the pipeline cannot ride out: remember why; the main loop
 *		tears it down and retries.  Safe inside librdkafka callbacks.
 */
void
iq_fail(const char *fmt,...)
{
	va_list		ap;

	if (iq_w->failed)
		return;					/* keep the first cause */
	va_start(ap, fmt);
	vsnprintf(iq_w->failure, sizeof(iq_w->failure), fmt, ap);
	va_end(ap);
	iq_w->failed = true;
}

/*-------------------------------------------------------------------------
 * supervisor.c
 *	  The background worker: it starts the engine, watches it and starts
 *	  it again when it dies, with a backoff.
 *
 * The postmaster restarts the whole instance when one of its children
 * dies of a signal; the engine is no child of the postmaster's but of
 * this small process, which runs no library thread and does nothing that
 * could crash, so a crash of librdkafka, RocksDB or our own code costs an
 * engine restart, not every session of the instance (worker/README.md,
 * "Processes").  Its record of the engine (iq_supervisor) lives in
 * PostgreSQL's shared memory, which the engine never sees.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/wait.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/timestamp.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "worker/engine_process.h"
#include "worker/state.h"
#include "worker/stop_watchdog.h"

/*
 * Between an engine's death and the next start: at once, then doubling, up
 * to half the group's session timeout, so that an engine that crashes now
 * and then is back as the same static member before the group hands its
 * partitions to others (a crash loop still restarts at most every few
 * seconds, each death a WARNING).
 */
#define RESTART_FIRST_MS	1000
#define RESTART_MAX_MS		(IQ_GROUP_SESSION_TIMEOUT_MS / 2)
/* an engine that ran this long starts the backoff over */
#define RESTART_STABLE_MS	30000
/* a clean stop of the engine that takes longer ends with SIGKILL */
#define STOP_WAIT_MS		60000
/* how often the supervisor looks, with nothing to wake it */
#define WATCH_MS			1000

PGDLLEXPORT void iq_worker_main(Datum main_arg);

static volatile sig_atomic_t got_sigterm = false;
/* the engine stopped cleanly, asked by someone else: so does the supervisor */
static bool engine_stopped = false;
static pid_t engine_pid = 0;
static int64 engine_started_at = 0;
static int64 next_start_at = 0;
static int	next_delay_ms = 0;
static int	crashes_in_a_row = 0;
static bool first_start = true;

static void
handle_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	got_sigterm = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

static void
handle_sigchld(SIGNAL_ARGS)
{
	int			save_errno = errno;

	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * describe_exit
 *		A wait status in words, as PostgreSQL logs a child's exit.
 */
static void
describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "killed by signal %d: %s",
				 WTERMSIG(status), pg_strsignal(WTERMSIG(status)));
	else if (WIFEXITED(status) && WEXITSTATUS(status) == IQ_ENGINE_EXIT_RELOAD)
		snprintf(buf, len, "restarted to apply changed settings");
	else if (WIFEXITED(status) && WEXITSTATUS(status) == IQ_ENGINE_EXIT_STOP_HUNG)
		snprintf(buf, len, "ended: its stop of the pipeline outlived %d s (a Kafka client would not close)",
				 IQ_STOP_DEADLINE_MS / 1000);
	else if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		snprintf(buf, len, "stopped");
	else if (WIFEXITED(status))
		snprintf(buf, len, "exited with code %d", WEXITSTATUS(status));
	else
		snprintf(buf, len, "ended with status %d", status);
}

static void
record_engine(pid_t pid, const char *exit_cause)
{
	LWLockAcquire(iq_supervisor->lock, LW_EXCLUSIVE);
	iq_supervisor->engine_pid = pid;
	if (pid != 0 && !first_start)
		iq_supervisor->engine_restarts++;
	if (exit_cause)
	{
		strlcpy(iq_supervisor->last_exit, exit_cause, IQ_EXIT_LEN);
		iq_supervisor->last_exit_at = GetCurrentTimestamp();
	}
	LWLockRelease(iq_supervisor->lock);
}

/*
 * engine_exited
 *		Account for the engine's end, clear what it left in its segment and
 *		decide when the next one starts: at once after a reload, else after
 *		a delay that doubles with every death in a row and starts over once
 *		an engine has run RESTART_STABLE_MS.
 */
static void
engine_exited(int status)
{
	char		cause[IQ_EXIT_LEN];
	char		why[IQ_MESSAGE_LEN];
	int64		now = iq_now_ms();
	bool		reload = WIFEXITED(status) && WEXITSTATUS(status) == IQ_ENGINE_EXIT_RELOAD;
	bool		clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
	int			delay = 0;

	describe_exit(status, cause, sizeof(cause));
	record_engine(0, cause);
	if (clean && !got_sigterm)
	{
		/*
		 * Only a SIGTERM ends an engine with 0: an operator stopped the
		 * stream job, as a SIGTERM to the worker always did.  It stays
		 * stopped until the server restarts.
		 */
		engine_stopped = true;
		ereport(LOG,
				(errmsg("iq_fdw supervisor: the engine (PID %d) was stopped by a SIGTERM; the stream job stays stopped until the server restarts",
						(int) engine_pid)));
	}
	if (clean || got_sigterm)
	{
		engine_pid = 0;
		iq_shared_reset(IQ_WORKER_STOPPED, "");
		return;
	}
	if (!reload)
	{
		if (now - engine_started_at >= RESTART_STABLE_MS)
		{
			next_delay_ms = 0;
			crashes_in_a_row = 0;
		}
		delay = next_delay_ms;
		next_delay_ms = delay == 0 ? RESTART_FIRST_MS : Min(delay * 2, RESTART_MAX_MS);
		crashes_in_a_row++;
	}
	next_start_at = now + delay;
	snprintf(why, sizeof(why), "the engine (PID %d) was %s; %s", (int) engine_pid, cause,
			 delay == 0 ? "starting it again now" : "starting it again");
	if (delay > 0)
		snprintf(why + strlen(why), sizeof(why) - strlen(why), " in %d s (%d deaths in a row)",
				 delay / 1000, crashes_in_a_row);
	engine_pid = 0;
	iq_shared_reset(IQ_WORKER_RESTARTING, why);
	ereport(reload ? LOG : WARNING,
			(errmsg("iq_fdw supervisor: %s", why),
			 reload ? 0 : errhint("The instance and its sessions are not affected; SELECT * FROM iq_worker() shows the engine's restarts.")));
}

/* reap: the engine's exit, if it has ended */
static void
reap(void)
{
	int			status;
	pid_t		pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
		if (pid == engine_pid)
			engine_exited(status);
}

static void
start_engine(void)
{
	pid_t		pid;

	if (ConfigReloadPending)
	{
		/* the engine is born with the supervisor's settings */
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
	pid = iq_engine_fork();
	if (pid < 0)
	{
		char		why[IQ_MESSAGE_LEN];

		snprintf(why, sizeof(why), "could not start the engine: %m");
		iq_shared_reset(IQ_WORKER_RESTARTING, why);
		ereport(WARNING, (errmsg("iq_fdw supervisor: %s", why)));
		next_start_at = iq_now_ms() + RESTART_FIRST_MS;
		return;
	}
	engine_pid = pid;
	engine_started_at = iq_now_ms();
	record_engine(pid, NULL);
	first_start = false;
}

/*
 * stop_engine
 *		A clean stop (SIGTERM: commit, leave the group, close the stores),
 *		waited for; one that outlasts STOP_WAIT_MS is killed.
 */
static void
stop_engine(void)
{
	int64		deadline = iq_now_ms() + STOP_WAIT_MS;

	if (engine_pid == 0)
		return;
	(void) kill(engine_pid, SIGTERM);
	while (engine_pid != 0 && iq_now_ms() < deadline)
	{
		reap();
		if (engine_pid == 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	if (engine_pid != 0)
	{
		int			status;

		ereport(WARNING,
				(errmsg("iq_fdw supervisor: the engine (PID %d) did not stop within %d s; killing it",
						(int) engine_pid, STOP_WAIT_MS / 1000)));
		(void) kill(engine_pid, SIGKILL);
		if (waitpid(engine_pid, &status, 0) == engine_pid)
			engine_exited(status);
	}
}

/*
 * supervisor_exit
 *		However the supervisor ends, its engine ends first: a next
 *		supervisor must find the state directory and the ports free.
 */
static void
supervisor_exit(int code, Datum arg)
{
	if (engine_pid != 0)
	{
		int			status;

		(void) kill(engine_pid, SIGKILL);
		(void) waitpid(engine_pid, &status, 0);
		record_engine(0, "killed by its supervisor at exit");
		engine_pid = 0;
	}
	LWLockAcquire(iq_supervisor->lock, LW_EXCLUSIVE);
	iq_supervisor->supervisor_pid = 0;
	LWLockRelease(iq_supervisor->lock);
}

/*
 * iq_worker_main
 *		Entry point of the background worker.
 */
void
iq_worker_main(Datum main_arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, handle_sigterm);
	pqsignal(SIGCHLD, handle_sigchld);
	BackgroundWorkerUnblockSignals();
	iq_shmem_attach();
	LWLockAcquire(iq_supervisor->lock, LW_EXCLUSIVE);
	iq_supervisor->supervisor_pid = MyProcPid;
	iq_supervisor->engine_pid = 0;
	LWLockRelease(iq_supervisor->lock);
	before_shmem_exit(supervisor_exit, 0);
	/* whatever an engine of an earlier supervisor left goes */
	iq_shared_reset(IQ_WORKER_STARTING, "the engine is starting");

	while (!got_sigterm && !engine_stopped)
	{
		int64		now;
		long		timeout;

		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/* the engine reads the file itself: it applies what it can */
			if (engine_pid != 0)
				(void) kill(engine_pid, SIGHUP);
		}
		reap();
		now = iq_now_ms();
		if (engine_pid == 0 && now >= next_start_at && !got_sigterm)
			start_engine();
		timeout = engine_pid != 0 ? WATCH_MS : Max(1, next_start_at - iq_now_ms());
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	stop_engine();
	proc_exit(0);
}

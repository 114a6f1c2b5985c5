/*-------------------------------------------------------------------------
 * engine_process.c
 *	  Starting the engine in a process of its own, and what that process
 *	  must do to be no part of PostgreSQL's shared state.
 *
 * The supervisor forks; the child becomes the engine before anything else
 * runs in it:
 *	- it dies with its supervisor (PR_SET_PDEATHSIG), so no engine ever
 *	  outlives the process that accounts for it;
 *	- it keeps no exit callback of the supervisor's (they would release the
 *	  supervisor's PGPROC and shared entries), no latch or wait-event slot
 *	  in shared memory, no PGPROC;
 *	- it unmaps PostgreSQL's shared memory, main and dynamic, as the
 *	  syslogger does; only the engine's segment (common/shmem.c) stays.
 *	  PostgreSQL's own code keeps a few pointers into the main segment
 *	  (the backend status entry, read for the query id of a csvlog or
 *	  jsonlog line): its range is left mapped to zero pages, read-only, so
 *	  such a read sees nothing instead of faulting, and no write can land;
 *	- its own signal handlers wake a self-pipe that its one wait polls,
 *	  beside the consumer's pipe and the postmaster's death pipe;
 *	- it offers itself first to the kernel's OOM killer: its death now
 *	  costs a restart of the engine, a backend's the whole instance.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pg_shmem.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "utils/ps_status.h"

#include "worker/engine_process.h"
#include "worker/state.h"

#define ENGINE_TITLE		"iq_fdw stream engine"
/* above any backend's (0), below nothing the kernel would spare first */
#define ENGINE_OOM_SCORE_ADJ	"500"

volatile sig_atomic_t iq_engine_reload_pending = false;

/* signal handlers -> iq_engine_wait */
static int	self_pipe[2] = {-1, -1};

/* nothing in the engine may set a latch in shared memory */
static Latch engine_latch;

static void
wake(void)
{
	int			save_errno = errno;

	if (self_pipe[1] >= 0)
	{
		ssize_t		rc = write(self_pipe[1], "", 1);

		(void) rc;				/* a full pipe: a wake-up is pending already */
	}
	errno = save_errno;
}

static void
handle_sigterm(SIGNAL_ARGS)
{
	iq_got_sigterm = true;
	wake();
}

static void
handle_sighup(SIGNAL_ARGS)
{
	iq_engine_reload_pending = true;
	wake();
}

/*
 * main_segment_range
 *		The mapping of /proc/self/maps that holds addr: [*start, *end).
 */
static bool
main_segment_range(const void *addr, uintptr_t *start, uintptr_t *end)
{
	FILE	   *f = fopen("/proc/self/maps", "r");
	char		line[512];
	bool		found = false;

	if (f == NULL)
		return false;
	while (!found && fgets(line, sizeof(line), f))
	{
		unsigned long s,
					e;

		if (sscanf(line, "%lx-%lx", &s, &e) == 2 &&
			(uintptr_t) addr >= s && (uintptr_t) addr < e)
		{
			*start = s;
			*end = e;
			found = true;
		}
	}
	fclose(f);
	return found;
}

/*
 * leave_shared_memory
 *		Unmap PostgreSQL's shared memory; zero pages where the main segment
 *		was (see the header comment).
 */
static void
leave_shared_memory(void)
{
	uintptr_t	start = 0,
				end = 0;
	bool		shadow = MyProc != NULL && main_segment_range(MyProc, &start, &end);

	/* before anything here can run an exit callback or wait on a latch */
	on_exit_reset();
	pgstat_reset_wait_event_storage();
	MyLatch = &engine_latch;
	MyProc = NULL;

	dsm_detach_all();
	PGSharedMemoryDetach();
	if (shadow &&
		mmap((void *) start, end - start, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0) == MAP_FAILED)
		ereport(FATAL,
				(errmsg("iq_fdw engine: could not map zero pages where PostgreSQL's shared memory was: %m")));
}

static void
set_signals(void)
{
	if (pipe2(self_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
		ereport(FATAL,
				(errmsg("iq_fdw engine: could not create its signal pipe: %m")));
	pqsignal(SIGTERM, handle_sigterm);
	pqsignal(SIGHUP, handle_sighup);
	pqsignal(SIGINT, SIG_IGN);
	/* PostgreSQL's SIGUSR1 handler reads this process's slot in shared memory */
	pqsignal(SIGUSR1, SIG_IGN);
	pqsignal(SIGUSR2, SIG_IGN);
	pqsignal(SIGPIPE, SIG_IGN);
	pqsignal(SIGCHLD, SIG_DFL);
	pqsignal(SIGQUIT, SignalHandlerForCrashExit);
}

static void
offer_to_oom_killer(void)
{
	int			fd = open("/proc/self/oom_score_adj", O_WRONLY);

	if (fd < 0)
		return;
	if (write(fd, ENGINE_OOM_SCORE_ADJ, strlen(ENGINE_OOM_SCORE_ADJ)) < 0)
		ereport(DEBUG1,
				(errmsg("iq_fdw engine: could not set its oom_score_adj: %m")));
	close(fd);
}

/*
 * become_engine
 *		In the child of the fork, signals still blocked.
 */
static void
become_engine(pid_t supervisor)
{
	MyProcPid = getpid();
	MyStartTime = time(NULL);
	MyStartTimestamp = GetCurrentTimestamp();
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != supervisor)
		_exit(1);				/* the supervisor is gone already */
	set_signals();
	leave_shared_memory();
	sigprocmask(SIG_SETMASK, &UnBlockSig, NULL);
	offer_to_oom_killer();
	if (MyBgworkerEntry)
		strlcpy(MyBgworkerEntry->bgw_type, ENGINE_TITLE, BGW_MAXLEN);
	init_ps_display(ENGINE_TITLE);
}

/*
 * iq_engine_fork
 *		Start an engine; its pid, or -1 with errno.  Signals are blocked
 *		across the fork so that none reaches the child with the supervisor's
 *		handlers.
 */
pid_t
iq_engine_fork(void)
{
	pid_t		supervisor = getpid();
	pid_t		pid;
	int			save_errno;

	sigprocmask(SIG_SETMASK, &BlockSig, NULL);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
	{
		become_engine(supervisor);
		iq_engine_main();
	}
	save_errno = errno;
	sigprocmask(SIG_SETMASK, &UnBlockSig, NULL);
	errno = save_errno;
	return pid;
}

/*
 * iq_engine_wait
 *		One poll over the signal pipe, fd and the postmaster's death pipe.
 *		A dead postmaster ends the engine at once: no one can use its work.
 */
bool
iq_engine_wait(int fd, long timeout_ms)
{
	struct pollfd pfd[3];
	int			n = 0;
	int			fd_at = -1;
	char		buf[64];

	pfd[n].fd = self_pipe[0];
	pfd[n++].events = POLLIN;
	pfd[n].fd = postmaster_alive_fds[POSTMASTER_FD_WATCH];
	pfd[n++].events = POLLIN;
	if (fd >= 0)
	{
		fd_at = n;
		pfd[n].fd = fd;
		pfd[n++].events = POLLIN;
	}
	if (iq_got_sigterm || iq_engine_reload_pending)
		timeout_ms = 0;
	if (poll(pfd, n, (int) Min(timeout_ms, INT_MAX)) <= 0)
		return false;
	while (read(self_pipe[0], buf, sizeof(buf)) > 0)
		;
	if (pfd[1].revents != 0 && iq_postmaster_gone())
		proc_exit(1);
	return fd_at >= 0 && (pfd[fd_at].revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

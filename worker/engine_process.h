/*-------------------------------------------------------------------------
 * engine_process.h
 *	  The engine as a process of its own: how the supervisor starts it, how
 *	  it lets go of PostgreSQL's shared memory, its signals and its wait.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_ENGINE_PROCESS_H
#define IQ_ENGINE_PROCESS_H

#include <signal.h>
#include <sys/types.h>

/* the engine stopped to be started again with changed settings */
#define IQ_ENGINE_EXIT_RELOAD	3
/* the engine's stop of its pipeline outlived its deadline (stop_watchdog.c) */
#define IQ_ENGINE_EXIT_STOP_HUNG	4

/* the supervisor: fork an engine running iq_engine_main; -1 with errno */
extern pid_t iq_engine_fork(void);

/* the engine (engine_main.c) */
extern void iq_engine_main(void) pg_attribute_noreturn();

/*
 * The engine's wait: until a signal, fd readable (-1: none), the
 * postmaster's death or timeout_ms.  True if fd is readable.
 */
extern bool iq_engine_wait(int fd, long timeout_ms);

/* the engine: a signal asked for a reload */
extern volatile sig_atomic_t iq_engine_reload_pending;

#endif							/* IQ_ENGINE_PROCESS_H */

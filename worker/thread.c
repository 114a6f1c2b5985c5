/*-------------------------------------------------------------------------
 * thread.c
 *	  Threads of the worker process that are not PostgreSQL's.
 *
 * The worker's signals (SIGTERM, SIGHUP, latches) are for its main thread:
 * a PostgreSQL handler run on another thread would touch state that is not
 * that thread's.  A thread inherits the signal mask of its creator, so it
 * is created with every signal blocked.
 *-------------------------------------------------------------------------
 */
#include <signal.h>

#include "worker/thread.h"

int
iq_thread_create(pthread_t *thread, const pthread_attr_t *attr,
				 void *(*start) (void *), void *arg)
{
	sigset_t	all,
				old;
	int			rc;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(thread, attr, start, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc;
}

/*-------------------------------------------------------------------------
 * stop_watchdog.c
 *	  A deadline on the engine's stop of its pipeline.
 *
 * Each wait of a stop is bounded (commits, the group's leave, the close),
 * but librdkafka's destroy is not: in CI, librdkafka 2.8 destroyed the
 * consumer of a pipeline that had failed with its main thread spinning for
 * good, and the engine stayed "stalled", not counting, never applying the
 * settings reloaded meanwhile.  A stop that outlives its deadline ends the
 * process instead: the engine is a process of its own for that (crash
 * isolation), and its exit loses nothing a kill would not (the counts are
 * in the changelog and RocksDB; the next engine restores and goes on from
 * the committed offsets), while its supervisor says why and starts another.
 *
 * The watchdog is a thread that only waits and calls _exit: no PostgreSQL
 * call, no lock of the engine's.  No stop can be made to hang on demand, so
 * the hidden hook IQ_TEST_STOP_DEADLINE_MS (test_crash_isolation.py) makes
 * the deadline shorter than a normal stop.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "worker/engine_process.h"
#include "worker/stop_watchdog.h"
#include "worker/thread.h"

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static bool started;
static bool armed;
static struct timespec deadline;	/* CLOCK_MONOTONIC */

static void *
watch(void *arg)
{
	pthread_mutex_lock(&mutex);
	for (;;)
	{
		if (!armed)
			pthread_cond_wait(&cond, &mutex);
		else if (pthread_cond_timedwait(&cond, &mutex, &deadline) == ETIMEDOUT && armed)
		{
			static const char msg[] =
				"iq_fdw engine: stopping the pipeline did not end in time (a Kafka client would not close); the engine exits\n";

			/* stderr is the server's log; the supervisor says the rest */
			if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0)
				_exit(IQ_ENGINE_EXIT_STOP_HUNG);
			_exit(IQ_ENGINE_EXIT_STOP_HUNG);
		}
	}
	return NULL;
}

void
iq_stop_watchdog_arm(int timeout_ms)
{
	const char *hook = getenv("IQ_TEST_STOP_DEADLINE_MS");

	if (hook != NULL && atoi(hook) > 0)
		timeout_ms = atoi(hook);
	pthread_mutex_lock(&mutex);
	if (!started)
	{
		pthread_condattr_t attr;
		pthread_t	thread;

		/* a deadline on the monotonic clock: a clock step neither hastens nor delays it */
		pthread_condattr_init(&attr);
		pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
		pthread_cond_destroy(&cond);
		pthread_cond_init(&cond, &attr);
		pthread_condattr_destroy(&attr);
		/* without it the stop goes on unwatched, as before */
		started = iq_thread_create(&thread, NULL, watch, NULL) == 0;
		if (started)
			pthread_detach(thread);
	}
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long) (timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L)
	{
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	armed = true;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&mutex);
}

void
iq_stop_watchdog_disarm(void)
{
	pthread_mutex_lock(&mutex);
	armed = false;
	pthread_cond_signal(&cond);
	pthread_mutex_unlock(&mutex);
}

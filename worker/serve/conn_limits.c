/*-------------------------------------------------------------------------
 * conn_limits.c
 *	  The servers' shared limits (see conn_limits.h).
 *
 * Values are read with relaxed atomics: a connection that reads the old
 * timeout once after a reload is harmless.  The request budget is a
 * counter of charged bytes, raised with a compare-and-swap so that it
 * never goes past the setting, however many threads charge at once.
 *-------------------------------------------------------------------------
 */
#include <time.h>

#include "common/settings.h"
#include "worker/serve/conn_limits.h"
#include "worker/serve/servers.h"

static int	request_timeout_ms = 10000;
static int	idle_timeout_ms = 60000;
static int	per_client = 256;
static size_t request_memory = 64 * 1024 * 1024;
static size_t request_memory_used = 0;

/* iq_conn_limits_set: new values, from the main thread */
void
iq_conn_limits_set(const IqConnLimits *limits)
{
	__atomic_store_n(&request_timeout_ms, limits->request_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&idle_timeout_ms, limits->idle_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&per_client, limits->per_client, __ATOMIC_RELAXED);
	__atomic_store_n(&request_memory, limits->request_memory, __ATOMIC_RELAXED);
}

/*
 * iq_servers_apply_settings: the iq_fdw.* limits of the servers, from the
 * main thread (at server start and after each reload: they need no
 * restart)
 */
void
iq_servers_apply_settings(void)
{
	IqConnLimits l;

	l.request_timeout_ms = iq_request_timeout_ms;
	l.idle_timeout_ms = iq_stream_idle_timeout_ms;
	l.per_client = iq_http_connections_per_client;
	l.request_memory = (size_t) iq_request_memory_mb * 1024 * 1024;
	iq_conn_limits_set(&l);
}

int
iq_conn_request_timeout_ms(void)
{
	return __atomic_load_n(&request_timeout_ms, __ATOMIC_RELAXED);
}

int
iq_conn_idle_timeout_ms(void)
{
	return __atomic_load_n(&idle_timeout_ms, __ATOMIC_RELAXED);
}

int
iq_conn_per_client(void)
{
	return __atomic_load_n(&per_client, __ATOMIC_RELAXED);
}

/* iq_request_memory_reserve: charge n bytes if they fit (small ones always do) */
bool
iq_request_memory_reserve(size_t n)
{
	size_t		limit = __atomic_load_n(&request_memory, __ATOMIC_RELAXED);
	size_t		used = __atomic_load_n(&request_memory_used, __ATOMIC_RELAXED);

	if (n <= IQ_REQUEST_SMALL)
		return true;
	do
	{
		if (n > limit || used > limit - n)
			return false;
	} while (!__atomic_compare_exchange_n(&request_memory_used, &used, used + n,
										  false, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return true;
}

/* iq_request_memory_release: give back what iq_request_memory_reserve(n) took */
void
iq_request_memory_release(size_t n)
{
	if (n > IQ_REQUEST_SMALL)
		__atomic_sub_fetch(&request_memory_used, n, __ATOMIC_RELAXED);
}

/* iq_conn_now_ms: a monotonic clock for the servers' deadlines */
long long
iq_conn_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

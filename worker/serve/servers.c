/*-------------------------------------------------------------------------
 * servers.c
 *	  The main thread's side of the servers: start them once the stores are
 *	  set up, try again with backoff while they cannot listen, show why
 *	  over "running", publish the local socket's name, and stop them.
 *
 * Stream processing goes on without the servers: a port in use must not
 * stop the counts, only say that reads from outside cannot reach them.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"

#include "common/settings.h"
#include "common/shmem.h"
#include "worker/serve/http/access.h"
#include "worker/serve/servers.h"
#include "worker/state.h"

static bool servers_up = false;
static IqBackoff backoff = IQ_BACKOFF_INIT;
static char servers_error[IQ_MESSAGE_LEN] = "";

/*
 * servers_start
 *		HTTP and the local socket; false with a malloc'd *err naming the
 *		setting at fault.
 */
static bool
servers_start(char **err)
{
	IqServerConfig sc;
	char		buf[IQ_MESSAGE_LEN];	/* no palloc: a failed start repeats for ever */
	bool		tls = iq_ssl_cert_file && iq_ssl_cert_file[0];

	memset(&sc, 0, sizeof(sc));
	if (!iq_parse_host_port(iq_w->cfg.http_listen, sc.listen_host,
							sizeof(sc.listen_host), &sc.listen_port) ||
		!iq_parse_host_port(iq_w->cfg.advertised, sc.advertised_host,
							sizeof(sc.advertised_host), &sc.advertised_port))
	{
		*err = strdup("bad host:port");
		return false;
	}
	sc.threads = iq_w->cfg.http_threads;
	sc.peer_timeout_ms = iq_peer_timeout_ms;
	/* in the data directory, our working directory (local_server.c) */
	snprintf(sc.socket_path, sizeof(sc.socket_path), "iq_fdw.sock");
	iq_servers_apply_settings();

	/* secure by default, and who may call which endpoint (access.c) */
	if (!iq_access_listen_allowed(&sc, tls, buf, sizeof(buf)) ||
		!iq_access_configure(&sc, tls, buf, sizeof(buf)))
	{
		*err = strdup(buf);
		return false;
	}
	if (!iq_http_start(&sc, err))
	{
		char	   *inner = *err;

		/* the server's own message may already name the setting */
		if (inner && strstr(inner, "iq_fdw.http_listen"))
			snprintf(buf, sizeof(buf), "%s", inner);
		else
			snprintf(buf, sizeof(buf), "HTTP server on %s (iq_fdw.http_listen): %s",
					 iq_w->cfg.http_listen, inner ? inner : "?");
		free(inner);
		*err = strdup(buf);
		return false;
	}
	if (!iq_local_server_start(&sc, err))
	{
		char	   *inner = *err;

		iq_http_stop();
		snprintf(buf, sizeof(buf), "%s (in the data directory %s)",
				 inner ? inner : "local socket: ?", DataDir);
		free(inner);
		*err = strdup(buf);
		return false;
	}
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	strlcpy(iq_shared->local_socket, iq_local_server_path(), sizeof(iq_shared->local_socket));
	LWLockRelease(iq_shared->lock);
	return true;
}

/*
 * servers_recovered
 *		The servers listen again: if the state shown is still their error,
 *		it was shown over "running" (iq_servers_show_failure) and nothing
 *		has changed the state since, so the worker is running again.
 *		Without this the error stayed until the next rebalance.
 */
static void
servers_recovered(void)
{
	if (servers_error[0] && iq_shared->state == IQ_WORKER_ERROR &&
		strcmp(iq_shared->message, servers_error) == 0)
		iq_set_worker_state(IQ_WORKER_RUNNING, NULL);
	servers_error[0] = '\0';
}

/*
 * iq_servers_try_start
 *		Start the servers if they are down and their next try is due at
 *		now (iq_now_ms()).
 */
void
iq_servers_try_start(int64_t now)
{
	char	   *err = NULL;

	if (servers_up || !iq_backoff_due(&backoff, now))
		return;
	iq_step(IQ_STEP_SERVERS, -1);
	if (servers_start(&err))
	{
		servers_up = true;
		iq_backoff_reset(&backoff);
		servers_recovered();
	}
	else
	{
		/* shown over "running": see iq_servers_show_failure */
		strlcpy(servers_error, err, sizeof(servers_error));
		free(err);
		iq_backoff_failed(&backoff, now);
	}
}

/*
 * iq_servers_show_failure
 *		While the servers are down, say so: over "running" only, so that
 *		the pipeline's own states and errors are never hidden, and
 *		servers_recovered knows what was under it.
 */
void
iq_servers_show_failure(void)
{
	if (!servers_up && servers_error[0] && iq_shared->state == IQ_WORKER_RUNNING)
		iq_set_worker_state(IQ_WORKER_ERROR, "%s", servers_error);
}

/*
 * iq_servers_stop
 *		Stop both servers, the local socket's name unpublished first.
 */
void
iq_servers_stop(void)
{
	if (!servers_up)
		return;
	iq_step(IQ_STEP_SERVERS, -1);
	LWLockAcquire(iq_shared->lock, LW_EXCLUSIVE);
	iq_shared->local_socket[0] = '\0';
	LWLockRelease(iq_shared->lock);
	iq_local_server_stop();
	iq_http_stop();
	iq_access_clear();
	servers_up = false;
}

/*
 * iq_servers_reload
 *		After SIGHUP: the servers' limits, and who may call them
 *		(access.c), with no restart.  A listen address the settings no
 *		longer allow stops the servers, whose retries then say why; other
 *		bad access settings leave the rules in force, as PostgreSQL keeps
 *		its SSL context when new files fail.
 */
void
iq_servers_reload(void)
{
	char		err[IQ_MESSAGE_LEN];
	bool		listen_refused;

	iq_servers_apply_settings();
	if (!servers_up || iq_access_reload(&listen_refused, err, sizeof(err)))
		return;
	if (listen_refused)
	{
		ereport(LOG,
				(errmsg("iq_fdw worker: stopping the HTTP server and the local socket"),
				 errdetail("%s", err)));
		iq_servers_stop();
		return;
	}
	ereport(LOG,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("iq_fdw worker: HTTP access settings not applied, the previous ones stay in force"),
			 errdetail("%s", err)));
}

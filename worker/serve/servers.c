/*-------------------------------------------------------------------------
 * servers.c
 *	  The main thread's side of the servers: start them once the stores are
 *	  set up, try again with backoff while they cannot listen, show why
 *	  over "running", publish the local socket's name, and stop them.
 *
 * Stream processing goes on without the servers: a port in use must not
 * stop the counts, only say that reads from outside cannot reach them.
 *
 * The TLS files (iq_fdw.ssl_*_file) are read here, in the main thread,
 * when the servers start and on every reload; the bytes are the HTTP
 * server's until it is stopped (its threads and its calls to peers use
 * them), so new material means a restart of the HTTP server alone, and
 * bad new files leave it running with the material it has.
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
static IqServerConfig running;	/* what the servers run with, its tls ours */

/*
 * tls_load
 *		The TLS files as the settings name them now, judged as the HTTP
 *		server will use them; false with why (naming the setting) in err.
 */
static bool
tls_load(IqTls *tls, char *err, size_t errlen)
{
	if (!iq_tls_load(tls, iq_ssl_cert_file, iq_ssl_key_file, iq_ssl_ca_file, err, errlen))
		return false;
	if (!iq_http_tls_check(tls, err, errlen))
	{
		iq_tls_free(tls);
		return false;
	}
	return true;
}

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
	/* the seed's gets fall back to standbys within the server's own bound */
	sc.standby_replicas = iq_w->cfg.standby_replicas;
	sc.standby_max_lag = iq_max_lag >= 0 ? iq_max_lag : iq_standby_max_lag;
	/* in the data directory, our working directory (local_server.c) */
	snprintf(sc.socket_path, sizeof(sc.socket_path), "iq_fdw.sock");
	iq_servers_apply_settings();
	if (!tls_load(&sc.tls, buf, sizeof(buf)))
	{
		char		msg[IQ_MESSAGE_LEN];

		snprintf(msg, sizeof(msg), "HTTPS server on %s: %s", iq_w->cfg.http_listen, buf);
		*err = strdup(msg);
		return false;
	}

	/* secure by default, and who may call which endpoint (access.c) */
	if (!iq_access_listen_allowed(&sc, sc.tls.on, buf, sizeof(buf)) ||
		!iq_access_configure(&sc, sc.tls.on, buf, sizeof(buf)))
	{
		iq_tls_free(&sc.tls);
		*err = strdup(buf);
		return false;
	}
	if (!iq_http_start(&sc, err))
	{
		char	   *inner = *err;

		iq_tls_free(&sc.tls);
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
		iq_tls_free(&sc.tls);
		snprintf(buf, sizeof(buf), "%s (in the data directory %s)",
				 inner ? inner : "local socket: ?", DataDir);
		free(inner);
		*err = strdup(buf);
		return false;
	}
	iq_shared_write_begin();
	strlcpy(iq_shared->local_socket, iq_local_server_path(), sizeof(iq_shared->local_socket));
	iq_shared_write_end();
	running = sc;
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
 * servers_error_set
 *		A new error to show: the one shown before, if it is still shown,
 *		is taken back first, else the new one could not replace it.
 */
static void
servers_error_set(const char *err)
{
	servers_recovered();
	strlcpy(servers_error, err, sizeof(servers_error));
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
		servers_error_set(err);
		free(err);
		iq_backoff_failed(&backoff, now);
	}
}

/*
 * iq_servers_show_failure
 *		While the servers are down, or run with old TLS material because
 *		the new files are bad, say so: over "running" only, so that the
 *		pipeline's own states and errors are never hidden, and
 *		servers_recovered knows what was under it.
 */
void
iq_servers_show_failure(void)
{
	if (servers_error[0] && iq_shared->state == IQ_WORKER_RUNNING)
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
	iq_shared_write_begin();
	iq_shared->local_socket[0] = '\0';
	iq_shared_write_end();
	iq_local_server_stop();
	iq_http_stop();
	iq_access_clear();
	iq_tls_free(&running.tls);
	servers_up = false;
}

/*
 * servers_down_after_reload
 *		The HTTP server started again with neither the new nor the old
 *		material: down both, to be started again with backoff, err shown.
 */
static void
servers_down_after_reload(const char *err)
{
	iq_shared_write_begin();
	iq_shared->local_socket[0] = '\0';
	iq_shared_write_end();
	iq_local_server_stop();
	iq_tls_free(&running.tls);
	servers_up = false;
	servers_error_set(err);
	iq_backoff_failed(&backoff, iq_now_ms());
}

/*
 * http_restart
 *		The HTTP server stopped and started again with tls (taken over on
 *		success); if it cannot start with it, again with the material it
 *		had.  false with why in err when it kept the old one or is down.
 */
static bool
http_restart(IqTls *tls, char *errbuf, size_t errlen)
{
	IqServerConfig sc = running;
	char	   *err = NULL;

	iq_http_stop();
	sc.tls = *tls;
	if (iq_http_start(&sc, &err))
	{
		iq_tls_free(&running.tls);
		running.tls = *tls;
		return true;
	}
	snprintf(errbuf, errlen, "HTTP server on %s: %s; kept the TLS material it had",
			 iq_w->cfg.http_listen, err ? err : "?");
	free(err);
	err = NULL;
	iq_tls_free(tls);
	if (!iq_http_start(&running, &err))
	{
		snprintf(errbuf, errlen, "HTTP server on %s: %s", iq_w->cfg.http_listen,
				 err ? err : "?");
		servers_down_after_reload(errbuf);
	}
	free(err);
	return false;
}

/*
 * iq_servers_reload_tls
 *		After a reload: read the TLS files again; new material restarts the
 *		HTTP server with it (TLS turned on or off included), the same
 *		changes nothing, bad files are shown and logged while the server
 *		goes on with the material it has.  Servers that are down try again
 *		at once: the reload may have mended what kept them down.
 */
void
iq_servers_reload_tls(void)
{
	IqTls		tls;
	char		err[IQ_MESSAGE_LEN];

	if (!servers_up)
	{
		iq_backoff_reset(&backoff);
		return;
	}
	if (!tls_load(&tls, err, sizeof(err)))
	{
		char		msg[IQ_MESSAGE_LEN];

		snprintf(msg, sizeof(msg), "HTTP server on %s keeps its TLS material: %s",
				 iq_w->cfg.http_listen, err);
		servers_error_set(msg);
		/* shown (and so logged) over "running"; under another state, logged */
		if (iq_shared->state == IQ_WORKER_RUNNING)
			iq_servers_show_failure();
		else
			ereport(LOG, (errmsg("iq_fdw worker: %s", msg)));
		return;
	}
	if (iq_tls_same(&tls, &running.tls))
		iq_tls_free(&tls);
	else
	{
		iq_step(IQ_STEP_SERVERS, -1);
		ereport(LOG,
				(errmsg("iq_fdw worker: restarting the HTTP server with the TLS material of the reloaded settings"),
				 errdetail("TLS is %s.", tls.on ? "on" : "off")));
		if (!http_restart(&tls, err, sizeof(err)))
		{
			if (servers_up)
				servers_error_set(err);
			return;
		}
	}
	servers_recovered();
}

/*
 * refused_stop
 *		The listen address is no longer allowed: stop the servers, whose
 *		retries then say why.
 */
static void
refused_stop(const char *err)
{
	ereport(LOG,
			(errmsg("iq_fdw worker: stopping the HTTP server and the local socket"),
			 errdetail("%s", err)));
	iq_servers_stop();
}

/*
 * iq_servers_reload_listen
 *		After a reload, before the TLS files are applied (which may restart
 *		the HTTP server): stop the servers first if the settings no longer
 *		allow their listen address, TLS counted as off if the running
 *		server or the new settings have it off, so that no restart serves
 *		a non-loopback address unprotected even for a moment.
 */
void
iq_servers_reload_listen(void)
{
	char		err[IQ_MESSAGE_LEN];
	bool		tls = running.tls.on && iq_ssl_cert_file && iq_ssl_cert_file[0];

	if (servers_up && !iq_access_listen_allowed(&running, tls, err, sizeof(err)))
		refused_stop(err);
}

/*
 * iq_servers_reload_access
 *		After a reload, once the TLS files are applied: who may call the
 *		servers (access.c), with no restart.  A listen address the
 *		settings no longer allow stops the servers, whose retries then say
 *		why; other bad access settings leave the rules in force, as
 *		PostgreSQL keeps its SSL context when new files fail.
 */
void
iq_servers_reload_access(void)
{
	char		err[IQ_MESSAGE_LEN];
	bool		listen_refused;

	if (!servers_up ||
		iq_access_reload(running.tls.on, &listen_refused, err, sizeof(err)))
		return;
	if (listen_refused)
	{
		refused_stop(err);
		return;
	}
	ereport(LOG,
			(errcode(ERRCODE_CONFIG_FILE_ERROR),
			 errmsg("iq_fdw worker: HTTP access settings not applied, the previous ones stay in force"),
			 errdetail("%s", err)));
}

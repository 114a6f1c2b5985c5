/*-------------------------------------------------------------------------
 * access.h
 *	  Who may call which endpoint of the HTTP server: the main thread's
 *	  side (the rules set at start and on reload, and whether the listen
 *	  address may be used at all).  The per-request check is the server
 *	  threads' side, in http_internal.h.
 *
 * Plain C: the main thread reads the settings' globals (common/settings.h)
 * and the token's file here, and reports a failure as a sentence naming
 * the setting, which servers.c shows its own way.  The rules are handed to
 * the server threads under a lock, whole: a request sees the old rules or
 * the new ones, never a mix.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_HTTP_ACCESS_H
#define IQ_HTTP_ACCESS_H

#include <stdbool.h>
#include <stddef.h>

#include "worker/serve/servers.h"

/*
 * Secure by default: false, with a sentence naming what to set, when the
 * listen address is not loopback and the server would be open (no TLS, or
 * no credential asked of the seed's clients) and iq_fdw.http_insecure is
 * off.
 */
extern bool iq_access_listen_allowed(const IqServerConfig *config, bool tls,
									 char *err, size_t errlen);

/*
 * The rules requests are judged by, from the settings now in force: the
 * names a Host header may carry, whether the seed's endpoints need a
 * credential, the token (read from iq_fdw.http_token_file).  tls says
 * whether the server speaks HTTPS (without it, a credential must be the
 * token).  On false nothing changed.
 */
extern bool iq_access_configure(const IqServerConfig *config, bool tls,
								char *err, size_t errlen);

/*
 * After a reload: the rules again, for the server's addresses as it was
 * started, and tls as it runs now.  false: *listen_refused says whether
 * the listen address is now refused (the servers must stop); otherwise
 * the old rules stay, as PostgreSQL keeps its old SSL context when new
 * files fail.
 */
extern bool iq_access_reload(bool tls, bool *listen_refused, char *err, size_t errlen);

/* The server stopped: forget the rules (requests are refused until set). */
extern void iq_access_clear(void);

#endif							/* IQ_HTTP_ACCESS_H */

/*-------------------------------------------------------------------------
 * peer_api.c
 *	  The one builder of a peer's URL, for backends and the worker's
 *	  server threads alike (libc's snprintf, never PostgreSQL's).
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <string.h>

#include "common/peer_api.h"

/* iq_peer_authority: host:port, an IPv6 literal in brackets */
int
iq_peer_authority(char *out, size_t size, const char *host, int port)
{
	/* a colon in a host name is an IPv6 literal, which URLs bracket */
	if (strchr(host, ':'))
		return snprintf(out, size, "[%s]:%d", host, port);
	return snprintf(out, size, "%s:%d", host, port);
}

/* iq_peer_url: http(s)://host:port/path; -1 for a host longer than any name */
int
iq_peer_url(char *out, size_t size, bool tls, const char *host, int port,
			const char *path)
{
	char		authority[IQ_PEER_AUTHORITY_LEN];
	int			n = iq_peer_authority(authority, sizeof(authority), host, port);

	if (n < 0 || (size_t) n >= sizeof(authority))
	{
		if (size > 0)
			out[0] = '\0';
		return -1;
	}
	return snprintf(out, size, "%s://%s%s", tls ? "https" : "http", authority, path);
}

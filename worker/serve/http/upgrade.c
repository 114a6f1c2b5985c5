/*-------------------------------------------------------------------------
 * upgrade.c
 *	  GET /iq/v1/stream with "Connection: Upgrade" and "Upgrade: iq-wire/1":
 *	  the HTTP connection becomes a stream of compact requests, served as
 *	  the local socket's are (wire_conn.c).
 *
 * Why: a backend's remote point lookup over POST /iq/v1/read pays for
 * HTTP on both sides (libcurl builds and parses a request and a response,
 * MHD parses the request and runs its event loop) several times what the
 * store read costs.  Upgraded once, a pooled connection costs a write
 * and a read per lookup, like the local channel.  The HTTP handshake keeps
 * one port for everything.  Backends reach other instances this way only;
 * POST /iq/v1/read stays for the worker's own gathers and for curl.
 *
 * MHD hands the socket over after sending the 101; it stays MHD's, so it
 * is closed through MHD_upgrade_action, and every upgraded connection is
 * closed before the daemon stops (iq_http_stream_stop).  No PostgreSQL.
 *
 * Not over TLS: there MHD relays an upgraded connection through a
 * socketpair, and libmicrohttpd 0.9.75 (Debian 12) gives that relay its
 * 8-byte emergency buffer (4 bytes a TLS record; fixed upstream after it,
 * commit a93ca180), nor does its relay pass a client's close on promptly.
 * Backends read over TLS with kept-alive POST /iq/v1/read instead
 * (src/channel_post.c), so the stream is refused with 501 naming it.
 *-------------------------------------------------------------------------
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <strings.h>
#include <string.h>
#include <sys/socket.h>

#include "worker/serve/http/http_internal.h"
#include "worker/serve/conn_limits.h"
#include "worker/serve/wire_conn.h"

/* an idle pooled connection whose client host vanished is found in ~90 s */
#define STREAM_KEEPIDLE_S	60
#define STREAM_KEEPINTVL_S	10
#define STREAM_KEEPCNT		3

static void close_upgraded(int fd, void *arg);

static IqWireConnSet conns =
IQ_WIRE_CONN_SET("iq_http_stream", "too many upgraded connections to the iq_fdw worker",
				 close_upgraded);

/* close_upgraded: an upgraded socket is MHD's to close */
static void
close_upgraded(int fd, void *arg)
{
	MHD_upgrade_action((struct MHD_UpgradeResponseHandle *) arg,
					   MHD_UPGRADE_ACTION_CLOSE);
}

/* upgraded: MHD sent the 101; serve the socket on a thread of its own */
static void
upgraded(void *cls, struct MHD_Connection *conn, void *con_cls,
		 const char *extra_in, size_t extra_in_size,
		 MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
	int			flags = fcntl(sock, F_GETFL);
	const union MHD_ConnectionInfo *info =
		MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	int			tcp = info ? info->connect_fd : sock;
	int			on = 1;
	int			idle = STREAM_KEEPIDLE_S;
	int			intvl = STREAM_KEEPINTVL_S;
	int			cnt = STREAM_KEEPCNT;

	/* a stream from here on: wire_conn.c's deadlines, not the HTTP ones */
	iq_http_conn_upgraded(conn);
	/* the serving thread blocks in recv() between requests */
	if (flags >= 0)
		fcntl(sock, F_SETFL, flags & ~O_NONBLOCK);

	/*
	 * An answer written in pieces must not wait for the client's ACK (40
	 * ms of delayed ACK per lookup).  The options go on the client's TCP
	 * socket: with TLS, sock is MHD's end of the socketpair its TLS relay
	 * reads and writes, and the relay writes to the client in pieces too.
	 */
	setsockopt(tcp, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	setsockopt(tcp, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
	setsockopt(tcp, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(tcp, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(tcp, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	iq_wire_conn_serve(&conns, sock, urh, extra_in, extra_in_size);
}

/* has_token: a comma-separated header value contains token (any case) */
static bool
has_token(const char *value, const char *token)
{
	size_t		n = strlen(token);

	while (value && *value)
	{
		while (*value == ' ' || *value == '\t' || *value == ',')
			value++;
		if (strncasecmp(value, token, n) == 0 &&
			(value[n] == '\0' || value[n] == ',' || value[n] == ' ' || value[n] == '\t'))
			return true;
		value = strchr(value, ',');
	}
	return false;
}

/* iq_http_stream_upgrade: answer GET /iq/v1/stream: 101, or 426 saying why */
enum MHD_Result
iq_http_stream_upgrade(struct MHD_Connection *conn, const char *version)
{
	const char *upgrade = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
													  MHD_HTTP_HEADER_UPGRADE);
	const char *connection = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
														 MHD_HTTP_HEADER_CONNECTION);
	struct MHD_Response *resp;
	enum MHD_Result ret;

	if (strcmp(version, MHD_HTTP_VERSION_1_1) != 0 ||
		!has_token(upgrade, IQ_PEER_STREAM_PROTOCOL) || !has_token(connection, "upgrade"))
		return iq_http_send_error(conn, MHD_HTTP_UPGRADE_REQUIRED, NULL,
								  "%s is the compact read stream: it needs HTTP/1.1 with "
								  "\"Connection: Upgrade\" and \"Upgrade: %s\" "
								  "(or POST single requests to %s)",
								  IQ_PEER_STREAM_PATH, IQ_PEER_STREAM_PROTOCOL, IQ_PEER_READ_PATH);
	if (iq_http_config.tls.on)
		return iq_http_send_error(conn, MHD_HTTP_NOT_IMPLEMENTED, NULL,
								  "%s is not served over TLS: POST single requests to %s "
								  "on a kept-alive connection",
								  IQ_PEER_STREAM_PATH, IQ_PEER_READ_PATH);
	resp = MHD_create_response_for_upgrade(upgraded, NULL);
	if (resp == NULL)
		return MHD_NO;
	MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, IQ_PEER_STREAM_PROTOCOL);
	ret = MHD_queue_response(conn, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
	MHD_destroy_response(resp);
	return ret;
}

/* iq_http_stream_open: accept upgrades (at server start) */
void
iq_http_stream_open(void)
{
	iq_wire_conn_open(&conns);
}

/*
 * iq_http_stream_stop: hang up on every upgraded connection (before MHD
 * stops), those answering once their answer is sent or the drain is over
 */
void
iq_http_stream_stop(void)
{
	iq_wire_conn_stop(&conns, IQ_SERVE_DRAIN_MS);
}

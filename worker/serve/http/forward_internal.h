/*-------------------------------------------------------------------------
 * forward_internal.h
 *	  What forwarded_get.c (the forwarder thread, curl's transfers) and
 *	  forward_stream.c (its pooled iq-wire/1 streams to peers) share.
 *	  Forwarder thread only, but for the job's done flag (atomic).
 *-------------------------------------------------------------------------
 */
#ifndef IQ_FORWARD_INTERNAL_H
#define IQ_FORWARD_INTERNAL_H

#include <curl/curl.h>

#include "worker/serve/http/http_internal.h"

struct IqForwardJob
{
	IqForwardJob *next;			/* in the queue, then in flight (a list or a stream's FIFO) */
	struct MHD_Connection *conn;
	char	   *url;			/* a transfer by curl (TLS on, standby asks) */
	CURL	   *easy;
	struct curl_slist *headers;
	char		errbuf[CURL_ERROR_SIZE];
	/* a get over a peer stream (url NULL): the request, framed */
	char		host[IQ_HTTP_HOST_LEN];
	int			port;
	IqBuf		request;		/* u32 length and the wire request; a batch's: unframed */
	/* a get in a batch over HTTPS (TLS on, forward_batch.c): what it asks */
	int			store;
	char	   *key;			/* malloc'd */
	uint32_t	key_len;
	IqForwardJob *members;		/* a batch's POST: the gets it carries (conn NULL) */
	long long	deadline;		/* monotonic ms: iq_fdw.peer_timeout from submit */
	bool		resent;			/* sent again once, after a stream broke */
	bool		done;			/* atomic: set by the forwarder, read by MHD's thread */
	IqForwardResult result;
};

/* in forwarded_get.c: hand a finished job back to its request */
extern void iq_forward_finish(IqForwardJob *job);

/* in forwarded_get.c: the same, over without an answer */
extern void iq_forward_fail(IqForwardJob *job, bool timed_out, bool refused, const char *what);

/* in forwarded_get.c: the same, answered by the owner's wire reader (failed NULL: ok) */
extern void iq_forward_finish_wire(IqForwardJob *job, const IqWireReader *failed);

/* in forwarded_get.c: a POST of a batch's request to url, on the multi handle */
extern void iq_forward_launch(IqForwardJob *job);

/* in forward_batch.c (forwarder thread only) */
extern void iq_fbatch_init(void);
extern void iq_fbatch_add(IqForwardJob *job);
extern void iq_fbatch_shutdown(void);
extern void iq_fbatch_launch_all(void);
extern void iq_fbatch_done(IqForwardJob *batch, CURLcode rc, const char *error);

/* in forward_stream.c (forwarder thread only) */
extern void iq_fstream_init(int epoll_fd);
extern void iq_fstream_submit(IqForwardJob *job);
extern void iq_fstream_flush(void);
extern void iq_fstream_event(uint64_t tag, uint32_t events);
extern void iq_fstream_tick(void);
extern long long iq_fstream_next_deadline(void);
extern void iq_fstream_shutdown(void);

/* epoll tags of streams carry this bit; curl's sockets are plain fds */
#define IQ_FSTREAM_TAG	(1ULL << 40)

#endif							/* IQ_FORWARD_INTERNAL_H */

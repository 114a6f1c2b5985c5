/*-------------------------------------------------------------------------
 * gather.h
 *	  ?scope=all for the seed's scans and counts: ask every instance that
 *	  holds partitions (over the compact endpoint) and merge.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_HTTP_GATHER_H
#define IQ_HTTP_GATHER_H

#include "worker/serve/http/http_internal.h"

extern enum MHD_Result iq_http_gather_scan(struct MHD_Connection *conn,
										   const IqStoreInfo *store,
										   const char *from, size_t from_len,
										   const char *to, size_t to_len,
										   bool descending);
extern enum MHD_Result iq_http_gather_count(struct MHD_Connection *conn,
											const IqStoreInfo *store);

#endif							/* IQ_HTTP_GATHER_H */

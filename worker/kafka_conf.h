/*-------------------------------------------------------------------------
 * kafka_conf.h
 *	  What every librdkafka handle of the worker shares (kafka_conf.c).
 *	  Main thread of the worker only.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_KAFKA_CONF_H
#define IQ_WORKER_KAFKA_CONF_H

#include <librdkafka/rdkafka.h>

#include "worker/state.h"

extern rd_kafka_resp_err_t iq_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt,
									   const struct rd_kafka_metadata **md,
									   int timeout_ms);
extern void iq_drain_logs(void);
extern void iq_log_attach(rd_kafka_t *rk, IqHandle h);
extern void iq_log_detach(IqHandle h);
extern rd_kafka_conf_t *iq_conf_new(char **err);
extern bool iq_conf_set(rd_kafka_conf_t *conf, const char *name,
						const char *value, char **err);
extern void iq_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);

#endif							/* IQ_WORKER_KAFKA_CONF_H */

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

extern void iq_kafka_names(void);
extern rd_kafka_conf_t *iq_conf_new(char **err);
extern bool iq_conf_set(rd_kafka_conf_t *conf, const char *name,
						const char *value, char **err);
extern bool iq_conf_set_int(rd_kafka_conf_t *conf, const char *name, int value,
							char **err);
extern rd_kafka_conf_t *iq_consumer_conf_new(const char *group_id, int fetch_wait_ms,
											 int queue_kbytes, int queue_messages,
											 int fetch_bytes, char **err);
extern bool iq_fetch_queue_backoff(void);
extern void iq_kafka_log_versions(void);
extern rd_kafka_t *iq_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf,
								IqHandle h, char **err);
extern rd_kafka_resp_err_t iq_metadata(rd_kafka_t *rk, rd_kafka_topic_t *rkt,
									   const struct rd_kafka_metadata **md,
									   int timeout_ms);
extern void iq_drain_logs(void);
extern void iq_log_attach(rd_kafka_t *rk, IqHandle h);
extern void iq_log_detach(IqHandle h);
extern void iq_broker_failure(char *buf, size_t len, rd_kafka_resp_err_t err);
extern void iq_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);

#endif							/* IQ_WORKER_KAFKA_CONF_H */

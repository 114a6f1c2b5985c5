/*-------------------------------------------------------------------------
 * config.h
 *	  The settings the worker runs with (config.c): loaded once at start,
 *	  compared after every reload.  Main thread of the worker only.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_CONFIG_H
#define IQ_WORKER_CONFIG_H

#include <stdbool.h>

#include "utils/palloc.h"

#include "worker/kafka_props.h"

/* Settings the worker runs with: a change of any of them restarts it. */
typedef struct IqWorkerConfig
{
	char	   *brokers;
	char	   *app_id;
	char	   *customer_topic;
	char	   *order_topic;
	char	   *changelog_topic;
	char	   *state_dir;		/* <state_dir>/<application_id> */
	char	   *http_listen;
	char	   *advertised;
	int			partitioner;
	int			guarantee;
	int			memory_budget_mb;
	int			scan_snapshot_memory_mb;
	int			http_threads;
	int			commit_interval_ms;
	int			standby_replicas;	/* IQ_STANDBY_ALL or 0.. */
	int			rebalance_protocol; /* IqRebalanceProtocol */
	IqKafkaProps kafka_props;	/* iq_fdw.kafka_properties_file, read */
} IqWorkerConfig;

extern void iq_worker_config_load(IqWorkerConfig *c, MemoryContext cxt);
extern bool iq_worker_config_changed(const IqWorkerConfig *running);

#endif							/* IQ_WORKER_CONFIG_H */

/*-------------------------------------------------------------------------
 * kafka_props.h
 *	  The operator's librdkafka properties (iq_fdw.kafka_properties_file):
 *	  read once when the worker starts, judged, and applied to every Kafka
 *	  client it makes (kafka_props.c).  Main thread of the worker only.
 *
 * The file holds secrets (sasl.password, ssl.key.password): it is read as
 * PostgreSQL reads ssl_key_file, and no message ever shows a value, only
 * keys, file names and line numbers.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_WORKER_KAFKA_PROPS_H
#define IQ_WORKER_KAFKA_PROPS_H

#include <stdbool.h>

#include <librdkafka/rdkafka.h>

/* one key=value line of the file */
typedef struct IqKafkaProp
{
	const char *name;
	const char *value;
	int			line;
} IqKafkaProp;

/* the file as the worker runs with it (palloc'd in the config's context) */
typedef struct IqKafkaProps
{
	char	   *path;			/* as the setting holds it; "" for none */
	char	   *error;			/* why it cannot be used, or NULL */
	int			nprops;
	IqKafkaProp *props;
	char	   *buf;			/* what name and value point into */
	int			buflen;
} IqKafkaProps;

/* Read and judge the file at path ("" for none); an unusable one sets ->error. */
extern void iq_kafka_props_load(IqKafkaProps *kp, const char *path);
/* Whether two loads differ in anything that reaches librdkafka or the state shown. */
extern bool iq_kafka_props_differ(const IqKafkaProps *a, const IqKafkaProps *b);
/* Zero the secrets of a load about to be freed. */
extern void iq_kafka_props_forget(IqKafkaProps *kp);
/* Set every property on conf; false with *err (malloc'd) naming file and line. */
extern bool iq_kafka_props_apply(const IqKafkaProps *kp, rd_kafka_conf_t *conf,
								 char **err);
/* Once at start: the file's keys (never its values) into the server log. */
extern void iq_kafka_props_log(const IqKafkaProps *kp);

#endif							/* IQ_WORKER_KAFKA_PROPS_H */

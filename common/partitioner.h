/*-------------------------------------------------------------------------
 * partitioner.h
 *	  Key to partition, as the producers of the input topics do it.
 *
 * Plain C with no PostgreSQL calls: used by the worker's library threads
 * as well as by backends.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_PARTITIONER_H
#define IQ_PARTITIONER_H

#include <stddef.h>
#include <stdint.h>

/* Kafka's Java murmur2 (Utils.murmur2), before the sign bit is masked */
extern uint32_t iq_murmur2(const void *key, size_t len);

/*
 * Partition of a key under the partitioner (see settings.h IqPartitioner);
 * -1 when partition_count is not positive.
 */
extern int	iq_partition_for_key(int partitioner, const void *key, size_t len,
								 int partition_count);

#endif							/* IQ_PARTITIONER_H */

/*-------------------------------------------------------------------------
 * partitioner.c
 *	  The Java client's default partitioner, and librdkafka's CRC32 one.
 *
 * Kafka Streams and kafka-console-producer place a keyed record in
 * (murmur2(key) & 0x7fffffff) % partitions; we must agree bit for bit, or
 * a lookup goes to an instance that does not hold the key.
 *-------------------------------------------------------------------------
 */
#include <zlib.h>

#include "common/partitioner.h"
#include "common/settings.h"

uint32_t
iq_murmur2(const void *key, size_t len)
{
	const unsigned char *data = key;
	const uint32_t m = 0x5bd1e995;
	const int	r = 24;
	uint32_t	h = 0x9747b28c ^ (uint32_t) len;
	size_t		tail = len & ~(size_t) 3;

	for (size_t i = 0; i < tail; i += 4)
	{
		uint32_t	k = (uint32_t) data[i] |
			((uint32_t) data[i + 1] << 8) |
			((uint32_t) data[i + 2] << 16) |
			((uint32_t) data[i + 3] << 24);

		k *= m;
		k ^= k >> r;
		k *= m;
		h *= m;
		h ^= k;
	}

	switch (len & 3)
	{
		case 3:
			h ^= (uint32_t) data[tail + 2] << 16;
			/* fall through */
		case 2:
			h ^= (uint32_t) data[tail + 1] << 8;
			/* fall through */
		case 1:
			h ^= (uint32_t) data[tail];
			h *= m;
	}

	h ^= h >> 13;
	h *= m;
	h ^= h >> 15;
	return h;
}

int
iq_partition_for_key(int partitioner, const void *key, size_t len,
					 int partition_count)
{
	if (partition_count <= 0)
		return -1;
	if (partitioner == IQ_PARTITIONER_CRC32)
		return (int) (crc32(0L, key, (uInt) len) % (uint32_t) partition_count);
	return (int) ((iq_murmur2(key, len) & 0x7fffffff) % (uint32_t) partition_count);
}

/*-------------------------------------------------------------------------
 * bigendian.h
 *	  Big-endian integers in and out of bytes: the one codec for the wire
 *	  protocol's lengths and positions, the stores' 8-byte counts (Kafka
 *	  Streams' LongSerde) and the store's checkpoint offsets.
 *
 * Plain C and header-only (static inline), so that a fuzz target built from
 * common/wire.c alone, and any thread, can use it.  The caller has checked
 * that the bytes are there.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_BIGENDIAN_H
#define IQ_BIGENDIAN_H

#include <stdint.h>

/* iq_be16_put / iq_be32_put / iq_be64_put: v as 2, 4 or 8 bytes, high first */
static inline void
iq_be16_put(unsigned char *out, uint16_t v)
{
	out[0] = (unsigned char) (v >> 8);
	out[1] = (unsigned char) v;
}

static inline void
iq_be32_put(unsigned char *out, uint32_t v)
{
	out[0] = (unsigned char) (v >> 24);
	out[1] = (unsigned char) (v >> 16);
	out[2] = (unsigned char) (v >> 8);
	out[3] = (unsigned char) v;
}

static inline void
iq_be64_put(unsigned char *out, uint64_t v)
{
	for (int i = 7; i >= 0; i--)
	{
		out[i] = (unsigned char) v;
		v >>= 8;
	}
}

/* iq_be16_get / iq_be32_get / iq_be64_get: the value of 2, 4 or 8 bytes */
static inline uint16_t
iq_be16_get(const unsigned char *in)
{
	return (uint16_t) ((in[0] << 8) | in[1]);
}

static inline uint32_t
iq_be32_get(const unsigned char *in)
{
	return ((uint32_t) in[0] << 24) | ((uint32_t) in[1] << 16) |
		((uint32_t) in[2] << 8) | (uint32_t) in[3];
}

static inline uint64_t
iq_be64_get(const unsigned char *in)
{
	/* spelled out, as iq_be32_get, so that compilers make it one load */
	return ((uint64_t) iq_be32_get(in) << 32) | (uint64_t) iq_be32_get(in + 4);
}

#endif							/* IQ_BIGENDIAN_H */

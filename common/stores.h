/*-------------------------------------------------------------------------
 * stores.h
 *	  The state stores of the topology: names and how values are encoded.
 *
 * Plain C, shared by the worker's threads and the backends.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STORES_H
#define IQ_STORES_H

#include <stdbool.h>
#include <stddef.h>

typedef enum IqStoreId
{
	IQ_STORE_CUSTOMER = 0,		/* "customer-v1-changelog": key -> name */
	IQ_STORE_ORDER_COUNT = 1,	/* "order-count": key -> count */
	IQ_NUM_STORES
} IqStoreId;

typedef enum IqValueKind
{
	IQ_VALUE_STRING,			/* bytes as produced */
	IQ_VALUE_INT64				/* 8-byte big-endian, as Kafka Streams' LongSerde */
} IqValueKind;

typedef struct IqStoreInfo
{
	IqStoreId	id;
	const char *name;			/* the seed's store name */
	const char *table_name;		/* IMPORT FOREIGN SCHEMA's table */
	const char *value_column;	/* "value" or "count" */
	IqValueKind value_kind;
} IqStoreInfo;

extern const IqStoreInfo iq_stores[IQ_NUM_STORES];

/* NULL when no store has this name */
extern const IqStoreInfo *iq_store_by_name(const char *name);

/*
 * Key byte order, as RocksDB's default comparator has it (memcmp, a
 * prefix first): the order of every scan, merged or not.
 */
extern int	iq_key_cmp(const char *a, size_t a_len, const char *b, size_t b_len);

/* 8-byte big-endian longs, as in the changelog */
extern void iq_encode_int64(long long v, unsigned char out[8]);
extern long long iq_decode_int64(const unsigned char in[8]);

#endif							/* IQ_STORES_H */

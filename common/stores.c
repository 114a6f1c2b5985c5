/*-------------------------------------------------------------------------
 * stores.c
 *	  The catalogue of state stores.
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "common/stores.h"

const IqStoreInfo iq_stores[IQ_NUM_STORES] = {
	{IQ_STORE_CUSTOMER, "customer-v1-changelog", "customer", "value", IQ_VALUE_STRING},
	{IQ_STORE_ORDER_COUNT, "order-count", "order_count", "count", IQ_VALUE_INT64},
};

const IqStoreInfo *
iq_store_by_name(const char *name)
{
	for (int i = 0; i < IQ_NUM_STORES; i++)
		if (strcmp(iq_stores[i].name, name) == 0)
			return &iq_stores[i];
	return NULL;
}

void
iq_encode_int64(long long v, unsigned char out[8])
{
	unsigned long long u = (unsigned long long) v;

	for (int i = 7; i >= 0; i--)
	{
		out[i] = (unsigned char) (u & 0xff);
		u >>= 8;
	}
}

long long
iq_decode_int64(const unsigned char in[8])
{
	unsigned long long u = 0;

	for (int i = 0; i < 8; i++)
		u = (u << 8) | in[i];
	return (long long) u;
}

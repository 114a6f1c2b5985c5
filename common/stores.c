/*-------------------------------------------------------------------------
 * stores.c
 *	  The catalogue of state stores.
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "common/bigendian.h"
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

/* iq_key_cmp: <0, 0 or >0 as a comes before, with or after b (stores.h) */
int
iq_key_cmp(const char *a, size_t a_len, const char *b, size_t b_len)
{
	int			c = memcmp(a, b, a_len < b_len ? a_len : b_len);

	if (c != 0)
		return c;
	return (a_len > b_len) - (a_len < b_len);
}

/* iq_encode_int64: a count as the changelog and the stores hold it */
void
iq_encode_int64(long long v, unsigned char out[8])
{
	iq_be64_put(out, (uint64_t) v);
}

/* iq_decode_int64: the count of an 8-byte value */
long long
iq_decode_int64(const unsigned char in[8])
{
	return (long long) iq_be64_get(in);
}

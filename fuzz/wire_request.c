/*-------------------------------------------------------------------------
 * wire_request.c
 *	  libFuzzer target: the compact request decoder (common/wire.c), which the
 *	  worker runs on every request a backend or a peer sends.
 *
 * Whatever the bytes, decoding must not crash, read outside them or leak
 * (ASan, UBSan); a request that decodes must encode back to exactly the
 * same bytes (the format has one encoding per request), and every pointer
 * it hands out must point inside the input.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/wire.h"

/* inside: [p, p + n) lies within [base, base + size) */
static int
inside(const char *p, size_t n, const uint8_t *base, size_t size)
{
	const char *b = (const char *) base;

	return p >= b && n <= size && p - b <= (ptrdiff_t) (size - n);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	IqWireRequest req;
	const char *err = NULL;
	IqBuf		out;
	uint32_t	k;

	if (!iq_wire_decode_request((const char *) data, size, &req, &err))
	{
		if (err == NULL || req.partitions != NULL || req.keys != NULL)
			abort();
		return 0;
	}
	for (k = 0; k < req.nkeys; k++)
		if (!inside(req.keys[k], req.key_lens[k], data, size))
			abort();
	if ((req.flags & IQ_FLAG_LOWER) && !inside(req.lower, req.lower_len, data, size))
		abort();
	if ((req.flags & IQ_FLAG_UPPER) && !inside(req.upper, req.upper_len, data, size))
		abort();

	iq_buf_init(&out);
	iq_wire_encode_request(&req, &out);
	if (out.oom || out.len != size || (size > 0 && memcmp(out.data, data, size) != 0))
		abort();
	iq_buf_free(&out);
	iq_wire_request_free(&req);
	return 0;
}

/*-------------------------------------------------------------------------
 * json.c
 *	  libFuzzer target: the HTTP server's JSON strings and URL escaping
 *	  (worker/serve/http/json.c), which every key and value in a JSON answer and
 *	  every forwarded key go through.
 *
 * For any bytes: iq_json_bytes gives a string jansson can write and read
 * back, equal to the input whenever the input is valid UTF-8 (jansson
 * itself says); iq_json_value does the same for either store; percent-
 * encoding then decoding gives the bytes back; decoding the raw bytes as a
 * URL stays within them.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "worker/serve/http/http_internal.h"

/* round_trip: j written as JSON text and read back; the parsed value */
static json_t *
round_trip(json_t *j)
{
	char	   *text;
	json_t	   *back;
	json_error_t error;

	if (j == NULL)
		abort();
	text = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
	if (text == NULL)
		abort();
	back = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &error);
	if (back == NULL)
		abort();				/* we wrote JSON that is not JSON */
	free(text);
	return back;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *bytes = (const char *) data;
	json_t	   *j;
	json_t	   *back;
	json_t	   *valid;
	IqBuf		enc;
	char	   *s;
	size_t		n;

	/* a JSON string for any bytes */
	j = iq_json_bytes(bytes, size);
	back = round_trip(j);
	if (!json_is_string(back))
		abort();
	valid = json_stringn(bytes, size);	/* NULL unless valid UTF-8 */
	if (valid != NULL &&
		(json_string_length(back) != size ||
		 memcmp(json_string_value(back), bytes, size) != 0))
		abort();
	json_decref(valid);
	json_decref(back);
	json_decref(j);

	/* a value of either store: a count when 8 bytes of order-count */
	for (int store = 0; store < IQ_NUM_STORES; store++)
	{
		j = iq_json_value((IqStoreId) store, size ? bytes : NULL, size);
		back = round_trip(j);
		if (store == IQ_STORE_ORDER_COUNT && size == 8 && !json_is_integer(back))
			abort();
		json_decref(back);
		json_decref(j);
	}

	/* percent-encoding, then decoding, gives the bytes back */
	iq_buf_init(&enc);
	iq_url_encode(&enc, bytes, size);
	iq_buf_u8(&enc, 0);
	if (enc.oom)
		abort();
	n = iq_url_decode(enc.data, false);
	if (n != size || (size > 0 && memcmp(enc.data, bytes, size) != 0))
		abort();
	iq_buf_free(&enc);

	/* decoding raw input never grows it, with '+' as space or not */
	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	for (int plus = 0; plus < 2; plus++)
	{
		size_t		len;

		memcpy(s, bytes, size);
		s[size] = '\0';
		len = strlen(s);
		if (iq_url_decode(s, plus) > len)
			abort();
	}
	free(s);
	return 0;
}

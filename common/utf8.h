/*-------------------------------------------------------------------------
 * utf8.h
 *	  Keys and values that are not valid UTF-8, replaced as Kafka Streams
 *	  shows them.
 *
 * Kafka Streams' StringDeserializer decodes with Java's UTF-8 decoder,
 * which replaces each maximal subpart of an ill-formed sequence by one
 * U+FFFD (Unicode's recommended practice, also Python's "replace").  The
 * same replacement serves SQL text columns and the HTTP server's JSON, so
 * both show a broken key alike.
 *
 * Plain C, shared by the worker's threads and the backends.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_UTF8_H
#define IQ_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* U+FFFD, the replacement character, in UTF-8 */
#define IQ_UTF8_REPLACEMENT		"\xEF\xBF\xBD"
#define IQ_UTF8_REPLACEMENT_LEN	3

/* Worst-case growth of iq_utf8_replace: each input byte becomes U+FFFD */
#define IQ_UTF8_REPLACED_MAX(len)	((len) * IQ_UTF8_REPLACEMENT_LEN)

/*
 * Length of the prefix of data that is valid UTF-8 (with no NUL byte
 * unless nul_ok); len when all of it is.
 */
extern size_t iq_utf8_valid_prefix(const char *data, size_t len, bool nul_ok);

/*
 * Copy data to out (room for IQ_UTF8_REPLACED_MAX(len) bytes), each
 * maximal ill-formed subpart (and each NUL byte unless nul_ok) replaced by
 * U+FFFD; returns the length written.
 */
extern size_t iq_utf8_replace(const char *data, size_t len, char *out, bool nul_ok);

/*
 * True when every byte is ASCII other than NUL: text that is valid as it
 * is in UTF-8 and in every other server encoding (all are supersets of
 * ASCII), so a backend need not verify it.  Eight bytes a step, inline:
 * a full scan's keys are mostly such, and the encoding's own check was a
 * sixth of the backend's time per row.
 */
static inline bool
iq_ascii_text(const char *data, size_t len)
{
	const uint64_t ones = UINT64_C(0x0101010101010101);
	const uint64_t highs = UINT64_C(0x8080808080808080);
	uint64_t	bad = 0;
	size_t		i = 0;

	for (; i + 8 <= len; i += 8)
	{
		uint64_t	x;

		memcpy(&x, data + i, 8);
		/* a high bit, or a zero byte (its high bit appears after -1) */
		bad |= (x | ((x - ones) & ~x)) & highs;
	}
	for (; i < len; i++)
	{
		unsigned char c = (unsigned char) data[i];

		bad |= (c == 0 || c >= 0x80);
	}
	return bad == 0;
}

#endif							/* IQ_UTF8_H */

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

#endif							/* IQ_UTF8_H */

/*-------------------------------------------------------------------------
 * utf8.c
 *	  Validation and replacement of UTF-8 (see utf8.h).
 *
 * Well-formed UTF-8 is Unicode's table 3-7: no overlong forms, no
 * surrogates, nothing beyond U+10FFFF.  A maximal subpart is the longest
 * start of a well-formed sequence found before it breaks, or else a
 * single byte.
 *-------------------------------------------------------------------------
 */
#include <string.h>

#include "common/utf8.h"

/* Range of the byte after lead byte c in a well-formed sequence. */
static void
second_range(unsigned char c, unsigned char *lo, unsigned char *hi)
{
	*lo = 0x80;
	*hi = 0xBF;
	if (c == 0xE0)
		*lo = 0xA0;				/* overlong below */
	else if (c == 0xED)
		*hi = 0x9F;				/* surrogates above */
	else if (c == 0xF0)
		*lo = 0x90;				/* overlong below */
	else if (c == 0xF4)
		*hi = 0x8F;				/* beyond U+10FFFF above */
}

/*
 * seq_len
 *		Length of the well-formed sequence at p; 0 if ill-formed, with
 *		*bad set to the length of its maximal subpart.
 */
static size_t
seq_len(const unsigned char *p, size_t left, size_t *bad)
{
	unsigned char c = p[0];
	unsigned char lo;
	unsigned char hi;
	size_t		need;

	*bad = 1;
	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		need = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		need = 4;
	else
		return 0;				/* a continuation byte, C0, C1, F5..FF */

	second_range(c, &lo, &hi);
	if (left < 2 || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
	{
		if (i >= left || (p[i] & 0xC0) != 0x80)
		{
			*bad = i;
			return 0;
		}
	}
	return need;
}

/*
 * iq_utf8_valid_prefix
 *		How much of data is valid UTF-8 (without NUL unless nul_ok).
 */
size_t
iq_utf8_valid_prefix(const char *data, size_t len, bool nul_ok)
{
	const unsigned char *p = (const unsigned char *) data;
	size_t		i = 0;

	while (i < len)
	{
		size_t		bad;
		size_t		n;

		if (p[i] < 0x80)
		{
			if (p[i] == 0 && !nul_ok)
				break;
			i++;
			continue;
		}
		n = seq_len(p + i, len - i, &bad);
		if (n == 0)
			break;
		i += n;
	}
	return i;
}

/*
 * iq_utf8_replace
 *		data with every maximal ill-formed subpart (and NUL unless nul_ok)
 *		as U+FFFD.
 */
size_t
iq_utf8_replace(const char *data, size_t len, char *out, bool nul_ok)
{
	const unsigned char *p = (const unsigned char *) data;
	size_t		i = 0;
	size_t		o = 0;

	while (i < len)
	{
		size_t		valid = iq_utf8_valid_prefix(data + i, len - i, nul_ok);
		size_t		bad = 1;

		memcpy(out + o, data + i, valid);
		o += valid;
		i += valid;
		if (i >= len)
			break;
		if (p[i] != 0)
			(void) seq_len(p + i, len - i, &bad);
		memcpy(out + o, IQ_UTF8_REPLACEMENT, IQ_UTF8_REPLACEMENT_LEN);
		o += IQ_UTF8_REPLACEMENT_LEN;
		i += bad;
	}
	return o;
}

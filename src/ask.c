/*-------------------------------------------------------------------------
 * ask.c
 *	  What one read asks the store, from the pushed-down expressions
 *	  evaluated at run time: distinct keys, the tightest key range, and how
 *	  many rows a LIMIT needs.
 *
 * Keys are compared as bytes, as RocksDB's default comparator does.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/executor.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#include "common/utf8.h"
#include "src/ask.h"
#include "src/plan.h"
#include "src/quals.h"

static void add_keys_from_array(IqAsk *ask, Datum array, int *cap);
static void add_key(IqAsk *ask, Datum text, int *cap);
static int	key_cmp(const IqKey *a, const IqKey *b);
static int	key_qsort_cmp(const void *a, const void *b);
static void widen_upper(IqAsk *ask);
static char *copy_bytes(const char *data, int len);
static bool has_replacement(const IqKey *key);

/*
 * iq_ask_evaluate
 *		The keys, the tightest bounds and the limit, from fdw_exprs.  A null
 *		key or bound matches nothing (the comparison is never true).
 */
void
iq_ask_evaluate(ExprContext *econtext, IqScanKind kind, List *expr_states,
				List *roles, bool replaced, IqAsk *ask)
{
	ListCell   *lc1;
	ListCell   *lc2;
	int			cap = 0;
	int64		limit = -1;
	int64		offset = 0;

	memset(ask, 0, sizeof(*ask));
	forboth(lc1, expr_states, lc2, roles)
	{
		ExprState  *state = (ExprState *) lfirst(lc1);
		IqExprRole	role = lfirst_int(lc2);
		IqKey		bound;
		bool		isnull;
		Datum		d;
		MemoryContext old;

		old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
		d = ExecEvalExpr(state, econtext, &isnull);
		MemoryContextSwitchTo(old);

		if (role == IQ_EXPR_LIMIT || role == IQ_EXPR_OFFSET)
		{
			if (role == IQ_EXPR_LIMIT)
				limit = isnull ? -1 : DatumGetInt64(d);
			else
				offset = isnull ? 0 : DatumGetInt64(d);
			continue;
		}
		if (isnull)
		{
			/* key = NULL, key = ANY (NULL), key > NULL: never true */
			ask->empty = true;
			continue;
		}
		if (role == IQ_EXPR_KEY)
		{
			add_key(ask, d, &cap);
			continue;
		}
		if (role == IQ_EXPR_KEYS)
		{
			add_keys_from_array(ask, d, &cap);
			continue;
		}

		{
			text	   *t = DatumGetTextPP(d);

			bound.len = VARSIZE_ANY_EXHDR(t);
			bound.data = copy_bytes(VARDATA_ANY(t), bound.len);
		}
		if (role == IQ_EXPR_LOWER || role == IQ_EXPR_LOWER_INCL)
		{
			bool		incl = (role == IQ_EXPR_LOWER_INCL);
			int			c = ask->has_lower ? key_cmp(&bound, &ask->lower) : 1;

			if (c > 0 || (c == 0 && !incl))
			{
				ask->lower = bound;
				ask->lower_incl = (c > 0) ? incl : false;
				ask->has_lower = true;
			}
		}
		else
		{
			bool		incl = (role == IQ_EXPR_UPPER_INCL);
			int			c = ask->has_upper ? key_cmp(&bound, &ask->upper) : -1;

			if (c < 0 || (c == 0 && !incl))
			{
				ask->upper = bound;
				ask->upper_incl = (c < 0) ? incl : false;
				ask->has_upper = true;
			}
		}
	}

	if (kind == IQ_SCAN_POINT && !ask->empty)
	{
		int			n = 0;

		/* each key once: IN ('1', '1') is one row */
		if (ask->nkeys > 1)
			qsort(ask->keys, ask->nkeys, sizeof(IqKey), key_qsort_cmp);
		for (int i = 0; i < ask->nkeys; i++)
			if (n == 0 || key_cmp(&ask->keys[i], &ask->keys[n - 1]) != 0)
				ask->keys[n++] = ask->keys[i];
		ask->nkeys = n;
		if (n == 0)
			ask->empty = true;
		for (int i = 0; replaced && i < n; i++)
			if (has_replacement(&ask->keys[i]))
				ask->scan_all = true;
	}
	if (ask->has_lower && ask->has_upper)
	{
		int			c = key_cmp(&ask->lower, &ask->upper);

		if (c > 0 || (c == 0 && !(ask->lower_incl && ask->upper_incl)))
			ask->empty = true;
	}
	if (replaced && ask->has_upper && !ask->empty)
		widen_upper(ask);
	if (limit >= 0 && offset >= 0 && limit + offset <= PG_UINT32_MAX &&
		limit + offset > 0)
		ask->limit = (uint32) (limit + offset);
}

/*
 * widen_upper
 *		The upper bound of the stored keys whose text, U+FFFD in place of
 *		what is not UTF-8, is within the upper bound asked.
 *
 * Replacement keeps a key's bytes up to its first bad byte, and puts
 * U+FFFD (EF BF BD, above any ASCII byte) there.  So a bound of ASCII
 * bytes A holds for the stored keys as for their text: a stored key above
 * A differs from it first at a higher ASCII byte, kept in the text, or at a
 * byte from 0x80 on, whose text is EF or above.  A bound with a non-ASCII
 * byte is not so: its text may be passed by a replaced key that is below it
 * as bytes, or the reverse.  Every stored key whose text is below it starts
 * with the bound's ASCII prefix A or sorts before A, so the store is asked
 * for keys below A's successor (A's last byte plus one), or for all keys
 * when A is empty.  The local filter keeps the exact condition.
 */
static void
widen_upper(IqAsk *ask)
{
	int			ascii = 0;

	while (ascii < ask->upper.len && (unsigned char) ask->upper.data[ascii] < 0x80)
		ascii++;
	if (ascii == ask->upper.len)
		return;
	if (ascii == 0)
	{
		ask->has_upper = false;
		return;
	}
	ask->upper.len = ascii;
	ask->upper.data[ascii - 1]++;	/* ASCII, so no carry */
	ask->upper_incl = false;
}

/*
 * has_replacement
 *		Does a key hold U+FFFD?  Then any stored key whose bad bytes were
 *		replaced by it may show this text, not only the key with its bytes.
 */
static bool
has_replacement(const IqKey *key)
{
	for (int i = 0; i + IQ_UTF8_REPLACEMENT_LEN <= key->len; i++)
		if (memcmp(key->data + i, IQ_UTF8_REPLACEMENT, IQ_UTF8_REPLACEMENT_LEN) == 0)
			return true;
	return false;
}

/*
 * copy_bytes
 *		A key's bytes, NUL included (a bytea key may hold one, where
 *		pnstrdup would stop), NUL-terminated too.
 */
static char *
copy_bytes(const char *data, int len)
{
	char	   *out = palloc(len + 1);

	memcpy(out, data, len);
	out[len] = '\0';
	return out;
}

/*
 * add_key
 *		Copy one key (text or bytea).
 */
static void
add_key(IqAsk *ask, Datum d, int *cap)
{
	text	   *t = DatumGetTextPP(d);

	if (ask->nkeys >= *cap)
	{
		*cap = Max(8, *cap * 2);
		ask->keys = ask->keys ? repalloc(ask->keys, sizeof(IqKey) * *cap)
			: palloc(sizeof(IqKey) * *cap);
	}
	ask->keys[ask->nkeys].len = VARSIZE_ANY_EXHDR(t);
	ask->keys[ask->nkeys].data = copy_bytes(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	ask->nkeys++;
}

/*
 * add_keys_from_array
 *		Every non-null element of a text (or varchar) array.
 */
static void
add_keys_from_array(IqAsk *ask, Datum array, int *cap)
{
	int			n;
	Datum	   *elems = iq_array_keys(array, &n);

	for (int i = 0; i < n; i++)
		add_key(ask, elems[i], cap);
}

/*
 * key_cmp
 *		Byte order, as RocksDB's default comparator.
 */
static int
key_cmp(const IqKey *a, const IqKey *b)
{
	int			c = memcmp(a->data, b->data, Min(a->len, b->len));

	if (c != 0)
		return c;
	return (a->len > b->len) - (a->len < b->len);
}

/*
 * key_qsort_cmp
 *		key_cmp for qsort.
 */
static int
key_qsort_cmp(const void *a, const void *b)
{
	return key_cmp((const IqKey *) a, (const IqKey *) b);
}

/*
 * iq_ask_describe
 *		What a read needs, for errors: "key '2'", "keys '1', '2' and 3
 *		more", "key range ['1', '5']", "a full scan".
 */
char *
iq_ask_describe(IqScanKind kind, IqAsk *ask)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (kind == IQ_SCAN_POINT && !ask->scan_all)
	{
		appendStringInfoString(&buf, ask->nkeys == 1 ? "key " : "keys ");
		for (int i = 0; i < ask->nkeys && i < 3; i++)
			appendStringInfo(&buf, "%s%s", i ? ", " : "",
							 iq_printable_key(ask->keys[i].data, ask->keys[i].len));
		if (ask->nkeys > 3)
			appendStringInfo(&buf, " and %d more", ask->nkeys - 3);
	}
	else if (ask->scan_all)
		appendStringInfoString(&buf, "a full scan (a key asked holds U+FFFD)");
	else if (ask->has_lower || ask->has_upper)
		appendStringInfo(&buf, "key range %s%s, %s%s",
						 ask->has_lower && ask->lower_incl ? "[" : "(",
						 ask->has_lower ? iq_printable_key(ask->lower.data, ask->lower.len) : "",
						 ask->has_upper ? iq_printable_key(ask->upper.data, ask->upper.len) : "",
						 ask->has_upper && ask->upper_incl ? "]" : ")");
	else
		appendStringInfoString(&buf, "a full scan");
	return buf.data;
}

/*
 * iq_printable_key
 *		A key for a message: quoted, with bytes that are not printable ASCII
 *		as \xNN, so a broken key cannot break the message.
 */
char *
iq_printable_key(const char *key, int len)
{
	StringInfoData buf;
	int			shown = Min(len, 200);

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '\'');
	for (int i = 0; i < shown; i++)
	{
		unsigned char c = (unsigned char) key[i];

		if (c == '\'' || c == '\\')
			appendStringInfo(&buf, "%c%c", c, c);
		else if (c >= 0x20 && c < 0x7f)
			appendStringInfoChar(&buf, c);
		else
			appendStringInfo(&buf, "\\x%02x", c);
	}
	appendStringInfoChar(&buf, '\'');
	if (shown < len)
		appendStringInfo(&buf, "... (%d bytes)", len);
	return buf.data;
}

/*-------------------------------------------------------------------------
 * key_order.c
 *	  A stable bytewise order of keys, by radix sort.
 *
 * A restore sorts chunks of hundreds of thousands of keys, and a
 * comparison sort spent half its time there: each comparison of two equal
 * 8-byte prefixes (a changelog holds a key several times until compacted)
 * went to the keys' bytes, a cache miss each.  Here each key becomes a
 * 16-byte item whose 8-byte prefix is taken after the bytes every key of
 * the set shares (keys of one application tend to start alike), sorted by
 * an LSD radix sort that skips the digits all items agree on.  Being
 * stable, it keeps equal keys in their numbers' order; only runs of equal
 * prefixes whose keys are longer than the prefix are sorted again, by
 * their remaining bytes.
 *-------------------------------------------------------------------------
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE				/* qsort_r */
#endif

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "worker/stream/key_order.h"

#define PREFIX_BYTES	8
/* below this, a run of equal prefixes is sorted by insertion */
#define INSERTION_MAX	16

typedef struct Item
{
	uint64_t	prefix;			/* key bytes [skip, skip + 8), big-endian, 0-padded */
	uint32_t	index;
	uint32_t	len;
} Item;

typedef struct Tie
{
	IqKeyAt		key_at;
	const void *ctx;
	size_t		skip;			/* bytes the prefix and the shared start cover */
} Tie;

/* shared_start: how many leading bytes every key has in common */
static size_t
shared_start(int n, IqKeyAt key_at, const void *ctx)
{
	size_t		shared;
	const char *first = key_at(ctx, 0, &shared);

	for (int i = 1; i < n && shared > 0; i++)
	{
		size_t		len;
		const char *k = key_at(ctx, i, &len);
		size_t		j = 0;

		if (len < shared)
			shared = len;
		while (j < shared && k[j] == first[j])
			j++;
		shared = j;
	}
	return shared;
}

/* tie_cmp: items of equal prefix, by the bytes after it, length, number */
static int
tie_cmp(const void *a, const void *b, void *arg)
{
	const Item *x = a;
	const Item *y = b;
	const Tie  *t = arg;

	if (x->len > t->skip && y->len > t->skip)
	{
		size_t		xl;
		size_t		yl;
		const char *xk = t->key_at(t->ctx, (int) x->index, &xl);
		const char *yk = t->key_at(t->ctx, (int) y->index, &yl);
		int			c = memcmp(xk + t->skip, yk + t->skip, (xl < yl ? xl : yl) - t->skip);

		if (c != 0)
			return c;
	}
	/* a key shorter than the other, equal up to its end, comes first */
	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->index < y->index ? -1 : (x->index > y->index);
}

/* sort_run: a run of equal prefixes, by what the prefix does not cover */
static void
sort_run(Item *run, int n, Tie *t)
{
	if (n > INSERTION_MAX)
	{
		qsort_r(run, n, sizeof(Item), tie_cmp, t);
		return;
	}
	for (int i = 1; i < n; i++)
	{
		Item		v = run[i];
		int			j = i;

		while (j > 0 && tie_cmp(&run[j - 1], &v, t) > 0)
		{
			run[j] = run[j - 1];
			j--;
		}
		run[j] = v;
	}
}

/* radix_sort: items by prefix, stable; the result in items or in tmp */
static Item *
radix_sort(Item *items, Item *tmp, int n)
{
	size_t		count[PREFIX_BYTES][256];

	memset(count, 0, sizeof(count));
	for (int i = 0; i < n; i++)
		for (int d = 0; d < PREFIX_BYTES; d++)
			count[d][(items[i].prefix >> (8 * d)) & 0xff]++;

	for (int d = 0; d < PREFIX_BYTES; d++)
	{
		size_t		pos = 0;
		Item	   *swap;

		/* every item has the same digit here: nothing to move */
		if (count[d][(items[0].prefix >> (8 * d)) & 0xff] == (size_t) n)
			continue;
		for (int b = 0; b < 256; b++)
		{
			size_t		c = count[d][b];

			count[d][b] = pos;
			pos += c;
		}
		for (int i = 0; i < n; i++)
			tmp[count[d][(items[i].prefix >> (8 * d)) & 0xff]++] = items[i];
		swap = items;
		items = tmp;
		tmp = swap;
	}
	return items;
}

/* same_keys: whether two items of equal prefix hold equal keys */
static bool
same_keys(const Item *x, const Item *y, const Tie *t)
{
	size_t		xl;
	size_t		yl;
	const char *xk;
	const char *yk;

	if (x->len != y->len)
		return false;
	if (x->len <= t->skip)
		return true;			/* the prefix covered every byte */
	xk = t->key_at(t->ctx, (int) x->index, &xl);
	yk = t->key_at(t->ctx, (int) y->index, &yl);
	return memcmp(xk + t->skip, yk + t->skip, xl - t->skip) == 0;
}

uint32_t *
iq_key_order(int n, IqKeyAt key_at, const void *ctx, uint8_t *same_as_next)
{
	Item	   *items;
	Item	   *tmp;
	Item	   *sorted;
	uint32_t   *order;
	Tie			tie;
	size_t		skip;

	order = malloc(sizeof(uint32_t) * (n > 0 ? n : 1));
	if (n <= 0 || order == NULL)
		return order;
	items = malloc(sizeof(Item) * n);
	tmp = malloc(sizeof(Item) * n);
	if (items == NULL || tmp == NULL)
	{
		free(items);
		free(tmp);
		free(order);
		return NULL;
	}

	skip = shared_start(n, key_at, ctx);
	for (int i = 0; i < n; i++)
	{
		size_t		len;
		const unsigned char *k = (const unsigned char *) key_at(ctx, i, &len);
		uint64_t	prefix = 0;

		for (size_t j = skip; j < skip + PREFIX_BYTES; j++)
			prefix = (prefix << 8) | (j < len ? k[j] : 0);
		items[i].prefix = prefix;
		items[i].index = (uint32_t) i;
		items[i].len = (uint32_t) len;
	}
	sorted = radix_sort(items, tmp, n);

	tie.key_at = key_at;
	tie.ctx = ctx;
	tie.skip = skip + PREFIX_BYTES;
	for (int s = 0, e; s < n; s = e)
	{
		for (e = s + 1; e < n && sorted[e].prefix == sorted[s].prefix; e++)
			;
		if (e - s > 1)
			sort_run(sorted + s, e - s, &tie);
	}
	for (int i = 0; i < n; i++)
	{
		order[i] = sorted[i].index;
		if (same_as_next)
			same_as_next[i] = i + 1 < n && sorted[i].prefix == sorted[i + 1].prefix &&
				same_keys(&sorted[i], &sorted[i + 1], &tie);
	}
	free(items);
	free(tmp);
	return order;
}

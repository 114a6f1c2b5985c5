/*-------------------------------------------------------------------------
 * checkpoint.c
 *	  A partition's checkpoint: the next offsets of its input topics and of
 *	  its changelog, in a column family of their own, written in the same
 *	  WriteBatch as the data they cover, so that a crash never separates
 *	  them.  Each is an 8-byte big-endian value under the topic's name.
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <rocksdb/c.h>

#include "common/bigendian.h"
#include "worker/store/store_internal.h"

#define CKPT_SLOTS 3

static const char *const ckpt_keys[CKPT_SLOTS] = {"customer", "order", "changelog"};

/*
 * iq_store_checkpoint_read
 *		The offsets written with the data; -1 where absent.
 */
bool
iq_store_checkpoint_read(PartStore *ps, IqCheckpoint *ck, char **err)
{
	int64_t    *slots[CKPT_SLOTS] = {&ck->customer_next, &ck->order_next, &ck->changelog_next};

	for (int i = 0; i < CKPT_SLOTS; i++)
	{
		char	   *e = NULL;
		size_t		vlen = 0;
		char	   *v = rocksdb_get_cf(ps->db, iq_store_read_opts, ps->cf[CF_CHECKPOINT],
									   ckpt_keys[i], strlen(ckpt_keys[i]), &vlen, &e);

		*slots[i] = -1;
		if (e != NULL)
		{
			iq_store_set_err(err, "could not read checkpoint: %s", e);
			free(e);
			return false;
		}
		if (v != NULL && vlen == 8)
			*slots[i] = (int64_t) iq_be64_get((const unsigned char *) v);
		rocksdb_free(v);
	}
	return true;
}

/*
 * iq_store_checkpoint_write
 *		Add the offsets known (not -1) to a write batch of the partition.
 */
void
iq_store_checkpoint_write(PartStore *ps, rocksdb_writebatch_t *wb,
						  const IqCheckpoint *ck)
{
	const int64_t vals[CKPT_SLOTS] = {ck->customer_next, ck->order_next, ck->changelog_next};

	for (int i = 0; i < CKPT_SLOTS; i++)
	{
		unsigned char v[8];

		if (vals[i] < 0)
			continue;
		iq_be64_put(v, (uint64_t) vals[i]);
		rocksdb_writebatch_put_cf(wb, ps->cf[CF_CHECKPOINT],
								  ckpt_keys[i], strlen(ckpt_keys[i]), (const char *) v, 8);
	}
}

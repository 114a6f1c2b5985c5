/*-------------------------------------------------------------------------
 * write.c
 *	  Writes, main thread of the worker: one atomic WriteBatch per partition
 *	  (records and their checkpoint together), and the bulk load of a
 *	  restore as an SST file.
 *
 * Writes take no partition lock (lifecycle.c says why).  Every write tells
 * the backends' value cache first: a batch forgets each key it writes
 * between iq_vc_write_begin and iq_vc_write_end, a bulk load drops the
 * partition's cached answers whole.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rocksdb/c.h>

#include "common/shmem.h"
#include "common/value_cache.h"
#include "worker/store/store_internal.h"

struct IqStoreBatch
{
	int			partition;
	rocksdb_writebatch_t *wb;
};

/* ---- batches ---- */

/* batch_discard: free the batch and end its write for the value cache */
static void
batch_discard(IqStoreBatch *b)
{
	if (b == NULL)
		return;
	iq_vc_write_end(iq_value_cache, b->partition);
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

/*
 * iq_store_batch_begin
 *		An empty batch of one partition; until it is committed or
 *		discarded, reads that overlap it fill no cached answer
 *		(value_cache.h).
 */
IqStoreBatch *
iq_store_batch_begin(int partition)
{
	IqStoreBatch *b = malloc(sizeof(IqStoreBatch));

	if (b == NULL)
		return NULL;
	b->partition = partition;
	b->wb = rocksdb_writebatch_create();
	iq_vc_write_begin(iq_value_cache, partition);
	return b;
}

/* iq_store_batch_put: a record, its cached answer forgotten first */
void
iq_store_batch_put(IqStoreBatch *b, IqStoreId store, const char *key, size_t key_len,
				   const char *value, size_t value_len)
{
	PartStore  *ps = &iq_store_parts[b->partition];

	if (ps->db == NULL)
		return;
	iq_vc_forget(iq_value_cache, store, b->partition, key, key_len);
	rocksdb_writebatch_put_cf(b->wb, ps->cf[CF_OF(store)], key, key_len, value, value_len);
}

/* iq_store_batch_delete: a tombstone, its cached answer forgotten first */
void
iq_store_batch_delete(IqStoreBatch *b, IqStoreId store, const char *key, size_t key_len)
{
	PartStore  *ps = &iq_store_parts[b->partition];

	if (ps->db == NULL)
		return;
	iq_vc_forget(iq_value_cache, store, b->partition, key, key_len);
	rocksdb_writebatch_delete_cf(b->wb, ps->cf[CF_OF(store)], key, key_len);
}

/* iq_store_batch_checkpoint: the offsets the batch's records bring us to */
void
iq_store_batch_checkpoint(IqStoreBatch *b, const IqCheckpoint *ck)
{
	PartStore  *ps = &iq_store_parts[b->partition];

	if (ps->db == NULL)
		return;
	iq_store_checkpoint_write(ps, b->wb, ck);
}

/*
 * iq_store_batch_commit
 *		Write the batch, if it holds anything, and free it either way.
 */
bool
iq_store_batch_commit(IqStoreBatch *b, char **err)
{
	PartStore  *ps = &iq_store_parts[b->partition];
	char	   *e = NULL;
	bool		ok = true;

	if (ps->db == NULL)
	{
		iq_store_set_err(err, "partition is not open");
		ok = false;
	}
	else if (rocksdb_writebatch_count(b->wb) > 0)
	{
		rocksdb_write(ps->db, iq_store_write_opts, b->wb, &e);
		iq_store_iter_written(ps);
		if (e != NULL)
		{
			iq_store_set_err(err, "RocksDB write failed: %s", e);
			free(e);
			ok = false;
		}
	}
	batch_discard(b);
	return ok;
}

/* ---- bulk load ---- */

/*
 * write_sst
 *		The records, sorted, as an SST file at path; *e is RocksDB's error.
 */
static void
write_sst(const char *path, const IqKV *kvs, int n, char **e)
{
	rocksdb_envoptions_t *envopts = rocksdb_envoptions_create();
	rocksdb_options_t *opts = iq_store_db_options(iq_store_partition_count());
	rocksdb_sstfilewriter_t *w = rocksdb_sstfilewriter_create(envopts, opts);

	rocksdb_sstfilewriter_open(w, path, e);
	for (int i = 0; i < n && *e == NULL; i++)
	{
		if (kvs[i].value != NULL)
			rocksdb_sstfilewriter_put(w, kvs[i].key, kvs[i].key_len,
									  kvs[i].value, kvs[i].value_len, e);
		else
			rocksdb_sstfilewriter_delete(w, kvs[i].key, kvs[i].key_len, e);
	}
	if (*e == NULL)
		rocksdb_sstfilewriter_finish(w, e);
	rocksdb_sstfilewriter_destroy(w);
	rocksdb_options_destroy(opts);
	rocksdb_envoptions_destroy(envopts);
}

/*
 * ingest_sst
 *		Move the file at path into the store's column family.  No put names
 *		the keys loaded, so every cached answer of the partition goes.
 */
static void
ingest_sst(PartStore *ps, int partition, IqStoreId store, const char *path, char **e)
{
	const char *files[1] = {path};
	rocksdb_ingestexternalfileoptions_t *iopts = rocksdb_ingestexternalfileoptions_create();

	rocksdb_ingestexternalfileoptions_set_move_files(iopts, 1);
	iq_vc_write_begin(iq_value_cache, partition);
	iq_store_iter_ingest_begin(ps);
	rocksdb_ingest_external_file_cf(ps->db, ps->cf[CF_OF(store)], files, 1, iopts, e);
	iq_store_iter_ingest_end(ps);
	iq_vc_new_generation(iq_value_cache, partition);
	iq_vc_write_end(iq_value_cache, partition);
	rocksdb_ingestexternalfileoptions_destroy(iopts);
}

/*
 * iq_store_ingest
 *		Write sorted records as an SST file and ingest it: a restore then
 *		costs a sequential file write instead of a memtable insert per
 *		record.  The checkpoint follows the ingest, so a crash in between
 *		only repeats (idempotent) work.
 */
bool
iq_store_ingest(int partition, IqStoreId store, const IqKV *kvs, int n,
				const IqCheckpoint *ck, char **err)
{
	PartStore  *ps = &iq_store_parts[partition];
	char		path[4200];
	char		dir[4096];
	char	   *e = NULL;
	IqStoreBatch *b;

	if (ps->db == NULL)
	{
		iq_store_set_err(err, "partition is not open");
		return false;
	}
	iq_store_partition_path(partition, dir, sizeof(dir));
	snprintf(path, sizeof(path), "%s/restore-%d.sst", dir, (int) store);
	write_sst(path, kvs, n, &e);
	if (e == NULL)
		ingest_sst(ps, partition, store, path, &e);
	unlink(path);				/* gone already when it was moved in */
	if (e != NULL)
	{
		iq_store_set_err(err, "RocksDB bulk load failed: %s", e);
		free(e);
		return false;
	}
	b = iq_store_batch_begin(partition);
	iq_store_batch_checkpoint(b, ck);
	return iq_store_batch_commit(b, err);
}

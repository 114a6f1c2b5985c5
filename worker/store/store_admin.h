/*-------------------------------------------------------------------------
 * store_admin.h
 *	  The worker's side of the RocksDB state: open, close, write, restore
 *	  bookkeeping.  Main thread of the worker only (store.h is the read side
 *	  any thread may use).
 *
 * Errors come back as malloc'd strings (free with free()), so that the
 * same code can be exercised outside PostgreSQL.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STORE_ADMIN_H
#define IQ_STORE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "worker/store/store.h"

/*
 * What a partition's checkpoint column family records, written in the same
 * WriteBatch as the data it covers.  Each is the next offset to read, -1
 * when nothing has been read yet.
 */
typedef struct IqCheckpoint
{
	int64_t		customer_next;	/* customer topic */
	int64_t		order_next;		/* order topic (the group's commit is the
								 * authority; kept for freshness) */
	int64_t		changelog_next; /* changelog topic */
} IqCheckpoint;

typedef struct IqStoreBatch IqStoreBatch;

/*
 * The format of what a partition's database holds (its column families,
 * keys and values), recorded in its checkpoint column family when the
 * database is made (format.c); one made before formats were recorded is
 * format 1.  A build reads the formats from IQ_STORE_FORMAT_OLDEST to
 * IQ_STORE_FORMAT as they are; a database of any other (written by a newer
 * release, say) is set aside and rebuilt from the changelog
 * (iq_restore_open), never opened for writing.  A release that changes
 * what is stored raises IQ_STORE_FORMAT, and IQ_STORE_FORMAT_OLDEST only
 * when it stops reading the old format.
 */
#define IQ_STORE_FORMAT			1
#define IQ_STORE_FORMAT_OLDEST	1
#define IQ_STORE_FORMAT_NONE	0	/* no database on disk */
#define IQ_STORE_FORMAT_UNKNOWN (-1)	/* no checkpoint column family, or an unreadable mark */

/*
 * The format of a closed partition's database on disk, read without
 * writing to it; false with *err when RocksDB cannot open it.
 */
extern bool iq_store_format_on_disk(int partition, int *format, char **err);

/*
 * Set up the shared block cache; memtable_bytes is split between the
 * partitions.  base_dir is <state_dir>/<application_id>.
 */
/* iq_fdw.scan_snapshot_memory in bytes, set before iq_store_init (0: no snapshots) */
extern void iq_store_snapshot_budget(size_t bytes);
extern bool iq_store_init(const char *base_dir, size_t block_cache_bytes,
						  size_t memtable_bytes, char **err);

/* Close every partition and free the cache. */
extern void iq_store_shutdown(void);

extern void iq_store_set_partition_count(int partition_count);

/*
 * Open partition's database (creating it if missing), marked restoring and
 * not yet held; *existed says whether a database was there before.
 */
extern bool iq_store_open(int partition, IqCheckpoint *checkpoint,
						  bool *existed, char **err);
extern bool iq_store_is_open(int partition);

/* The store of an open partition holds no key (main thread). */
extern bool iq_store_is_empty(int partition, IqStoreId store);

/* Readable by other threads (held) or not; restoring or not. */
extern void iq_store_set_held(int partition, bool held, bool restoring);

/* Kept as a standby replica (readable by who asks for one), or no longer. */
extern void iq_store_set_standby(int partition, bool standby);
extern bool iq_store_is_standby(int partition);

/* Close one partition; waits for readers of it. */
extern void iq_store_close(int partition);

/* Close and delete a partition's database (a wipe before a full restore). */
extern bool iq_store_destroy(int partition, char **err);

/*
 * Close a partition's database and rename its directory to
 * "<dir>.<why>-<UTC time>" (*moved_to), for a rebuild from scratch.
 */
extern bool iq_store_set_aside(int partition, const char *why, char *moved_to,
							   size_t moved_to_len, char **err);

/* Does a RocksDB error say that the database's files are damaged? */
extern bool iq_store_error_is_corruption(const char *err);

/* Freshness published to readers. */
extern void iq_store_set_position(int partition, int64_t consumed_offset,
								  int64_t end_offset);

/* Main thread: read ignoring the restoring flag (base values for updates). */
extern IqReadStatus iq_store_get_raw(IqStoreId store, int partition,
									 const char *key, size_t key_len,
									 char **value, size_t *value_len,
									 char **err);

/* A record for iq_store_ingest; value NULL deletes. */
typedef struct IqKV
{
	const char *key;
	size_t		key_len;
	const char *value;
	size_t		value_len;
} IqKV;

/*
 * Bulk load for restores: kvs sorted by key, strictly increasing (one per
 * key), written as an SST file and ingested, then the checkpoint.
 */
extern bool iq_store_ingest(int partition, IqStoreId store, const IqKV *kvs,
							int n, const IqCheckpoint *checkpoint, char **err);

/* One atomic write per partition. */
extern IqStoreBatch *iq_store_batch_begin(int partition);
extern void iq_store_batch_put(IqStoreBatch *batch, IqStoreId store,
							   const char *key, size_t key_len,
							   const char *value, size_t value_len);
extern void iq_store_batch_delete(IqStoreBatch *batch, IqStoreId store,
								  const char *key, size_t key_len);
extern void iq_store_batch_checkpoint(IqStoreBatch *batch,
									  const IqCheckpoint *checkpoint);

/* Write and free the batch (freed on failure too). */
extern bool iq_store_batch_commit(IqStoreBatch *batch, char **err);

#endif							/* IQ_STORE_ADMIN_H */

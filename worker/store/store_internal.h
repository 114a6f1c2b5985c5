/*-------------------------------------------------------------------------
 * store_internal.h
 *	  What the store's files share: the table of partitions and their
 *	  locks, the column families, the RocksDB options, the checkpoint and
 *	  the format.
 *
 *	  lifecycle.c	init/shutdown, open/close of a partition, held and
 *					restoring flags, positions
 *	  wipe.c		a database deleted, or set aside when corrupt
 *	  options.c		RocksDB options: the shared block cache, each database's
 *					options sized from the memory budget
 *	  checkpoint.c	the offsets written atomically with the data
 *	  format.c		the store's format: read before a read-write open,
 *					recorded when the database is made
 *	  read.c		point reads, held partitions, counts, positions
 *	  cursor.c		the merged scan, a bounded batch at a time
 *	  iter_pool.c	idle iterators, reused while nothing was written
 *	  scan_snapshot.c	in-memory copies of a store made by full scans,
 *					read instead of iterators while nothing was written
 *	  write.c		write batches and the bulk load of restores
 *	  message.c		error messages as malloc'd strings
 *
 * No PostgreSQL call in any of them (store.h says why), and no PostgreSQL
 * header here.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STORE_INTERNAL_H
#define IQ_STORE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <rocksdb/c.h>

#include "worker/store/store_admin.h"

/* A column family per store, then the checkpoint's; RocksDB insists on "default", which stays empty */
#define CF_OF(store)	((store) + 1)
#define CF_CHECKPOINT	(IQ_NUM_STORES + 1)
#define NUM_CF			(IQ_NUM_STORES + 2)
#define CF_CHECKPOINT_NAME	"checkpoint"

/* What an idle iterator saw (iter_pool.c): reused only while unchanged */
typedef struct IqIterStamp
{
	uint64_t	seq;			/* the database's latest sequence number */
	uint64_t	ingest_epoch;	/* odd while a file is ingested */
	bool		ok;				/* false: made during an ingest, never pooled */
} IqIterStamp;

typedef struct IqIdleIter
{
	rocksdb_iterator_t *it;
	int			cf;
	IqIterStamp stamp;
} IqIdleIter;

/* A row of a scan snapshot: its key at off in data, its value right after */
typedef struct IqSnapRow
{
	uint64_t	off;
	uint32_t	key_len;
	uint32_t	value_len;
} IqSnapRow;

/*
 * All rows of a partition's store, in key order, as a database with stamp
 * holds them (scan_snapshot.c).  refs and attached under the partition's
 * idle_lock; the rows never change once published.
 */
typedef struct IqScanSnapshot
{
	IqIterStamp stamp;
	char	   *data;
	size_t		data_len;
	size_t		data_cap;
	IqSnapRow  *rows;
	size_t		nrows;
	size_t		rows_cap;		/* bytes */
	size_t		charged;		/* of iq_fdw.scan_snapshot_memory */
	int			refs;			/* cursor batches reading it */
	bool		attached;		/* its partition's, else freed by its last reader */
} IqScanSnapshot;

/* idle iterators kept per partition: a few cursors at once take them */
#define IQ_IDLE_ITERS	4

/*
 * One partition's database.  Readers hold lock shared while they use db;
 * open and close take it exclusively (store.h).
 */
typedef struct PartStore
{
	pthread_rwlock_t lock;
	rocksdb_t  *db;				/* NULL when closed */
	rocksdb_column_family_handle_t *cf[NUM_CF];
	bool		held;			/* assigned to us and published */
	bool		restoring;
	bool		standby;		/* a standby replica, readable when asked for one */
	uint64_t	generation;		/* changes when db is opened or closed */
	rocksdb_options_t *stats_opts;	/* db's options, kept for its statistics
									 * (iq_fdw.rocksdb_statistics); else NULL */
	int64_t		consumed_offset;	/* atomics: read without the lock */
	int64_t		end_offset;
	/* idle iterators (iter_pool.c) */
	pthread_mutex_t idle_lock;
	IqIdleIter	idle[IQ_IDLE_ITERS];
	int			nidle;
	uint64_t	ingest_epoch;	/* atomic */
	/* scan snapshots (scan_snapshot.c), under idle_lock */
	IqScanSnapshot *snap[IQ_NUM_STORES];
	int			nsnap;			/* atomic: how many, read without the lock */
} PartStore;

/* in lifecycle.c */
extern PartStore iq_store_parts[];	/* IQ_MAX_PARTITIONS of them */
extern int	iq_store_parts_limit;	/* atomic: one past the highest opened */
extern bool iq_store_initialized;
extern PartStore *iq_store_slot(int partition);
extern void iq_store_partition_path(int partition, char *out, size_t outlen);

/* in iter_pool.c */
extern IqIterStamp iq_store_stamp_now(PartStore *ps);
extern bool iq_store_same_stamp(const IqIterStamp *a, const IqIterStamp *b);
extern rocksdb_iterator_t *iq_store_iter_take(PartStore *ps, int cf, IqIterStamp *stamp);
extern void iq_store_iter_give(PartStore *ps, int cf, rocksdb_iterator_t *it,
							   IqIterStamp stamp);
extern void iq_store_iter_drop_all(PartStore *ps);
extern void iq_store_iter_written(PartStore *ps);
extern void iq_store_iter_ingest_begin(PartStore *ps);
extern void iq_store_iter_ingest_end(PartStore *ps);

/* in scan_snapshot.c */
extern IqScanSnapshot *iq_snap_build_begin(IqIterStamp stamp);
extern bool iq_snap_build_append(IqScanSnapshot *b, const char *key, size_t key_len,
								 const char *value, size_t value_len);
extern void iq_snap_build_discard(IqScanSnapshot *b, bool stale);
extern void iq_snap_publish(PartStore *ps, int store, IqScanSnapshot *b);
extern IqScanSnapshot *iq_snap_take(PartStore *ps, int store);
extern void iq_snap_release(PartStore *ps, IqScanSnapshot *s);
extern void iq_snap_drop_all(PartStore *ps);
extern size_t iq_snap_seek(const IqScanSnapshot *s, const char *key, size_t key_len);

/* in message.c */
extern void iq_store_set_err(char **err, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern char *iq_store_vmessage(const char *fmt, va_list ap)
			__attribute__((format(printf, 1, 0)));

/* in options.c */
extern rocksdb_readoptions_t *iq_store_read_opts;
extern rocksdb_writeoptions_t *iq_store_write_opts;
extern void iq_store_options_init(size_t block_cache_bytes, size_t memtable_bytes);
extern void iq_store_options_free(void);
extern rocksdb_options_t *iq_store_db_options(int partitions);

/* in format.c */
extern bool iq_store_format_mark(PartStore *ps, bool existed, char **err);

/* in checkpoint.c */
extern bool iq_store_checkpoint_read(PartStore *ps, IqCheckpoint *ck, char **err);
extern void iq_store_checkpoint_write(PartStore *ps, rocksdb_writebatch_t *wb,
									  const IqCheckpoint *ck);

/*
 * iq_store_readable
 *		Whether readers may use a partition: held and restored.  The caller
 *		holds its lock.
 */
static inline IqReadStatus
iq_store_readable(const PartStore *ps)
{
	if (ps->db == NULL || !ps->held)
		return IQ_READ_NOT_HELD;
	if (ps->restoring)
		return IQ_READ_RESTORING;
	return IQ_READ_OK;
}

/*
 * iq_store_readable_as
 *		The same, for a reader that also takes a standby replica's answer.
 */
static inline IqReadStatus
iq_store_readable_as(const PartStore *ps, bool standby_ok)
{
	if (standby_ok && ps->db != NULL && ps->standby)
		return IQ_READ_OK;
	if (ps->db == NULL || !ps->held)
		return IQ_READ_NOT_HELD;
	if (ps->restoring)
		return IQ_READ_RESTORING;
	return IQ_READ_OK;
}

#endif							/* IQ_STORE_INTERNAL_H */

/*-------------------------------------------------------------------------
 * store.h
 *	  The RocksDB state of the partitions this instance holds.
 *
 * One RocksDB database per partition (a "task", as Kafka Streams keeps a
 * store per task) under <state_dir>/<application_id>/<partition>/, with a
 * column family per store and one for the checkpoint (input offsets and
 * changelog offset written atomically with the data they cover).  A
 * partition can therefore be dropped, handed over or restored on its own.
 *
 * Threads: open/close/write are called by the worker's main thread only.
 * The read functions (iq_store_get, cursors, counts, positions) may be
 * called from any thread (HTTP server, local socket server), never call a
 * PostgreSQL function, and return malloc'd strings for errors.  No read
 * holds a partition's lock between calls: a cursor copies a bounded batch of
 * rows under the locks and releases them, so a rebalance that closes a
 * partition waits for one batch at most, whatever the reader's client does;
 * a cursor whose partition was closed meanwhile ends with IQ_READ_MOVED.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_STORE_H
#define IQ_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/stores.h"

typedef enum IqReadStatus
{
	IQ_READ_OK = 0,
	IQ_READ_NOT_FOUND,			/* get: no such key */
	IQ_READ_NOT_HELD,			/* this instance does not hold the partition */
	IQ_READ_RESTORING,			/* held, but not yet restored */
	IQ_READ_ERROR,				/* RocksDB failed; *err says why */
	IQ_READ_MOVED				/* cursor: a partition was closed during the scan */
} IqReadStatus;

/*
 * A cursor reads a batch of rows at a time under its partitions' read
 * locks and holds no lock between batches: at most IQ_STORE_BATCH_ROWS rows,
 * and it stops adding rows once IQ_STORE_BATCH_BYTES are copied (so a batch
 * holds at most that plus one row).  The first batch is
 * IQ_STORE_BATCH_FIRST_ROWS rows, each next one twice as many.  Each batch
 * makes new iterators and seeks them: at 1024 rows that was a twentieth of
 * a full scan's CPU in the worker; 8192 small rows (~2 ms of reading under
 * the lock) make it a hundredth, and IQ_STORE_BATCH_BYTES still bounds
 * large ones.
 */
#define IQ_STORE_BATCH_ROWS			8192
#define IQ_STORE_BATCH_BYTES		(256 * 1024)
#define IQ_STORE_BATCH_FIRST_ROWS	32

/* Position of a partition, for the freshness of answers. */
typedef struct IqPartitionPosition
{
	int			partition;
	int64_t		consumed_offset;	/* next order offset to process */
	int64_t		end_offset;		/* high watermark of the order partition */
} IqPartitionPosition;

/* A row handed out by a cursor; valid until the next call on the cursor. */
typedef struct IqStoreRow
{
	const char *key;
	size_t		key_len;
	const char *value;
	size_t		value_len;
	int			partition;
} IqStoreRow;

typedef struct IqStoreCursor IqStoreCursor;

/* ---- any thread ---- */

/* Partitions held and readable (restored), ascending; returns how many. */
extern int	iq_store_held_partitions(int *partitions, int max);

/* The partition count of the input topics, or 0 before the first assignment. */
extern int	iq_store_partition_count(void);

/* Value of key in store at partition; *value malloc'd (free with free()). */
extern IqReadStatus iq_store_get(IqStoreId store, int partition,
								 const char *key, size_t key_len,
								 char **value, size_t *value_len, char **err);

/*
 * A scan of the given partitions (all held ones when npartitions == 0),
 * merged in key byte order, limited to [lower, upper] (either may be NULL;
 * the _incl flags say whether the bound itself is in).  Returns NULL with
 * *status set when a partition is not held or still restoring.
 */
extern IqStoreCursor *iq_store_cursor_open(IqStoreId store,
										   const int *partitions, int npartitions,
										   const char *lower, size_t lower_len, bool lower_incl,
										   const char *upper, size_t upper_len, bool upper_incl,
										   IqReadStatus *status, char **err);
/* Descending key order instead: call before the first row. */
extern void iq_store_cursor_set_reverse(IqStoreCursor *cursor);
/* The next row, valid until the next call; false at the end or on failure. */
extern void iq_store_cursor_expect(IqStoreCursor *cursor, uint64_t rows);
extern bool iq_store_cursor_next(IqStoreCursor *cursor, IqStoreRow *row);

/*
 * Closes; IQ_READ_ERROR with *err if an iterator failed on the way,
 * IQ_READ_MOVED if a partition was closed during the scan.
 */
extern IqReadStatus iq_store_cursor_close(IqStoreCursor *cursor, char **err);

/* RocksDB's estimate of the keys in store over the given partitions (0 = all held). */
extern uint64_t iq_store_approximate_count(IqStoreId store,
										   const int *partitions, int npartitions);

/* RocksDB's sizes of one store's column family in a partition (GET /metrics). */
typedef struct IqStoreSizes
{
	uint64_t	memtables;		/* rocksdb.cur-size-all-mem-tables */
	uint64_t	sst_files;		/* rocksdb.total-sst-files-size */
	uint64_t	pending_compaction; /* rocksdb.estimate-pending-compaction-bytes */
} IqStoreSizes;

/* false if the partition is not open here (held or standby) */
extern bool iq_store_sizes(IqStoreId store, int partition, IqStoreSizes *out);

/* RocksDB's statistics of a partition's database (iq_fdw.rocksdb_statistics). */
typedef struct IqStoreStatistics
{
	uint64_t	block_cache_hits;	/* rocksdb.block.cache.hit */
	uint64_t	block_cache_misses; /* rocksdb.block.cache.miss */
	uint64_t	stall_micros;	/* rocksdb.stall.micros: writes delayed or stopped */
} IqStoreStatistics;

/* false if the partition is not open here or keeps no statistics */
extern bool iq_store_statistics(int partition, IqStoreStatistics *out);

/*
 * The scans' in-memory snapshots (scan_snapshot.c), for GET /metrics: built
 * and published, batches of a partition read from one, dropped (stale after
 * a write or before publication, or over the budget), bytes held now by
 * snapshots and builds, and the budget (iq_fdw.scan_snapshot_memory).
 */
typedef struct IqSnapshotStats
{
	uint64_t	builds;
	uint64_t	hits;
	uint64_t	drops_stale;
	uint64_t	drops_budget;
	uint64_t	bytes;
	uint64_t	budget;
} IqSnapshotStats;

extern void iq_store_snapshot_stats(IqSnapshotStats *out);

/* Position of a held partition; false if not held. */
extern bool iq_store_position(int partition, IqPartitionPosition *pos);

/*
 * Standby replicas (worker/stream/standby.c): a partition this instance does
 * not own but keeps, read only by a caller that asks for a standby's answer.
 * Its position is how far it has read: consumed_offset is the owner's order
 * offset its state covers, end_offset the order partition's end it last saw.
 * The value cache is neither read nor filled for it: backends serve only
 * owned partitions from there.
 */
extern bool iq_store_standby_position(int partition, int64_t since,
									  IqPartitionPosition *pos);
/* now, for iq_store_standby_position's since (CLOCK_MONOTONIC, in ns) */
extern int64_t iq_store_read_clock(void);
/* Whether a standby kept here could answer (its position known), without asking the broker. */
extern bool iq_store_standby_readable(int partition);

/*
 * The end of a standby's input asked of the broker at the time of the read
 * (standby.c sets it while standbys run; NULL otherwise): the end the
 * standby last saw may be half a second old, and a lag measured against it
 * would pass a standby further behind than the caller's bound.  An end the
 * broker gave for a request sent at or after since (the read's start) will
 * do: several partitions of one read, or reads at once, share a request.
 * False when the broker cannot say in time: then the standby is not read.
 */
typedef bool (*IqStandbyEndFn) (int partition, int64_t since, int64_t *end);
extern void iq_store_set_standby_end_fn(IqStandbyEndFn fn);
extern IqReadStatus iq_store_get_as(IqStoreId store, int partition,
									const char *key, size_t key_len, bool standby_ok,
									char **value, size_t *value_len, char **err);
extern IqStoreCursor *iq_store_cursor_open_as(IqStoreId store,
											  const int *partitions, int npartitions,
											  const char *lower, size_t lower_len, bool lower_incl,
											  const char *upper, size_t upper_len, bool upper_incl,
											  bool standby_ok, IqReadStatus *status, char **err);

#endif							/* IQ_STORE_H */

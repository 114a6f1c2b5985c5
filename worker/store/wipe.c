/*-------------------------------------------------------------------------
 * wipe.c
 *	  A partition's database done away with: deleted before a full restore,
 *	  or, when RocksDB says its files are damaged or they are in a format
 *	  this build does not read, moved aside for a rebuild from scratch.
 *	  Main thread of the worker.
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <rocksdb/c.h>

#include "worker/store/store_internal.h"

/*
 * iq_store_destroy
 *		Close and delete one partition's database.
 */
bool
iq_store_destroy(int partition, char **err)
{
	char		path[4096];
	char	   *e = NULL;
	rocksdb_options_t *opts;

	iq_store_close(partition);
	iq_store_partition_path(partition, path, sizeof(path));
	opts = rocksdb_options_create();
	rocksdb_destroy_db(opts, path, &e);
	rocksdb_options_destroy(opts);
	if (e != NULL)
	{
		iq_store_set_err(err, "could not delete RocksDB at \"%s\": %s", path, e);
		free(e);
		return false;
	}
	return true;
}

/*
 * iq_store_set_aside
 *		Close a partition's database and rename its directory out of the
 *		way, as "<n>.<why>-<UTC time>", so that the next open starts an
 *		empty one.
 *
 * Renamed rather than deleted: a corrupt database is evidence (a disk, a
 * file system, or a RocksDB bug), one of a newer format is what that
 * release would read again, and the rename is as fast and as atomic as a
 * delete.  The name carries the time, so repeated set-asides never
 * collide; the caller logs where it went.
 */
bool
iq_store_set_aside(int partition, const char *why, char *moved_to, size_t moved_to_len,
				   char **err)
{
	char		path[4096];
	time_t		now = time(NULL);
	struct tm	tm;
	char		stamp[32];

	iq_store_close(partition);
	iq_store_partition_path(partition, path, sizeof(path));
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (int n = 0; n < 100; n++)
	{
		struct stat st;

		if (n == 0)
			snprintf(moved_to, moved_to_len, "%s.%s-%s", path, why, stamp);
		else
			snprintf(moved_to, moved_to_len, "%s.%s-%s-%d", path, why, stamp, n);
		if (lstat(moved_to, &st) != 0 && errno == ENOENT)
		{
			if (rename(path, moved_to) == 0)
				return true;
			iq_store_set_err(err, "could not rename \"%s\" to \"%s\": %s", path, moved_to,
							 strerror(errno));
			return false;
		}
	}
	iq_store_set_err(err, "could not find a free name to move \"%s\" aside", path);
	return false;
}

/*
 * iq_store_error_is_corruption
 *		Whether a RocksDB error says the files are damaged (its status
 *		"Corruption: ..."), as opposed to a failure worth retrying (I/O, a
 *		lock, no space).
 */
bool
iq_store_error_is_corruption(const char *err)
{
	return err != NULL && strstr(err, "Corruption") != NULL;
}

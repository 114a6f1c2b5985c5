/*-------------------------------------------------------------------------
 * format.c
 *	  A partition's store format: read from the database on disk before it
 *	  is opened for writing, and recorded when it is made.  Main thread of
 *	  the worker.
 *
 * The format is a 4-byte big-endian number under the key "format" in the
 * checkpoint column family.  It is read from a read-only open of only that
 * column family (and "default", which RocksDB insists on), so a database
 * written by a newer release is looked at without being written to: a
 * read-write open would create the column families this build has and that
 * one may not, and replay and flush its log.  What a format the build does
 * not read leads to is the caller's (iq_restore_open: set aside, rebuilt).
 *-------------------------------------------------------------------------
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <rocksdb/c.h>

#include "common/bigendian.h"
#include "worker/store/store_internal.h"

#define FORMAT_KEY			"format"
/* the format of a database made before the format was recorded */
#define FORMAT_UNMARKED		1

/*
 * mark_value
 *		The format a mark says: FORMAT_UNMARKED when there is none,
 *		IQ_STORE_FORMAT_UNKNOWN when it is not 4 bytes.
 */
static int
mark_value(const char *v, size_t vlen)
{
	if (v == NULL)
		return FORMAT_UNMARKED;
	if (vlen != 4)
		return IQ_STORE_FORMAT_UNKNOWN;
	return (int) (iq_be32_get((const unsigned char *) v) & 0x7fffffff);
}

/*
 * has_checkpoint
 *		Whether the database at path has the checkpoint column family;
 *		false with *err when its list cannot be read.
 */
static bool
has_checkpoint(rocksdb_options_t *opts, const char *path, bool *has, char **err)
{
	char	   *e = NULL;
	size_t		n = 0;
	char	  **names = rocksdb_list_column_families(opts, path, &n, &e);

	*has = false;
	if (e != NULL)
	{
		iq_store_set_err(err, "could not list the column families of RocksDB at \"%s\": %s",
						 path, e);
		free(e);
		return false;
	}
	for (size_t i = 0; i < n; i++)
		*has = *has || strcmp(names[i], CF_CHECKPOINT_NAME) == 0;
	rocksdb_list_column_families_destroy(names, n);
	return true;
}

/*
 * read_mark
 *		The format recorded in the database at path, opened read-only.
 */
static bool
read_mark(rocksdb_options_t *opts, const char *path, int *format, char **err)
{
	const char *const names[2] = {"default", CF_CHECKPOINT_NAME};
	const rocksdb_options_t *cf_opts[2] = {opts, opts};
	rocksdb_column_family_handle_t *cf[2];
	char	   *e = NULL;
	size_t		vlen = 0;
	char	   *v;
	rocksdb_t  *db = rocksdb_open_for_read_only_column_families(opts, path, 2, names,
																 cf_opts, cf, 0, &e);

	if (e != NULL)
	{
		iq_store_set_err(err, "could not open RocksDB at \"%s\" to read its format: %s",
						 path, e);
		free(e);
		return false;
	}
	v = rocksdb_get_cf(db, iq_store_read_opts, cf[1], FORMAT_KEY, strlen(FORMAT_KEY),
					   &vlen, &e);
	if (e == NULL)
		*format = mark_value(v, vlen);
	rocksdb_free(v);
	for (int i = 0; i < 2; i++)
		rocksdb_column_family_handle_destroy(cf[i]);
	rocksdb_close(db);
	if (e != NULL)
	{
		iq_store_set_err(err, "could not read the format of RocksDB at \"%s\": %s", path, e);
		free(e);
		return false;
	}
	return true;
}

/*
 * iq_store_format_on_disk
 *		The format of a closed partition's database: IQ_STORE_FORMAT_NONE
 *		when there is none, IQ_STORE_FORMAT_UNKNOWN when it has no
 *		checkpoint column family or an unreadable mark; false with *err
 *		when RocksDB cannot open it (its error says whether it is corrupt).
 */
bool
iq_store_format_on_disk(int partition, int *format, char **err)
{
	char		path[4096];
	char		current[4200];
	struct stat st;
	rocksdb_options_t *opts;
	bool		has = false;
	bool		ok;

	*format = IQ_STORE_FORMAT_NONE;
	iq_store_partition_path(partition, path, sizeof(path));
	snprintf(current, sizeof(current), "%s/CURRENT", path);
	if (stat(current, &st) != 0)
		return true;
	opts = iq_store_db_options(iq_store_partition_count());
	rocksdb_options_set_create_if_missing(opts, 0);
	ok = has_checkpoint(opts, path, &has, err);
	if (ok && !has)
		*format = IQ_STORE_FORMAT_UNKNOWN;
	else if (ok)
		ok = read_mark(opts, path, format, err);
	rocksdb_options_destroy(opts);
	return ok;
}

/*
 * iq_store_format_mark
 *		Record the format of a database just opened for writing, unless it
 *		has one: this build's for a new database, FORMAT_UNMARKED for one
 *		made before formats were recorded (existed).
 */
bool
iq_store_format_mark(PartStore *ps, bool existed, char **err)
{
	char	   *e = NULL;
	size_t		vlen = 0;
	char	   *v = rocksdb_get_cf(ps->db, iq_store_read_opts, ps->cf[CF_CHECKPOINT],
								   FORMAT_KEY, strlen(FORMAT_KEY), &vlen, &e);
	unsigned char mark[4];

	if (e == NULL && v == NULL)
	{
		iq_be32_put(mark, existed ? FORMAT_UNMARKED : IQ_STORE_FORMAT);
		rocksdb_put_cf(ps->db, iq_store_write_opts, ps->cf[CF_CHECKPOINT],
					   FORMAT_KEY, strlen(FORMAT_KEY), (const char *) mark, 4, &e);
	}
	rocksdb_free(v);
	if (e != NULL)
	{
		iq_store_set_err(err, "could not record the store format: %s", e);
		free(e);
		return false;
	}
	return true;
}

/*-------------------------------------------------------------------------
 * channel_tls.c
 *	  The TLS material a backend's TCP channels present and trust: this
 *	  instance's certificate and key and the cluster's CA, read from the
 *	  files iq_fdw.ssl_cert_file, ssl_key_file and ssl_ca_file name.
 *
 * The rule for reloading: before a read that asks another instance,
 * iq_chan_tls_prepare compares the settings' paths and the files' identity
 * (device, inode, size, modification time) with those the material was
 * read from, and reads the files again when any differs.  So a SIGHUP that
 * names other files, or new files put in place of the old ones (renamed
 * over them or rewritten), take effect at the next read, and a file that
 * did not change is not read again (a stat of three files per remote read,
 * no parsing).  When the material changes, the idle TCP connections made
 * with the old one are closed: no connection outlives the material it
 * authenticated with.
 *
 * A file that cannot be used is an ERROR naming the setting and the file
 * (never its content), raised before any channel starts; the material in
 * use until then is dropped, so nothing connects with a key the settings
 * no longer name.
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>

#include "common/settings.h"
#include "common/tls.h"
#include "src/channel.h"

#define NFILES 3

/* where a file was when it was read */
typedef struct FileId
{
	char		path[MAXPGPATH];
	bool		exists;
	dev_t		dev;
	ino_t		ino;
	off_t		size;
	struct timespec mtime;
} FileId;

static IqTls material;			/* off until loaded */
static FileId loaded_from[NFILES];
static bool loaded = false;

/* file_id: path and where it is now (exists false when stat fails) */
static void
file_id(FileId *id, const char *path)
{
	struct stat st;

	memset(id, 0, sizeof(*id));
	strlcpy(id->path, path ? path : "", sizeof(id->path));
	if (id->path[0] == '\0' || stat(id->path, &st) != 0)
		return;
	id->exists = true;
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	id->size = st.st_size;
	id->mtime = st.st_mtim;
}

/* same_id: a and b name the same unchanged file (or both nothing) */
static bool
same_id(const FileId *a, const FileId *b)
{
	return strcmp(a->path, b->path) == 0 && a->exists == b->exists &&
		a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
		a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

/*
 * iq_chan_tls_prepare: the material current for the settings, reloaded if
 * a path or a file changed; ERROR on a file that cannot be used.  Called
 * before a read that asks another instance starts its channels.
 */
void
iq_chan_tls_prepare(void)
{
	FileId		now[NFILES];
	IqTls		fresh;
	char		err[MAXPGPATH + 256];
	int			i;
	bool		changed = !loaded;

	file_id(&now[0], iq_ssl_cert_file);
	file_id(&now[1], iq_ssl_key_file);
	file_id(&now[2], iq_ssl_ca_file);
	for (i = 0; i < NFILES && !changed; i++)
		changed = !same_id(&now[i], &loaded_from[i]);
	if (!changed)
		return;

	if (!iq_tls_load(&fresh, iq_ssl_cert_file, iq_ssl_key_file, iq_ssl_ca_file,
					 err, sizeof(err)))
	{
		/* nothing connects with material the settings no longer name */
		iq_tls_free(&material);
		loaded = false;
		iq_chan_drop_idle_tcp();
		ereport(ERROR,
				(errcode(ERRCODE_CONFIG_FILE_ERROR),
				 errmsg("could not load the TLS material for reading other instances"),
				 errdetail("%s", err),
				 errhint("Fix iq_fdw.ssl_cert_file, iq_fdw.ssl_key_file and iq_fdw.ssl_ca_file, then reload the configuration.")));
	}
	if (!loaded || !iq_tls_same(&fresh, &material))
		iq_chan_drop_idle_tcp();
	iq_tls_free(&material);
	material = fresh;
	memcpy(loaded_from, now, sizeof(loaded_from));
	loaded = true;
}

/* iq_chan_tls: the material TCP channels use now (off before any prepare) */
const IqTls *
iq_chan_tls(void)
{
	return &material;
}

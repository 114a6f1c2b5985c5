/*-------------------------------------------------------------------------
 * asan_preload.c
 *	  Preloaded after libasan when PostgreSQL runs a module built with
 *	  make SANITIZE=1 (scripts/instance, IQ_ASAN=1).  Not part of iq_fdw.
 *
 * An uninstrumented postgres initialises ASan lazily, at the first malloc,
 * and on Debian 12 that malloc comes from a library constructor inside
 * bindtextdomain() (libgpg-error's), which holds glibc's gettext lock.
 * ASan's initialisation looks up swift_demangle with dlsym and, when it is
 * missing, clears the error with dlerror(), which translates the message
 * and so takes the same lock: postgres hangs before main.  With the symbol
 * defined the lookup succeeds and nothing is translated.  ASan calls it
 * only for Swift symbols; returning NULL leaves a name as it is.
 *-------------------------------------------------------------------------
 */
#include <stddef.h>

char	   *swift_demangle(const char *name, size_t len, char *out,
						   size_t *out_len, unsigned flags);

char *
swift_demangle(const char *name, size_t len, char *out, size_t *out_len,
			   unsigned flags)
{
	return NULL;
}

/*-------------------------------------------------------------------------
 * message.c
 *	  The store's error messages: malloc'd strings, since the store is
 *	  used by threads that must not call PostgreSQL (no palloc, no
 *	  ereport).  Below every other file of the store.
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "worker/store/store_internal.h"

/*
 * iq_store_vmessage
 *		A malloc'd message (no PostgreSQL allocator here); NULL when out of
 *		memory.
 */
char *
iq_store_vmessage(const char *fmt, va_list ap)
{
	char		buf[1024];

	vsnprintf(buf, sizeof(buf), fmt, ap);
	return strdup(buf);
}

/*
 * iq_store_set_err
 *		A malloc'd message for the caller, when it asked for one.
 */
void
iq_store_set_err(char **err, const char *fmt,...)
{
	va_list		ap;

	if (err == NULL)
		return;
	va_start(ap, fmt);
	*err = iq_store_vmessage(fmt, ap);
	va_end(ap);
}

/*-------------------------------------------------------------------------
 * option.h
 *	  Options of iq_fdw's servers, foreign tables and columns, and what a
 *	  foreign table's declaration means for the store behind it.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_OPTION_H
#define IQ_OPTION_H

#include "access/attnum.h"

#include "common/stores.h"

/*
 * What a text column gets from bytes that are not valid UTF-8 (option
 * invalid_utf8): U+FFFD in their place (common/utf8.h), or an error.
 */
typedef enum IqInvalidUtf8
{
	IQ_INVALID_UTF8_REPLACE = 0,
	IQ_INVALID_UTF8_ERROR
} IqInvalidUtf8;

/*
 * Does a text key column show replaced keys?  Then the text's order is not
 * the store's, and only some conditions on it can go to the store (quals.c).
 */
#define IQ_KEY_REPLACED(info) \
	(!(info)->key_is_bytea && (info)->invalid_utf8 == IQ_INVALID_UTF8_REPLACE)

/* How a foreign table maps onto its store, checked on first use. */
typedef struct IqTableInfo
{
	Oid			relid;
	const IqStoreInfo *store;
	AttrNumber	key_attno;		/* InvalidAttrNumber if not declared */
	Oid			key_type;
	Oid			key_collation;
	bool		key_is_c;		/* the key column sorts as RocksDB does */
	bool		key_is_bytea;	/* raw bytes: every comparison is the store's */
	AttrNumber	value_attno;	/* InvalidAttrNumber if not declared */
	Oid			value_type;
	bool		use_remote_estimate;
	IqInvalidUtf8 invalid_utf8; /* table option, else server option */
} IqTableInfo;

/* Reads and checks the table's options and columns; errors on a mismatch. */
extern void iq_get_table_info(Oid relid, IqTableInfo *info);

#endif							/* IQ_OPTION_H */

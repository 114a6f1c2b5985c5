/*-------------------------------------------------------------------------
 * option.h
 *	  Options of iq_fdw's servers, foreign tables and columns, and what a
 *	  foreign table's declaration means for the store behind it.
 *-------------------------------------------------------------------------
 */
#ifndef IQ_OPTION_H
#define IQ_OPTION_H

#include "postgres.h"

#include "access/attnum.h"

#include "stores.h"

/* How a foreign table maps onto its store, checked on first use. */
typedef struct IqTableInfo
{
	Oid			relid;
	const IqStoreInfo *store;
	AttrNumber	key_attno;		/* InvalidAttrNumber if not declared */
	Oid			key_type;
	Oid			key_collation;
	bool		key_is_c;		/* the key column sorts as RocksDB does */
	AttrNumber	value_attno;	/* InvalidAttrNumber if not declared */
	Oid			value_type;
	bool		use_remote_estimate;
} IqTableInfo;

/* Reads and checks the table's options and columns; errors on a mismatch. */
extern void iq_get_table_info(Oid relid, IqTableInfo *info);

#endif							/* IQ_OPTION_H */

/* iq_fdw--0.3--0.4.sql: ALTER EXTENSION iq_fdw UPDATE from 0.3 to 0.4.
   Standby replicas (issue 18): iq_stats shows the standbys this instance
   keeps too, told apart by a last column role ('owner' | 'standby');
   iq_freshness says whether a partition's row came from its owner or,
   with iq_fdw.read_from, a standby (source, last).  A function's result
   columns cannot be replaced in place, so both are made again (and the
   view over iq_stats with its function).  The library serves both
   versions: it fills as many columns as the definition has. */

\echo Use "ALTER EXTENSION iq_fdw UPDATE TO '0.4'" to load this file. \quit

DROP VIEW @extschema@.iq_stats;
DROP FUNCTION @extschema@.iq_stats();

CREATE FUNCTION @extschema@.iq_stats(
    OUT partition pg_catalog.int4,
    OUT state pg_catalog.text,
    OUT customer_offset pg_catalog.int8,
    OUT customer_end_offset pg_catalog.int8,
    OUT order_offset pg_catalog.int8,
    OUT order_end_offset pg_catalog.int8,
    OUT lag pg_catalog.int8,
    OUT records_processed pg_catalog.int8,
    OUT orders_joined pg_catalog.int8,
    OUT orders_without_customer pg_catalog.int8,
    OUT dropped_null_key pg_catalog.int8,
    OUT dropped_malformed pg_catalog.int8,
    OUT dropped_unprocessable pg_catalog.int8,
    OUT wrong_partition pg_catalog.int8,
    OUT restored_records pg_catalog.int8,
    OUT restore_total pg_catalog.int8,
    OUT changelog_offset pg_catalog.int8,
    OUT state_rebuilds pg_catalog.int8,
    OUT role pg_catalog.text)
RETURNS SETOF pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_stats'
LANGUAGE C STRICT VOLATILE;

CREATE VIEW @extschema@.iq_stats AS SELECT * FROM @extschema@.iq_stats();

DROP FUNCTION @extschema@.iq_freshness();

CREATE FUNCTION @extschema@.iq_freshness(
    OUT host pg_catalog.text,
    OUT port pg_catalog.int4,
    OUT partition pg_catalog.int4,
    OUT consumed_offset pg_catalog.int8,
    OUT end_offset pg_catalog.int8,
    OUT lag pg_catalog.int8,
    OUT source pg_catalog.text)
RETURNS SETOF pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_freshness'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION @extschema@.iq_stats() IS
  'per partition this instance owns or keeps a standby of (role): offsets, lag, counters, restore progress';
COMMENT ON VIEW @extschema@.iq_stats IS
  'per partition this instance owns or keeps a standby of (role): offsets, lag, counters, restore progress';
COMMENT ON FUNCTION @extschema@.iq_freshness() IS
  'every partition, asked of its owner (or, per iq_fdw.read_from, a standby: source): offset its state is written to, and lag';

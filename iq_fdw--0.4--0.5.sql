/* iq_fdw--0.4--0.5.sql: ALTER EXTENSION iq_fdw UPDATE from 0.4 to 0.5.
   Progress where work is long (issue 19): iq_worker() shows the restore
   under way (restore_partition, restore_topic, restored_records,
   restore_total, restore_rate in records/s, restore_seconds_left; NULL
   when none runs).  A function's result columns cannot be replaced in
   place, so it is made again.  The library serves both versions: it
   fills as many columns as the definition has. */

\echo Use "ALTER EXTENSION iq_fdw UPDATE TO '0.5'" to load this file. \quit

DROP FUNCTION @extschema@.iq_worker();

CREATE FUNCTION @extschema@.iq_worker(
    OUT state pg_catalog.text,
    OUT message pg_catalog.text,
    OUT pid pg_catalog.int4,
    OUT generation pg_catalog.int8,
    OUT partition_count pg_catalog.int4,
    OUT assigned_partitions pg_catalog.int4[],
    OUT state_since pg_catalog.timestamptz,
    OUT step pg_catalog.text,
    OUT progress_at pg_catalog.timestamptz,
    OUT supervisor_pid pg_catalog.int4,
    OUT engine_restarts pg_catalog.int8,
    OUT engine_last_exit pg_catalog.text,
    OUT engine_last_exit_at pg_catalog.timestamptz,
    OUT restore_partition pg_catalog.int4,
    OUT restore_topic pg_catalog.text,
    OUT restored_records pg_catalog.int8,
    OUT restore_total pg_catalog.int8,
    OUT restore_rate pg_catalog.float8,
    OUT restore_seconds_left pg_catalog.float8)
RETURNS pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_worker'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION @extschema@.iq_worker() IS
  'the stream worker of this instance: state, last error, current step, last progress, the engine''s restarts, the restore under way';

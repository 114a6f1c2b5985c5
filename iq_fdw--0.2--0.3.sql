/* iq_fdw--0.2--0.3.sql: ALTER EXTENSION iq_fdw UPDATE from 0.2 to 0.3.
   iq_worker() gains the supervisor's record of the engine; a function's
   result columns cannot be replaced in place, so it is made again. The
   library serves both: it fills as many columns as the definition has. */

\echo Use "ALTER EXTENSION iq_fdw UPDATE TO '0.3'" to load this file. \quit

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
    OUT engine_last_exit_at pg_catalog.timestamptz)
RETURNS pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_worker'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION @extschema@.iq_worker() IS
  'the stream worker of this instance: state, last error, current step, last progress, the engine''s restarts';

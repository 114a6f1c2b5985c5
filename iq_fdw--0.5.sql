/* iq_fdw--0.5.sql: the SQL surface of iq_fdw, version 0.5, for a fresh
   CREATE EXTENSION. 0.4 plus the restore under way in iq_worker()
   (partition, topic, records read of the total, rate, seconds left; NULL
   when none runs); iq_fdw--0.4--0.5.sql
   brings a 0.4 install here, and the regression test extension_update
   checks that the paths agree. Types and
   calls are qualified, so that no object of another schema is picked up. */

\echo Use "CREATE EXTENSION iq_fdw" to load this file. \quit

CREATE FUNCTION @extschema@.iq_fdw_handler()
RETURNS pg_catalog.fdw_handler
AS 'MODULE_PATHNAME', 'iq_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION @extschema@.iq_fdw_validator(pg_catalog.text[], pg_catalog.oid)
RETURNS pg_catalog.void
AS 'MODULE_PATHNAME', 'iq_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER iq_fdw
  HANDLER @extschema@.iq_fdw_handler
  VALIDATOR @extschema@.iq_fdw_validator;

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

CREATE FUNCTION @extschema@.iq_instances(
    OUT host pg_catalog.text,
    OUT port pg_catalog.int4,
    OUT state_store_names pg_catalog.text[],
    OUT partitions pg_catalog.int4[],
    OUT is_local pg_catalog.bool)
RETURNS SETOF pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_instances'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION @extschema@.iq_key_owner(
    store pg_catalog.text,
    key pg_catalog.text,
    OUT host pg_catalog.text,
    OUT port pg_catalog.int4,
    OUT partition pg_catalog.int4,
    OUT is_local pg_catalog.bool)
RETURNS pg_catalog.record
AS 'MODULE_PATHNAME', 'iq_key_owner'
LANGUAGE C STRICT VOLATILE;

CREATE FUNCTION @extschema@.iq_murmur2(pg_catalog.bytea)
RETURNS pg_catalog.int4
AS 'MODULE_PATHNAME', 'iq_murmur2_sql'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@.iq_partition_for_key(key pg_catalog.text, partition_count pg_catalog.int4)
RETURNS pg_catalog.int4
AS 'MODULE_PATHNAME', 'iq_partition_for_key_sql'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

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

/* what \dx+ and \df+ show; iq_fdw--0.1--0.2.sql sets the same */
COMMENT ON FOREIGN DATA WRAPPER iq_fdw IS
  'Kafka stream state stores as foreign tables: IMPORT FOREIGN SCHEMA food_server';
COMMENT ON FUNCTION @extschema@.iq_fdw_handler() IS
  'the foreign data wrapper iq_fdw';
COMMENT ON FUNCTION @extschema@.iq_fdw_validator(pg_catalog.text[], pg_catalog.oid) IS
  'checks the options of iq_fdw''s servers and foreign tables';
COMMENT ON FUNCTION @extschema@.iq_worker() IS
  'the stream worker of this instance: state, last error, current step, last progress, the engine''s restarts, the restore under way';
COMMENT ON FUNCTION @extschema@.iq_stats() IS
  'per partition this instance owns or keeps a standby of (role): offsets, lag, counters, restore progress';
COMMENT ON VIEW @extschema@.iq_stats IS
  'per partition this instance owns or keeps a standby of (role): offsets, lag, counters, restore progress';
COMMENT ON FUNCTION @extschema@.iq_instances() IS
  'the instances of the consumer group that hold state, with their partitions';
COMMENT ON FUNCTION @extschema@.iq_key_owner(pg_catalog.text, pg_catalog.text) IS
  'the instance that owns a key of a store, whether or not the key exists';
COMMENT ON FUNCTION @extschema@.iq_murmur2(pg_catalog.bytea) IS
  'Kafka''s murmur2 hash of raw bytes (Utils.murmur2), as a signed int';
COMMENT ON FUNCTION @extschema@.iq_partition_for_key(pg_catalog.text, pg_catalog.int4) IS
  'the partition of a key under iq_fdw.partitioner';
COMMENT ON FUNCTION @extschema@.iq_freshness() IS
  'every partition, asked of its owner (or, per iq_fdw.read_from, a standby: source): offset its state is written to, and lag';

/* iq_fdw--0.1.sql: the SQL surface of iq_fdw */

\echo Use "CREATE EXTENSION iq_fdw" to load this file. \quit

CREATE FUNCTION iq_fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'iq_fdw_handler'
LANGUAGE C STRICT;

CREATE FUNCTION iq_fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'iq_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER iq_fdw
  HANDLER iq_fdw_handler
  VALIDATOR iq_fdw_validator;

/* The worker of this instance: its state and last error, what its main thread
   does now and when it last made progress ("stalled": none for
   iq_fdw.stall_timeout while it has work). */
CREATE FUNCTION iq_worker(
    OUT state text,
    OUT message text,
    OUT pid integer,
    OUT generation bigint,
    OUT partition_count integer,
    OUT assigned_partitions integer[],
    OUT state_since timestamptz,
    OUT step text,
    OUT progress_at timestamptz)
RETURNS record
AS 'MODULE_PATHNAME', 'iq_worker'
LANGUAGE C STRICT VOLATILE;

/* Per assigned partition of this instance: offsets, lag, counters, restore progress. */
CREATE FUNCTION iq_stats(
    OUT partition integer,
    OUT state text,
    OUT customer_offset bigint,
    OUT customer_end_offset bigint,
    OUT order_offset bigint,
    OUT order_end_offset bigint,
    OUT lag bigint,
    OUT records_processed bigint,
    OUT orders_joined bigint,
    OUT orders_without_customer bigint,
    OUT dropped_null_key bigint,
    OUT dropped_malformed bigint,
    OUT dropped_unprocessable bigint,
    OUT wrong_partition bigint,
    OUT restored_records bigint,
    OUT restore_total bigint,
    OUT changelog_offset bigint,
    OUT state_rebuilds bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'iq_stats'
LANGUAGE C STRICT VOLATILE;

CREATE VIEW iq_stats AS SELECT * FROM iq_stats();

/* The instances of the group that hold state, as the consumer group says. */
CREATE FUNCTION iq_instances(
    OUT host text,
    OUT port integer,
    OUT state_store_names text[],
    OUT partitions integer[],
    OUT is_local boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'iq_instances'
LANGUAGE C STRICT VOLATILE;

/* The instance that owns a key of a store, whether or not the key exists. */
CREATE FUNCTION iq_key_owner(
    store text,
    key text,
    OUT host text,
    OUT port integer,
    OUT partition integer,
    OUT is_local boolean)
RETURNS record
AS 'MODULE_PATHNAME', 'iq_key_owner'
LANGUAGE C STRICT VOLATILE;

/* Kafka's murmur2 hash of raw bytes (Utils.murmur2), as a signed int. */
CREATE FUNCTION iq_murmur2(bytea)
RETURNS integer
AS 'MODULE_PATHNAME', 'iq_murmur2_sql'
LANGUAGE C STRICT IMMUTABLE PARALLEL SAFE;

/* The partition of a key under iq_fdw.partitioner. */
CREATE FUNCTION iq_partition_for_key(key text, partition_count integer)
RETURNS integer
AS 'MODULE_PATHNAME', 'iq_partition_for_key_sql'
LANGUAGE C STRICT STABLE PARALLEL SAFE;

/* Freshness of every partition, asked of its owner: the offset its state is written to, and lag. */
CREATE FUNCTION iq_freshness(
    OUT host text,
    OUT port integer,
    OUT partition integer,
    OUT consumed_offset bigint,
    OUT end_offset bigint,
    OUT lag bigint)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'iq_freshness'
LANGUAGE C STRICT VOLATILE;

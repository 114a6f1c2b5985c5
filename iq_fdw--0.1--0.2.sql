/* iq_fdw--0.1--0.2.sql: ALTER EXTENSION iq_fdw UPDATE from 0.1 to 0.2.
   The objects are unchanged (0.2 only qualifies their types with pg_catalog,
   which names the same types); 0.2 adds a catalog comment to each. */

\echo Use "ALTER EXTENSION iq_fdw UPDATE TO '0.2'" to load this file. \quit

COMMENT ON FOREIGN DATA WRAPPER iq_fdw IS
  'Kafka stream state stores as foreign tables: IMPORT FOREIGN SCHEMA food_server';
COMMENT ON FUNCTION @extschema@.iq_fdw_handler() IS
  'the foreign data wrapper iq_fdw';
COMMENT ON FUNCTION @extschema@.iq_fdw_validator(pg_catalog.text[], pg_catalog.oid) IS
  'checks the options of iq_fdw''s servers and foreign tables';
COMMENT ON FUNCTION @extschema@.iq_worker() IS
  'the stream worker of this instance: state, last error, current step, last progress';
COMMENT ON FUNCTION @extschema@.iq_stats() IS
  'per partition this instance owns: offsets, lag, counters, restore progress';
COMMENT ON VIEW @extschema@.iq_stats IS
  'per partition this instance owns: offsets, lag, counters, restore progress';
COMMENT ON FUNCTION @extschema@.iq_instances() IS
  'the instances of the consumer group that hold state, with their partitions';
COMMENT ON FUNCTION @extschema@.iq_key_owner(pg_catalog.text, pg_catalog.text) IS
  'the instance that owns a key of a store, whether or not the key exists';
COMMENT ON FUNCTION @extschema@.iq_murmur2(pg_catalog.bytea) IS
  'Kafka''s murmur2 hash of raw bytes (Utils.murmur2), as a signed int';
COMMENT ON FUNCTION @extschema@.iq_partition_for_key(pg_catalog.text, pg_catalog.int4) IS
  'the partition of a key under iq_fdw.partitioner';
COMMENT ON FUNCTION @extschema@.iq_freshness() IS
  'every partition, asked of its owner: offset its state is written to, and lag';

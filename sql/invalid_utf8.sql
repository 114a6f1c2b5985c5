--
-- Keys that are not UTF-8: what a text key (invalid_utf8 'replace', the
-- default) and a bytea key ask of the store
--
CREATE SERVER iq_u8 FOREIGN DATA WRAPPER iq_fdw OPTIONS (use_remote_estimate 'false');
CREATE SCHEMA u8;
SET search_path = u8, public;
-- as IMPORT FOREIGN SCHEMA makes it: text, the default 'replace'
CREATE FOREIGN TABLE shown (key text COLLATE "C", count bigint)
  SERVER iq_u8 OPTIONS (store 'order-count');
-- the same with 'error': bad bytes fail the scan, so text sorts as the store
CREATE FOREIGN TABLE strict (key text COLLATE "C", count bigint)
  SERVER iq_u8 OPTIONS (store 'order-count', invalid_utf8 'error');
-- the bytes as they are
CREATE FOREIGN TABLE raw (key bytea, count bigint)
  SERVER iq_u8 OPTIONS (store 'order-count');

-- replace: lookups go to the store (a key holding U+FFFD reads every
-- partition at run time); only upper bounds do, and no order is promised,
-- since a replaced key's text sorts elsewhere than its bytes
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown WHERE key = '1';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown WHERE key IN ('1', 'a�');
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown WHERE key BETWEEN '1' AND '5' ORDER BY key;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown WHERE key > '1';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown WHERE key < '5' LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown ORDER BY key LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown ORDER BY key DESC LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM shown LIMIT 3;

-- error: all of it, as sql/pushdown.sql shows
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM strict WHERE key BETWEEN '1' AND '5' ORDER BY key LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM strict WHERE key BETWEEN '1' AND '5' ORDER BY key DESC LIMIT 3;

-- bytea: equality, IN, ranges, ORDER BY and LIMIT, exactly
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw WHERE key = '\x31ff';
SET bytea_output = escape;  -- plans show hex whatever the setting
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw WHERE key IN ('\x31', '\xff00');
RESET bytea_output;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw WHERE key = ANY (ARRAY['\x31'::bytea]);
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw WHERE key >= '\x31' AND key < '\xff' ORDER BY key LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw ORDER BY key DESC;
-- a text argument is no bytea comparison: it stays with PostgreSQL
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM raw WHERE key::text = '\x31';
PREPARE raw_page(bytea, bigint) AS SELECT * FROM raw WHERE key > $1 ORDER BY key LIMIT $2;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE raw_page('\x31', 2);
DEALLOCATE raw_page;

DROP SCHEMA u8 CASCADE;
DROP SERVER iq_u8 CASCADE;

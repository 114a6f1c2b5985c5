--
-- Options of iq_fdw's servers, foreign tables and columns
--
CREATE SERVER iq_opt FOREIGN DATA WRAPPER iq_fdw OPTIONS (use_remote_estimate 'false');

-- unknown options, with the nearest valid name
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (use_remote_estimates 'false');
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (host 'localhost');
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (use_remote_estimate 'maybe');
CREATE USER MAPPING FOR CURRENT_USER SERVER iq_opt OPTIONS (user 'x');

-- invalid_utf8: 'replace' (the default) or 'error', on a server or a table
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (invalid_utf8 'errors');
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (invalid_utf8 'ignore');
CREATE SERVER iq_bad FOREIGN DATA WRAPPER iq_fdw OPTIONS (invalid_utf_8 'error');
CREATE SERVER iq_utf8 FOREIGN DATA WRAPPER iq_fdw OPTIONS (invalid_utf8 'error');
ALTER SERVER iq_utf8 OPTIONS (SET invalid_utf8 'replace');
ALTER SERVER iq_utf8 OPTIONS (SET invalid_utf8 'Replace');
CREATE FOREIGN TABLE t_utf8 (key text, value text) SERVER iq_utf8
  OPTIONS (store 'customer-v1-changelog', invalid_utf8 'error');
ALTER FOREIGN TABLE t_utf8 OPTIONS (SET invalid_utf8 'replac');
ALTER FOREIGN TABLE t_utf8 ALTER COLUMN key OPTIONS (invalid_utf8 'error');
DROP SERVER iq_utf8 CASCADE;

-- a foreign table needs a known store
CREATE FOREIGN TABLE t_bad (key text, value text) SERVER iq_opt;
CREATE FOREIGN TABLE t_bad (key text, value text) SERVER iq_opt OPTIONS (store 'order_count');
CREATE FOREIGN TABLE t_bad (key text, value text) SERVER iq_opt OPTIONS (store 'customer');
CREATE FOREIGN TABLE t_bad (key text, value text) SERVER iq_opt OPTIONS (store 'nothing-like-it');
CREATE FOREIGN TABLE t_bad (key text, value text) SERVER iq_opt OPTIONS (store 'order-count', stroe 'x');
CREATE FOREIGN TABLE t_bad (key text OPTIONS (field 'name'), value text) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');
CREATE FOREIGN TABLE t_bad (key text OPTIONS (feild 'key'), value text) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');

CREATE FOREIGN TABLE t_ok (key text COLLATE "C", count bigint) SERVER iq_opt OPTIONS (store 'order-count');
ALTER FOREIGN TABLE t_ok OPTIONS (DROP store);
ALTER FOREIGN TABLE t_ok OPTIONS (SET store 'customer-v1-changelogg');
ALTER FOREIGN TABLE t_ok OPTIONS (ADD use_remote_estimate 'true');
\det+ t_ok

-- column types are checked on first use: a count needs 8 bytes
CREATE FOREIGN TABLE t_int4 (key text, count integer) SERVER iq_opt OPTIONS (store 'order-count');
EXPLAIN (COSTS OFF) SELECT * FROM t_int4;
CREATE FOREIGN TABLE t_intkey (key integer, count bigint) SERVER iq_opt OPTIONS (store 'order-count');
EXPLAIN (COSTS OFF) SELECT * FROM t_intkey;
CREATE FOREIGN TABLE t_extra (key text, count bigint, total bigint) SERVER iq_opt OPTIONS (store 'order-count');
EXPLAIN (COSTS OFF) SELECT * FROM t_extra;
CREATE FOREIGN TABLE t_twokeys (key text, k2 text OPTIONS (field 'key')) SERVER iq_opt OPTIONS (store 'order-count');
EXPLAIN (COSTS OFF) SELECT * FROM t_twokeys;
CREATE FOREIGN TABLE t_custint (key text, value bigint) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');
EXPLAIN (COSTS OFF) SELECT * FROM t_custint;

-- columns named by option, values as numeric, text or bytea
CREATE FOREIGN TABLE t_named (user_id varchar OPTIONS (field 'key') COLLATE "C",
                              orders numeric OPTIONS (field 'value'))
  SERVER iq_opt OPTIONS (store 'order-count', invalid_utf8 'error');
EXPLAIN (VERBOSE, COSTS OFF) SELECT orders FROM t_named WHERE user_id = '7';
EXPLAIN (VERBOSE, COSTS OFF) SELECT orders FROM t_named WHERE user_id >= '7' ORDER BY user_id;
CREATE FOREIGN TABLE t_bytes (key text, value bytea) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');
EXPLAIN (VERBOSE, COSTS OFF) SELECT value FROM t_bytes WHERE key = '2';
CREATE FOREIGN TABLE t_rawkey (key bytea, value bytea) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');
EXPLAIN (VERBOSE, COSTS OFF) SELECT value FROM t_rawkey WHERE key = '\x61ff';
CREATE FOREIGN TABLE t_keyonly (key text) SERVER iq_opt OPTIONS (store 'customer-v1-changelog');
EXPLAIN (VERBOSE, COSTS OFF) SELECT key FROM t_keyonly WHERE key < '5';

DROP SERVER iq_opt CASCADE;

--
-- What the store is asked: key lookups, key ranges, full scans
--
-- Estimates from the stores would make plans depend on the data.  Keys that
-- are not UTF-8 fail a scan here (invalid_utf8 'error'), so text keys sort
-- as the store does; sql/invalid_utf8.sql has the default, 'replace'.
CREATE SERVER iq_push FOREIGN DATA WRAPPER iq_fdw
  OPTIONS (use_remote_estimate 'false', invalid_utf8 'error');
CREATE SCHEMA push;
IMPORT FOREIGN SCHEMA stores FROM SERVER iq_push INTO push;
SET search_path = push, public;

-- point lookups: =, IN, = ANY, either side
EXPLAIN (COSTS OFF) SELECT count FROM order_count WHERE key = '1';
EXPLAIN (VERBOSE, COSTS OFF) SELECT count FROM order_count WHERE key = '1';
EXPLAIN (VERBOSE, COSTS OFF) SELECT count FROM order_count WHERE '1' = key;
EXPLAIN (VERBOSE, COSTS OFF) SELECT count FROM order_count WHERE key IN ('1', '2', '7');
EXPLAIN (VERBOSE, COSTS OFF) SELECT count FROM order_count WHERE key = ANY (ARRAY['3', '4']);
EXPLAIN (VERBOSE, COSTS OFF) SELECT value FROM customer WHERE key = '2' AND value <> 'adam';
-- an equality wins over a range; the range stays a filter
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key = '3' AND key > '1';
-- a non-constant but stable key is evaluated once per scan
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key = current_setting('application_name');
-- a volatile one cannot be
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key = random()::text;
-- conditions on other columns, or on an expression of the key, stay local
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE count > 1;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE lower(key) = '1';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key LIKE '1%';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key = '1' OR key = '2';

-- prepared statements: the key is a parameter, even in a generic plan
PREPARE lookup(text) AS SELECT count FROM order_count WHERE key = $1;
SET plan_cache_mode = force_generic_plan;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE lookup('2');
PREPARE lookup_any(text[]) AS SELECT count FROM order_count WHERE key = ANY ($1);
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE lookup_any(ARRAY['1', '2']);
PREPARE lookup_range(text, text) AS SELECT * FROM order_count WHERE key BETWEEN $1 AND $2 ORDER BY key;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE lookup_range('1', '5');
RESET plan_cache_mode;
DEALLOCATE ALL;

-- ranges: every bound goes, combined; the store's order serves ORDER BY key
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key BETWEEN '1' AND '5';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key > '1' AND key < '5' AND key >= '2';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key ~>=~ '3';
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key BETWEEN '1' AND '5' ORDER BY key;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY key;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY key, count;
-- descending: the stores read backwards, no Sort, and LIMIT goes with it
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key >= '1' ORDER BY key DESC;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key < '5' ORDER BY key DESC LIMIT 3;
-- by another column, or descending then by another: a Sort
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY count;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY key DESC, count;
-- point lookups promise no order
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key IN ('2', '1') ORDER BY key;

-- LIMIT goes to the store only when every row the store sends is a result row
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE key >= '2' ORDER BY key LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY key LIMIT 3 OFFSET 2;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count LIMIT 5;
PREPARE page(text, bigint) AS SELECT * FROM order_count WHERE key > $1 ORDER BY key LIMIT $2;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE page('3', 10);
DEALLOCATE page;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count WHERE count > 1 ORDER BY key LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY count LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count ORDER BY key FETCH FIRST 3 ROWS WITH TIES;
EXPLAIN (VERBOSE, COSTS OFF) SELECT DISTINCT count FROM order_count LIMIT 3;
EXPLAIN (VERBOSE, COSTS OFF) SELECT sum(count) FROM order_count WHERE key BETWEEN '1' AND '3';

-- a key column in another collation: ranges and ORDER BY stay in PostgreSQL,
-- equality still goes (the collation is deterministic)
CREATE FOREIGN TABLE order_count_icu (key text COLLATE "en-x-icu", count bigint)
  SERVER iq_push OPTIONS (store 'order-count');
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_icu WHERE key BETWEEN '1' AND '5' ORDER BY key LIMIT 2;
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_icu WHERE key = '1';
-- ... unless the condition itself is in "C"
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_icu WHERE key COLLATE "C" < '5';
CREATE COLLATION push_ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE FOREIGN TABLE order_count_ci (key text COLLATE push_ci, count bigint)
  SERVER iq_push OPTIONS (store 'order-count');
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_ci WHERE key = 'a';

-- a request that can match nothing asks no instance
SELECT * FROM order_count WHERE key IN (NULL, NULL);
SELECT * FROM order_count WHERE key > 'b' AND key < 'a';
SELECT * FROM order_count WHERE key > 'a' AND key < 'a';
SET plan_cache_mode = force_generic_plan;
PREPARE nothing(text, text) AS SELECT * FROM order_count WHERE key >= $1 AND key < $2;
EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF) EXECUTE nothing('5', '5');
EXECUTE nothing(NULL, '5');
PREPARE nothing_key(text) AS SELECT * FROM order_count WHERE key = $1;
EXECUTE nothing_key(NULL);
RESET plan_cache_mode;
DEALLOCATE ALL;

-- joins: one lookup per outer row through a parameterized scan (the
-- outer key in the store's collation, and on the left: PostgreSQL 15 and 17
-- then both filter with the join clause as written)
CREATE TABLE push_local (k text COLLATE "C" PRIMARY KEY, note text);
INSERT INTO push_local VALUES ('1', 'one'), ('2', 'two'), ('9', 'nine');
ANALYZE push_local;
EXPLAIN (VERBOSE, COSTS OFF)
  SELECT l.k, o.count FROM push_local l JOIN order_count o ON l.k = o.key;
EXPLAIN (VERBOSE, COSTS OFF)
  SELECT l.k, o.count FROM push_local l LEFT JOIN order_count o ON o.key = l.k WHERE l.note <> 'x';
EXPLAIN (VERBOSE, COSTS OFF)
  SELECT c.value, o.count FROM customer c JOIN order_count o ON o.key = c.key WHERE c.key = '2';
EXPLAIN (VERBOSE, COSTS OFF)
  SELECT l.k, x.count FROM push_local l,
    LATERAL (SELECT count FROM order_count o WHERE o.key >= l.k ORDER BY o.key LIMIT 1) x;

DROP TABLE push_local;
DROP SCHEMA push CASCADE;
DROP SERVER iq_push;

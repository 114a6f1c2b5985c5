"""Ranges with a LIMIT (issue 20): each instance is asked for its share of
the LIMIT and, when its share runs out while the merge still wants its
rows, for the next batch past its last key; a query that stops reading
early leaves its connections pooled.

The keys are skewed on purpose: most of them hash to one partition, so the
instance that holds it runs past its share and is asked again, on every
instance of the cluster in turn (for one the skewed source is its own
worker, for the others a peer). Every answer is compared with the truth
the test produced, in one session, so that connections pooled after an
early stop serve the next queries.
"""
import os
import re
import time

import pytest

from conftest import (INSTANCES, Session, http_get, import_stores_sql, java_partition,
                      produce, psql, readable_everywhere, tls_on, wait_for_counts, wait_until)

PREFIX = f"scan{os.getpid() % 10000:04d}{time.monotonic_ns() % 100000:05d}:"
PARTITIONS = 3
HEAVY = 400  # keys of partition 0
LIGHT = 30  # keys of each other partition

SETUP = import_stores_sql("scantest", "iq_scan_test") + """\
-- invalid_utf8 'error': the bound, the order and the LIMIT are pushed down
CREATE FOREIGN TABLE scantest.order_count_exact (key text COLLATE "C", count bigint)
  SERVER iq_scan_test OPTIONS (store 'order-count', invalid_utf8 'error');
"""


def skewed_keys():
    """HEAVY keys of partition 0 and LIGHT of each other one, interleaved in key order."""
    want = {0: HEAVY, **{p: LIGHT for p in range(1, PARTITIONS)}}
    keys = []
    n = 0
    while any(want.values()):
        k = f"{PREFIX}{n:06d}"
        p = java_partition(k, PARTITIONS)
        if want[p]:
            want[p] -= 1
            keys.append(k)
        n += 1
    return sorted(keys)


def q(i, sql):
    return psql(i, "\\set QUIET on\nSET search_path = scantest, public;\n" + sql, timeout=120)


@pytest.fixture(scope="module")
def truth():
    for i in INSTANCES:
        psql(i, SETUP)
    keys = skewed_keys()
    counts = {k: 1 + n % 3 for n, k in enumerate(keys)}
    produce("order", (f"{k}--food" for k, c in counts.items() for _ in range(c)))
    expect = f"{len(counts)}|{sum(counts.values())}"
    wait_for_counts(q, "order_count_exact", PREFIX, expect, "the skewed counts")
    return counts


def expected(counts, start, limit):
    keys = [k for k in sorted(counts) if k >= start][:limit]
    return "\n".join(f"{k}|{counts[k]}" for k in keys)


def test_ranges_past_a_share_equal_the_truth(truth, instance):
    starts = [PREFIX, sorted(truth)[37], sorted(truth)[300], sorted(truth)[-5]]
    limits = [1, 2, 10, 33, 100, 250, 459, 460, 1000]
    with Session(instance) as s:
        s.run("SET search_path = scantest, public")
        for start in starts:
            for limit in limits:
                sql = (f"SELECT key, count FROM order_count_exact WHERE key >= '{start}' "
                       f"AND key < '{PREFIX}~' ORDER BY key LIMIT {limit}")
                assert s.run(sql) == expected(truth, start, limit), sql
                # a query that stops early between the others: its
                # connections were drained and pooled, the next one reuses them
                s.run(f"SELECT key FROM order_count_exact WHERE key >= '{start}' ORDER BY key LIMIT 3")


def expected_desc(counts, start, limit):
    keys = [k for k in sorted(counts, reverse=True) if k <= start][:limit]
    return "\n".join(f"{k}|{counts[k]}" for k in keys)


def test_descending_ranges_past_a_share_equal_the_truth(truth, instance):
    """ORDER BY key DESC reads every store backwards from the upper bound and
    merges in descending order; a share that runs out is asked again below
    its last key."""
    keys = sorted(truth)
    starts = [keys[-1], keys[421], keys[300], keys[37], keys[0]]
    limits = [1, 2, 10, 33, 100, 250, 459, 460, 1000]
    with Session(instance) as s:
        s.run("SET search_path = scantest, public")
        plan = s.run(f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                     f"SELECT key FROM order_count_exact WHERE key <= '{keys[-1]}' "
                     f"AND key >= '{PREFIX}' ORDER BY key DESC LIMIT 300")
        assert "Key Order: descending" in plan and "Sort" not in plan, plan
        m = re.search(r"Next Batches: (\d+)", plan)
        assert m and int(m.group(1)) >= 1, plan
        for start in starts:
            for limit in limits:
                sql = (f"SELECT key, count FROM order_count_exact WHERE key <= '{start}' "
                       f"AND key >= '{PREFIX}' ORDER BY key DESC LIMIT {limit}")
                assert s.run(sql) == expected_desc(truth, start, limit), sql
                s.run(f"SELECT key FROM order_count_exact WHERE key < '{start}' "
                      f"ORDER BY key DESC LIMIT 3")


def test_next_batches_show_in_explain_analyze(truth, instance):
    sql = (f"SELECT key, count FROM order_count_exact WHERE key >= '{PREFIX}' "
           f"AND key < '{PREFIX}~' ORDER BY key LIMIT 300")
    plan = q(instance, "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql)
    assert "Limit: 300" in plan, plan
    # partition 0 holds about 9 in 10 of the first 300 keys: its share
    # (300/3 and a margin) runs out, and its instance is asked again
    m = re.search(r"Next Batches: (\d+)", plan)
    assert m and int(m.group(1)) >= 1, plan
    assert q(instance, sql) == expected(truth, PREFIX, 300)


def stream_count(i):
    status, body = http_get(i, "/metrics")
    assert status == 200, body
    m = re.search(r'^iq_http_request_duration_seconds_count\{endpoint="peer_stream"\} (\d+)',
                  body, re.M)
    assert m, "no peer_stream count in /metrics"
    return int(m.group(1))


def test_queries_stopped_by_a_limit_reuse_their_connections(truth):
    if tls_on():
        pytest.skip("with TLS on, peers are asked by POST on kept-alive connections")
    if len(INSTANCES) < 2:
        pytest.skip("needs another instance")
    others = [i for i in INSTANCES if i != 1]
    with Session(1) as s:
        s.run("SET search_path = scantest, public")
        s.run(f"SELECT key FROM order_count_exact WHERE key >= '{PREFIX}' ORDER BY key LIMIT 5")
        before = {i: stream_count(i) for i in others}
        for n in range(40):
            start = sorted(truth)[n * 7]
            got = s.run(f"SELECT key, count FROM order_count_exact WHERE key >= '{start}' "
                        f"AND key < '{PREFIX}~' ORDER BY key LIMIT 10")
            assert got == expected(truth, start, 10)
    # stream_count counts the streams that ended: each of the session's
    # pooled connections once, as the session ends, not one per query
    wait_until(lambda: all(stream_count(i) > before[i] for i in others), timeout=30,
               message="the session's streams to end")
    for i in others:
        assert stream_count(i) - before[i] <= 2, (i, before[i], stream_count(i))


def test_a_range_asked_again_sees_each_write(truth):
    """A worker takes a batch's iterators again for the next request only
    while nothing was written since they were made (worker/store/iter_pool.c):
    the same LIMIT range, asked again and again over pooled connections
    (its iterators left idle each time), sees each round of writes to its
    keys, and nothing older once it has."""
    prefix = f"{PREFIX[:-1]}w:"  # past PREFIX's keys: the truth stays as it is
    keys = [f"{prefix}{n:03d}" for n in range(30)]
    sql = (f"SELECT key, count FROM order_count_exact WHERE key >= '{prefix}' "
           f"AND key < '{prefix}~' ORDER BY key LIMIT 10")
    with Session(1) as s:
        s.run("SET search_path = scantest, public")
        for rnd in range(1, 4):
            produce("order", (f"{k}--food" for k in keys))
            want = "\n".join(f"{k}|{rnd}" for k in keys[:10])
            wait_until(lambda: s.run(sql) == want, timeout=120,
                       message=f"round {rnd} of writes in the range")
            for _ in range(10):
                assert s.run(sql) == want, rnd


# ---- scan snapshots (worker/store/scan_snapshot.c) ----
#
# A full scan of a partition keeps its rows in memory; the next scans and
# ranges read them while nothing was written to the partition. The scans
# below filter locally by PREFIX: the worker still reads every partition
# from its first row to its end (no bound is pushed down to order_count).

def snapshot_metric(i, name):
    """Instance i's value of an iq_scan_snapshot_* metric (first sample)."""
    status, body = http_get(i, "/metrics")
    assert status == 200, body
    m = re.search(rf"^iq_scan_snapshot_{name}(?:\{{[^}}]*\}})? (\d+)", body, re.M)
    assert m, f"no iq_scan_snapshot_{name} in /metrics of instance {i}"
    return int(m.group(1))


def snapshot_total(name):
    return sum(snapshot_metric(i, name) for i in INSTANCES)


def rows_of(counts, keys=None):
    return "\n".join(f"{k}|{counts[k]}" for k in sorted(keys or counts))


def full_scan(s, prefix):
    return s.run(f"SELECT key, count FROM order_count WHERE key LIKE '{prefix}%' ORDER BY key")


def assert_full_scan(s, prefix, want):
    plan = s.run("EXPLAIN (COSTS OFF) SELECT key, count FROM order_count "
                 f"WHERE key LIKE '{prefix}%'")
    assert "Full Scan" in plan, plan
    assert full_scan(s, prefix) == want


def scanned_until_served(s, prefix, want):
    """Full scans until one is read from snapshots (a write of another
    test's keys, still arriving, makes a build stale); each one exact."""
    def served():
        before = snapshot_total("hits_total")
        assert full_scan(s, prefix) == want
        return snapshot_total("hits_total") > before
    wait_until(served, timeout=60, interval=0.5, message="a full scan read from snapshots")


def test_a_full_scan_twice_reads_a_snapshot_and_equals_the_truth(truth):
    with Session(1) as s:
        s.run("SET search_path = scantest, public")
        want = rows_of(truth)
        assert_full_scan(s, PREFIX, want)
        scanned_until_served(s, PREFIX, want)
        assert snapshot_total("builds_total") >= 1
        # the whole store too, against a heap copy made by point lookups
        # (never a cursor, so never a snapshot) of every key the scans name.
        # Other tests' records may still arrive, and some were produced to a
        # partition their key does not hash to on purpose, which a lookup
        # does not find: the scans' rows of the keys the lookups found must
        # be exactly the copy, each once (asked again while writes go on)
        scan = ("WITH s AS MATERIALIZED (SELECT key, count FROM order_count) "
                "SELECT key, count FROM s WHERE key IN (SELECT key FROM heap_copy) ORDER BY key")

        def whole_store_equals_lookups():
            keys = s.run("SELECT DISTINCT key FROM order_count").split("\n")
            lookup = ("SELECT key, count FROM order_count WHERE key = ANY(ARRAY[{}])".format(
                ", ".join("'" + k.replace("'", "''") + "'" for k in keys)))
            assert "Key Lookup" in s.run("EXPLAIN (COSTS OFF) " + lookup)
            s.run("DROP TABLE IF EXISTS heap_copy")
            s.run("CREATE TEMP TABLE heap_copy AS " + lookup)
            assert "Full Scan" in s.run("EXPLAIN (COSTS OFF) " + scan)
            copy = s.run("SELECT key, count FROM heap_copy ORDER BY key")
            return all(s.run(scan) == copy for _ in range(3))
        wait_until(whole_store_equals_lookups, timeout=120, interval=1,
                   message="full scans of the whole store to equal its point lookups")


def test_a_scan_after_writes_sees_every_write(truth):
    """Writes to existing and new keys between scans: the next scan equals
    the counts produced, read as soon as point lookups show them (a stale
    snapshot would answer the counts before)."""
    prefix = f"{PREFIX[:-1]}s:"
    counts = {f"{prefix}{n:04d}": 1 for n in range(300)}
    produce("order", (f"{k}--food" for k in counts))
    with Session(INSTANCES[len(INSTANCES) // 2]) as s:
        s.run("SET search_path = scantest, public")
        wait_for_counts(q, "order_count_exact", prefix, f"{len(counts)}|{len(counts)}",
                        "the first round")
        scanned_until_served(s, prefix, rows_of(counts))
        for rnd in range(3):
            written = [k for n, k in enumerate(sorted(counts)) if n % (rnd + 2) == 0]
            new = [f"{prefix}{rnd}n{n:03d}" for n in range(20)]
            for k in written + new:
                counts[k] = counts.get(k, 0) + 1
            produce("order", (f"{k}--food" for k in written + new))
            probe = written[::7] + new
            sql = "SELECT key, count FROM order_count WHERE key IN ({}) ORDER BY key".format(
                ", ".join(f"'{k}'" for k in probe))
            wait_until(lambda: s.run(sql) == rows_of(counts, probe), timeout=120,
                       message=f"round {rnd}'s writes in point lookups")
            # the whole prefix, as ranges: a stale snapshot would never show it
            wait_for_counts(q, "order_count_exact", prefix,
                            f"{len(counts)}|{sum(counts.values())}", f"round {rnd}")
            assert_full_scan(s, prefix, rows_of(counts))
            scanned_until_served(s, prefix, rows_of(counts))


def test_ranges_read_from_a_snapshot_equal_a_heap_copy(truth):
    keys = sorted(truth)
    with Session(INSTANCES[-1]) as s:
        s.run("SET search_path = scantest, public")
        scanned_until_served(s, PREFIX, rows_of(truth))
        s.run("CREATE TEMP TABLE heap_copy (key text COLLATE \"C\" PRIMARY KEY, count bigint)")
        s.run("INSERT INTO heap_copy VALUES " +
              ", ".join(f"('{k}', {c})" for k, c in truth.items()))
        before = snapshot_total("hits_total")
        cases = []
        for lo, hi in [(0, 459), (37, 38), (37, 300), (100, 101), (458, 459)]:
            for lop in (">=", ">"):
                for hiop in ("<", "<="):
                    for limit in ("", " LIMIT 1", " LIMIT 10", " LIMIT 250"):
                        for order in ("", " DESC"):
                            cases.append(f"WHERE key {lop} '{keys[lo]}' AND key {hiop} "
                                         f"'{keys[hi]}' ORDER BY key{order}{limit}")
        cases.append(f"WHERE key > '{keys[-1]}' AND key < '{PREFIX}~' ORDER BY key")
        cases.append(f"WHERE key < '{keys[0]}' AND key > '{PREFIX}' ORDER BY key DESC")
        for where in cases:
            got = s.run(f"SELECT key, count FROM order_count_exact {where}")
            assert got == s.run(f"SELECT key, count FROM heap_copy {where}"), where
        assert snapshot_total("hits_total") > before


def test_plans_that_hold_a_scans_rows_equal_a_heap_copy(truth):
    """A scan's text datums lie in its receive buffer until its next row
    (src/scan.c, bytes_datum): joins, sorts, unions and aggregates that
    hold rows or read two scans at once give the heap copy's answer."""
    with Session(INSTANCES[0]) as s:
        s.run("SET search_path = scantest, public")
        s.run("CREATE TEMP TABLE heap_copy (key text COLLATE \"C\" PRIMARY KEY, count bigint)")
        s.run("INSERT INTO heap_copy VALUES " +
              ", ".join(f"('{k}', {c})" for k, c in truth.items()))
        s.run("ANALYZE heap_copy")
        mine = f"LIKE '{PREFIX}%'"
        shapes = [
            # each join method, the scan on either side
            ("enable_hashjoin = off, enable_mergejoin = off",
             "SELECT a.key, a.count, b.count FROM {t} a JOIN heap_copy b ON a.key = b.key "
             f"WHERE a.key {mine} ORDER BY 1"),
            ("enable_nestloop = off, enable_mergejoin = off",
             "SELECT a.key, b.key, a.count FROM heap_copy b JOIN {t} a ON a.key = b.key "
             f"WHERE a.key {mine} ORDER BY 1"),
            ("enable_nestloop = off, enable_hashjoin = off",
             "SELECT a.key, a.count + b.count FROM {t} a JOIN {t} b ON a.key = b.key "
             f"WHERE a.key {mine} AND b.key {mine} ORDER BY 1"),
            ("enable_hashjoin = off, enable_mergejoin = off",
             "SELECT a.key, b.key FROM {t} a JOIN {t} b ON b.key = a.key || 'x' OR b.key = a.key "
             f"WHERE a.key {mine} AND b.key {mine} ORDER BY 1"),
            ("enable_sort = on",
             f"SELECT key FROM {{t}} WHERE key {mine} UNION ALL "
             f"SELECT key || '.' FROM {{t}} WHERE key {mine} ORDER BY 1 DESC"),
            ("enable_sort = on",
             f"SELECT count, string_agg(key, ',' ORDER BY key), max(key), min(key) "
             f"FROM {{t}} WHERE key {mine} GROUP BY count ORDER BY 1"),
            ("enable_sort = on",
             f"SELECT DISTINCT left(key, -1) FROM {{t}} WHERE key {mine} ORDER BY 1"),
            ("enable_sort = on",
             f"SELECT key, lag(key) OVER (ORDER BY key), lead(count, 2) OVER (ORDER BY key) "
             f"FROM {{t}} WHERE key {mine} ORDER BY 1"),
        ]
        for settings, sql in shapes:
            for setting in settings.split(", "):
                s.run(f"SET {setting}")
            got = s.run(sql.format(t="order_count"))
            assert got == s.run(sql.format(t="heap_copy")), sql
            assert got.count(PREFIX) >= 40, (sql, got[:200])
            s.run("RESET ALL; SET search_path = scantest, public")


def set_snapshot_memory(i, value):
    psql(i, ("ALTER SYSTEM RESET iq_fdw.scan_snapshot_memory;" if value is None else
             f"ALTER SYSTEM SET iq_fdw.scan_snapshot_memory = '{value}';") +
         "SELECT pg_reload_conf();")


def test_no_snapshot_without_memory(truth):
    """iq_fdw.scan_snapshot_memory = 0: the worker restarts with it and
    never builds one, the scans stay exact."""
    budget = 0
    try:
        set_snapshot_memory(1, budget)
        wait_until(lambda: snapshot_metric(1, "budget_bytes") == budget, timeout=120,
                   interval=0.5, message="instance 1's worker to restart without snapshots")
        wait_until(readable_everywhere, timeout=240, interval=0.5,
                   message="every partition readable again")
        with Session(1) as s:
            s.run("SET search_path = scantest, public")
            for _ in range(3):
                assert_full_scan(s, PREFIX, rows_of(truth))
        assert snapshot_metric(1, "builds_total") == 0
        assert snapshot_metric(1, "hits_total") == 0
        assert snapshot_metric(1, "bytes") == 0
    finally:
        set_snapshot_memory(1, None)
        wait_until(lambda: snapshot_metric(1, "budget_bytes") > 0, timeout=120, interval=0.5,
                   message="instance 1's worker to restart with snapshots")
        wait_until(readable_everywhere, timeout=240, interval=0.5,
                   message="every partition readable again")

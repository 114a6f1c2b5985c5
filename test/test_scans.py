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
                      produce, psql, tls_on, wait_for_counts, wait_until)

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

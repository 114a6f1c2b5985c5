"""Issue 5: the foreign data wrapper on a real 3-instance cluster.

Every query gives the same answer on every instance, equal to the truth
computed from the records produced: point lookups of every key, IN lists
spanning owners, prepared statements, key ranges with and without ORDER BY
and LIMIT, full scans, aggregates, joins (foreign-foreign and with a local
heap table), and a table in a non-C collation.  EXPLAIN shows what was
pushed down.  The last tests freeze an instance (SIGSTOP) to check that a
query needing it fails within the peer timeout, naming it, and that
statement_timeout cancels a wait on it (leaving the backend usable); and
check that other instances are read over pooled connections (upgraded
streams, or kept-alive POSTs with TLS), which
survive the restart of a peer.

The generated keys share a prefix unique to this run, so their truth is
known exactly whatever other tests produced; whole-store checks compare
with the truth read back from the topics.
"""

import functools
import os
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import (BOOTSTRAP, INSTANCES, PG_BIN, Session, consume, freeze, http_port,
                      import_stores_sql, java_partition, produce, psql, psql_error,
                      pushdown, scratch_instance, thaw, wait_until)

PREFIX = f"fdw{os.getpid() % 10000:04d}{time.monotonic_ns() % 100000:05d}:"
N_CUSTOMERS = 20_000
N_KEYS = 30_000  # order keys; those >= N_CUSTOMERS have no customer
N_ORDERS = 200_000
SEED_CUSTOMERS = ["1--john", "2--adam", "3--daniel", "4--james", "5--jack", "6--mathew", "7--will"]
SEED_ORDERS = ["1--spagety", "2--pizza", "--pasta"]

SETUP = import_stores_sql("fdwtest", "iq_test") + """\
CREATE FOREIGN TABLE fdwtest.order_count_icu (key text COLLATE "en-x-icu", count bigint)
  SERVER iq_test OPTIONS (store 'order-count');
-- keys that are not UTF-8 fail its scans, so its text sorts as the store
CREATE FOREIGN TABLE fdwtest.order_count_exact (key text COLLATE "C", count bigint)
  SERVER iq_test OPTIONS (store 'order-count', invalid_utf8 'error');
"""


def key(k):
    return f"{PREFIX}{k:05d}"


def q(i, sql, timeout=300):
    """sql on instance i with the test's tables first in the path; no command tags."""
    return psql(i, "\\set QUIET on\nSET search_path = fdwtest, public;\n" + sql, timeout=timeout)


def pushed(i, sql, before=""):
    """What the foreign scans of sql ask their stores on instance i (conftest's
    pushdown), after the statements before (settings, PREPARE)."""
    return pushdown(lambda s: q(i, before + s), sql)


def copy_escape(s):
    return s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def with_truth(rows, sql):
    """SQL that loads rows [(key, count)] into temp table truth, then runs sql."""
    lines = "".join(f"{copy_escape(k)}\t{v}\n" for k, v in rows)
    return ('CREATE TEMP TABLE truth (key text COLLATE "C" PRIMARY KEY, count bigint);\n'
            f"COPY truth FROM STDIN;\n{lines}\\.\nANALYZE truth;\n{sql}")


def topic_truth():
    """(customers {key: name}, counts {key: n}) from everything in the topics."""
    customers = {}
    for _, k, v in consume("customer", timeout=300):
        if k is None:
            continue
        if v is None:
            customers.pop(k, None)
        else:
            customers[k] = v
    counts = Counter(k for _, k, _ in consume("order", timeout=300) if k is not None)
    return customers, counts


class Truth:
    """What the module's records make, and (asked first, then kept) what the
    whole topics make: reading every topic takes a while, and the module's
    second setup (for its restarts_cluster test, after every other module)
    does not need it."""

    @functools.cached_property
    def _whole(self):
        return wait_until(_topics_settled, timeout=120, interval=2,
                          message="the whole stores to match the topics")

    @property
    def all_customers(self):
        return self._whole[0]

    @property
    def all_counts(self):
        return self._whole[1]


@pytest.fixture(scope="module")
def data():
    for i in INSTANCES:
        psql(i, SETUP)

    rnd = random.Random(5)
    customers = {key(k): f"name{k}" for k in range(N_CUSTOMERS)}
    orders = [key(rnd.randrange(N_KEYS)) for _ in range(N_ORDERS)]
    t = Truth()
    t.customers = customers
    t.counts = Counter(orders)
    t.keys = sorted(t.counts)
    expect = f"{len(t.counts)}|{N_ORDERS}"

    # set up again (a restarts_cluster test runs after the others): the
    # records of this run are in the topics already
    produced = q(1, f"SELECT count(*), sum(count) FROM order_count "
                    f"WHERE key >= '{PREFIX}' AND key < '{PREFIX}~'") == expect
    if not produced:
        have_seed = q(1, "SELECT count(*) FROM customer WHERE key = '1'") == "1"
        produce("customer", (f"{k}--{v}" for k, v in customers.items()))
        produce("order", (f"{k}--food" for k in orders))
        if not have_seed:
            produce("customer", SEED_CUSTOMERS)
            produce("order", SEED_ORDERS)

    for i in INSTANCES:
        wait_until(lambda: q(i, f"SELECT count(*), sum(count) FROM order_count "
                                f"WHERE key >= '{PREFIX}' AND key < '{PREFIX}~'") == expect,
                   timeout=300, interval=1, message=f"instance {i} to hold the generated counts")
        wait_until(lambda: q(i, f"SELECT count(*) FROM customer "
                                f"WHERE key >= '{PREFIX}' AND key < '{PREFIX}~'") == str(N_CUSTOMERS),
                   timeout=300, interval=1, message=f"instance {i} to hold the generated customers")
    return t


def _topics_settled():
    customers, counts = topic_truth()
    want = f"{len(counts)}|{sum(counts.values())}|{len(customers)}"
    got = {q(i, "SELECT (SELECT count(*) FROM order_count) || '|' || "
                "(SELECT coalesce(sum(count), 0) FROM order_count) || '|' || "
                "(SELECT count(*) FROM customer)") for i in INSTANCES}
    return (customers, counts) if got == {want} else None


# ---- point lookups ------------------------------------------------------------

def test_every_generated_key_by_lookup(data, instance):
    """key = $1 (PL/pgSQL's prepared plan) for every key, present or not."""
    rows = [(k, data.counts.get(k, 0)) for k in (key(n) for n in range(N_KEYS + 50))]
    out = q(instance, with_truth(rows, """
        DO $$
        DECLARE r record; c bigint; bad int := 0;
        BEGIN
          FOR r IN SELECT key, count FROM truth LOOP
            SELECT o.count INTO c FROM order_count o WHERE o.key = r.key;
            IF coalesce(c, 0) <> r.count THEN bad := bad + 1; END IF;
          END LOOP;
          RAISE NOTICE 'bad=%', bad;
          PERFORM set_config('fdwtest.bad', bad::text, false);
        END $$;
        SELECT current_setting('fdwtest.bad');"""), timeout=900)
    assert out.splitlines()[-1] == "0"


def test_seed_keys(data, instance):
    for k in ["1", "2", "3", "7", "8", ""]:
        want = data.all_counts.get(k)
        got = q(instance, f"SELECT count FROM order_count WHERE key = '{k}'")
        assert got == ("" if want is None else str(want)), f"key {k!r}"
        want_c = data.all_customers.get(k)
        got_c = q(instance, f"SELECT value FROM customer WHERE key = '{k}'")
        assert got_c == ("" if want_c is None else want_c), f"customer {k!r}"


def test_in_list_spanning_owners(data, instance):
    keys = [key(n) for n in range(0, N_KEYS + 100, 997)]
    parts = {java_partition(k, 3) for k in keys}
    assert len(parts) == 3
    lst = ", ".join(f"'{k}'" for k in keys + keys[:3])  # duplicates: one row each
    sql = f"SELECT key, count FROM order_count WHERE key IN ({lst}) ORDER BY key"
    assert pushed(instance, sql) == [f"Key Lookup: key IN ({lst})"]
    got = q(instance, sql)
    want = "\n".join(f"{k}|{data.counts[k]}" for k in sorted(keys) if k in data.counts)
    assert got == want
    sql = f"SELECT count(*), sum(count) FROM order_count WHERE key = ANY (ARRAY[{lst}])"
    assert pushed(instance, sql) == [f"Key Lookup: key IN ({lst})"]
    got = q(instance, sql)
    assert got == f"{sum(1 for k in keys if k in data.counts)}|{sum(data.counts[k] for k in keys)}"


def test_prepared_statements_generic_and_custom(data, instance):
    keys = [key(n) for n in range(5, 5000, 501)]
    for mode, lookup in (("force_generic_plan", "$1"), ("force_custom_plan", f"'{keys[0]}'")):
        script = [f"SET plan_cache_mode = {mode};",
                  "PREPARE p(text) AS SELECT coalesce((SELECT count FROM order_count WHERE key = $1), 0);"]
        assert pushed(instance, f"EXECUTE p('{keys[0]}')", "\n".join(script)) == \
            [f"Key Lookup: key = {lookup}"], mode
        script += [f"EXECUTE p('{k}');" for k in keys]
        got = q(instance, "\n".join(script)).splitlines()
        assert got == [str(data.counts.get(k, 0)) for k in keys], mode
    prepare = ("SET plan_cache_mode = force_generic_plan;\n"
               "PREPARE r(text, text) AS SELECT count(*), sum(count) FROM order_count "
               "WHERE key BETWEEN $1 AND $2;\n")
    execute = f"EXECUTE r('{key(100)}', '{key(200)}')"
    # a text key read with invalid_utf8 'replace' sends its upper bound only
    assert pushed(instance, execute, prepare) == ["Key Range: key <= $2"]
    got = q(instance, prepare + execute)
    sel = [k for k in data.keys if key(100) <= k <= key(200)]
    assert got == f"{len(sel)}|{sum(data.counts[k] for k in sel)}"


# ---- ranges -----------------------------------------------------------------

@pytest.mark.parametrize("lo,hi", [(0, 40), (1234, 1300), (29990, 30100)])
def test_between_ordered(data, instance, lo, hi):
    sel = [k for k in data.keys if key(lo) <= k <= key(hi)]
    sql = f"SELECT key, count FROM order_count WHERE key BETWEEN '{key(lo)}' AND '{key(hi)}' ORDER BY key"
    # a text key read with invalid_utf8 'replace' sends its upper bound only
    assert pushed(instance, sql) == [f"Key Range: key <= '{key(hi)}'"]
    got = q(instance, sql)
    assert got == "\n".join(f"{k}|{data.counts[k]}" for k in sel)


def test_between_unordered_and_open_bounds(data, instance):
    sel = [k for k in data.keys if key(500) < k < key(900)]
    sql = (f"SELECT key, count FROM order_count WHERE key > '{key(500)}' "
           f"AND key < '{key(900)}' AND key >= '{key(400)}'")
    assert pushed(instance, sql) == [f"Key Range: key < '{key(900)}'"]
    got = q(instance, sql)
    assert sorted(got.splitlines()) == [f"{k}|{data.counts[k]}" for k in sel]
    sql = f"SELECT count(*) FROM order_count WHERE key > '{key(N_KEYS - 10)}' AND key <= '{PREFIX}~'"
    assert pushed(instance, sql) == [f"Key Range: key <= '{PREFIX}~'"]
    got = q(instance, sql)
    assert got == str(sum(1 for k in data.keys if k > key(N_KEYS - 10)))


@pytest.mark.parametrize("table", ["order_count", "order_count_exact"])
def test_range_with_limit(data, instance, table):
    sel = [k for k in data.keys if k >= key(777)][:10]
    for sql in (f"SELECT key, count FROM {table} WHERE key >= '{key(777)}' ORDER BY key LIMIT 10",
                f"SELECT key, count FROM {table} WHERE key >= '{key(777)}' AND key < '{PREFIX}~' "
                f"ORDER BY key LIMIT 5 OFFSET 5"):
        got = q(instance, sql)
        want = sel if "OFFSET" not in sql else sel[5:10]
        assert got == "\n".join(f"{k}|{data.counts[k]}" for k in want), sql
    plan = q(instance, f"EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM {table} "
                       f"WHERE key >= '{key(777)}' ORDER BY key LIMIT 10")
    if table == "order_count_exact":
        assert f"Key Range: key >= '{key(777)}'" in plan, plan
        assert "Limit: 10" in plan and "Sort" not in plan, plan
    else:  # replaced keys would sort elsewhere: PostgreSQL sorts (sql/invalid_utf8.sql)
        assert "Sort" in plan, plan


def test_non_c_collation_table_gives_right_rows(data, instance):
    """Ranges on an en-x-icu key column are filtered by PostgreSQL: compare
    with a heap copy of the same rows in the same collation."""
    # PostgreSQL filters the range, in its collation
    assert pushed(instance, f"SELECT * FROM order_count_icu WHERE key BETWEEN '{key(10)}' AND "
                          f"'{key(300)}'") == ["Full Scan: all partitions"]
    got = q(instance, f"""
        CREATE TEMP TABLE heap_icu AS SELECT key COLLATE "en-x-icu" AS key, count
          FROM order_count WHERE key >= '{PREFIX}' AND key < '{PREFIX}~' OR key IN ('1', '2', 'a', 'B');
        SELECT (SELECT string_agg(key || '=' || count, ',' ORDER BY key) FROM order_count_icu
                 WHERE key BETWEEN '{key(10)}' AND '{key(300)}')
             = (SELECT string_agg(key || '=' || count, ',' ORDER BY key) FROM heap_icu
                 WHERE key BETWEEN '{key(10)}' AND '{key(300)}'),
               (SELECT count(*) FROM order_count_icu WHERE key < '{PREFIX}')
             = (SELECT count(*) FROM order_count WHERE key COLLATE "en-x-icu" < '{PREFIX}');""")
    assert got == "t|t"


# ---- full scans, aggregates, joins -----------------------------------------

def test_full_scan_and_aggregates(data, instance):
    counts = data.all_counts
    got = q(instance, "SELECT count(*), sum(count), max(count) FROM order_count")
    assert got == f"{len(counts)}|{sum(counts.values())}|{max(counts.values())}"
    got = q(instance, "SELECT count(*) FROM customer")
    assert got == str(len(data.all_customers))
    mismatches = q(instance, with_truth(counts.items(), """
        SELECT count(*) FROM order_count o FULL JOIN truth t USING (key)
         WHERE o.count IS DISTINCT FROM t.count;"""))
    assert mismatches == "0"


def test_full_scan_in_key_order(data, instance):
    want = sorted(data.all_counts, key=lambda k: k.encode())
    got = q(instance, "SELECT md5(string_agg(key, E'\\n' ORDER BY key)), "
                      "md5(string_agg(key, E'\\n')) FROM (SELECT key FROM order_count ORDER BY key) s")
    import hashlib
    h = hashlib.md5("\n".join(want).encode()).hexdigest()
    assert got == f"{h}|{h}"


def test_join_order_count_with_customer(data, instance):
    lo, hi = key(19_900), key(20_100)
    sql = (f"SELECT o.key, c.value, o.count FROM order_count o JOIN customer c USING (key) "
           f"WHERE key BETWEEN '{lo}' AND '{hi}' ORDER BY 1")
    assert f"Key Range: key <= '{hi}'" in pushed(instance, sql)
    got = q(instance, sql)
    want = [f"{k}|{data.customers[k]}|{data.counts[k]}" for k in data.keys
            if lo <= k <= hi and k in data.customers]
    assert got == "\n".join(want)
    got = q(instance, f"SELECT count(*) FROM order_count o LEFT JOIN customer c USING (key) "
                      f"WHERE key BETWEEN '{lo}' AND '{hi}' AND c.key IS NULL")
    assert got == str(sum(1 for k in data.keys if lo <= k <= hi and k not in data.customers))


def test_join_with_local_heap_table(data, instance):
    keys = [key(n) for n in range(3, N_KEYS + 40, 211)]
    rows = [(k, data.counts.get(k, 0)) for k in keys]
    sql = with_truth(rows, """
        EXPLAIN (COSTS OFF) SELECT t.key, o.count FROM truth t JOIN order_count o ON o.key = t.key;
        SELECT count(*) FROM truth t LEFT JOIN order_count o ON o.key = t.key
         WHERE coalesce(o.count, 0) <> t.count;""")
    out = q(instance, sql).splitlines()
    assert out[-1] == "0"
    assert any("Key Lookup: key = t.key" in line for line in out), out


# ---- EXPLAIN ----------------------------------------------------------------

def test_explain_names_store_key_and_instances(data, instance):
    k = key(42)
    plan = q(instance, f"EXPLAIN VERBOSE SELECT count FROM order_count WHERE key = '{k}'")
    part = java_partition(k, 3)
    assert "Store: order-count" in plan
    assert f"Key Lookup: key = '{k}'" in plan
    assert f"Partitions: {part}" in plan
    assert f"(partition {part}" in plan
    plan = q(instance, "EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_exact "
                       "WHERE key BETWEEN '1' AND '5' ORDER BY key")
    assert "Key Range: key >= '1' AND key <= '5'" in plan and "Sort" not in plan
    plan = q(instance, f"EXPLAIN (ANALYZE, VERBOSE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                       f"SELECT count FROM order_count WHERE key = '{k}'")
    assert "Instances Asked:" in plan and f"(partition {part}" in plan, plan


def test_estimates_come_from_the_stores(data, instance):
    plan = q(instance, "EXPLAIN SELECT * FROM order_count")
    rows = int(plan.split("rows=")[1].split()[0])
    n = len(data.all_counts)
    # RocksDB counts overwrites until compaction: an estimate, not a count
    assert n / 10 <= rows <= n * 10, plan


# ---- the value cache --------------------------------------------------------

def _fresh_local_key(i, tag):
    """A key of this run that no record has used yet, owned by instance i
    (outside the generated keys' range, whose truth other tests check)."""
    for n in range(1000):
        k = f"vc:{PREFIX}{tag}{i}-{n}"
        if q(i, f"SELECT (iq_key_owner('order-count', '{k}')).is_local") == "t":
            return k
    pytest.fail(f"instance {i} owns none of 1000 keys")


def _plan(i, sql):
    return q(i, f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {sql}")


def test_value_cache_follows_the_stream(data, instance):
    """A repeated lookup is answered from the value cache, and every write
    of the stream is seen at once: absent, then 1, 2, 3, on every instance."""
    k = _fresh_local_key(instance, "o")
    lookup = f"SELECT count FROM order_count WHERE key = '{k}'"
    assert q(instance, lookup) == ""
    assert "Value Cache Hits: 1" in _plan(instance, lookup)
    for n in range(1, 4):
        produce("order", [f"{k}--food"])
        wait_until(lambda: q(instance, lookup) == str(n), timeout=60,
                   message=f"instance {instance} to count {n} for {k}")
        plan = _plan(instance, lookup)
        assert "Value Cache Hits: 1" in plan and "value cache" in plan, plan
        assert q(instance, lookup) == str(n)
        for j in INSTANCES:
            assert q(j, lookup) == str(n), f"instance {j}"


def test_value_cache_holds_customer_names_and_deletes(data, instance):
    k = _fresh_local_key(instance, "c")
    lookup = f"SELECT value FROM customer WHERE key = '{k}'"
    for name in ["first", "s\u00e9cond 'quoted'", None, "back"]:
        if name is None:
            # a null value deletes (kcat -Z: an empty value is null)
            subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", "customer",
                            "-p", str(java_partition(k, 3)), "-K", "--", "-Z"],
                           input=f"{k}--\n", text=True, check=True, timeout=60)
        else:
            produce("customer", [f"{k}--{name}"])
        want = name or ""
        wait_until(lambda: q(instance, lookup) == want, timeout=60,
                   message=f"instance {instance} to hold {want!r} for {k}")
        assert "Value Cache Hits: 1" in _plan(instance, lookup)
        assert q(instance, lookup) == want


def test_value_cache_is_bypassed_under_max_lag(data, instance):
    """Only the worker's answer carries the partition's position."""
    k = _fresh_local_key(instance, "l")
    lookup = f"SELECT count FROM order_count WHERE key = '{k}'"
    q(instance, lookup)
    assert "Value Cache Hits: 1" in _plan(instance, lookup)
    plan = q(instance, "SET iq_fdw.max_lag = 1000000;\n"
                       f"EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) {lookup}")
    assert "Value Cache Hits" not in plan and "Instances Asked" in plan, plan


# ---- a frozen instance ------------------------------------------------------

def _worker_pid(i):
    return int(psql(i, "SELECT pid FROM iq_worker()"))


def _keys_owned_by(i, data, n=1):
    """n keys with counts whose partition instance i owns (skip if none)."""
    owned = set()
    for p in range(3):
        k = next(k for k in data.keys if java_partition(k, 3) == p)
        if int(psql(1, f"SELECT port FROM iq_key_owner('order-count', '{k}')")) == http_port(i):
            owned.add(p)
    if not owned:
        pytest.skip(f"instance {i} owns no partition")
    return [k for k in data.keys if java_partition(k, 3) in owned][:n]


def _key_owned_by(i, data):
    return _keys_owned_by(i, data)[0]


@pytest.fixture
def frozen_instance3(data):
    pid = _worker_pid(3)
    k = _key_owned_by(3, data)
    freeze(pid)
    try:
        yield k
    finally:
        thaw(pid)


def test_frozen_peer_fails_within_timeout_naming_it(data, frozen_instance3):
    k = frozen_instance3
    start = time.monotonic()
    err = psql_error(1, f"SET iq_fdw.peer_timeout = 1500; SET iq_fdw.ownership_wait = 0;\n"
                        f"SELECT count FROM fdwtest.order_count WHERE key = '{k}'")
    took = time.monotonic() - start
    assert took < 5, f"took {took:.1f}s: {err}"
    assert str(http_port(3)) in err, err


def test_statement_timeout_cancels_wait_on_peer(data, frozen_instance3):
    k = frozen_instance3
    start = time.monotonic()
    err = psql_error(1, f"SET iq_fdw.peer_timeout = 20000; SET statement_timeout = 300;\n"
                        f"SELECT count FROM fdwtest.order_count WHERE key = '{k}'")
    took = time.monotonic() - start
    assert "statement timeout" in err, err
    assert took < 3, f"took {took:.1f}s"
    # the backend and its connections stay usable: a local read after it
    assert psql(1, "SELECT 1") == "1"


def test_cancel_while_a_peer_is_frozen_leaves_the_session_usable(data):
    """One backend: a pooled stream to instance 3, a query on it cancelled
    while 3 is frozen; the same backend then reads its own instance at once,
    and, once 3 thaws, gets right answers from it (the abandoned connection,
    with its late answer, is never reused)."""
    a, b = _keys_owned_by(3, data, 2)
    own = _key_owned_by(1, data)
    pid = _worker_pid(3)
    get = "SELECT count FROM order_count WHERE key = '{}'".format
    with Session(1) as s:
        s.run("SET search_path = fdwtest, public; SET iq_fdw.peer_timeout = 20000")
        assert s.run(get(b)) == str(data.counts[b])
        freeze(pid)
        try:
            start = time.monotonic()
            err = s.run(f"SET statement_timeout = 300; {get(a)}; RESET statement_timeout")
            assert "statement timeout" in err, err
            assert time.monotonic() - start < 3
            assert s.run(get(own)) == str(data.counts[own])
        finally:
            thaw(pid)
        assert s.run(get(b)) == str(data.counts[b])
        assert s.run(get(a)) == str(data.counts[a])


# ---- the upgraded stream to other instances -----------------------------------

def _stream_threads(i):
    """Threads of instance i's worker serving upgraded connections."""
    task = Path(f"/proc/{_worker_pid(i)}/task")
    names = []
    for t in task.iterdir():
        try:
            names.append((t / "comm").read_text().strip())
        except OSError:
            pass  # ended meanwhile
    return names.count("iq_http_stream")


def _connections_to(pid, port):
    """Established TCP connections of process pid to 127.0.0.1:port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote_port = int(fields[2].split(":")[1], 16)
        if remote_port == port and fields[3] == "01" and fields[9] in inodes:
            count += 1
    return count


def test_remote_lookups_go_over_pooled_connections(data, instance):
    """Lookups of keys other instances own equal the truth, and go over
    pooled connections: without TLS, upgraded streams (while the backend
    lives, each owner serves it on a stream thread, at most two, the pool's
    bound, and none once it is gone); with TLS, kept-alive POSTs (no stream
    thread; the backend holds one or two connections to each owner)."""
    keys = [key(n) for n in range(0, N_KEYS, 211)]
    owner = {p: int(psql(instance, f"SELECT port FROM iq_key_owner('order-count', '{k}')"))
             for p, k in {java_partition(k, 3): k for k in keys}.items()}
    others = [i for i in INSTANCES if i != instance and http_port(i) in owner.values()]
    if not others:
        pytest.skip(f"instance {instance} owns every partition")
    tls = psql(instance, "SHOW iq_fdw.ssl_cert_file") != ""
    wait_until(lambda: all(_stream_threads(i) == 0 for i in others), timeout=30,
               message="earlier sessions' streams to close")
    with Session(instance) as s:
        s.run("SET search_path = fdwtest, public")
        backend = int(s.run("SELECT pg_backend_pid()"))
        got = [s.run(f"SELECT coalesce((SELECT count FROM order_count WHERE key = '{k}'), 0)")
               for k in keys]
        assert got == [str(data.counts.get(k, 0)) for k in keys]
        for i in others:
            if tls:
                assert _stream_threads(i) == 0, i
                assert 1 <= _connections_to(backend, http_port(i)) <= 2, i
            else:
                assert 1 <= _stream_threads(i) <= 2, i
    wait_until(lambda: all(_stream_threads(i) == 0 for i in others), timeout=30,
               message="the session's streams to close with it")


@pytest.mark.restarts_cluster
def test_a_peer_restarted_between_queries_still_answers(data):
    """One backend keeps streams to every owner; an owner's worker is killed
    and comes back; the same backend's next query, whose pooled connection
    to it is broken, answers right (asked again on a fresh connection)."""
    keys = [key(n) for n in range(0, N_KEYS, 997)]
    lst = ", ".join(f"'{k}'" for k in keys)
    sql = f"SELECT count(*), sum(count) FROM order_count WHERE key IN ({lst})"
    want = f"{sum(1 for k in keys if k in data.counts)}|{sum(data.counts.get(k, 0) for k in keys)}"
    victim = INSTANCES[-1]
    with Session(1) as s:
        s.run("SET search_path = fdwtest, public")
        assert s.run(sql) == want
        os.kill(_worker_pid(victim), signal.SIGKILL)  # the instance restarts

        def settled():
            if any(psql(i, "SELECT state FROM iq_worker()") != "running" for i in INSTANCES):
                return False
            owners = {psql(i, "SELECT string_agg(port::text, ',' ORDER BY k) FROM "
                              f"(SELECT k, (iq_key_owner('order-count', k)).port FROM "
                              f"unnest(ARRAY[{lst}]) k) o") for i in INSTANCES}
            return len(owners) == 1 and q(2, sql) == want
        wait_until(settled, timeout=180, interval=1, message="the cluster to settle after the kill")
        assert s.run(sql) == want

# ---- an instance whose worker knows no partitions ---------------------------

@pytest.fixture(scope="module")
def lonely_instance():
    """A scratch PostgreSQL with iq_fdw whose worker cannot reach Kafka, so
    it never learns the partitions (port 5441+offset, outside the cluster)."""
    offset = int(os.environ.get("IQ_PORT_OFFSET", "0"))
    port, http = 5441 + offset, 13400 + offset
    with scratch_instance("lonely", port, {"iq_fdw.bootstrap_servers": "127.0.0.1:1",
                                           "iq_fdw.http_listen": f"127.0.0.1:{http}"}):
        yield port


def lonely_psql(port, sql):
    import subprocess
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-q", "-h", "127.0.0.1",
                        "-p", str(port), "-U", "postgres", "-d", "postgres"],
                       input=sql, capture_output=True, text=True, timeout=60)
    return r.stdout.strip(), r.stderr.strip()


def test_no_partitions_fails_with_hint_and_cancels(lonely_instance):
    port = lonely_instance
    out, err = lonely_psql(port, """
        CREATE EXTENSION iq_fdw;
        CREATE SERVER iq FOREIGN DATA WRAPPER iq_fdw;
        IMPORT FOREIGN SCHEMA s FROM SERVER iq INTO public;""")
    assert err == "", err
    start = time.monotonic()
    out, err = lonely_psql(port, "SET iq_fdw.ownership_wait = 700;\n"
                                 "SELECT * FROM order_count WHERE key = '1';")
    took = time.monotonic() - start
    assert "knows no partitions" in err and "iq_worker()" in err, err
    assert 0.6 < took < 5, took
    # a plan needs no worker
    out, err = lonely_psql(port, "EXPLAIN (COSTS OFF) SELECT * FROM customer WHERE key = '1';")
    assert "Key Lookup: key = '1'" in out, (out, err)
    # the wait answers statement_timeout
    start = time.monotonic()
    out, err = lonely_psql(port, "SET iq_fdw.ownership_wait = 60000; SET statement_timeout = 200;\n"
                                 "SELECT * FROM order_count;")
    assert "statement timeout" in err, err
    assert time.monotonic() - start < 3

"""Membership of the consumer group: what queries see while an instance
stops cleanly, is killed, or vanishes (worker/README.md, "Membership").

- A clean stop hands the instance's partitions over at once (a static
  member leaves the group only when it unsubscribes), and queries asking the
  stopping instance wait for the new owner: no query fails, while it stops
  nor when it starts again.
- A worker killed with SIGKILL comes back as the same static member
  (group.instance.id): it gets its partitions back without a rebalance, so
  the other instances never give theirs up.
- An instance stopped with -m immediate hands nothing over: a query for its
  keys waits, up to iq_fdw.ownership_wait, for the group's session timeout
  to move them, and fails with an error naming the instance when that wait
  is shorter; the seed's API answers 503 meanwhile, as for a partition
  moving.
"""

import os
import signal
import subprocess
import threading
import time

import pytest

from conftest import (INSTANCES, SCRIPTS, Session, http_get, http_port, import_stores_sql, java_partition, produce,
                      psql, settled, unique, wait_until)

SETUP = import_stores_sql("membertest", "iq_member")
PARTITIONS = 3
COUNT_SQL = "SELECT count FROM membertest.order_count WHERE key = '{}'"


def instance_script(*args):
    r = subprocess.run([str(SCRIPTS / "instance"), *args], capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, r.stderr
    return r


def stop_immediate(i):
    env = dict(os.environ)
    r = subprocess.run(["bash", "-c", 'source "$1/lib.sh"; as_pg "$PG_BIN/pg_ctl" -D "$IQ_HOME/pg/$2/data" '
                        '-m immediate -w stop', "-", str(SCRIPTS), str(i)],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr


def keys_with_counts(tag):
    """A key per partition, with p + 2 orders each, counted everywhere (the
    stores imported into membertest on every instance)."""
    for i in INSTANCES:
        psql(i, SETUP)
    prefix = unique(tag) + "_"
    keys, j = {}, 0
    while len(keys) < PARTITIONS:
        keys.setdefault(java_partition(f"{prefix}{j}", PARTITIONS), f"{prefix}{j}")
        j += 1
    produce("order", [f"{keys[p]}--food{n}" for p in range(PARTITIONS) for n in range(p + 2)])
    for i in INSTANCES:
        for p, k in keys.items():
            wait_until(lambda: psql(i, COUNT_SQL.format(k)) == str(p + 2), timeout=120,
                       message=f"count of {k} on instance {i}")
    return keys


def settled_with_keys(tag):
    """(who owns what, the last instance, the others, keys_with_counts)."""
    before = wait_until(settled, timeout=180, interval=0.5, message="every worker running")
    last = INSTANCES[-1]
    return before, last, [i for i in INSTANCES if i != last], keys_with_counts(tag)


class QueryLoop:
    """Point lookups of a key of every partition, in a loop, in one session
    per instance asking; every answer recorded."""

    def __init__(self, askers, keys):
        self.keys = keys
        self.stop = threading.Event()
        self.answers = []       # (instance, key, answer)
        self.threads = [threading.Thread(target=self.run, args=(i,)) for i in askers]

    def run(self, i):
        with Session(i) as s:
            s.run("SET iq_fdw.ownership_wait = '60s'")
            while not self.stop.is_set():
                for p, k in self.keys.items():
                    self.answers.append((i, k, s.run(COUNT_SQL.format(k), timeout=120)))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=180)

    def failures(self):
        want = {k: str(p + 2) for p, k in self.keys.items()}
        return [a for a in self.answers if a[2] != want[a[1]]]


@pytest.mark.restarts_cluster
def test_a_clean_stop_and_start_fail_no_query():
    before, gone, askers, keys = settled_with_keys("clean")
    stopped = False
    try:
        with QueryLoop(askers, keys) as loop:
            wait_until(lambda: len(loop.answers) >= 12, timeout=60, message="the loop running")
            instance_script("stop", str(gone))
            stopped = True
            after = wait_until(lambda: settled(askers), timeout=30, interval=0.2,
                               message="the stopped instance's partitions owned by the others")
            assert all(after[p] != gone for p in range(PARTITIONS)), (before, after)
            n = len(loop.answers)
            wait_until(lambda: len(loop.answers) >= n + 12, timeout=60, message="queries after the stop")
            instance_script("start", str(gone))
            stopped = False
            wait_until(settled, timeout=180, interval=0.2, message="the started instance back in the group")
            n = len(loop.answers)
            wait_until(lambda: len(loop.answers) >= n + 12, timeout=60, message="queries after the start")
        assert loop.failures() == [], loop.failures()[:5]
    finally:
        if stopped:
            instance_script("start", str(gone))
        wait_until(settled, timeout=240, interval=0.5, message="the cluster settled after the test")


@pytest.mark.restarts_cluster
def test_a_killed_worker_gets_its_partitions_back_without_a_rebalance():
    before, victim, others, keys = settled_with_keys("kill")
    since = {i: psql(i, "SELECT state_since FROM iq_worker()") for i in others}
    pid = int(psql(victim, "SELECT pid FROM iq_worker()"))
    os.kill(pid, signal.SIGKILL)

    def back():
        try:
            state, parts, new_pid = psql(victim, "SELECT state, assigned_partitions, pid FROM iq_worker()").split("|")
        except Exception:  # noqa: BLE001 (the instance restarts: no connection for a while)
            return None
        return state == "running" and new_pid and int(new_pid) != pid and parts
    wait_until(back, timeout=120, interval=0.2, message="the killed worker's instance running again")
    after = wait_until(settled, timeout=60, interval=0.2, message="every partition held once")
    # the same static member: the same partitions, and nobody else gave any up
    assert after == before, (before, after)
    assert {i: psql(i, "SELECT state_since FROM iq_worker()") for i in others} == since
    # counts exact, before and after more orders
    for i in INSTANCES:
        for p, k in keys.items():
            wait_until(lambda: psql(i, COUNT_SQL.format(k)) == str(p + 2), timeout=120,
                       message=f"count of {k} on instance {i} after the kill")
    produce("order", [f"{k}--again" for k in keys.values()])
    for i in INSTANCES:
        for p, k in keys.items():
            wait_until(lambda: psql(i, COUNT_SQL.format(k)) == str(p + 3), timeout=120,
                       message=f"count of {k} on instance {i} after more orders")


@pytest.mark.restarts_cluster
def test_queries_for_an_owner_gone_wait_for_its_partitions_to_move():
    before, gone, others, keys = settled_with_keys("gone")
    asker = others[0]
    p = next(p for p in range(PARTITIONS) if before[p] == gone)
    k = keys[p]
    stop_immediate(gone)
    try:
        # a wait shorter than the session timeout: the partitions have not moved
        t0 = time.monotonic()
        with Session(asker) as s:
            err = s.run(f"SET iq_fdw.ownership_wait = '1s'; {COUNT_SQL.format(k)}")
        assert time.monotonic() - t0 >= 1.0
        assert "ERROR:  could not reach instance " in err, err
        assert f":{http_port(gone)} to read key '{k}' of store order-count" in err, err
        assert "Could not connect to http" in err and f":{http_port(gone)}/" in err, err
        assert ": Connection refused. Its partitions did not move" in err, err
        assert "did not move to another instance within iq_fdw.ownership_wait = 1000 ms" in err, err
        assert "session timeout" in err, err
        # the seed's API: a get forwarded to the gone owner, and a gather,
        # answer as for a partition moving (retry), naming the owner
        for path in (f"/stores/order-count/get/{k}", "/stores/order-count/all?scope=all"):
            status, body = http_get(asker, path)
            assert status == 503 and f":{http_port(gone)}" in body, (path, status, body[:300])
        # a wait longer than it: a range over every instance, then the key,
        # wait for the new owner and succeed
        prefix = k.rsplit("_", 1)[0] + "_"
        with Session(asker) as s:
            s.run("SET iq_fdw.ownership_wait = '60s'")
            rows = s.run(f"SELECT key, count FROM membertest.order_count WHERE key >= '{prefix}' "
                         f"AND key < '{prefix}~' ORDER BY key", timeout=120)
            out = s.run(COUNT_SQL.format(k), timeout=120)
        assert rows.splitlines() == [f"{keys[q]}|{q + 2}" for q in sorted(keys, key=lambda q: keys[q])], rows
        assert out == str(p + 2), out
        after = wait_until(lambda: settled(others), timeout=60,
                           interval=0.2, message="the gone instance's partitions owned by the others")
        assert after[p] != gone
    finally:
        instance_script("start", str(gone))
        wait_until(settled, timeout=240, interval=0.5, message="the cluster settled after the test")

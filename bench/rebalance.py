#!/usr/bin/env python3
"""bench/rebalance.py: what the instances that stay go through while a
fourth instance joins the group and leaves it again, under
iq_fdw.rebalance_protocol = eager and = cooperative, orders flowing.
Run by bench/rebalance.sh (which starts a 4-instance cluster of its own);
prints a markdown table.

For each protocol the four instances are pointed at topics (6 partitions)
and an application_id of this run (ALTER SYSTEM, reset at the end), under
BENCH_GUARANTEE (default exactly_once); instance 4 is stopped, then
BENCH_ROUNDS times (default 2): started (a join) and stopped cleanly (a
leave, scripts/instance stop).  Meanwhile:

- a producer sends BENCH_RATE orders a second (default 2000), spread
  over every partition;
- a query loop on each of instances 1-3 (one session each) asks the count
  of a key of every partition in turn (iq_fdw.ownership_wait as default);
- a sampler reads iq_worker() and iq_stats() on every instance every 20 ms:
  the partitions it holds, and the order
  offset of each partition, the furthest any instance has counted.

Per event (from the stop or start until the group is settled, plus 3 s):
the seconds to settle, queries and failed queries for keys of partitions
that did not move (same owner before and after; moved ones apart), the
slowest of those queries, the longest time an unmoved partition's owner
was seen without it (revoked; iq_worker's assigned_partitions), and the
longest time the counting of an unmoved partition did not advance.  The quiet row is the same figures over 10 s
with no event, as a floor.
"""

import collections
import os
import subprocess
import sys
import threading
import time

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from conftest import (BOOTSTRAP, INSTANCES, SCRIPTS, create_topic, java_partition, pg_port, psql,  # noqa: E402
                      settled, unique, wait_until)

PARTITIONS = 6
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
RATE = int(os.environ.get("BENCH_RATE", "2000"))
GUARANTEE = os.environ.get("BENCH_GUARANTEE", "exactly_once")
JOINER = INSTANCES[-1]
STAYS = [i for i in INSTANCES if i != JOINER]
SCHEMA = "rbbench"


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def connect(i):
    c = psycopg2.connect(host="127.0.0.1", port=pg_port(i), user="postgres", dbname="postgres",
                         connect_timeout=5)
    c.autocommit = True
    return c


def engine_pid(i):
    try:
        return psql(i, "SELECT pid FROM iq_worker()", timeout=10)
    except Exception:  # noqa: BLE001 (stopped or restarting)
        return None


def instance(cmd, i):
    subprocess.run([str(SCRIPTS / "instance"), cmd, str(i)], check=True, capture_output=True,
                   timeout=180)


def apply(statements, who, partitions):
    before = {i: engine_pid(i) for i in who}
    for i in who:
        psql(i, ";\n".join(statements) + ";\nSELECT pg_reload_conf()")
    wait_until(lambda: all(engine_pid(i) not in (None, "", before[i]) for i in who)
               and settled(who, partitions=partitions),
               timeout=240, interval=0.5, message=f"engines restarted with {statements}")


class Producer(threading.Thread):
    """RATE orders a second into one kcat process, keys over every partition."""

    def __init__(self, topic):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.proc = subprocess.Popen(["kcat", "-b", BOOTSTRAP, "-P", "-t", topic, "-K", "--",
                                      "-X", "partitioner=murmur2_random", "-X", "linger.ms=5"],
                                     stdin=subprocess.PIPE, text=True)

    def run(self):
        n, t0 = 0, time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - t0) * RATE)
            if due > n:
                self.proc.stdin.write("".join(f"o{j % 600}--d{j}\n" for j in range(n, due)))
                self.proc.stdin.flush()
                n = due
            time.sleep(0.005)
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Sampler:
    """Every 20 ms, on every instance that answers (a thread each): its
    assigned partitions (iq_worker) and the order offset of each partition
    (iq_stats), the furthest any instance has counted."""

    def __init__(self):
        self.stop = threading.Event()
        self.points = []                # (t, partition, new furthest offset)
        self.held = []                  # (t, instance, frozenset of partitions)
        self.best = collections.defaultdict(lambda: -1)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in INSTANCES]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self, timeout=None):
        for t in self.threads:
            t.join(timeout)

    def run(self, i):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = connect(i)
                with conn.cursor() as cur:
                    cur.execute("SELECT assigned_partitions FROM iq_worker()")
                    parts = cur.fetchone()[0]
                    cur.execute("SELECT partition, order_offset FROM iq_stats()")
                    rows = cur.fetchall()
            except Exception:  # noqa: BLE001 (down, starting)
                conn = None
                time.sleep(0.1)
                continue
            now = time.monotonic()
            with self.lock:
                self.held.append((now, i, frozenset(parts or ())))
                for p, off in rows:
                    if off is not None and off > self.best[p]:
                        self.best[p] = off
                        self.points.append((now, p, off))
            time.sleep(0.02)

    def longest_pause(self, partitions, t0, t1):
        """Longest time in [t0, t1] an offset of partitions did not advance."""
        worst = 0.0
        for p in partitions:
            ts = [t0] + [t for t, q, _ in self.points if q == p and t0 < t < t1] + [t1]
            worst = max(worst, max(b - a for a, b in zip(ts, ts[1:])))
        return worst

    def longest_unassigned(self, owner, partitions, t0, t1):
        """Longest time in [t0, t1] the owner of one of partitions (the same
        before and after) was seen without it: from the first sample
        lacking it to the next sample holding it."""
        worst = 0.0
        for p in partitions:
            since = None
            for t, i, parts in self.held:
                if i != owner[p] or not t0 <= t < t1:
                    continue
                if p not in parts and since is None:
                    since = t
                elif p in parts and since is not None:
                    worst, since = max(worst, t - since), None
            if since is not None:
                worst = max(worst, t1 - since)
        return worst


class Queries(threading.Thread):
    """Point lookups of keys[p] for every p on instance i: (t, p, ok, seconds)."""

    def __init__(self, i, keys, answers):
        super().__init__(daemon=True)
        self.i, self.keys, self.answers = i, keys, answers
        self.stop = threading.Event()

    def run(self):
        conn = connect(self.i)
        while not self.stop.is_set():
            for p, k in self.keys.items():
                t = time.monotonic()
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"SELECT count FROM {SCHEMA}.order_count WHERE key = %s", (k,))
                        cur.fetchall()
                    ok = True
                except psycopg2.Error as e:
                    ok = False
                    log(f"instance {self.i}: key {k}: {str(e).strip().splitlines()[0]}")
                    if conn.closed:
                        conn = connect(self.i)
                self.answers.append((t, self.i, p, ok, time.monotonic() - t))


def figures(name, t0, t1, settle, before, after, sampler, answers):
    moved = {p for p in range(PARTITIONS) if before.get(p) != after.get(p)}
    still = [p for p in range(PARTITIONS) if p not in moved]
    mine = [a for a in answers if t0 <= a[0] < t1 and a[2] in still]
    theirs = [a for a in answers if t0 <= a[0] < t1 and a[2] in moved]
    return {"event": name, "settle": settle, "moved": len(moved),
            "queries": len(mine), "failed": sum(1 for a in mine if not a[3]),
            "slowest": max((a[4] for a in mine), default=0.0),
            "pause": sampler.longest_pause(still, t0, t1),
            "revoked": sampler.longest_unassigned(after, still, t0, t1),
            "moved_failed": sum(1 for a in theirs if not a[3]),
            "moved_pause": sampler.longest_pause(sorted(moved), t0, t1) if moved else 0.0}


def run_protocol(protocol):
    customer, order, app = unique("rbcust"), unique("rbord"), unique(f"rb{protocol}")
    create_topic(customer, PARTITIONS, cleanup_policy="compact")
    create_topic(order, PARTITIONS)
    names = ("application_id", "customer_topic", "order_topic", "processing_guarantee",
             "rebalance_protocol")
    values = (app, customer, order, GUARANTEE, protocol)
    rows = []
    log(f"{protocol}: pointing the instances at {order}")
    apply([f"ALTER SYSTEM SET iq_fdw.{n} = '{v}'" for n, v in zip(names, values)], INSTANCES, PARTITIONS)
    try:
        instance("stop", JOINER)
        wait_until(lambda: settled(STAYS, partitions=PARTITIONS), timeout=120, interval=0.2,
                   message="the three instances holding every partition")
        psql(STAYS[0], f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};"
                       f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_foreign_server WHERE srvname = 'iq_rb') "
                       f"THEN CREATE SERVER iq_rb FOREIGN DATA WRAPPER iq_fdw; END IF; END $$;"
                       f"IMPORT FOREIGN SCHEMA stores FROM SERVER iq_rb INTO {SCHEMA}")
        for i in STAYS[1:]:
            psql(i, f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE; CREATE SCHEMA {SCHEMA};"
                    f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_foreign_server WHERE srvname = 'iq_rb') "
                    f"THEN CREATE SERVER iq_rb FOREIGN DATA WRAPPER iq_fdw; END IF; END $$;"
                    f"IMPORT FOREIGN SCHEMA stores FROM SERVER iq_rb INTO {SCHEMA}")
        keys, j = {}, 0
        while len(keys) < PARTITIONS:
            keys.setdefault(java_partition(f"o{j}", PARTITIONS), f"o{j}")
            j += 1
        answers = []
        producer, sampler = Producer(order), Sampler()
        loops = [Queries(i, keys, answers) for i in STAYS]
        for t in [producer, sampler, *loops]:
            t.start()
        try:
            time.sleep(10)   # every partition counting, the leave before long done
            owner = settled(STAYS, partitions=PARTITIONS)
            t0 = time.monotonic()
            time.sleep(10)
            log(f"{protocol} quiet: pause per partition (ms)",
                {p: round(sampler.longest_pause([p], t0, time.monotonic()) * 1000) for p in range(PARTITIONS)})
            rows.append(figures("quiet", t0, time.monotonic(), 0.0, owner, owner, sampler, answers))
            for r in range(ROUNDS):
                for event, cmd, who in (("join", "start", INSTANCES), ("leave", "stop", STAYS)):
                    before = settled(INSTANCES if event == "leave" else STAYS, partitions=PARTITIONS)
                    t0 = time.monotonic()
                    instance(cmd, JOINER)

                    def done():
                        o = settled(who, partitions=PARTITIONS)
                        return o if o and (event == "leave" or JOINER in o.values()) else None
                    after = wait_until(done, timeout=180, interval=0.05, message=f"the {event} settled")
                    settle = time.monotonic() - t0
                    time.sleep(3)
                    rows.append(figures(event, t0, time.monotonic(), settle, before, after, sampler, answers))
                    log(f"{protocol} {event} {r + 1}: {rows[-1]}")
        finally:
            for t in [producer, sampler, *loops]:
                t.stop.set()
            for t in [producer, sampler, *loops]:
                t.join(timeout=120)
    finally:
        if engine_pid(JOINER) is None:
            instance("start", JOINER)
        apply([f"ALTER SYSTEM RESET iq_fdw.{n}" for n in names], INSTANCES, 3)
    return rows


def main():
    assert len(INSTANCES) == 4, f"needs a cluster of 4 instances, not {len(INSTANCES)} (bench/rebalance.sh)"
    results = {p: run_protocol(p) for p in sys.argv[1:] or ("eager", "cooperative")}
    print(f"\n{GUARANTEE}, {RATE} orders/s over {PARTITIONS} partitions, instance {JOINER} joining "
          f"and leaving (clean stop) a group of {len(STAYS)}; queries on instances {STAYS}; "
          f"\"unmoved\": partitions with the same owner before and after\n")
    print("| protocol | event | settle s | moved | queries (unmoved) | failed | slowest ms | "
          "unmoved: longest unassigned ms | unmoved: longest pause of counting ms | "
          "moved: failed / pause ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for protocol, rows in results.items():
        for f in rows:
            print(f"| {protocol} | {f['event']} | {f['settle']:.1f} | {f['moved']} | {f['queries']} | "
                  f"{f['failed']} | {f['slowest'] * 1000:.0f} | {f['revoked'] * 1000:.0f} | "
                  f"{f['pause'] * 1000:.0f} | "
                  f"{f['moved_failed']} / {f['moved_pause'] * 1000:.0f} |")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/standby.py: what standby replicas (issue 18) buy and cost,
iq_fdw.standby_replicas = 0 against 1 side by side in one run, on a
cluster of three instances (bench/standby.sh starts one of its own).

    IQ_PORT_OFFSET=... IQ_LIB_DIR=$PWD bench/standby.py [KEYS]   (default 1000000)

Each setting gets a pipeline of its own (topics, application id; the
default at_least_once), then:
- ingest: KEYS orders over KEYS new keys, produced with kcat (murmur2, as
  the Java producer) while the engines run, BENCH_ROUNDS times (default 2);
  records/s from the first record produced to every owner caught up (and,
  with standbys, the seconds until every standby has lag 0 too);
- memory and disk: the engines' resident memory (VmRSS of iq_worker()'s
  pid) and du of the application's state directories, summed over the
  instances, once caught up;
- failover: orders flowing (some 1,000 a second), a query load on every
  instance (point lookups of random keys, read_from = owner_or_standby),
  and on an instance that neither owns partition 0 nor keeps its standby
  two loops reading a key of partition 0, one with owner_or_standby and one
  with owner; partition 0's owner is stopped with pg_ctl -m immediate:
  seconds from the stop to each loop's first answer (asked after the stop),
  and to the group's move; the records the new owner restored against the
  partition's changelog. The stopped instance is started again.
Prints a markdown table. Run from the repository on a cluster of its own.
"""

import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, SCRIPTS, Session, assignment, create_topic,  # noqa: E402
                      import_stores_sql, java_partition, psql, settled, unique, wait_until)

PARTITIONS = 3
SCHEMA = "stbbench"


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def apply_settings(settings):
    """ALTER SYSTEM on every instance, reload, wait for the restarted engines and a settled group."""
    show = "".join(f"SHOW {n};\n" for n in settings)
    before = {i: (psql(i, show), assignment(i)[2]) for i in INSTANCES}
    sql = "".join(f"ALTER SYSTEM RESET {k};\n" if v is None else f"ALTER SYSTEM SET {k} = '{v}';\n"
                  for k, v in settings.items())
    for i in INSTANCES:
        psql(i, sql + "SELECT pg_reload_conf();")
    time.sleep(0.5)
    changed = [i for i in INSTANCES if psql(i, show) != before[i][0]]
    wait_until(lambda: all(assignment(i)[2] not in (None, before[i][1]) for i in changed)
               and settled(partitions=PARTITIONS), timeout=300, interval=0.5,
               message=f"engines restarted with {settings}")


def rows(i):
    """iq_stats of instance i: [(partition, role, lag, order_end_offset, restored_records, state)]."""
    out = psql(i, "SELECT partition, role, lag, order_end_offset, restored_records, state FROM iq_stats()")
    return [(int(a), b, int(c), int(d), int(e), f) for a, b, c, d, e, f in
            (line.split("|") for line in out.splitlines())]


def owners_caught_up(total):
    """Every partition owned, lag 0, and the order topic's ends sum to total."""
    got = [r for i in INSTANCES for r in rows(i) if r[1] == "owner"]
    return (len(got) == PARTITIONS and all(r[2] == 0 and r[5] != "restoring" for r in got)
            and sum(r[3] for r in got) >= total)


def standbys_caught_up(n):
    got = [r for i in INSTANCES for r in rows(i) if r[1] == "standby"]
    return len(got) == n * PARTITIONS and all(r[2] == 0 for r in got)


def standby_of(p):
    return next((i for i in INSTANCES for r in rows(i) if r[0] == p and r[1] == "standby"), None)


def rss_mb():
    total = 0
    for i in INSTANCES:
        pid = assignment(i)[2]
        with open(f"/proc/{pid}/status") as f:
            total += int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))
    return total / 1024


def disk_mb(app):
    """Blocks in use (du -sk: RocksDB preallocates its files, so their sizes say less)."""
    dirs = [str(IQ_HOME / "pg" / str(i) / "data" / "iq_fdw" / app) for i in INSTANCES]
    out = subprocess.run(["du", "-sk", *[d for d in dirs if os.path.isdir(d)]], capture_output=True,
                         text=True, check=True).stdout
    return sum(int(line.split()[0]) for line in out.splitlines()) / 1024


def changelog_end(app, p):
    r = subprocess.run(["kcat", "-b", BOOTSTRAP, "-Q", "-t", f"{app}-order-count-changelog:{p}:-1"],
                       capture_output=True, text=True, timeout=30, check=True)
    return int(re.search(rf"\[{p}\] offset (\d+)", r.stdout).group(1))


def kcat_produce(topic, path):
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", topic, "-K", "--", "-X", "partitioner=murmur2_random",
                    "-X", "linger.ms=20", "-l", path], check=True, timeout=1800)


class Loop(threading.Thread):
    """Point lookups on instance i, one session, each answer kept as (asked, answered, ok)."""

    def __init__(self, i, mode, keys):
        super().__init__(daemon=True)
        self.i, self.mode, self.keys = i, mode, keys
        self.reads, self.halt = [], threading.Event()

    def run(self):
        rnd = random.Random(self.i)
        try:
            with Session(self.i) as s:
                s.run(f"SET iq_fdw.read_from = '{self.mode}'; SET iq_fdw.ownership_wait = '2s'; "
                      "SET statement_timeout = '30s'")
                while not self.halt.is_set():
                    k = rnd.choice(self.keys)
                    t0 = time.monotonic()
                    out = s.run(f"SELECT count FROM {SCHEMA}.order_count WHERE key = '{k}'", timeout=60)
                    self.reads.append((t0, time.monotonic(), re.fullmatch(r"\d+", out.strip()) is not None))
        except AssertionError:
            pass  # the instance was stopped under this session

    def first_ok_after(self, t):
        return next((b - t for a, b, ok in self.reads if a >= t and ok), None)


class Flow(threading.Thread):
    """Orders to random keys, some 1,000 a second."""

    def __init__(self, topic, keys):
        super().__init__(daemon=True)
        self.topic, self.keys, self.halt = topic, keys, threading.Event()

    def run(self):
        rnd = random.Random(7)
        while not self.halt.is_set():
            data = "".join(f"{rnd.choice(self.keys)}--flow\n" for _ in range(500))
            subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", self.topic, "-K", "--", "-X",
                            "partitioner=murmur2_random"], input=data, text=True, timeout=120)
            self.halt.wait(0.5)


def stop_immediate(i):
    subprocess.run(["bash", "-c", 'source "$1/lib.sh"; as_pg "$PG_BIN/pg_ctl" -D "$IQ_HOME/pg/$2/data" '
                    '-m immediate -w stop', "-", str(SCRIPTS), str(i)], check=True, capture_output=True, timeout=120)


ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def rekeyed(path, suffix):
    """A copy of the batch at path whose keys end with suffix."""
    out = path + "." + suffix
    with open(path) as src, open(out, "w") as dst:
        for line in src:
            k, v = line.split("--", 1)
            dst.write(f"{k}{suffix}--{v}")
    return out


def run(n_standby, n_keys, batch_path, keys):
    fig = {}
    customer, order, app = unique("sbcust"), unique("sbord"), unique("sbapp")
    create_topic(customer, PARTITIONS, cleanup_policy="compact")
    create_topic(order, PARTITIONS)
    log(f"standby_replicas = {n_standby}: pipeline {app}")
    apply_settings({"iq_fdw.customer_topic": customer, "iq_fdw.order_topic": order,
                    "iq_fdw.application_id": app, "iq_fdw.standby_replicas": str(n_standby)})
    for i in INSTANCES:
        psql(i, import_stores_sql(SCHEMA, "iq_stbbench"))
    if n_standby:
        wait_until(lambda: standbys_caught_up(n_standby), timeout=120, interval=0.5, message="standbys placed")

    rates, caught = [], []
    for r in range(ROUNDS):
        # round r: the batch's keys with a suffix of their own, all new to the store
        path = batch_path if r == 0 else rekeyed(batch_path, f"r{r}")
        t0 = time.monotonic()
        kcat_produce(order, path)
        wait_until(lambda: owners_caught_up(n_keys * (r + 1)), timeout=1800, interval=0.2,
                   message="owners caught up")
        rates.append(n_keys / (time.monotonic() - t0))
        if n_standby:
            wait_until(lambda: standbys_caught_up(n_standby), timeout=1800, interval=0.2,
                       message="standbys caught up")
            caught.append(time.monotonic() - t0)
        if path != batch_path:
            os.unlink(path)
    fig["ingest"] = " / ".join(f"{v:,.0f}" for v in rates)
    if caught:
        fig["standby_caught_up_s"] = " / ".join(f"{v:.1f}" for v in caught)
    time.sleep(2)
    fig["rss_mb"], fig["disk_mb"] = rss_mb(), disk_mb(app)
    log(f"ingest {fig['ingest']} rec/s, RSS {fig['rss_mb']:.0f} MB, disk {fig['disk_mb']:.0f} MB")

    owners = settled(partitions=PARTITIONS)
    p = 0
    victim = owners[p]
    sb = standby_of(p) if n_standby else None
    asker = next(i for i in INSTANCES if i not in (victim, sb))
    keys_p = [k for k in keys[:20000] if java_partition(k, PARTITIONS) == p]
    flow = Flow(order, keys[:100000])
    load = [Loop(i, "owner_or_standby", keys[:100000]) for i in INSTANCES]
    probes = {m: Loop(asker, m, keys_p) for m in ("owner_or_standby", "owner")}
    flow.start()
    for t in load + list(probes.values()):
        t.start()
    wait_until(lambda: all(sum(ok for _, _, ok in t.reads) >= 5 for t in probes.values()), timeout=60,
               message="the probes answering")
    time.sleep(2)
    log_from = {i: (IQ_HOME / "pg" / str(i) / "server.log").stat().st_size for i in INSTANCES}
    engine = assignment(victim)[2]
    t_stop = time.monotonic()
    stop_immediate(victim)
    # the engine outlives pg_ctl by a moment and answers meanwhile: time from its end
    wait_until(lambda: not os.path.exists(f"/proc/{engine}"), timeout=60, interval=0.01,
               message="the stopped owner's engine gone")
    fig["engine_gone_s"] = time.monotonic() - t_stop
    t_stop = time.monotonic()
    others = [i for i in INSTANCES if i != victim]
    after = wait_until(lambda: settled(others, partitions=PARTITIONS), timeout=120, interval=0.1,
                       message="the partitions moved")
    fig["moved_s"] = time.monotonic() - t_stop
    for m, t in probes.items():
        wait_until(lambda: t.first_ok_after(t_stop) is not None, timeout=120, message=f"a {m} answer")
        fig[f"first_{m}_s"] = t.first_ok_after(t_stop)
    new_owner = after[p]
    row = wait_until(lambda: next((r for r in rows(new_owner) if r[0] == p and r[1] == "owner"
                                   and r[5] != "restoring"), None), timeout=600, message="the restore done")
    fig["restored"], fig["changelog"] = row[4], changelog_end(app, p)
    text = (IQ_HOME / "pg" / str(new_owner) / "server.log").read_bytes()[log_from[new_owner]:].decode(errors="replace")
    m = re.findall(rf'restored partition {p} of "[^"]*": (\d+) records in ([0-9.]+) s', text)
    fig["restore_log"] = f"{m[-1][0]} in {m[-1][1]} s" if m else "no line"
    fig["new_owner_was_standby"] = new_owner == sb
    flow.halt.set()
    for t in load + list(probes.values()):
        t.halt.set()
    flow.join(timeout=120)
    for t in probes.values():
        t.join(timeout=120)
    subprocess.run([str(SCRIPTS / "instance"), "start", str(victim)], check=True, capture_output=True, timeout=300)
    wait_until(lambda: settled(partitions=PARTITIONS), timeout=300, interval=0.5, message="the group whole again")
    for t in load:
        t.join(timeout=120)
    log(f"failover: {fig}")
    return fig


def main():
    n_keys = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    wait_until(lambda: settled(partitions=PARTITIONS), timeout=300, interval=0.5, message="the cluster settled")
    prefix = unique("sb") + "_"
    keys = [f"{prefix}{j}" for j in range(n_keys)]
    with tempfile.NamedTemporaryFile("w", suffix=".orders", delete=False) as f:
        f.writelines(f"{k}--o\n" for k in keys)
        batch = f.name
    random.Random(1).shuffle(keys)
    try:
        figs = {s: run(s, n_keys, batch, keys) for s in (0, 1)}
    finally:
        os.unlink(batch)
        apply_settings(dict.fromkeys(("iq_fdw.customer_topic", "iq_fdw.order_topic", "iq_fdw.application_id",
                                      "iq_fdw.standby_replicas")))

    def cell(s, k, fmt):
        v = figs[s].get(k)
        return "-" if v is None else fmt.format(v)
    lines = [
        (f"ingest, {n_keys:,} orders over as many new keys (records/s, each round)", "ingest", "{}"),
        ("standbys caught up after the batch's first record (s, each round)", "standby_caught_up_s", "{}"),
        ("engines' RSS, 3 instances (MB)", "rss_mb", "{:.0f}"),
        ("state directories, 3 instances, du -k (MB)", "disk_mb", "{:.0f}"),
        ("owner stopped -m immediate, from its engine's end: first answer, owner_or_standby (s)",
         "first_owner_or_standby_s", "{:.2f}"),
        ("same, read_from = owner (s)", "first_owner_s", "{:.2f}"),
        ("the stopped owner's engine gone after pg_ctl returned (s)", "engine_gone_s", "{:.2f}"),
        ("the group moved the partition, from the engine's end (s)", "moved_s", "{:.1f}"),
        ("records restored by the new owner", "restored", "{:,}"),
        ("changelog of the partition (records)", "changelog", "{:,}"),
        ("restore log line", "restore_log", "{}"),
        ("new owner held the standby", "new_owner_was_standby", "{}"),
    ]
    print(f"\nstandby replicas, {n_keys:,} keys, 3 instances ({time.strftime('%Y-%m-%d')})\n")
    print("| figure | standby_replicas = 0 | standby_replicas = 1 |\n|---|---|---|")
    for label, k, fmt in lines:
        print(f"| {label} | {cell(0, k, fmt)} | {cell(1, k, fmt)} |")


if __name__ == "__main__":
    main()

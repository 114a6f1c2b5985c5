"""Issue 12, the worker's lifecycle and state: iq_worker() comes back to
"running" when the servers recover, and says "stalled" when the main thread
makes no progress while it has work; a reload leaks nothing; a stop and the
postmaster's death end every wait of the worker within seconds, even when
the broker is down.

The tests that stop instances or the broker are marked restarts_cluster
(they run last) and leave the cluster running and settled.
"""

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, SCRIPTS, freeze, http_json, http_port,
                      import_stores_sql, kafka, pg_port, port_busy, produce,
                      psql, thaw, unique, wait_until)


def worker(i):
    """(state, message, pid) of iq_worker() on instance i."""
    state, message, pid = psql(i, "SELECT state, message, pid FROM iq_worker()").split("|")
    return state, message, int(pid) if pid else None


def all_running():
    held = []
    for i in INSTANCES:
        state, _, _ = worker(i)
        if state != "running":
            return False
        held += [int(p) for p in psql(i, "SELECT assigned_partitions FROM iq_worker()")
                 .strip("{}").split(",") if p]
    return sorted(held) == list(range(3))


def wait_all_running(timeout=180):
    wait_until(all_running, timeout=timeout, interval=0.5, message="every worker running")


def instance_script(*args, timeout=120):
    return subprocess.run([str(SCRIPTS / "instance"), *args], capture_output=True, text=True,
                          timeout=timeout)


def data_dir(i):
    return IQ_HOME / "pg" / str(i) / "data"


def postmaster_pid(i):
    return int((data_dir(i) / "postmaster.pid").read_text().split()[0])


def alive(pid):
    """pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def processes_of(i):
    """Pids whose command line names instance i's data directory and their
    descendants: the postmaster, its children, and the engine the
    supervisor forked."""
    want = str(data_dir(i))
    pids = set()
    parent = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent[int(p.name)] = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if want in cmd:
            pids.add(int(p.name))
    grown = True
    while grown:
        more = {p for p, pp in parent.items() if pp in pids and p not in pids}
        pids |= more
        grown = bool(more)
    return {p for p in pids if alive(p)}


def time_until_gone(pids, timeout):
    """Seconds until none of pids is alive; fail after timeout."""
    t0 = time.monotonic()
    wait_until(lambda: not any(alive(p) for p in pids), timeout=timeout, interval=0.05,
               message=f"processes {sorted(pids)} gone")
    return time.monotonic() - t0


def explain_rows(i, table):
    plan = psql(i, f"EXPLAIN SELECT * FROM {table}")
    return int(re.search(r"rows=(\d+)", plan).group(1))


@pytest.fixture(scope="module", autouse=True)
def settled():
    wait_all_running()
    yield
    wait_all_running()


# ---- item 7: the state after the servers recover ------------------------------

@pytest.mark.restarts_cluster
def test_state_returns_to_running_once_the_http_port_is_free_and_estimates_work_again():
    """The HTTP port is taken when the worker starts: "error" naming
    iq_fdw.http_listen, and no remote estimate (the planner's default of
    1000 rows).  Once the port is free the servers start on their next
    retry and the worker is "running" again, estimates included; before,
    the error stayed until the next rebalance."""
    i = INSTANCES[-1]
    prefix = unique("lest") + "_"
    # enough keys that an estimate from the store is far from the default
    produce("order", [f"{prefix}{k}--x" for k in range(4000)])
    psql(i, import_stores_sql("life_est", "life_est_srv"))
    wait_until(lambda: explain_rows(i, "life_est.order_count") >= 2000, timeout=60,
               message="an estimate from the stores")
    pid = worker(i)[2]
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        psql(i, f"ALTER SYSTEM SET iq_fdw.http_listen = '127.0.0.1:{port}'; SELECT pg_reload_conf()")
        wait_until(lambda: (w := worker(i))[2] != pid and w[0] == "error"
                   and "iq_fdw.http_listen" in w[1] and str(port) in w[1],
                   timeout=120, interval=0.3, message="the restarted worker naming the busy port")
        assert explain_rows(i, "life_est.order_count") == 1000
        s.close()
        # the servers retry with a backoff of 1 s doubling to 30 s
        wait_until(lambda: worker(i)[0] == "running", timeout=90, interval=0.5,
                   message="the worker running again once the port is free")
        assert worker(i)[1] == ""
        wait_until(lambda: explain_rows(i, "life_est.order_count") >= 2000, timeout=30,
                   message="estimates from the stores again")
    finally:
        s.close()
        psql(i, "ALTER SYSTEM RESET iq_fdw.http_listen; SELECT pg_reload_conf()")
        wait_until(lambda: psql(i, "SHOW iq_fdw.http_listen") == f"127.0.0.1:{http_port(i)}",
                   timeout=30, message="setting reset")
        wait_until(lambda: http_json(i, "/metadata"), timeout=120,
                   message=f"instance {i} serving HTTP on its own port")
        wait_all_running()
        psql(i, "DROP SCHEMA life_est CASCADE")


# ---- item 7: the watchdog -----------------------------------------------------

def watchdog(i, bound):
    """state|message of iq_worker() on instance i under iq_fdw.stall_timeout = bound."""
    return psql(i, f"SET iq_fdw.stall_timeout = '{bound}'; "
                   f"SELECT state, message FROM iq_worker()").splitlines()[-1]


def lag(i, partition):
    out = psql(i, f"SELECT lag FROM iq_stats() WHERE partition = {partition}")
    return int(out) if out else 0


def owner_of(partition):
    for i in INSTANCES:
        if psql(i, f"SELECT {partition} = ANY(assigned_partitions) FROM iq_worker()") == "t":
            return i
    return None


def kcat_orders(partition, n, prefix):
    data = "".join(f"{prefix}{k % 500}--x\n" for k in range(n))
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", "order", "-p", str(partition), "-K", "--"],
                   input=data, text=True, check=True, timeout=120)


# the group's session timeout (consumer.c): a worker frozen longer loses its
# partitions, and a frozen worker's late writes are not what this tests
SESSION_TIMEOUT = 10


def freeze_with_a_backlog(i, partition, attempts=6):
    """Freeze instance i's worker while its shared state shows a backlog of
    partition; return its pid (frozen).  Each freeze is kept well inside
    the session timeout."""
    for attempt in range(attempts):
        pid = worker(i)[2]
        freeze(pid)
        t0 = time.monotonic()
        try:
            kcat_orders(partition, 200_000, unique("lstall"))
        finally:
            thaw(pid)
        assert time.monotonic() - t0 < SESSION_TIMEOUT / 2, "producing took too long"
        try:
            wait_until(lambda: lag(i, partition) > 1, timeout=30, interval=0.01,
                       message="a backlog shown")
        except AssertionError:
            continue
        freeze(pid)
        if lag(i, partition) > 1:
            return pid
        thaw(pid)
    pytest.fail(f"no backlog seen on instance {i} in {attempts} attempts")


def test_a_frozen_worker_with_a_backlog_is_stalled_then_running_again():
    """SIGSTOP stops the whole worker, so nothing it could say would be
    heard; the backend sees the progress time stand still while the
    published backlog remains, and says "stalled", naming the step.  Thawed,
    it is running again."""
    i = owner_of(0)
    pid = freeze_with_a_backlog(i, 0)
    try:
        # under the default bound (30 s) a second is no stall
        assert psql(i, "SELECT state FROM iq_worker()") == "running"
        out = wait_until(lambda: (r := watchdog(i, "1s")).startswith("stalled|") and r,
                         timeout=SESSION_TIMEOUT / 2, interval=0.2,
                         message="iq_worker() saying stalled")
        assert re.search(r"no progress for \d+ s while .*; the state before: running", out), out
    finally:
        thaw(pid)
    # any state but stalled will do (a slow machine may have rebalanced),
    # then the cluster settles
    wait_until(lambda: not watchdog(i, "1s").startswith("stalled|"), timeout=60, interval=0.5, message="not stalled once thawed")
    wait_all_running()
    wait_until(lambda: lag(owner_of(0), 0) <= 1, timeout=180, interval=1,
               message="the backlog processed")


def test_an_idle_worker_is_never_stalled():
    """No backlog and nothing under way: however long nothing happens, it is
    not a stall (the worker waits for records)."""
    i = INSTANCES[0]
    time.sleep(2.5)
    out = watchdog(i, "1s")
    assert out.startswith("running|"), out


# ---- item 9: reloads leak nothing ---------------------------------------------

def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def reloads(i, n):
    """n reloads, paced so that the worker handles each (signals coalesce)."""
    psql(i, f"DO $$ BEGIN FOR j IN 1..{n} LOOP PERFORM pg_reload_conf(); "
            f"PERFORM pg_sleep(0.004); END LOOP; END $$", timeout=600)


@pytest.mark.skipif(os.environ.get("IQ_ASAN") == "1",
                    reason="under ASan freed memory waits in its quarantine, so RSS measures nothing")
def test_reloads_do_not_grow_the_worker():
    """Each reload used to leave a copy of the worker's settings in
    TopMemoryContext (some 450 bytes: 1.3 MB over 3000 reloads); now 0."""
    i = INSTANCES[0]
    pid = worker(i)[2]
    reloads(i, 200)             # warm up: whatever is allocated once
    time.sleep(6)               # the worker trims its heap every 5 s
    before = rss_kb(pid)
    reloads(i, 3000)
    time.sleep(6)
    after = rss_kb(pid)
    assert worker(i)[2] == pid, "the worker restarted: nothing changed, nothing to restart for"
    assert after - before < 512, f"VmRSS grew from {before} kB to {after} kB over 3000 reloads"


# ---- item 9: stops and the postmaster's death end every wait ------------------

@pytest.fixture
def broker_stopped():
    kafka("stop")
    try:
        yield
    finally:
        kafka("start", timeout=180)
        for i in INSTANCES:
            if instance_script("status", str(i)).stdout.find(" up ") < 0:
                instance_script("start", str(i), timeout=180)
        wait_all_running(timeout=300)


def start_without_broker(i):
    """Start instance i while the broker is down: its worker waits for
    Kafka in the pipeline's first metadata request (10 s in all)."""
    r = instance_script("start", str(i), timeout=180)
    assert r.returncode == 0, r.stderr
    pid = wait_until(lambda: worker(i)[2], timeout=30, message="the worker's pid")
    time.sleep(2)   # well inside the 10 s metadata wait
    return pid


@pytest.mark.restarts_cluster
def test_stop_while_the_broker_is_down_takes_seconds(broker_stopped):
    """A running worker whose broker went away: nothing is left to write,
    the offsets are committed already, so the stop does not wait 10 s for a
    commit nobody answers; a worker starting up stops at once."""
    i = INSTANCES[-1]
    time.sleep(3)
    pid = worker(i)[2]
    t0 = time.monotonic()
    r = instance_script("stop", str(i))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert not alive(pid)
    assert took < 7, f"stopping instance {i} with the broker down took {took:.1f} s"

    pid = start_without_broker(i)
    t0 = time.monotonic()
    r = instance_script("stop", str(i))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert not alive(pid)
    assert took < 5, f"stopping a worker waiting for the broker took {took:.1f} s"


@pytest.mark.restarts_cluster
def test_postmaster_killed_while_the_worker_waits_for_the_broker(broker_stopped):
    """SIGKILL of the postmaster: the worker, in the middle of a wait for
    the broker, exits within a couple of seconds, leaving no process of the
    instance behind (which would keep the shared memory and the ports)."""
    i = INSTANCES[-1]
    r = instance_script("stop", str(i))
    assert r.returncode == 0, r.stderr
    wpid = start_without_broker(i)
    pm = postmaster_pid(i)
    procs = processes_of(i)
    assert wpid in procs and pm in procs, (wpid, pm, procs)
    os.kill(pm, signal.SIGKILL)
    took = time_until_gone({wpid}, timeout=30)
    assert took < 3, f"the worker outlived its postmaster by {took:.1f} s"
    time_until_gone(procs, timeout=30)
    assert not port_busy(http_port(i)) and not port_busy(pg_port(i))
    # every process of the instance is gone, but the killed postmaster may
    # stay a zombie for a while (until pid 1 reaps it), which pg_ctl and the
    # next postmaster take for a running server: its lock files go
    (data_dir(i) / "postmaster.pid").unlink()
    for lock in (IQ_HOME / "run").glob(f".s.PGSQL.{pg_port(i)}.lock"):
        lock.unlink()
    r = instance_script("start", str(i), timeout=180)
    assert r.returncode == 0, r.stderr

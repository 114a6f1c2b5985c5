"""faults/scenarios.py: the faults, one scenario each.

A scenario names its guarantee, the instances up during it, which of them
is the failed host (its keys are "the failed host's keys" in the table),
whether its fault strikes the stream engine only (then a plain-SQL error or
a restart of an instance fails the run: issue 17), and three steps the runner calls around the load: setup (before the load
starts), fault (while it runs; returns when the fault has ended) and
cleanup (always, after the load; leaves every instance up and unconfined).

    SCENARIOS: {name: Scenario}
"""

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cluster import Unsupported, wait_until
from pipeline import settled

VICTIM = 2


@dataclass
class Scenario:
    name: str
    what: str
    fault: object
    guarantee: str = "exactly_once"
    victims: tuple = (VICTIM,)
    loops: tuple = None            # instances whose users query (default: all)
    setup: object = None
    cleanup: object = None
    network: bool = False          # needs scripts/hosts
    engine_only: bool = False      # PostgreSQL itself must not notice the fault
    extra: dict = field(default_factory=dict)


def _hold(ctx, seconds=None):
    time.sleep(ctx.duration if seconds is None else seconds)


def _restarted(ctx, i, old_pid):
    """Wait until instance i's engine is a new process that has joined."""
    return wait_until(lambda: (w := ctx.cluster.worker(i))[2] not in (None, old_pid)
                      and w[0] in ("running", "restoring", "rebalancing") and w[2],
                      timeout=120, interval=0.2, what=f"a new worker on instance {i}")


def kill_worker(ctx, times=1, sig=signal.SIGKILL):
    """Kill the victim's engine with sig, times times, each as soon as its
    successor joined (the supervisor's backoff grows: 0, 1, 2, 4, 8 s)."""
    for _ in range(times):
        pid = ctx.cluster.engine_pid(VICTIM)
        ctx.cluster.kill_worker(VICTIM, sig)
        _restarted(ctx, VICTIM, pid)
        time.sleep(1)
    ctx.notes.append(f"engine at the end of the fault: {_engine_note(ctx)}")


def immediate_stop(ctx, wipe=False):
    ctx.cluster.stop(VICTIM, immediate=True)
    if wipe:
        state = Path(ctx.cluster.state_dir(VICTIM))
        for d in state.iterdir():
            shutil.rmtree(d) if d.is_dir() else d.unlink()
    _hold(ctx, min(ctx.duration, 10))
    ctx.cluster.start(VICTIM)


def broker_bounce(ctx):
    ctx.cluster.broker("stop")
    _hold(ctx)
    ctx.cluster.broker("start")


def scale_setup(ctx):
    for i in (3, 2):
        ctx.cluster.stop(i)
        ctx.cluster_up.discard(i)
    wait_until(lambda: settled(ctx.cluster, [1], ctx.partitions), timeout=120,
               what="instance 1 owning every partition")


def scale_out_and_in(ctx):
    """1 -> 2 -> 3 instances, then clean stops back to 1, each step settled."""
    for up in ([1, 2], [1, 2, 3], [1, 2], [1]):
        for i in range(1, 4):
            running = i in ctx.cluster_up
            if i in up and not running:
                ctx.cluster.start(i)
                ctx.cluster_up.add(i)
            elif i not in up and running:
                ctx.cluster.stop(i)
                ctx.cluster_up.discard(i)
        wait_until(lambda: settled(ctx.cluster, up, ctx.partitions), timeout=120,
                   what=f"instances {up} owning every partition")
        time.sleep(3)


def network_fault(what):
    def fault(ctx):
        ctx.cluster.partition(VICTIM, what)
        try:
            _hold(ctx)
        finally:
            ctx.cluster.heal(VICTIM)
    return fault


def proxy_fault(*mode):
    def fault(ctx):
        ctx.cluster.proxy(VICTIM, *mode)
        try:
            _hold(ctx)
        finally:
            ctx.cluster.proxy(VICTIM, "off")
    return fault


# ---- disk full: the victim's state directory on a small tmpfs ----------------

TMPFS_MB = 64


def disk_setup(ctx):
    """On loopback, a tmpfs of our own over the victim's state directory
    (scripts/hosts up --state-tmpfs gives one); restored from the changelog."""
    state = ctx.cluster.state_dir(VICTIM)
    if ctx.cluster.name == "hosts" or os.path.ismount(state):
        return
    ctx.cluster.stop(VICTIM)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=700", "tmpfs", state],
                   check=True)
    shutil.chown(state, "iqfdw", "iqfdw")
    ctx.cluster.start(VICTIM)
    wait_until(lambda: settled(ctx.cluster, ctx.instances, ctx.partitions), timeout=120,
               what="settled after the tmpfs")


def disk_fill(ctx):
    """Fill the victim's state disk; a few seconds on, restart its engine
    (SIGKILL): RocksDB preallocates its write-ahead log, so a slow stream of
    small writes alone would not meet the full disk within the fault, while
    opening the stores again must write new files. The disk is freed no
    sooner than 5 s after the engine started again."""
    filler = Path(ctx.cluster.state_dir(VICTIM)) / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
    try:
        _hold(ctx, 3)
        pid = ctx.cluster.engine_pid(VICTIM)
        ctx.cluster.kill_worker(VICTIM, signal.SIGKILL)
        # the supervisor's backoff may keep the engine down for up to 30 s:
        # the disk stays full until a successor has met it
        t0 = time.monotonic()
        try:
            wait_until(lambda: ctx.cluster.worker_pid(VICTIM) not in (None, 0, pid), timeout=60,
                       interval=0.1, what="the engine started again")
        except TimeoutError as e:
            ctx.notes.append(str(e))
        _hold(ctx, max(ctx.duration - 3 - (time.monotonic() - t0), 5))
        ctx.notes.append(f"engine at the end of the fault: {_engine_note(ctx)}")
    finally:
        filler.unlink()


def disk_cleanup(ctx):
    state = ctx.cluster.state_dir(VICTIM)
    if ctx.cluster.name == "hosts" or not os.path.ismount(state):
        return
    ctx.cluster.stop(VICTIM)
    subprocess.run(["umount", state], check=True)
    ctx.cluster.start(VICTIM)


# ---- OOM: the victim's engine in a memory cgroup of its own (v1) ------------

CGROUP = Path("/sys/fs/cgroup/memory/iq_faults")


def oom_fault(ctx):
    """Confine the victim's stream engine in a memory cgroup, then lower the
    limit to just above what it uses until the kernel's OOM killer kills it;
    then lift the limit. Only the engine (iq_worker().pid, checked by its
    process title: not its supervisor): with the whole instance confined the
    killer may take the postmaster (it did, as the restart after the
    worker's death allocated), and making the postmaster exempt
    (oom_score_adj -1000) needs a privilege containers lack. The engine's
    successor, forked by the supervisor, runs outside the cgroup."""
    CGROUP.mkdir(exist_ok=True)
    pid = ctx.cluster.engine_pid(VICTIM)
    (CGROUP / "cgroup.procs").write_text(str(pid))
    deadline, limit = time.monotonic() + 60, 1 << 62
    try:
        while time.monotonic() < deadline and _oom_kills() == 0:
            # what it allocated since it came (cgroup v1 on this kernel cannot
            # move old charges) and a little, never raised: the page cache is
            # reclaimed, the next allocations that do not fit wake the killer
            limit = min(limit, _stat("total_rss") + _stat("total_shmem") + (256 << 10))
            try:
                (CGROUP / "memory.limit_in_bytes").write_text(str(limit))
            except OSError:
                pass  # below what cannot be reclaimed: the next round tries again
            time.sleep(0.05)
    finally:
        (CGROUP / "memory.limit_in_bytes").write_text("-1")
    kills = _oom_kills()
    ctx.notes.append(f"OOM kills in the cgroup: {kills}; engine {pid} -> "
                     f"{_safe(lambda: ctx.cluster.worker_pid(VICTIM))}")
    if kills == 0:
        raise RuntimeError(f"the OOM killer did not kill engine {pid} within 60 s")
    _hold(ctx, min(ctx.duration, 10))
    ctx.notes.append(f"engine after the fault: {_engine_note(ctx)}")


def _stat(name):
    for line in (CGROUP / "memory.stat").read_text().splitlines():
        k, v = line.split()
        if k == name:
            return int(v)
    return 0


def _oom_kills():
    for line in (CGROUP / "memory.oom_control").read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    return 0


def _engine_note(ctx):
    """iq_worker()'s view of the victim's engine: restarts and last exit (issue 17)."""
    return _safe(lambda: ctx.cluster.sql(
        VICTIM, "SELECT to_jsonb(w) - 'assigned_partitions' FROM iq_worker() w")[0][0])


def _safe(f):
    try:
        return f()
    except Exception as e:  # noqa: BLE001 -- a note, not a step
        return repr(e)


def oom_cleanup(ctx):
    if not CGROUP.exists():
        return
    root = CGROUP.parent / "cgroup.procs"
    for pid in (CGROUP / "cgroup.procs").read_text().split():
        try:
            root.write_text(pid)
        except OSError:
            pass  # ended meanwhile
    CGROUP.rmdir()


def _scenarios():
    S = Scenario
    return [
        S("kill1", "engine SIGKILL (exactly_once)", kill_worker, engine_only=True),
        S("kill5-eos", "engine SIGKILL x5 (exactly_once)", lambda ctx: kill_worker(ctx, 5),
          engine_only=True),
        S("kill5-alo", "engine SIGKILL x5 (at_least_once)", lambda ctx: kill_worker(ctx, 5),
          guarantee="at_least_once", engine_only=True),
        S("segv5-eos", "engine SIGSEGV x5 (exactly_once)",
          lambda ctx: kill_worker(ctx, 5, signal.SIGSEGV), engine_only=True),
        S("immediate", "pg_ctl -m immediate, start", immediate_stop),
        S("immediate-wipe", "pg_ctl -m immediate, state deleted, start",
          lambda ctx: immediate_stop(ctx, wipe=True)),
        S("broker", "broker stopped, started", broker_bounce, victims=(1, 2, 3)),
        S("scale", "scale out 1 -> 3 -> 1, clean stops", scale_out_and_in, victims=(),
          loops=(1,), setup=scale_setup),
        S("disk-full", "state directory's disk full, freed", disk_fill, setup=disk_setup,
          cleanup=disk_cleanup, engine_only=True),
        S("oom", "engine killed by the OOM killer (memory cgroup)", oom_fault, cleanup=oom_cleanup,
          engine_only=True),
        S("part-peers", "cut from the other instances", network_fault("peers"), network=True),
        S("part-broker", "cut from the broker", network_fault("broker"), network=True),
        S("slow-peer", "peer slowed 200 ms", proxy_fault("slow", "200"), network=True),
        S("garbage-peer", "peer answers garbage", proxy_fault("garbage"), network=True),
    ]


SCENARIOS = {s.name: s for s in _scenarios()}
__all__ = ["SCENARIOS", "Scenario", "Unsupported"]

#!/usr/bin/env python3
"""bench/membership.py: how long the group takes to settle after the last
instance's worker is killed, and after the last instance is stopped cleanly
(worker/README.md, "Membership").

    IQ_PORT_OFFSET=... IQ_LIB_DIR=$PWD bench/membership.py [kill|fast|smart ...]

(BENCH_INSTANCE=N picks another instance than the last.) kill: SIGKILL to
its worker (PostgreSQL restarts the instance); prints the
seconds until it runs again with the same partitions and no lag, and the
states the other instances went through (a revocation shows as
`rebalancing`). fast, smart: `pg_ctl stop -m MODE`; prints the seconds until
the other instances own every partition, then starts the instance again.
Needs a running cluster (scripts/cluster up); run from the repository.
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test"))
from conftest import INSTANCES, SCRIPTS, psql, settled, wait_until  # noqa: E402


def snap(i):
    try:
        return psql(i, "SELECT state, assigned_partitions, state_since, pid FROM iq_worker()", timeout=5)
    except Exception:  # noqa: BLE001 (restarting: no connection)
        return "down"


def kill(last, others):
    before = {i: snap(i) for i in INSTANCES}
    pid = int(before[last].split("|")[3])
    t0 = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    seen = {i: set() for i in others}
    while time.monotonic() - t0 < 120:
        time.sleep(0.2)
        now = {i: snap(i) for i in INSTANCES}
        for i in others:
            seen[i].add(now[i].rsplit("|", 1)[0])
        back = now[last] != "down" and now[last].split("|")[3] != str(pid)
        if back and now[last].startswith("running") and settled() and \
                psql(last, "SELECT coalesce(sum(lag), 0) FROM iq_stats()") == "0":
            break
    print(f"kill: instance {last} owns its partitions again, caught up, after "
          f"{time.monotonic() - t0:.1f} s")
    for i in others:
        print(f"  instance {i} went through: {sorted(seen[i])}")


def stop(last, others, mode):
    t0 = time.monotonic()
    subprocess.run(["bash", "-c", f'source "{SCRIPTS}/lib.sh"; as_pg "$PG_BIN/pg_ctl" '
                    f'-D "$IQ_HOME/pg/{last}/data" -m {mode} -w stop'], check=True, capture_output=True)
    stopped = time.monotonic() - t0
    owners = wait_until(lambda: settled(others), timeout=120, interval=0.1)
    print(f"stop -m {mode}: stopped in {stopped:.1f} s; the others own every partition "
          f"{time.monotonic() - t0:.1f} s after the stop began: {owners}")
    subprocess.run([str(SCRIPTS / "instance"), "start", str(last)], check=True, capture_output=True)


def main():
    last = int(os.environ.get("BENCH_INSTANCE", INSTANCES[-1]))
    others = [i for i in INSTANCES if i != last]
    for what in sys.argv[1:] or ["kill", "fast", "smart"]:
        wait_until(settled, timeout=180, interval=0.5, message="every worker running")
        if what == "kill":
            kill(last, others)
        else:
            stop(last, others, what)


if __name__ == "__main__":
    main()

"""A partition that moves between a query's look at ownership and the
owner's answer: the query waits for the new ownership and asks once more,
instead of failing at once.

The race is made certain, not hoped for: the worker of the asking instance
is frozen (SIGSTOP), so the ownership its backends see stays as it was,
while the rest of the group drops it (session timeout) and rebalances, which
moves a partition off a live instance.  A query on the frozen-worker
instance then asks that live instance, which answers NOT_HELD.  The query
must be seen waiting (its DEBUG1 line) before the worker is thawed; the
thawed worker publishes the new ownership and the query asks again.
"""

import subprocess
import threading

import pytest

from conftest import (INSTANCES, PG_BIN, freeze, import_stores_sql, java_partition, pg_port, produce,
                      psql, settled, thaw, unique, wait_until)

SETUP = import_stores_sql("movetest", "iq_move")


@pytest.mark.restarts_cluster
def test_query_asks_the_new_owner_once_after_a_partition_moved():
    asker = INSTANCES[-1]
    others = [i for i in INSTANCES if i != asker]
    before = wait_until(lambda: settled(INSTANCES), timeout=180, interval=0.5,
                        message="every worker running, each partition held once")
    psql(asker, SETUP)
    prefix = unique("move") + "_"
    keys, j = {}, 0
    while len(keys) < 3:
        keys.setdefault(java_partition(f"{prefix}{j}", 3), f"{prefix}{j}")
        j += 1
    produce("order", [f"{keys[p]}--food{n}" for p in range(3) for n in range(p + 2)])
    count_sql = "SELECT count FROM movetest.order_count WHERE key = '{}'"
    for p, k in keys.items():
        wait_until(lambda: psql(asker, count_sql.format(k)) == str(p + 2), timeout=60,
                   message=f"count of {k}")

    # the query is planned before the freeze: planning asks this instance's
    # worker for its key count, and a frozen worker would answer nothing
    proc = subprocess.Popen(
        [str(PG_BIN / "psql"), "-X", "-q", "-At", "-h", "127.0.0.1", "-p", str(pg_port(asker)),
         "-U", "postgres", "-d", "postgres"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        bufsize=1)
    out, lines = [], []
    readers = [threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, ""))),
               threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")))]
    for t in readers:
        t.start()
    pid = int(psql(asker, "SELECT pid FROM iq_worker()"))
    thawed = False
    try:
        # one generic plan, made now and reused: no planning after the freeze
        proc.stdin.write("SET iq_fdw.ownership_wait = '120s';\n"
                         "SET plan_cache_mode = force_generic_plan;\n"
                         "PREPARE q(text) AS SELECT key, count FROM movetest.order_count "
                         "WHERE key = $1;\n")
        for p in range(3):
            proc.stdin.write(f"EXECUTE q('{keys[p]}');\n")
        proc.stdin.flush()
        wait_until(lambda: len(out) >= 3, timeout=60, interval=0.1,
                   message=f"the prepared lookups answered: {out} {lines}")
        assert out == [f"{keys[p]}|{p + 2}\n" for p in range(3)], (out, lines)

        freeze(pid)
        # the group drops the frozen member and the others share its partitions
        after = wait_until(lambda: settled(others), timeout=120, interval=0.5,
                           message="the other instances hold every partition")
        moved = [p for p in range(3) if before[p] != asker and after[p] != before[p]]
        if not moved:
            pytest.skip(f"the rebalance kept every live instance's partitions in place: "
                        f"{before} -> {after}")
        p = moved[0]
        # the asker still sees the old owner, which no longer holds p
        proc.stdin.write(f"SET client_min_messages = debug1;\nEXECUTE q('{keys[p]}');\n")
        proc.stdin.flush()
        wait_until(lambda: len(out) > 3 or
                   any("waiting up to iq_fdw.ownership_wait" in line for line in lines) or
                   any("ERROR" in line for line in lines),
                   timeout=60, interval=0.1, message="the query waiting for the new owner")
        err = "".join(lines)
        assert "waiting up to iq_fdw.ownership_wait" in err, f"the query did not wait: {out} {err}"
        assert f"partition {p} is not held" in err, err
        assert len(out) == 3, out
        thaw(pid)
        thawed = True
        wait_until(lambda: len(out) > 3 or any("ERROR" in line for line in lines),
                   timeout=180, interval=0.2, message="the query asked again")
        err = "".join(lines)
        assert "asking again" in err, err
        assert out[3:] == [f"{keys[p]}|{p + 2}\n"], (out, err)
    finally:
        if not thawed:
            thaw(pid)
        proc.stdin.close()
        proc.wait(timeout=60)
        for t in readers:
            t.join(timeout=10)
    wait_until(lambda: settled(INSTANCES), timeout=180, interval=0.5,
               message="the thawed instance back in the group")

"""faults/run.py: run scenarios against a running cluster and measure each.

For each scenario: a fresh pipeline, its setup, then the producer, a
query loop and a plain-SQL session per instance; a warm-up; the assignment
noted (key -> owner); the fault; the time until every partition is owned and caught up again;
the producer stopped (every record delivered) and the stores caught up;
the loops stopped; every instance's stores read whole; the verifier.
Writes OUT/<scenario>/{deliveries.jsonl, answers-I.jsonl, plain-I.jsonl,
result.json}, OUT/results.json and OUT/table.md; exits 1 when anything was
lost or wrong, or when a fault of the engine alone reached PostgreSQL (a
plain-SQL error, an instance restarted).

    run.py --adapter loopback|hosts --out DIR [--quick]
           [--standby N] [--read-from MODE] [--max-lag L] [SCENARIO...]

--standby N: iq_fdw.standby_replicas = N on every instance with the
pipeline's settings (issue 18); --read-from MODE: every query loop's
session sets iq_fdw.read_from = MODE and iq_fdw.max_lag = L (default 300
records: at 200 orders/s over 6 partitions, ~9 s of one partition's
input), and the verifier, when MODE is not 'owner', checks each count
against the truth of max_lag records back (verify.py) instead of against
the session's earlier answers.
"""

import argparse
import json
import signal
import sys
import time
import uuid
from pathlib import Path

import cluster as clusters
import pipeline
import table
import verify
from producer import key_name
from scenarios import SCENARIOS

HERE = Path(__file__).resolve().parent


class Context:
    """What a scenario's steps see."""

    def __init__(self, cluster, duration, partitions):
        self.cluster, self.duration, self.partitions = cluster, duration, partitions
        self.instances = list(range(1, cluster.n + 1))
        self.cluster_up = set(self.instances)
        self.notes = []


def max_lag(cluster, instances, partitions):
    """The largest order lag of any partition, once each is owned once; else None."""
    if not pipeline.settled(cluster, instances, partitions):
        return None
    # iq_stats 0.4 lists the standbys kept too (role 'standby'): owners' rows only
    lags = [r[0] for i in instances for r in cluster.sql(
        i, "SELECT greatest(order_end_offset - order_offset, 0)"
           " + greatest(customer_end_offset - customer_offset, 0) FROM iq_stats() s"
           " WHERE coalesce(to_jsonb(s) ->> 'role', 'owner') = 'owner'")]
    return max(lags) if len(lags) == partitions else None


def store(cluster, i, table_name, col):
    return dict(cluster.sql(i, f"SELECT key, {col} FROM {pipeline.SCHEMA}.{table_name}", timeout=60))


def run_scenario(cl, sc, out, a):
    ctx = Context(cl, a.duration, a.partitions)
    out.mkdir(parents=True, exist_ok=True)
    name = f"fx_{sc.name.replace('-', '_')}_{uuid.uuid4().hex[:6]}"
    pipeline.switch(cl, ctx.instances, name, sc.guarantee, a.partitions, a.standby)
    if sc.setup:
        sc.setup(ctx)
    loops_on = list(sc.loops or ctx.instances)
    log = out / "deliveries.jsonl"
    producer = cl.spawn([sys.executable, HERE / "producer.py", cl.bootstrap, f"{name}_order",
                         f"{name}_customer", log, "--rate", a.rate, "--keys", a.keys],
                        stderr=open(out / "producer.log", "w"))
    epochs = {i: [cl.epoch(i)] for i in loops_on}
    loops = [cl.spawn([sys.executable, HERE / "query_loop.py", cl.loop_dsn(i), i, pipeline.SCHEMA,
                       out / f"answers-{i}.jsonl", "--keys", a.keys, *read_args(a)],
                      stderr=open(out / f"loop-{i}.log", "w")) for i in loops_on]
    plains = [cl.spawn([sys.executable, HERE / "plain_load.py", cl.loop_dsn(i), i,
                        out / f"plain-{i}.jsonl"], stderr=open(out / f"plain-{i}.log", "w"))
              for i in loops_on]
    result = {"scenario": sc.name, "what": what(sc, a), "guarantee": sc.guarantee,
              "standby": a.standby, "read_from": a.read_from or "owner",
              "max_lag": a.max_lag if a.read_from else None}
    recovered = False
    try:
        time.sleep(a.warmup)
        owners = pipeline.settled(cl, sorted(ctx.cluster_up), a.partitions) or {}
        part_of = dict(cl.sql(min(ctx.cluster_up), "SELECT k, (iq_key_owner('order-count', k)).partition"
                              " FROM unnest(%s::text[]) k", ([key_name(j) for j in range(a.keys)],)))
        fault_start = time.time()
        sc.fault(ctx)
        fault_end = time.time()
        t0 = time.monotonic()
        caught_up = clusters.wait_until(
            lambda: (lag := max_lag(cl, sorted(ctx.cluster_up), a.partitions)) is not None
            and lag <= a.rate, timeout=240, interval=0.5, what="every partition owned, caught up")
        result["recovery_s"] = round(time.monotonic() - t0, 1) if caught_up else None
        recovered = True
        time.sleep(3)
    finally:
        producer.send_signal(signal.SIGTERM)
        producer_rc = producer.wait(timeout=600)
        try:
            clusters.wait_until(lambda: max_lag(cl, sorted(ctx.cluster_up), a.partitions) == 0,
                                timeout=180 if recovered else 20, what="stores caught up with the end")
        finally:
            time.sleep(2)
            for p in loops + plains:
                p.send_signal(signal.SIGTERM)
            for p in loops + plains:
                p.wait(timeout=120)
            for i in loops_on:
                try:
                    epochs[i].append(cl.epoch(i))
                except Exception:  # noqa: BLE001 -- down at the end: its sessions said so
                    pass
            if sc.cleanup:
                sc.cleanup(ctx)
    t = verify.truth(log)
    up = sorted(ctx.cluster_up)
    finals = clusters.wait_until(lambda: _finals_if_equal(cl, up, t, sc.guarantee), timeout=60,
                                 what="final stores equal to the truth", interval=2)
    finals = finals if isinstance(finals, dict) else {i: (store(cl, i, "order_count", "count"),
                                                          store(cl, i, "customer", "value"))
                                                      for i in up}
    lost, excess, problems = verify.final_check(t, finals, sc.guarantee)
    answers = [x for i in loops_on for x in verify.read_lines(out / f"answers-{i}.jsonl")]
    bounded = a.read_from not in (None, "owner")
    wrong = verify.check_answers(answers, t, sc.guarantee,
                                 verify.positions(log) if bounded else None, a.max_lag)
    victims = set(sc.victims)
    victim_parts = {p for p, i in owners.items() if i in victims}

    def on_victim(x):
        if not victims:
            return False
        if "keys" not in x:
            return True
        return any(part_of.get(k) in victim_parts for k in x["keys"])

    plain = verify.plain_check([x for i in loops_on
                                for x in verify.read_lines(out / f"plain-{i}.jsonl")], epochs)
    if sc.engine_only and (plain["plain_errors"] or plain["plain_sessions_cut"]
                           or plain["restarts"]):
        plain["postgres_hit"] = (f"the engine's fault reached PostgreSQL: {plain['plain_errors']} "
                                 f"plain-SQL errors, {plain['plain_sessions_cut']} plain sessions "
                                 f"cut, restarts {plain['restarts']}")
    stayed = [i for i in loops_on if i not in victims] or loops_on
    runs = verify.failed_runs(answers, on_victim, stayed)
    result.update({
        "produced": t[3], "producer_rc": producer_rc, "lost": lost, "excess": excess,
        "final_problems": problems, "wrong": len(wrong),
        "wrong_examples": [[why, x] for why, x in wrong[:10]],
        "queries": sum(1 for x in answers if x["q"] != "connect"),
        "errors": sum(1 for x in answers if x["rows"] is None and x["q"] != "connect"),
        "error_kinds": dict(verify.error_kinds(answers).most_common()),
        "sessions_cut": sum(1 for x in answers if x.get("cut")),
        "longest_fail_victim_s": round(runs[True], 1), "longest_fail_others_s": round(runs[False], 1),
        "fault_s": round(fault_end - fault_start, 1), "owners_before": owners, "notes": ctx.notes,
        "engine_only": sc.engine_only, **plain,
        **verify.victim_queries(answers, on_victim, stayed if victims else [])})
    (out / "result.json").write_text(json.dumps(result, indent=1))
    return result


def read_args(a):
    """The query loops' arguments for read_from and max_lag (none by default)."""
    return ["--read-from", a.read_from, "--max-lag", a.max_lag] if a.read_from else []


def what(sc, a):
    """The scenario's name in the table, with the standby settings when set."""
    if not a.standby and not a.read_from:
        return sc.what
    return f"{sc.what} [standby {a.standby}, {a.read_from or 'owner'}]"


def _finals_if_equal(cl, up, t, guarantee):
    """Every instance's stores, when they equal the truth (at_least_once: not below)."""
    finals = {i: (store(cl, i, "order_count", "count"), store(cl, i, "customer", "value")) for i in up}
    lost, excess, _ = verify.final_check(t, finals, guarantee)
    return finals if lost == 0 and (excess == 0 or guarantee != "exactly_once") else None


def restore_cluster(cl, instances, failed):
    """Every instance up again, whatever a scenario left; after a failed
    scenario every instance restarted (a stalled worker survives a reload),
    so that the next scenarios still measure something."""
    for i in instances:
        if failed:
            try:
                cl.stop(i)
            except Exception:  # noqa: BLE001 -- down already
                pass
        try:
            cl.worker(i)
        except Exception:  # noqa: BLE001 -- down: start it
            cl.start(i)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("scenarios", nargs="*")
    ap.add_argument("--adapter", choices=["loopback", "hosts"], default="loopback")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--quick", action="store_true", help="faults of 15 s, shorter warm-up")
    ap.add_argument("--partitions", type=int, default=6)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--keys", type=int, default=3000)
    ap.add_argument("--standby", type=int, default=0,
                    help="iq_fdw.standby_replicas on every instance (issue 18)")
    ap.add_argument("--read-from", choices=["owner", "owner_or_standby", "nearest"],
                    help="iq_fdw.read_from of every query loop (default: not set)")
    ap.add_argument("--max-lag", type=int, default=300,
                    help="iq_fdw.max_lag of every query loop with --read-from (records)")
    ap.add_argument("--reset", action="store_true",
                    help="at the end, the pipeline settings reset (a cluster that lives on)")
    a = ap.parse_args()
    a.duration, a.warmup = (15, 5) if a.quick else (30, 10)
    cl = clusters.Hosts() if a.adapter == "hosts" else clusters.Loopback()
    names = a.scenarios or [n for n, s in SCENARIOS.items()
                            if n != "kill1" and (a.adapter == "hosts" or not s.network)]
    results, bad = [], False
    for n in names:
        sc = SCENARIOS[n]
        print(f"faults: {n}: {sc.what}", flush=True)
        try:
            r = run_scenario(cl, sc, a.out / n, a)
        except clusters.Unsupported as e:
            r = {"scenario": n, "what": what(sc, a), "skipped": str(e)}
        except Exception as e:  # noqa: BLE001 -- the scenario failed; the others still run
            r = {"scenario": n, "what": what(sc, a), "failed": f"{type(e).__name__}: {e}"}
        results.append(r)
        bad |= bool(r.get("failed") or r.get("lost") or r.get("wrong") or r.get("postgres_hit"))
        print(table.row(r), flush=True)
        restore_cluster(cl, range(1, cl.n + 1), "failed" in r)
    (a.out / "results.json").write_text(json.dumps(results, indent=1))
    md = table.markdown(results)
    (a.out / "table.md").write_text(md)
    print(md)
    if a.reset:
        try:
            pipeline.reset(cl, list(range(1, cl.n + 1)))
        except Exception as e:  # noqa: BLE001 -- the results stand; say why the cluster did not
            print(f"faults: the pipeline settings were reset, but not every worker came back: {e}",
                  file=sys.stderr)
            bad = True
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

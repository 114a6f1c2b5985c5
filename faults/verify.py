"""faults/verify.py: the verifier, as Kafka's system tests have one.

Truth is the producer's delivery log. At the end every instance's
order_count and customer must equal it (exact under exactly_once; under
at_least_once never below, the excess reported). Every recorded answer must
be right or an error with a message: never above the final truth under
exactly_once, never lower than an earlier answer for the same key in the
same session (a key missing from a scan or range after the session saw it
is "silently partial"), customers only values that were produced.

With standby replicas read (run.py --read-from owner_or_standby|nearest,
issue 18) an answer may come from a standby, older than one the session
saw before; there the rule is the issue's: a count of key k (partition p)
answered at time t is right for a point no further back than max_lag L:
at least the truth of k counting only p's orders with offset < (end of p
at t) - L, the end at t being what the producer's delivery log says was
delivered by the answer's start (the broker had it no later), and never
above the final truth (exactly_once). A key asked for (by key, range or
scan) and missing while that lower bound is above 0 is silently partial.

    truth(log) -> (orders {key: n}, customers {key: value}, values {key: set}, produced)
    final_check(truth, finals, guarantee) -> (lost, excess, problems)
    positions(log) -> where each partition's end was when, each key's offsets
    check_answers(answers, truth, guarantee[, positions, max_lag]) -> wrong [(why, answer)]
    error_kinds(answers) -> {kind: n};  failed_runs(...) -> longest failed run
    victim_queries(...) -> the failed host's keys' queries, failures, slowest answer
    plain_check(records, epochs) -> the plain-SQL load's errors, cuts and restarts
"""

import bisect
import json
import re
import time
from collections import Counter


def read_lines(path):
    with open(path) as f:
        for line in f:
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    pass  # a line cut by the process's end


def truth(log):
    """(order counts, customer values, every value each customer had, records produced)."""
    orders, last, values, n = Counter(), {}, {}, 0
    for r in read_lines(log):
        n += 1
        if r["t"] == "o":
            orders[r["k"]] += 1
        else:
            values.setdefault(r["k"], set()).add(r["v"])
            if r["k"] not in last or last[r["k"]][0] < r["o"]:
                last[r["k"]] = (r["o"], r["v"])
    customers = {k: v for k, (_, v) in last.items() if v is not None}
    return dict(orders), customers, values, n


def positions(log):
    """(ends, keys) of the order topic from the delivery log: ends {partition:
    (times, ends)}, the end (highest offset delivered + 1) of the partition
    from each delivery's time on, times ascending; keys {key: (partition,
    sorted offsets of its orders)}."""
    deliveries, keys = {}, {}
    for r in read_lines(log):
        if r["t"] == "o":
            deliveries.setdefault(r["p"], []).append((r["ts"], r["o"]))
            keys.setdefault(r["k"], (r["p"], []))[1].append(r["o"])
    ends = {}
    for p, ds in deliveries.items():
        times, highest, end = [], [], 0
        for ts, o in sorted(ds):
            end = max(end, o + 1)
            times.append(ts)
            highest.append(end)
        ends[p] = (times, highest)
    for _, offsets in keys.values():
        offsets.sort()
    return ends, keys


def lower_bound(pos, key, t, max_lag):
    """The fewest orders of key a count answered at time t may show: those of
    its partition with offset < (end of the partition at t) - max_lag."""
    ends, keys = pos
    if key not in keys:
        return 0
    p, offsets = keys[key]
    times, highest = ends[p]
    j = bisect.bisect_right(times, t)
    end = highest[j - 1] if j else 0
    return bisect.bisect_left(offsets, end - max_lag)


def final_check(t, finals, guarantee):
    """finals: {instance: (order_count {key: n}, customer {key: value})}.
    Records lost (worst instance), excess counted, and what differs."""
    orders, customers = t[0], t[1]
    lost = excess = 0
    problems = []
    for i, (counts, custs) in sorted(finals.items()):
        short = sum(max(0, n - counts.get(k, 0)) for k, n in orders.items())
        over = sum(max(0, n - orders.get(k, 0)) for k, n in counts.items())
        cust_bad = [k for k in set(customers) | set(custs) if customers.get(k) != custs.get(k)]
        lost, excess = max(lost, short + len(cust_bad)), max(excess, over)
        if short or cust_bad or (over and guarantee == "exactly_once"):
            problems.append(f"instance {i}: {short} orders short, {over} over, "
                            f"{len(cust_bad)} customers differ (e.g. {sorted(cust_bad)[:3]})")
    return lost, excess, problems


def _asked(a, key):
    """Whether answer a asked for key (a scan asks for all)."""
    if "keys" in a:
        return key in a["keys"]
    if "lo" in a:
        return a["lo"] <= key <= a["hi"]
    return True


def check_answers(answers, t, guarantee, pos=None, max_lag=None):
    """[(why, answer)] of the answers that are wrong. pos (positions()) and
    max_lag: the counts are checked by the bound max_lag records back
    (standby reads), not against the session's earlier answers."""
    orders, _, values, _ = t
    if pos is not None:
        return _check_bounded(answers, orders, values, guarantee, pos, max_lag)
    wrong = []
    seen = {}   # (instance, session, store) -> {key: highest count / seen}
    for a in sorted(answers, key=lambda a: a["s"]):
        if a["q"] == "connect":
            continue
        if a["rows"] is None:
            if not a.get("err"):
                wrong.append(("error without a message", a))
            continue
        customer = a["q"] in ("cpoint", "cscan")
        mem = seen.setdefault((a["i"], a["n"], customer), {})
        for k, v in a["rows"].items():
            if not _asked(a, k):
                wrong.append((f"row {k} not asked for", a))
            elif customer:
                if v not in values.get(k, ()):
                    wrong.append((f"customer {k} = {v!r} was never produced", a))
            elif k not in orders:
                wrong.append((f"key {k} was never produced", a))
            elif guarantee == "exactly_once" and v > orders[k]:
                wrong.append((f"{k} = {v} above the final truth {orders[k]}", a))
            elif v < mem.get(k, 0):
                wrong.append((f"{k} = {v} below {mem[k]} seen earlier in the session", a))
        for k in [k for k in mem if _asked(a, k) and k not in a["rows"]]:
            if not customer:
                wrong.append((f"{k} missing after the session saw it (silently partial)", a))
        if not customer:
            for k, v in a["rows"].items():
                mem[k] = max(mem.get(k, 0), v)
        else:
            mem.update({k: 1 for k in a["rows"]})
    return wrong


def _check_bounded(answers, orders, values, guarantee, pos, max_lag):
    """check_answers with the bound of max_lag records back (issue 18)."""
    wrong = []
    for a in sorted(answers, key=lambda a: a["s"]):
        if a["q"] == "connect":
            continue
        if a["rows"] is None:
            if not a.get("err"):
                wrong.append(("error without a message", a))
            continue
        customer = a["q"] in ("cpoint", "cscan")
        for k, v in a["rows"].items():
            if not _asked(a, k):
                wrong.append((f"row {k} not asked for", a))
            elif customer:
                if v not in values.get(k, ()):
                    wrong.append((f"customer {k} = {v!r} was never produced", a))
            elif k not in orders:
                wrong.append((f"key {k} was never produced", a))
            elif guarantee == "exactly_once" and v > orders[k]:
                wrong.append((f"{k} = {v} above the final truth {orders[k]}", a))
            elif v < (low := lower_bound(pos, k, a["s"], max_lag)):
                wrong.append((f"{k} = {v} below {low}, the truth {max_lag} records back", a))
        if customer:
            continue
        asked = a["keys"] if "keys" in a else [k for k in orders if _asked(a, k)]
        for k in asked:
            if k not in a["rows"] and (low := lower_bound(pos, k, a["s"], max_lag)) > 0:
                wrong.append((f"{k} missing, while {low} of its orders are more than "
                              f"{max_lag} records back (silently partial)", a))
    return wrong


def error_kind(a):
    """A short class of an error: SQLSTATE and the message's first line,
    numbers and quoted names made general."""
    first = a["err"].splitlines()[0]
    first = re.sub(r'"[^"]*"|\'[^\']*\'', '"…"', first)
    first = re.sub(r"\d+(\.\d+)*", "N", first)
    return f"{a.get('code') or '-----'} {first[:90]}"


def error_kinds(answers):
    return Counter(error_kind(a) for a in answers if a["rows"] is None)


def failed_runs(answers, on_victim, instances):
    """Longest run (seconds) of failed queries on the loops of instances,
    for queries on_victim(answer) says touch the failed host's keys (True)
    or only the others' (False): {True: s, False: s}."""
    longest = {True: 0.0, False: 0.0}
    for i in instances:
        start = {True: None, False: None}
        for a in sorted((a for a in answers if a["i"] == i and a["q"] != "connect"),
                        key=lambda a: a["s"]):
            side = on_victim(a)
            if a["rows"] is None:
                if start[side] is None:
                    start[side] = a["s"]
                longest[side] = max(longest[side], a["e"] - start[side])
            else:
                start[side] = None
    return longest


def victim_queries(answers, on_victim, instances):
    """Of the loops on instances, the queries on_victim(answer) says touch
    the failed host's keys: how many, how many failed, and the slowest
    that succeeded (s): a standby that answers after iq_fdw.peer_timeout
    fails nothing yet keeps its user waiting (issue 18)."""
    mine = [a for a in answers if a["i"] in instances and a["q"] != "connect" and on_victim(a)]
    return {"queries_victim": len(mine),
            "errors_victim": sum(1 for a in mine if a["rows"] is None),
            "slowest_ok_victim_s": round(max((a["e"] - a["s"] for a in mine
                                              if a["rows"] is not None), default=0.0), 2)}


def plain_check(records, epochs):
    """The plain-SQL sessions (plain_load.py) and the instances' restarts.
    records: their lines; epochs: {instance: [epoch, ...]} taken around the
    load. A restart is a change of an instance's epoch (postmaster or
    checkpointer start), seen by a reconnecting session or around the load."""
    seen = {i: set(map(tuple, e)) for i, e in epochs.items()}
    errors = []
    statements = cut = 0
    for r in sorted(records, key=lambda r: r["s"]):
        if r.get("epoch"):
            seen.setdefault(r["i"], set()).add(tuple(r["epoch"]))
        if r["q"] != "connect":
            statements += 1
        if r["err"]:
            errors.append(r)
        cut += bool(r.get("cut"))
    restarts = {i: len(e) - 1 for i, e in sorted(seen.items()) if len(e) > 1}
    return {"plain_statements": statements,
            "plain_errors": sum(1 for r in errors if r["q"] != "connect"),
            "plain_connect_errors": sum(1 for r in errors if r["q"] == "connect"),
            "plain_sessions_cut": cut,
            "plain_error_examples": [[time.strftime("%H:%M:%S", time.gmtime(r["s"]))
                                      + f".{int(r['s'] * 1000) % 1000:03d}", r["i"], r["q"],
                                      error_kind(r)] for r in errors[:20]],
            "restarts": restarts}

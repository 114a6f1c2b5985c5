"""faults/verify.py: the verifier, as Kafka's system tests have one.

Truth is the producer's delivery log. At the end every instance's
order_count and customer must equal it (exact under exactly_once; under
at_least_once never below, the excess reported). Every recorded answer must
be right or an error with a message: never above the final truth under
exactly_once, never lower than an earlier answer for the same key in the
same session (a key missing from a scan or range after the session saw it
is "silently partial"), customers only values that were produced.

    truth(log) -> (orders {key: n}, customers {key: value}, values {key: set}, produced)
    final_check(truth, finals, guarantee) -> (lost, excess, problems)
    check_answers(answers, truth, guarantee) -> wrong [(why, answer)]
    error_kinds(answers) -> {kind: n};  failed_runs(...) -> longest failed run
    plain_check(records, epochs) -> the plain-SQL load's errors, cuts and restarts
"""

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


def check_answers(answers, t, guarantee):
    """[(why, answer)] of the answers that are wrong."""
    orders, _, values, _ = t
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

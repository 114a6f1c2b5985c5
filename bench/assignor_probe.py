#!/usr/bin/python3
"""bench/assignor_probe.py: what an assignor moves when a static member of a
group crashes and comes back, leaves cleanly, or a member joins; the first
fact issue 18's design (worker/README.md, "Standby replicas") asks for.

    bench/assignor_probe.py BOOTSTRAP TOPIC [STRATEGY]   (default cooperative-sticky)

Runs members A, B and C (static: group.instance.id = their name) of a fresh
group over TOPIC in child processes, through Debian's python3-confluent-kafka
(the system's librdkafka, the one the worker links), then: C killed with
SIGKILL and started again 2 s later; C stops cleanly (unsubscribe, close);
D joins. After each step it prints what every member was given and took
away, and whether A and B kept every partition they held. Session timeout
10 s, heartbeats 2 s, as the worker's.
"""
import json
import os
import signal
import subprocess
import sys
import time
import uuid

BOOT, TOPIC = sys.argv[1], sys.argv[2]
STRATEGY = sys.argv[3] if len(sys.argv) > 3 else "cooperative-sticky"
GROUP = f"probe-{uuid.uuid4().hex[:8]}"

MEMBER = r"""
import json, signal, sys, time
from confluent_kafka import Consumer
name, boot, topic, group, strategy = sys.argv[1:6]
out = open(sys.argv[6], "a", buffering=1)
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
def log(kind, parts):
    out.write(json.dumps({"m": name, "t": time.time(), "kind": kind,
                          "p": sorted(p.partition for p in parts)}) + "\n")
c = Consumer({"bootstrap.servers": boot, "group.id": group, "group.instance.id": name,
              "partition.assignment.strategy": strategy, "session.timeout.ms": 10000,
              "heartbeat.interval.ms": 2000, "enable.auto.commit": False})
def on_assign(cons, parts):
    log("assign", parts)
    if strategy == "cooperative-sticky": cons.incremental_assign(parts)
    else: cons.assign(parts)
def on_revoke(cons, parts):
    log("revoke", parts)
    if strategy == "cooperative-sticky": cons.incremental_unassign(parts)
    else: cons.unassign()
c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_revoke)
while not stop:
    c.poll(0.2)
c.unsubscribe()
t = time.time() + 3
while time.time() < t:
    c.poll(0.2)
c.close()
"""

LOG = f"/tmp/{GROUP}.jsonl"
procs = {}


def start(name):
    procs[name] = subprocess.Popen([sys.executable, "-c", MEMBER, name, BOOT, TOPIC, GROUP, STRATEGY, LOG])


def events():
    try:
        return [json.loads(line) for line in open(LOG)]
    except FileNotFoundError:
        return []


def held():
    """What each member holds after the events so far: an incremental
    protocol's events add and take away; an eager one's replace."""
    coop = STRATEGY == "cooperative-sticky"
    h = {}
    for e in events():
        s = h.get(e["m"], set())
        if e["kind"] == "assign":
            h[e["m"]] = s | set(e["p"]) if coop else set(e["p"])
        else:
            h[e["m"]] = s - set(e["p"]) if coop else set()
    return {m: sorted(p) for m, p in sorted(h.items())}


def settle(what, seconds, n0):
    """Print the events since the n0th, after seconds more."""
    time.sleep(seconds)
    new = events()[n0:]
    t0 = new[0]["t"] if new else time.time()
    print(f"\n## {what}")
    for e in new:
        print(f"  +{e['t'] - t0:5.2f}s {e['m']} {e['kind']} {e['p']}")
    print(f"  now held: {held()}")
    return new


for m in "ABC":
    start(m)
settle(f"A, B, C join ({STRATEGY})", 15, 0)
before = held()
n0 = len(events())
procs["C"].send_signal(signal.SIGKILL)
procs["C"].wait()
time.sleep(2)
start("C")
new = settle("C killed (SIGKILL), started again 2 s later as the same static member", 15, n0)
print(f"  A and B revoked nothing: {not any(e['kind'] == 'revoke' and e['m'] in 'AB' for e in new)}; "
      f"C holds what it held: {held().get('C') == before.get('C')}")
n0 = len(events())
procs["C"].send_signal(signal.SIGTERM)
procs["C"].wait()
new = settle("C stops cleanly (unsubscribe: LeaveGroup, then close)", 12, n0)
print(f"  A and B revoked nothing: {not any(e['kind'] == 'revoke' and e['m'] in 'AB' for e in new)}")
n0 = len(events())
start("D")
new = settle("D joins", 15, n0)
print(f"  revoked from A and B: {[(e['m'], e['p']) for e in new if e['kind'] == 'revoke' and e['m'] in 'AB']}")
for p in procs.values():
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
for p in procs.values():
    p.wait()
os.unlink(LOG)

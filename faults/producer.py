"""faults/producer.py: the load's writer, and the truth.

Orders at a steady rate over a key space, partitioned as the Java client
does (murmur2), acks=all, idempotent, with no delivery timeout: a broker
outage delays a record, never drops it. One customer record in ten orders,
for the first third of the keys; one in five of those is a tombstone.
Every delivered record is logged as a JSON line (topic letter, key,
partition, offset, value, time): the verifier's truth is that log.

    producer.py BOOTSTRAP ORDER_TOPIC CUSTOMER_TOPIC LOG [--rate R] [--keys N]

Runs until SIGTERM, then flushes every record still in flight and exits 0
once all are delivered (non-zero if any delivery failed).
"""

import argparse
import json
import random
import signal
import sys
import time

from confluent_kafka import Producer


def key_name(j):
    """The j-th key of the key space (the query loops ask for the same)."""
    return f"k{j:05d}"


def stop_flag():
    """A list that becomes true at SIGTERM or SIGINT: the harness's processes
    end their loop there and finish cleanly (flush, close)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    return stop


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bootstrap")
    ap.add_argument("order_topic")
    ap.add_argument("customer_topic")
    ap.add_argument("log")
    ap.add_argument("--rate", type=float, default=200)
    ap.add_argument("--keys", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    stop = stop_flag()
    p = Producer({"bootstrap.servers": a.bootstrap, "enable.idempotence": True, "acks": "all",
                  "message.timeout.ms": 0, "partitioner": "murmur2_random", "linger.ms": 5})
    log = open(a.log, "w", buffering=1)
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(str(err))
            print(f"producer: delivery failed: {err}", file=sys.stderr)
            return
        v = msg.value()
        log.write(json.dumps({"t": "o" if msg.topic() == a.order_topic else "c",
                              "k": msg.key().decode(), "p": msg.partition(), "o": msg.offset(),
                              "v": v.decode() if v is not None else None,
                              "ts": round(time.time(), 3)}) + "\n")

    rnd = random.Random(a.seed)
    n, t0 = 0, time.monotonic()
    while not stop:
        k = key_name(rnd.randrange(a.keys))
        p.produce(a.order_topic, key=k, value=f"food{n}", on_delivery=delivered)
        if n % 10 == 0:
            ck = key_name(rnd.randrange(a.keys // 3))
            value = None if n % 50 == 0 else f"name{n} of {ck}"
            p.produce(a.customer_topic, key=ck, value=value, on_delivery=delivered)
        n += 1
        lag = t0 + n / a.rate - time.monotonic()
        p.poll(max(lag, 0))
    left = p.flush()
    while left:
        left = p.flush(10)
    log.close()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

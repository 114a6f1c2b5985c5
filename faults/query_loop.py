"""faults/query_loop.py: one user's queries on one instance, each answer recorded.

A session (one psycopg2 connection, settings left at their defaults; with
--read-from, iq_fdw.read_from and iq_fdw.max_lag set at each connection,
issue 18) runs,
in turn: point lookups, IN lists, key BETWEEN ranges, full scans of
order_count, and customer lookups and scans. When the session is cut it
reconnects and counts the cut. Every answer is a JSON line:

    {"s": start, "e": end, "i": instance, "n": session, "q": kind,
     "keys": [...] | "lo"/"hi", "rows": {key: value} | null,
     "err": text | null, "code": SQLSTATE | null}

    query_loop.py DSN INSTANCE SCHEMA OUT [--keys N] [--seed S] [--read-from MODE --max-lag L]

Runs until SIGTERM.
"""

import argparse
import json
import random
import time

import psycopg2

from producer import key_name, stop_flag

KINDS = ["point", "in", "point", "range", "cpoint", "point", "in", "range", "point", "scan",
         "point", "in", "point", "range", "point", "cscan", "point", "in", "range", "scan"]


def plan(kind, rnd, nkeys, schema):
    """(sql, args, record fields) of one query of kind."""
    if kind == "point":
        k = key_name(rnd.randrange(nkeys))
        return f"SELECT key, count FROM {schema}.order_count WHERE key = %s", (k,), {"keys": [k]}
    if kind == "in":
        ks = sorted({key_name(rnd.randrange(nkeys)) for _ in range(6)})
        return (f"SELECT key, count FROM {schema}.order_count WHERE key = ANY(%s)", (ks,),
                {"keys": ks})
    if kind == "range":
        j = rnd.randrange(nkeys - 40)
        lo, hi = key_name(j), key_name(j + 40)
        return (f"SELECT key, count FROM {schema}.order_count WHERE key BETWEEN %s AND %s",
                (lo, hi), {"lo": lo, "hi": hi})
    if kind == "scan":
        return f"SELECT key, count FROM {schema}.order_count", None, {}
    if kind == "cpoint":
        k = key_name(rnd.randrange(nkeys // 3))
        return f"SELECT key, value FROM {schema}.customer WHERE key = %s", (k,), {"keys": [k]}
    return f"SELECT key, value FROM {schema}.customer", None, {}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsn")
    ap.add_argument("instance", type=int)
    ap.add_argument("schema")
    ap.add_argument("out")
    ap.add_argument("--keys", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pause", type=float, default=0.05)
    ap.add_argument("--read-from", help="iq_fdw.read_from of the session (default: not set)")
    ap.add_argument("--max-lag", type=int, default=300, help="iq_fdw.max_lag with --read-from")
    a = ap.parse_args()
    stop = stop_flag()
    rnd = random.Random(a.seed * 1000 + a.instance)
    out = open(a.out, "w", buffering=1)
    conn, session, turn = None, 0, 0

    def record(**fields):
        out.write(json.dumps(dict(i=a.instance, n=session, **fields)) + "\n")

    while not stop:
        if conn is None or conn.closed:
            t = time.time()
            try:
                conn = psycopg2.connect(a.dsn, connect_timeout=5)
                conn.autocommit = True
                if a.read_from:
                    with conn.cursor() as cur:
                        cur.execute("SET iq_fdw.read_from = %s", (a.read_from,))
                        cur.execute("SET iq_fdw.max_lag = %s", (str(a.max_lag),))
                session += 1
            except psycopg2.Error as e:
                conn = None
                record(s=t, e=time.time(), q="connect", rows=None, err=str(e).strip(),
                       code=e.pgcode)
                time.sleep(0.5)
                continue
        kind = KINDS[turn % len(KINDS)]
        turn += 1
        sql, args, fields = plan(kind, rnd, a.keys, a.schema)
        t = time.time()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                rows = {k: v for k, v in cur.fetchall()}
            record(s=t, e=time.time(), q=kind, rows=rows, err=None, code=None, **fields)
        except psycopg2.Error as e:
            cut = conn.closed != 0
            record(s=t, e=time.time(), q=kind, rows=None, err=str(e).strip() or type(e).__name__,
                   code=e.pgcode, cut=cut, **fields)
            if cut:
                conn = None
        time.sleep(a.pause)
    if conn is not None:
        conn.close()


if __name__ == "__main__":
    main()

"""faults/plain_load.py: one user of plain SQL on one instance, every statement recorded.

The load that must not notice the stream engine (issue 17): one psycopg2
connection kept open, no foreign table, in turn an INSERT into a heap table
and a SELECT that reads the row back. When the session is cut it
reconnects and counts the cut. Each (re)connection records the instance's
epoch (see epoch()), so that the verifier sees a restart even when the
session was not cut at that moment. Every statement is a JSON line:

    {"s": start, "e": end, "i": instance, "n": session, "q": "insert"|"select"|"connect",
     "err": text | null, "code": SQLSTATE | null, "cut": bool, "epoch": [..] (connect)}

    plain_load.py DSN INSTANCE OUT

Runs until SIGTERM.
"""

import argparse
import json
import time

import psycopg2

from cluster import EPOCH_SQL
from producer import stop_flag

TABLE = "plain_load"

def epoch(cur):
    """(postmaster start, checkpointer start): changes with any restart of the instance."""
    cur.execute(EPOCH_SQL)
    return list(cur.fetchone())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsn")
    ap.add_argument("instance", type=int)
    ap.add_argument("out")
    ap.add_argument("--pause", type=float, default=0.05)
    a = ap.parse_args()
    stop = stop_flag()
    out = open(a.out, "w", buffering=1)
    conn, session, turn = None, 0, 0

    def record(**fields):
        out.write(json.dumps(dict(i=a.instance, n=session, **fields)) + "\n")

    while not stop:
        if conn is None or conn.closed:
            t = time.time()
            try:
                conn = psycopg2.connect(a.dsn, connect_timeout=5, application_name="plain_load")
                conn.autocommit = True
                session += 1
                with conn.cursor() as cur:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (id bigserial PRIMARY KEY,"
                                " instance int NOT NULL, session int NOT NULL, turn int NOT NULL,"
                                " at timestamptz NOT NULL DEFAULT now())")
                    record(s=t, e=time.time(), q="connect", err=None, code=None, cut=False,
                           epoch=epoch(cur))
            except psycopg2.Error as e:
                record(s=t, e=time.time(), q="connect", err=str(e).strip() or type(e).__name__,
                       code=e.pgcode, cut=False)
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.5)
                continue
        turn += 1
        for q in ("insert", "select"):
            t = time.time()
            try:
                with conn.cursor() as cur:
                    if q == "insert":
                        cur.execute(f"INSERT INTO {TABLE} (instance, session, turn)"
                                    " VALUES (%s, %s, %s) RETURNING id", (a.instance, session, turn))
                        row_id = cur.fetchone()[0]
                        err = None
                    else:
                        cur.execute(f"SELECT instance, session, turn FROM {TABLE} WHERE id = %s",
                                    (row_id,))
                        got = cur.fetchall()
                        want = [(a.instance, session, turn)]
                        err = None if got == want else f"read back {got}, wrote {want}"
                record(s=t, e=time.time(), q=q, err=err, code=None, cut=False)
            except psycopg2.Error as e:
                cut = conn.closed != 0
                record(s=t, e=time.time(), q=q, err=str(e).strip() or type(e).__name__,
                       code=e.pgcode, cut=cut)
                if cut:
                    conn = None
                break
        time.sleep(a.pause)
    if conn is not None:
        conn.close()


if __name__ == "__main__":
    main()

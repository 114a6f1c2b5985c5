"""Issue 12, item 8: keys and values that are not valid UTF-8.

Kafka Streams' StringDeserializer shows such bytes as U+FFFD, so the seed
serves them; a scan of iq_fdw failed on the first one ("key ... is not
valid UTF8"), and with it every full scan of the store.  Now:

- a text column (invalid_utf8 'replace', the default) shows U+FFFD for each
  maximal ill-formed subpart and each NUL, as Python's "replace" (and
  Java's decoder) do, and every query gives what PostgreSQL gives over a
  heap copy of the same rows: ranges, ORDER BY, LIMIT, lookups, joins;
- bytea key and value columns give the bytes as stored, with lookups and
  ranges pushed down exactly and the store's order used for ORDER BY;
- invalid_utf8 'error' fails with SQLSTATE 22021 and a hint;
- the HTTP server's JSON shows the keys as Kafka Streams would.

The records go to topics of their own, read by a private instance with
its own consumer group (port 5443+offset, HTTP 13410+offset): keys that
are not UTF-8 in the shared topics would reach other tests' readers, which
decode the topics as text.
"""

import json
import subprocess

import pytest

from conftest import (BOOTSTRAP, OFFSET, PG_BIN, base_url, http_get_at, private_pipeline, pushdown,
                      scratch_instance, tls_settings, wait_until)
PORT = 5443 + OFFSET
HTTP = 13410 + OFFSET

# keys as bytes: valid ASCII and non-ASCII, ill-formed sequences of every
# kind, NUL, and a real U+FFFD that the replaced keys collide with
P = b"u8:"
KEYS = [
    P + b"a", P + b"b", P + b"z", P + b"~",
    P + "\u00e9t\u00e9".encode(), P + "\U0001F600".encode(), P + "\u65e5".encode(),
    P + b"\x80", P + b"\xff", P + b"\xc3(", P + b"\xe2\x82", P + b"\xe2\x82z",
    P + b"\xf8z", P + b"\xed\xa0\x80", P + b"\xf0\x9f\x98", P + b"a\xfe",
    P + b"n\x00ul", P + "\ufffd".encode(), b"\xffstart", b"\x00lead", b"zz\x80",
]
VALUES = {k: (b"caf\xe9 " + k[3:] if i % 3 == 0 else b"v" + str(i).encode())
          for i, k in enumerate(KEYS)}
ORDERS = {k: 1 + i % 4 for i, k in enumerate(KEYS)}


def as_text(b):
    """What a text column shows: Python's replace, and NUL as U+FFFD."""
    return b.decode("utf-8", "replace").replace("\x00", "\ufffd")


def lit(s):
    return "'" + s.replace("'", "''") + "'"


def hexlit(b):
    return "'\\x" + b.hex() + "'"


def run(sql, timeout=60, check=True):
    """sql on the private instance; (stdout, stderr), bytes decoded strictly."""
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-q", "-h", "127.0.0.1", "-p", str(PORT),
                        "-U", "postgres", "-d", "postgres", "-v",
                        "ON_ERROR_STOP=1" if check else "ON_ERROR_STOP=0"],
                       input=sql.encode(), capture_output=True, timeout=timeout)
    out, err = r.stdout.decode("utf-8"), r.stderr.decode("utf-8")
    if check and r.returncode != 0:
        raise AssertionError(f"psql failed: {err}\n  while running: {sql}")
    return out.strip(), err.strip()


def q(sql):
    return run("SET search_path = u8, public;\n" + sql)[0]


def q_error(sql):
    out, err = run("\\set VERBOSITY verbose\nSET search_path = u8, public;\n" + sql, check=False)
    assert "ERROR" in err, (out, err)
    return err


def produce_raw(topic, records):
    """Produce (key bytes, value bytes) with kcat, partitioned by murmur2 as
    the Java client (and the worker's default iq_fdw.partitioner)."""
    data = b"".join(k + b"\t" + v + b"\n" for k, v in records)
    for k, v in records:
        assert b"\t" not in k and b"\n" not in k + v
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", topic, "-K", "\t",
                    "-X", "partitioner=murmur2_random"], input=data, check=True, timeout=60)


TABLES = """
DROP SCHEMA IF EXISTS u8 CASCADE;
CREATE SCHEMA u8;
CREATE SERVER IF NOT EXISTS iq FOREIGN DATA WRAPPER iq_fdw;
CREATE FOREIGN TABLE u8.customer (key text COLLATE "C", value text) SERVER iq
  OPTIONS (store 'customer-v1-changelog');
CREATE FOREIGN TABLE u8.order_count (key text COLLATE "C", count bigint) SERVER iq
  OPTIONS (store 'order-count');
CREATE FOREIGN TABLE u8.customer_raw (key bytea, value bytea) SERVER iq
  OPTIONS (store 'customer-v1-changelog');
CREATE FOREIGN TABLE u8.order_count_raw (key bytea, count bigint) SERVER iq
  OPTIONS (store 'order-count');
CREATE FOREIGN TABLE u8.customer_err (key text COLLATE "C", value text) SERVER iq
  OPTIONS (store 'customer-v1-changelog', invalid_utf8 'error');
CREATE FOREIGN TABLE u8.customer_val_err (key bytea, value text) SERVER iq
  OPTIONS (store 'customer-v1-changelog', invalid_utf8 'error');
"""


@pytest.fixture(scope="module")
def private():
    """A scratch instance whose worker reads topics of its own, holding KEYS."""
    customer, order, app, settings = private_pipeline("u8", HTTP)
    settings.update(tls_settings(1))
    with scratch_instance("utf8", PORT, settings,
                          ("-E", "UTF8", "--locale=C.UTF-8", "--lc-collate=C")) as base:
        run("CREATE EXTENSION iq_fdw;")
        # one at a time: a build without bytea keys or invalid_utf8 refuses some
        for stmt in TABLES.split(";\n"):
            if stmt.strip():
                run(stmt + ";", check=False)
        produce_raw(customer, [(k, VALUES[k]) for k in KEYS])
        produce_raw(order, [(k, b"food") for k in KEYS for _ in range(ORDERS[k])])
        wait_until(lambda: held() == (len(KEYS), sum(ORDERS.values()), len(KEYS)),
                   timeout=180, interval=1, message="the private worker to hold every record")
        yield base


def held():
    """(keys counted, orders counted, customers) as the private worker's HTTP
    server lists them (any build answers this)."""
    counts = json.loads(http_get_private("/stores/order-count/all")[1])["result"]
    customers = json.loads(http_get_private("/stores/customer-v1-changelog/all")[1])["result"]
    return len(counts), sum(r["value"] for r in counts), len(customers)


def heap_copy_sql():
    """Temp heap tables holding the rows as a text column shows them."""
    rows = ",".join(f"({lit(as_text(k))}, {lit(as_text(VALUES[k]))}, {ORDERS[k]})"
                    for k in KEYS)
    return ('CREATE TEMP TABLE h (key text COLLATE "C", value text, count bigint);\n'
            f"INSERT INTO h VALUES {rows};\n")


# ---- text columns, invalid_utf8 'replace' -----------------------------------------

def test_full_scan_shows_replacement(private):
    got = q("SELECT key, value FROM customer").splitlines()
    want = [f"{as_text(k)}|{as_text(VALUES[k])}" for k in KEYS]
    assert sorted(got) == sorted(want)
    got = q("SELECT key, count FROM order_count").splitlines()
    assert sorted(got) == sorted(f"{as_text(k)}|{ORDERS[k]}" for k in KEYS)


def test_order_by_key_is_text_order(private):
    want = sorted((as_text(k) for k in KEYS), key=lambda s: s.encode())
    assert q("SELECT key FROM order_count ORDER BY key").splitlines() == want
    assert q("SELECT key FROM customer ORDER BY key LIMIT 4").splitlines() == want[:4]
    plan = q("EXPLAIN (COSTS OFF) SELECT key FROM order_count ORDER BY key")
    assert "Sort" in plan, plan


# bounds on both sides of the replaced keys: ASCII, non-ASCII, U+FFFD itself
BOUNDS = ["", "u8:", "u8:a", "u8:b", "u8:n", "u8:~", "u8:\u00e9", "u8:\ufffd", "u8:\ufffd(",
          "u8:\U0001F600", "u8:\u65e5", "u8:\x7f", "zz", "\ufffd", "\ufffdstart", "{"]
# several keys show as one text: order by count too, so ties are the same
QUERIES = [
    "SELECT key, count FROM {t} WHERE key >= {a} ORDER BY key, count",
    "SELECT key, count FROM {t} WHERE key > {a} AND key <= {b} ORDER BY key, count",
    "SELECT key, count FROM {t} WHERE key < {a} ORDER BY key, count",
    "SELECT key, count FROM {t} WHERE key BETWEEN {a} AND {b} ORDER BY key, count LIMIT 2",
    "SELECT key, count FROM {t} WHERE key <= {b} ORDER BY key DESC, count LIMIT 3",
    "SELECT count(*) FROM (SELECT * FROM {t} WHERE key < {b} LIMIT 3) s",
    "SELECT key, count FROM {t} WHERE key = {a} ORDER BY 1, 2",
    "SELECT key, count FROM {t} WHERE key IN ({a}, {b}, 'u8:a') ORDER BY 1, 2",
]


def test_ranges_and_lookups_match_a_heap_copy(private):
    """Every query gives on the foreign table what it gives on a heap table
    of the same rows (as text shows them)."""
    checks = []
    for i, a in enumerate(BOUNDS):
        b = BOUNDS[(i * 7 + 3) % len(BOUNDS)]
        for tmpl in QUERIES:
            for t in ("order_count", "h"):
                checks.append(tmpl.format(t=t, a=lit(a), b=lit(b)))
    sql = heap_copy_sql() + "".join(
        f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY n), '')) FROM "
        f"(SELECT row_number() OVER () n, s AS x FROM ({c}) s) r;\n" for c in checks)
    out = q(sql).splitlines()
    assert len(out) == len(checks)
    bad = [checks[i] for i in range(0, len(checks), 2) if out[i] != out[i + 1]]
    assert not bad, bad


def test_lookup_of_replacement_character(private):
    """key = 'u8:\ufffd' finds every stored key that shows as that text (the
    bytes 80, FF, E2 82, F0 9F 98 and a real U+FFFD), not only the key of
    those bytes; a lookup never returns a row whose text differs from the
    key asked."""
    shown = "u8:\ufffd"
    want = sorted(f"{shown}|{ORDERS[k]}" for k in KEYS if as_text(k) == shown)
    assert len(want) == 5
    assert sorted(q(f"SELECT key, count FROM order_count WHERE key = {lit(shown)}")
                  .splitlines()) == want
    got = q(f"PREPARE l(text) AS SELECT key, count FROM order_count WHERE key = $1;\n"
            f"EXECUTE l({lit(shown)}); EXECUTE l('u8:a'); EXECUTE l({lit('u8:a' + chr(0xfffd))});")
    assert sorted(got.splitlines()) == sorted(want + [f"u8:a|{ORDERS[P + b'a']}",
                                                      f"u8:a\ufffd|{ORDERS[P + b'a' + bytes([0xfe])]}"])
    # a join looks up each outer key: the same rows as the heap's
    sql = heap_copy_sql() + ("SELECT count(*), sum(o.count) FROM h JOIN order_count o USING (key);\n"
                             "SELECT count(*), sum(o.count) FROM h JOIN h o USING (key);")
    a, b = q(sql).splitlines()
    assert a == b


# ---- bytea columns ----------------------------------------------------------------

def test_bytea_gives_the_bytes_in_store_order(private):
    got = q("SELECT encode(key, 'hex'), encode(value, 'hex') FROM customer_raw").splitlines()
    assert got == [f"{k.hex()}|{VALUES[k].hex()}" for k in sorted(KEYS)]
    got = q("SELECT encode(key, 'hex') FROM order_count_raw ORDER BY key").splitlines()
    assert got == [k.hex() for k in sorted(KEYS)]
    plan = q("EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM order_count_raw "
             "WHERE key >= '\\x75383a' AND key < '\\x75383aff' ORDER BY key LIMIT 5")
    assert "Key Range: key >= '\\x75383a' AND key < '\\x75383aff'" in plan, plan
    assert "Limit: 5" in plan and "Sort" not in plan, plan


def test_bytea_lookups_and_ranges_are_exact(private):
    for k in KEYS:
        sql = f"SELECT count FROM order_count_raw WHERE key = {hexlit(k)}"
        assert pushdown(q, sql) == [f"Key Lookup: key = {hexlit(k)}"], k
        got = q(sql)
        assert got == str(ORDERS[k]), k
    ks = [P + b"\x80", P + b"\xff", P + "\ufffd".encode(), P + b"nope"]
    lst = ", ".join(hexlit(k) for k in ks)
    sql = f"SELECT encode(key, 'hex') FROM order_count_raw WHERE key IN ({lst}) ORDER BY key"
    assert pushdown(q, sql) == [f"Key Lookup: key IN ({lst})"]
    got = q(sql).splitlines()
    assert got == [k.hex() for k in sorted(ks) if k in ORDERS]
    srt = sorted(KEYS)
    for lo, hi in [(P, P + b"\x80"), (P + b"\x80", P + b"\xf0"), (b"", b"\x01"), (P + b"z", b"\xff")]:
        sql = (f"SELECT encode(key, 'hex') FROM order_count_raw WHERE key >= {hexlit(lo)} "
               f"AND key < {hexlit(hi)} ORDER BY key LIMIT 4")
        assert pushdown(q, sql) == [f"Key Range: key >= {hexlit(lo)} AND key < {hexlit(hi)}"], (lo, hi)
        got = q(sql).splitlines()
        assert got == [k.hex() for k in srt if lo <= k < hi][:4], (lo, hi)


# ---- invalid_utf8 'error' -----------------------------------------------------------

def test_error_mode_names_the_key_with_sqlstate_and_hint(private):
    err = q_error("SELECT * FROM customer_err")
    assert "22021" in err and "is not valid UTF8" in err and 'store "customer-v1-changelog"' in err, err
    assert "HINT" in err and "bytea" in err and "'replace'" in err, err
    # a valid key reads fine, a bad value fails with the value named
    assert q("SELECT value FROM customer_err WHERE key = 'u8:b'") == as_text(VALUES[P + b"b"])
    err = q_error(f"SELECT value FROM customer_val_err WHERE key = {hexlit(P + b'a')}")
    assert "22021" in err and "value of key 'u8:a'" in err, err


# ---- HTTP -----------------------------------------------------------------------------

def test_http_json_shows_keys_as_kafka_streams(private):
    status, body = http_get_private("/stores/customer-v1-changelog/all")
    assert status == 200, body
    rows = json.loads(body)["result"]
    # JSON can hold NUL (\\u0000); Java's decoder keeps it
    want = sorted((k.decode("utf-8", "replace"), VALUES[k].decode("utf-8", "replace")) for k in KEYS)
    assert sorted((r["key"], r["value"]) for r in rows) == want
    status, body = http_get_private("/stores/customer-v1-changelog/get/u8%3A%E2%82z")
    assert status == 200 and json.loads(body) == {"response": VALUES[P + b"\xe2\x82z"].decode(
        "utf-8", "replace")}


def http_get_private(path):
    return http_get_at(base_url(port=HTTP), path, timeout=10)

"""Issue 4: the seed's HTTP API on every instance, and the compact peer endpoint.

With the seed's data produced as the seed does it: the seed's curl lines give
the seed's answers (up to the order of instances, and alongside whatever
other tests produced, so answers are compared with the truth read back from
the topics); a get of any key from any instance gives the same value; the
owner named by /metadata/.../key/k is the same from everywhere and holds the
partition the key was produced to; bad input (malformed requests, unknown
stores, very long URLs, escaped and non-ASCII keys, invalid UTF-8) and a few
hundred concurrent connections leave every server answering.
"""

import json
import os
import socket
import struct
import threading
import time
import urllib.parse

import pytest

from conftest import (INSTANCES, KeepAlive, base_url, connect_http, consume, freeze, http_connection, http_get,
                      http_json, http_port, java_partition, local_socket_path, post_wire, produce, recv_until_closed,
                      thaw, tls_on, urlopen, wait_until)

SEED_CUSTOMERS = ["1--john", "2--adam", "3--daniel", "4--james", "5--jack", "6--mathew", "7--will"]
SEED_ORDERS = ["1--spagety", "2--pizza", "--pasta"]
STORE_NAMES = ["customer-v1-changelog", "order-count"]
PARTITIONS = 3

RUN = f"h{os.getpid() % 10000:04d}{time.monotonic_ns() % 100000:05d}"
# keys that need escaping in a URL, or are not ASCII; the console producer
# splits on "--" and lines, so neither appears in them
ODD_KEYS = [f"{RUN} space", f"{RUN}/slash", f"{RUN}%percent", f"{RUN}?q=1&x", f"{RUN}#frag",
            f"{RUN}+plus", f'{RUN}"quote', f"{RUN}\\backslash", f"{RUN}\u00e9t\u00e9",
            f"{RUN}\u65e5\u672c", f"{RUN}\U0001F600", f"{RUN}\ttab"]
BULK_KEYS = [f"{RUN}-k{i:04d}" for i in range(300)]


def url_key(k):
    return urllib.parse.quote(k, safe="")


def instance_name(i):
    return ("localhost", http_port(i))


@pytest.fixture(scope="module")
def data():
    """The seed's records, our odd and bulk keys, and the truth from the topics."""
    produce("customer", SEED_CUSTOMERS + [f"{k}--name of {k}" for k in ODD_KEYS + BULK_KEYS])
    produce("order", SEED_ORDERS + [f"{k}--food" for k in BULK_KEYS[:50]])

    def truth():
        customers, parts = {}, {}
        for p, k, v in consume("customer", timeout=120):
            if k is None:
                continue
            parts[k] = p
            if v is None:
                customers.pop(k, None)
            else:
                customers[k] = v
        return customers, parts

    customers, parts = truth()

    def caught_up():
        for i in INSTANCES:
            for k in ODD_KEYS + BULK_KEYS[-1:] + ["7"]:
                body = http_json(i, f"/stores/customer-v1-changelog/get/{url_key(k)}")
                if body != {"response": customers[k]}:
                    return False
            if http_json(i, f"/stores/order-count/get/{url_key(BULK_KEYS[49])}")["response"] is None:
                return False
        return True

    wait_until(caught_up, timeout=120, message="every instance serves the produced keys")
    return customers, parts


def all_local(i, store, query=""):
    return http_json(i, f"/stores/{store}/all{query}")["result"]


# ---- the seed's curl lines --------------------------------------------------

def test_metadata_lists_every_instance_with_both_stores(data):
    expected = sorted(instance_name(i) for i in INSTANCES)
    for i in INSTANCES:
        for path in ("/metadata", "/metadata/stores/order-count",
                     "/metadata/stores/customer-v1-changelog"):
            result = http_json(i, path)["result"]
            assert sorted((m["host"], m["port"]) for m in result) == expected, path
            for m in result:
                assert list(m) == ["host", "port", "state-store-names"]
                assert m["state-store-names"] == STORE_NAMES


def test_all_answers_for_this_instances_partitions_in_key_order(data):
    customers, parts = data
    seen = {}
    for i in INSTANCES:
        rows = all_local(i, "customer-v1-changelog")
        keys = [r["key"] for r in rows]
        assert keys == sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))
        for r in rows:
            assert list(r) == ["key", "value"]
            assert r["key"] not in seen, f"{r['key']!r} on two instances"
            seen[r["key"]] = r["value"]
        # this instance owns every row's key: a key per partition it answered
        # for stands for the partition (the store holds some 170,000 keys by
        # now: asking for each took minutes), and our odd keys each
        ask = set({parts[k]: k for k in keys}.values()) | set(keys) & set(ODD_KEYS)
        with KeepAlive(i) as h:  # a handshake each would take long over TLS
            for k in sorted(ask):
                owner = h.json(f"/metadata/stores/customer-v1-changelog/key/{url_key(k)}")
                assert owner["result"]["port"] == http_port(i), k
    for k in ["1", "2", "3", "4", "5", "6", "7"] + ODD_KEYS + BULK_KEYS:
        assert seen[k] == customers[k]


def test_all_with_scope_all_gathers_every_instance(data):
    customers, _ = data
    answers = [all_local(i, "customer-v1-changelog", "?scope=all") for i in INSTANCES]
    assert answers[0] == answers[1] == answers[2]
    keys = [r["key"] for r in answers[0]]
    assert keys == sorted(keys, key=lambda k: k.encode("utf-8", "surrogatepass"))
    got = {r["key"]: r["value"] for r in answers[0]}
    for k in ["1", "2", "3", "4", "5", "6", "7"] + ODD_KEYS + BULK_KEYS:
        assert got[k] == customers[k]


def test_get_like_the_seed_from_every_instance(data):
    for i in INSTANCES:
        assert http_json(i, "/stores/customer-v1-changelog/get/2") == {"response": "adam"}
        assert http_json(i, "/stores/customer-v1-changelog/get/no-such-key") == {"response": None}
        counts = http_json(i, "/stores/order-count/get/1")["response"]
        assert isinstance(counts, int) and counts >= 1


def test_range_like_the_seed(data):
    customers, _ = data
    truth = sorted(k for k in customers if "1" <= k <= "5")
    union = []
    for i in INSTANCES:
        rows = http_json(i, "/stores/customer-v1-changelog/range?from=1&to=5")["result"]
        keys = [r["key"] for r in rows]
        assert keys == sorted(keys)
        assert all(r["value"] == customers[r["key"]] for r in rows)
        union += keys
    assert sorted(union) == truth
    everywhere = http_json(1, "/stores/customer-v1-changelog/range?from=1&to=5&scope=all")
    assert [r["key"] for r in everywhere["result"]] == truth


def test_descending_order_reads_backwards_locally_and_gathered(data):
    """order=desc (Kafka Streams' reverseRange, reverseAll): the keys of the
    ascending answer, the other way round; every store is read backwards."""
    customers, _ = data
    lo, hi = f"{RUN}-k0040", f"{RUN}-k0290"
    truth = sorted((k for k in customers if lo <= k <= hi), reverse=True)
    assert len(truth) == 251
    q = f"from={url_key(lo)}&to={url_key(hi)}"
    union = []
    for i in INSTANCES:
        asc = http_json(i, f"/stores/customer-v1-changelog/range?{q}")["result"]
        desc = http_json(i, f"/stores/customer-v1-changelog/range?{q}&order=desc")["result"]
        assert desc == asc[::-1]
        union += [r["key"] for r in desc]
        everywhere = http_json(i, f"/stores/customer-v1-changelog/range?{q}&order=desc&scope=all")
        assert [r["key"] for r in everywhere["result"]] == truth
        assert all(r["value"] == customers[r["key"]] for r in everywhere["result"])
    assert sorted(union, reverse=True) == truth
    mine = lambda rows: [r for r in rows if r["key"].startswith(f"{RUN}-k")]
    asc = mine(all_local(2, "customer-v1-changelog", "?scope=all"))
    assert len(asc) == len(BULK_KEYS)
    assert mine(all_local(2, "customer-v1-changelog", "?scope=all&order=desc")) == asc[::-1]
    status, body = error_of(1, "/stores/customer-v1-changelog/all?order=up")
    assert status == 400 and "order" in body["error"]


def test_approximate_num_entries(data):
    total = 0
    for i in INSTANCES:
        n = http_json(i, "/stores/customer-v1-changelog/approximate-num-entries")["result"]
        assert isinstance(n, int) and n >= 0
        total += n
    assert total > 0
    everywhere = http_json(1, "/stores/customer-v1-changelog/approximate-num-entries?scope=all")
    assert isinstance(everywhere["result"], int) and everywhere["result"] > 0


def test_order_counts_are_json_numbers(data):
    rows = all_local(1, "order-count", "?scope=all")
    assert rows and all(isinstance(r["value"], int) for r in rows)
    for k in BULK_KEYS[:50]:
        assert http_json(2, f"/stores/order-count/get/{url_key(k)}") == {"response": 1}


# ---- any key, any instance ----------------------------------------------------

def test_get_every_key_from_every_instance_gives_the_same_value(data):
    customers, _ = data
    for k in ["1", "2", "3", "4", "5", "6", "7"] + ODD_KEYS + BULK_KEYS:
        for i in INSTANCES:
            body = http_json(i, f"/stores/customer-v1-changelog/get/{url_key(k)}")
            assert body == {"response": customers[k]}, (i, k)


def test_forwarded_get_answers_byte_for_byte_as_the_owner(data):
    """Without TLS the asking instance renders a forwarded get's JSON itself
    from the owner's stream answer (forward_stream.c): the bytes and status
    must be the owner's own, found or not, for every kind of key."""
    for k in ["1", "2", "7"] + ODD_KEYS + BULK_KEYS[:40] + [f"{RUN}-missing-{n}" for n in range(20)]:
        for store in ("customer-v1-changelog", "order-count"):
            answers = {http_get(i, f"/stores/{store}/get/{url_key(k)}") for i in INSTANCES}
            assert len(answers) == 1, (store, k, answers)


def test_key_metadata_agrees_everywhere_and_with_the_partition_produced_to(data):
    _, parts = data
    owners_of_partition = {}
    for k in ["1", "2", "3", "4", "5", "6", "7"] + ODD_KEYS + BULK_KEYS[:60]:
        named = {json.dumps(http_json(i, f"/metadata/stores/order-count/key/{url_key(k)}"))
                 for i in INSTANCES}
        assert len(named) == 1, (k, named)
        owner = json.loads(named.pop())["result"]
        assert parts[k] == java_partition(k, PARTITIONS)
        # one owner per partition, and it holds the key in its local "all"
        owners_of_partition.setdefault(parts[k], set()).add(owner["port"])
    for p, owners in owners_of_partition.items():
        assert len(owners) == 1, (p, owners)
    local = {http_port(i): {r["key"] for r in all_local(i, "customer-v1-changelog")}
             for i in INSTANCES}
    for k in ["1", "2", "3", "4", "5", "6", "7"] + ODD_KEYS:
        owner = http_json(1, f"/metadata/stores/customer-v1-changelog/key/{url_key(k)}")
        assert k in local[owner["result"]["port"]]


def test_escaped_slash_and_raw_utf8_in_the_path(data):
    customers, _ = data
    k = f"{RUN}/slash"
    # %2F and a raw '/' both reach the same key
    assert http_json(3, f"/stores/customer-v1-changelog/get/{RUN}%2Fslash")["response"] == customers[k]
    assert http_json(3, f"/stores/customer-v1-changelog/get/{RUN}/slash")["response"] == customers[k]
    raw = f"/stores/customer-v1-changelog/get/{RUN}\u00e9t\u00e9".encode()
    status, body = raw_request(1, b"GET " + raw + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert status == 200 and json.loads(body) == {"response": customers[f"{RUN}\u00e9t\u00e9"]}


def test_invalid_utf8_still_gives_valid_json(data):
    """Bytes that are not UTF-8 come back as U+FFFD (records with such keys
    are not produced here: they would break other tests' readers of the
    shared topics; the store path uses the same escaping)."""
    for i in INSTANCES:
        status, body = http_get(i, "/stores/%FF%FEx%C3%28/all")
        assert status == 404
        assert json.loads(body)["error"] == 'unknown store "\ufffd\ufffdx\ufffd("'
        status, body = http_get(i, "/stores/customer-v1-changelog/get/%FF%00%C0%AF")
        assert status == 200 and json.loads(body) == {"response": None}


# ---- errors -------------------------------------------------------------------

def raw_request(i, data, timeout=5, plain=False):
    """Send raw bytes (inside TLS on a TLS cluster, unless plain); return
    (status, body) of the answer, (None, '') if none."""
    chunks = []
    with (socket.create_connection(("127.0.0.1", http_port(i)), timeout=timeout) if plain
          else connect_http(i, timeout=timeout)) as s:
        try:
            s.sendall(data)
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except OSError:
            pass  # the server may hang up on what it will not read (a TLS alert, a reset)
    reply = b"".join(chunks)
    if not reply.startswith(b"HTTP/"):
        return None, ""
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("utf-8", "replace")


def error_of(i, path):
    status, body = http_get(i, path)
    return status, json.loads(body)


def test_unknown_store_is_404(data):
    for path in ("/stores/nope/all", "/stores/nope/get/1", "/metadata/stores/nope",
                 "/metadata/stores/nope/key/1", "/stores/nope/approximate-num-entries"):
        status, body = error_of(1, path)
        assert status == 404 and "nope" in body["error"], path


def test_unknown_path_and_bad_scope(data):
    assert error_of(2, "/nothing/here")[0] == 404
    assert error_of(2, "/stores/order-count/whatever")[0] == 404
    assert error_of(2, "/stores/order-count/all?scope=galaxy")[0] == 400


def test_very_long_urls_are_414(data):
    status, body = error_of(1, "/stores/customer-v1-changelog/get/" + "x" * 9000)
    assert status == 414 and "longer" in body["error"]
    # beyond the connection's memory, libmicrohttpd answers 414 itself
    status, _ = raw_request(1, b"GET /stores/customer-v1-changelog/get/" + b"y" * 200_000 +
                            b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert status in (414, 431, None)
    assert http_json(1, "/metadata")["result"]


def test_malformed_requests_leave_the_server_answering(data):
    garbage = [b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
               b"GET /metadata HTTP/1.1\r\nHost: localhost\r\nContent-Length: -5\r\n\r\n",
               b"GET /metadata HTTP/1.1\r\n" + b"X-Long: " + b"h" * 100_000 + b"\r\n\r\n",
               b"POST /iq/v1/read HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
               b"GET /stores/customer-v1-changelog/get/%zz%1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
               b"DELETE /metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"]
    for g in garbage:
        for i in INSTANCES:
            status, _ = raw_request(i, g, timeout=2)
            assert status is None or 200 <= status < 600
            if tls_on():  # and the same bytes where a TLS handshake should begin
                status, _ = raw_request(i, g, timeout=2, plain=True)
                assert status is None or status == 400
    for i in INSTANCES:
        assert http_json(i, "/stores/customer-v1-changelog/get/2") == {"response": "adam"}


def test_peer_endpoint_rejects_bad_bodies(data):
    for body in (b"", b"IQ", b"XX\x01\x02\x00\x00\x00\x00\x00\x00", b"IQ\x01\x09" + b"\x00" * 20,
                 b"IQ\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"):
        status, answer = post_read(1, body)
        assert status == 200
        assert answer[:2] == b"IQ" and answer[3] == 4  # IQ_WIRE_BAD_REQUEST
    assert http_json(1, "/metadata")["result"]


def test_hundreds_of_concurrent_connections(data):
    customers, _ = data
    errors = []
    start = threading.Barrier(300)

    def client(n):
        i = INSTANCES[n % len(INSTANCES)]
        k = BULK_KEYS[n % len(BULK_KEYS)]
        try:
            with connect_http(i, timeout=30) as s:
                start.wait(timeout=60)
                for _ in range(3):
                    s.sendall(f"GET /stores/customer-v1-changelog/get/{url_key(k)} HTTP/1.1\r\n"
                              f"Host: localhost\r\n\r\n".encode())
                    head = b""
                    while b"\r\n\r\n" not in head:
                        c = s.recv(4096)
                        if not c:
                            raise AssertionError("connection closed")
                        head += c
                    h, _, body = head.partition(b"\r\n\r\n")
                    length = int([line.split(b":")[1] for line in h.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")][0])
                    while len(body) < length:
                        body += s.recv(4096)
                    assert json.loads(body) == {"response": customers[k]}
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(300)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:5]
    for i in INSTANCES:
        assert http_json(i, "/metadata")["result"]


# ---- the compact endpoint -------------------------------------------------------

def wire_request(op, store, partitions=(), keys=(), lower=None, upper=None, limit=0):
    flags = (0x03 if lower is not None else 0) | (0x0C if upper is not None else 0)
    out = b"IQ" + struct.pack(">BBBBI", 1, op, store, flags, limit)
    out += struct.pack(">H", len(partitions)) + b"".join(struct.pack(">H", p) for p in partitions)
    if op == 1:
        out += struct.pack(">I", len(keys)) + b"".join(struct.pack(">I", len(k)) + k for k in keys)
    for b in (lower, upper):
        if b is not None:
            out += struct.pack(">I", len(b)) + b
    return out


def post_read(i, body):
    return post_wire(i, "/iq/v1/read", body)


def parse_answer(data):
    """(status, positions {p: (consumed, end)}, rows [(key, value)], message)."""
    assert data[:3] == b"IQ\x01"
    status = data[3]
    if status != 0:
        (n,) = struct.unpack(">I", data[4:8])
        # whole: over TLS its head and its message may come in records of their own
        assert len(data) >= 8 + n, "a part of the answer"
        return status, {}, [], data[8:8 + n].decode()
    (n,) = struct.unpack(">H", data[4:6])
    pos, off = {}, 6
    for _ in range(n):
        p, c, e = struct.unpack(">Hqq", data[off:off + 18])
        pos[p] = (c, e)
        off += 18
    rows = []
    while True:
        tag = data[off:off + 1]
        if tag == b"R":
            (kl,) = struct.unpack(">I", data[off + 1:off + 5])
            k = data[off + 5:off + 5 + kl]
            (vl,) = struct.unpack(">i", data[off + 5 + kl:off + 9 + kl])
            v = data[off + 9 + kl:off + 9 + kl + max(vl, 0)] if vl >= 0 else None
            rows.append((k, v))
            off += 9 + kl + max(vl, 0)
        else:
            assert tag == b"E", data[off:off + 20]
            st = data[off + 1]
            (ml,) = struct.unpack(">I", data[off + 2:off + 6])
            assert off + 6 + ml == len(data)
            return st, pos, rows, data[off + 6:off + 6 + ml].decode()


def test_peer_endpoint_scans_held_partitions_and_refuses_others(data):
    customers, parts = data
    owner = {}
    for p in range(PARTITIONS):
        k = next(k for k, pp in parts.items() if pp == p and k in customers)
        port = http_json(1, f"/metadata/stores/customer-v1-changelog/key/{url_key(k)}")["result"]["port"]
        owner[p] = next(i for i in INSTANCES if http_port(i) == port)
    for p, i in owner.items():
        st, pos, rows, _ = parse_answer(post_read(i, wire_request(2, 0, partitions=[p]))[1])
        assert st == 0 and list(pos) == [p]
        consumed, end = pos[p]
        assert end >= 0
        keys = [r[0] for r in rows]
        assert keys == sorted(keys)
        expected = sorted(k.encode() for k, pp in parts.items() if pp == p and k in customers)
        assert keys == expected
        # a bounded, limited scan
        st, _, rows, _ = parse_answer(post_read(i, wire_request(2, 0, partitions=[p], lower=b"1",
                                                                upper=b"5", limit=1))[1])
        assert st == 0 and len(rows) <= 1
        # a partition held elsewhere: NOT_HELD, no rows
        other = (p + 1) % PARTITIONS
        st, _, rows, msg = parse_answer(post_read(i, wire_request(2, 0, partitions=[other]))[1])
        assert st == 1 and not rows and str(other) in msg
    # unknown store
    st, _, _, _ = parse_answer(post_read(1, wire_request(2, 9))[1])
    assert st == 3


# ---- an owner that does not answer --------------------------------------------------

def test_frozen_owner_gives_504_naming_it_and_nothing_hangs(data):
    """SIGSTOP the worker of the instance owning a key: a forwarded get from
    another instance answers 504 within the peer timeout, naming the owner;
    the asking instance keeps answering its own keys meanwhile."""
    from conftest import psql
    customers, _ = data
    k = BULK_KEYS[7]

    def agreed_owner():
        # earlier tests may have left a rebalance settling: ask only once every
        # instance names the same owner, twice in a row
        ports = [http_json(i, f"/metadata/stores/customer-v1-changelog/key/{url_key(k)}")
                 ["result"]["port"] for i in INSTANCES for _ in (0, 1)]
        return ports[0] if len(set(ports)) == 1 else None
    owner_port = wait_until(agreed_owner, timeout=60, message="every instance names the same owner")
    owner = next(i for i in INSTANCES if http_port(i) == owner_port)
    asker = next(i for i in INSTANCES if i != owner)
    shown = psql(asker, "SHOW iq_fdw.peer_timeout")  # e.g. "5s" or "1500ms"
    timeout_ms = int(shown[:-2]) if shown.endswith("ms") else int(shown.rstrip("s")) * 1000
    own_key = next(kk for kk in BULK_KEYS
                   if http_json(asker, f"/metadata/stores/customer-v1-changelog/key/{url_key(kk)}")
                   ["result"]["port"] == http_port(asker))
    pid = int(psql(owner, "SELECT pid FROM iq_worker()"))
    freeze(pid)
    try:
        t0 = time.monotonic()
        status, body = http_get(asker, f"/stores/customer-v1-changelog/get/{url_key(k)}",
                                timeout=timeout_ms / 1000 + 10)
        elapsed = time.monotonic() - t0
        if status != 504:
            # say whether ownership moved under the test (a rebalance left by
            # an earlier test), or the frozen owner really answered
            now = {i: http_get(i, f"/metadata/stores/customer-v1-changelog/key/{url_key(k)}")
                   for i in INSTANCES if i != owner}
            raise AssertionError(f"expected 504 from {asker} forwarding to frozen {owner} "
                                 f"(port {owner_port}, worker {pid}), got {status} {body} "
                                 f"after {elapsed:.1f}s; owner of the key now: {now}")
        err = json.loads(body)
        assert err["owner"] == f"localhost:{owner_port}" and str(owner_port) in err["error"]
        assert elapsed < timeout_ms / 1000 + 3
        # the asker still serves what it owns, at once
        t0 = time.monotonic()
        assert http_json(asker, f"/stores/customer-v1-changelog/get/{url_key(own_key)}") == \
            {"response": customers[own_key]}
        assert time.monotonic() - t0 < 2
    finally:
        thaw(pid)
    wait_until(lambda: http_json(asker, f"/stores/customer-v1-changelog/get/{url_key(k)}") ==
               {"response": customers[k]}, timeout=30, message="the owner answers again")


# ---- the local channel ------------------------------------------------------------

def answer_walk(data, off):
    """(complete, where to go on): the frames of the answer begun in data
    walked from off (None: from its head), without making rows, so that a
    large answer read in many pieces is walked once, not once a piece."""
    if len(data) < 8:
        return False, None
    if data[3] != 0:
        return len(data) >= 8 + struct.unpack(">I", data[4:8])[0], None
    if off is None:
        off = 6 + 18 * struct.unpack(">H", data[4:6])[0]
    while off + 9 <= len(data) and data[off:off + 1] == b"R":
        (kl,) = struct.unpack(">I", data[off + 1:off + 5])
        if off + 9 + kl > len(data):
            break
        (vl,) = struct.unpack(">i", data[off + 5 + kl:off + 9 + kl])
        if off + 9 + kl + max(vl, 0) > len(data):
            break
        off += 9 + kl + max(vl, 0)
    if off + 6 <= len(data) and data[off:off + 1] == b"E":
        return len(data) >= off + 6 + struct.unpack(">I", data[off + 2:off + 6])[0], off
    return False, off


def read_answer(s, data=b""):
    """The rest of one answer on a stream socket, data being its first bytes."""
    buf, off = bytearray(data), None
    while True:
        complete, off = answer_walk(buf, off)
        if complete:
            return bytes(buf)
        c = s.recv(65536)
        if not c:
            return bytes(buf)
        buf += c


def local_call(s, body):
    """One request on a connected local (or upgraded) socket; the whole answer's bytes."""
    s.sendall(struct.pack(">I", len(body)) + body)
    return read_answer(s)


def test_local_socket_is_private_and_rejects_bad_input(data):
    import stat
    customers, parts = data
    for i in INSTANCES:
        path = local_socket_path(i)
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert st.st_uid != 0  # the PostgreSQL user's, not root's
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(path)
            # a malformed request: an error answer, and the connection goes on
            st_, _, _, msg = parse_answer(local_call(s, b"IQ\x01\x07garbage"))
            assert st_ == 4, msg
            k = "2"
            owner_port = http_json(i, f"/metadata/stores/customer-v1-changelog/key/{k}")["result"]["port"]
            answer = parse_answer(local_call(s, wire_request(1, 0, keys=[k.encode()])))
            if owner_port == http_port(i):
                assert answer[0] == 0 and answer[2] == [(b"2", customers["2"].encode())]
            else:
                assert answer[0] == 1  # NOT_HELD: that partition lives elsewhere
            # a length beyond the limit: an error answer, then the worker hangs up
            s.sendall(struct.pack(">I", 64 * 1024 * 1024))
            assert recv_until_closed(s)[:4] == b"IQ\x01\x04"
        assert http_json(i, "/metadata")["result"]


# ---- the upgraded stream -------------------------------------------------------------

UPGRADE = (b"GET /iq/v1/stream HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
           b"Upgrade: iq-wire/1\r\n\r\n")


def test_stream_upgrade_serves_requests_like_the_peer_endpoint(data):
    """GET /iq/v1/stream upgraded: 101, then requests one after the other on
    the connection, answered as POST /iq/v1/read answers them; the first
    request may come in the same write as the upgrade."""
    if tls_on():
        pytest.skip("the upgraded stream is not served over TLS (501, upgrade.c): "
                    "test_access_tls checks the refusal and POST in its place")
    customers, parts = data
    for i in INSTANCES:
        held = [p for p in range(PARTITIONS)
                if parse_answer(post_read(i, wire_request(4, 0, partitions=[p]))[1])[0] == 0]
        if not held:
            continue
        keys = sorted(k.encode() for k, p in parts.items() if p in held and k in customers)[:20]
        get = wire_request(1, 0, partitions=held, keys=keys)
        with connect_http(i, timeout=10) as s:
            s.sendall(UPGRADE + struct.pack(">I", len(get)) + get)
            got = b""
            while b"\r\n\r\n" not in got:
                c = s.recv(65536)
                assert c, got
                got += c
            head, rest = got.split(b"\r\n\r\n", 1)
            lines = head.decode().split("\r\n")
            assert lines[0].startswith("HTTP/1.1 101"), head
            assert "upgrade: iq-wire/1" in [h.lower() for h in lines[1:]], head
            st, _, rows, _ = parse_answer(read_answer(s, rest))
            want = parse_answer(post_read(i, get)[1])
            assert st == 0 and rows == want[2] and len(rows) == len(keys)
            # a malformed request: an error answer, and the stream goes on
            assert parse_answer(local_call(s, b"IQ\x01\x07garbage"))[0] == 4
            # a scan of what the instance holds, in key order
            st, pos, rows, _ = parse_answer(local_call(s, wire_request(2, 0, partitions=held)))
            assert st == 0 and sorted(pos) == held
            assert [r[0] for r in rows] == sorted(k.encode() for k, p in parts.items()
                                                  if p in held and k in customers)
        assert http_json(i, "/metadata")["result"]


def test_stream_without_upgrade_headers_is_426_naming_them(data):
    status, body = http_get(1, "/iq/v1/stream")
    assert status == 426, body
    err = json.loads(body)
    assert err["status"] == 426 and "Upgrade: iq-wire/1" in err["error"]
    # a POST there is not the stream either
    import urllib.error
    import urllib.request
    req = urllib.request.Request(base_url(1) + "/iq/v1/stream", data=b"x")
    try:
        urlopen(req, timeout=10)
        raise AssertionError("POST /iq/v1/stream answered 2xx")
    except urllib.error.HTTPError as e:
        assert e.code == 405
    assert http_json(1, "/metadata")["result"]

# ---- last: it adds customers that the whole-partition checks above would not expect

def test_scope_all_streams_a_large_answer_in_key_order(data):
    """?scope=all is streamed (chunked, no Content-Length) and, past the
    bound at which a peer's transfer is paused (256 kB not yet merged),
    still gives exactly every instance's rows merged in key order."""
    big = [f"{RUN}-big{i:05d}" for i in range(6000)]
    produce("customer", [f"{k}--{'v' * 200}{k}" for k in big])
    q = urllib.parse.urlencode({"from": f"{RUN}-big", "to": f"{RUN}-big~"})

    def local_union():
        rows = []
        for i in INSTANCES:
            rows += http_json(i, f"/stores/customer-v1-changelog/range?{q}")["result"]
        return rows if len(rows) == len(big) else None
    rows = wait_until(local_union, timeout=120, message="every big key stored")
    want = sorted(rows, key=lambda r: r["key"].encode())
    for i in INSTANCES:
        conn = http_connection(i, timeout=30)
        conn.request("GET", f"/stores/customer-v1-changelog/range?{q}&scope=all")
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 200, body[:300]
        assert resp.getheader("Transfer-Encoding") == "chunked", resp.getheaders()
        assert resp.getheader("Content-Length") is None
        assert len(body) > 3 * 256 * 1024
        assert json.loads(body)["result"] == want

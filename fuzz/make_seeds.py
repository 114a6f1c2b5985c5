#!/usr/bin/env python3
"""Write the seed corpora of the fuzz targets (fuzz/corpus/<target>/): a few
well-formed inputs of each kind, from which libFuzzer mutates.  Run it again
after a change of the wire format; the files are committed."""

import struct
from pathlib import Path

HERE = Path(__file__).resolve().parent


def request(op, store=1, flags=0, limit=0, partitions=(), keys=(), lower=None, upper=None):
    b = b"IQ" + bytes([1, op, store, flags]) + struct.pack(">I", limit)
    b += struct.pack(">H", len(partitions)) + b"".join(struct.pack(">H", p) for p in partitions)
    if op == 1:
        b += struct.pack(">I", len(keys)) + b"".join(struct.pack(">I", len(k)) + k for k in keys)
    for bound in (lower, upper):
        if bound is not None:
            b += struct.pack(">I", len(bound)) + bound
    return b


def answer(positions=(), rows=(), end=0, message=b""):
    b = b"IQ\x01\x00" + struct.pack(">H", len(positions))
    b += b"".join(struct.pack(">Hqq", *p) for p in positions)
    for k, v in rows:
        b += b"R" + struct.pack(">I", len(k)) + k
        b += struct.pack(">i", -1) if v is None else struct.pack(">i", len(v)) + v
    return b + b"E" + bytes([end]) + struct.pack(">I", len(message)) + message


def error_answer(status, message):
    return b"IQ\x01" + bytes([status]) + struct.pack(">I", len(message)) + message


SEEDS = {
    "wire_request": {
        "get": request(1, keys=[b"1", b"key two"], partitions=[0, 2]),
        "scan_range": request(2, flags=0x0F, lower=b"a", upper=b"z", limit=10),
        "scan_all": request(2, store=0, partitions=[0, 1, 2]),
        "count": request(3),
        "positions": request(4, partitions=[1]),
    },
    "wire_reader": {
        "rows": b"\x05" + answer([(0, 10, 12), (2, 5, 5)],
                                 [(b"1", struct.pack(">q", 3)), (b"2", None), (b"\xff", b"x")]),
        "empty": b"\x00" + answer(),
        "not_held": b"\x03" + error_answer(1, b"partition 2 is not held by this instance"),
        "late_error": b"\x07" + answer([(1, 0, 0)], [(b"k", b"v")], end=5, message=b"iterator\x00failed"),
        "trailing": b"\x01" + answer() + b"IQ",
    },
    "http_json": {
        "ascii": b"hello",
        "utf8": "\u00e9t\u00e9 \u65e5\u672c \U0001F600".encode(),
        "invalid": b"\xff\xfe\xc3(\xed\xa0\x80",
        "count": struct.pack(">q", 42),
        "escapes": b"a%2Fb+c%zz%00\"\\\n",
    },
    "http_route": {
        "metadata": b"\x10/metadata",
        "store_metadata": b"\x30/metadata/stores/order-count",
        "key_metadata": b"\x30/metadata/stores/order-count/key/a%2Fb",
        "get_local": b"\x30/stores/customer-v1-changelog/get/%E6%97%A5",
        "get_forward": b"\x3c/stores/order-count/get/some%20key%00x",
        "get_forwarded_twice": b"\x3d/stores/order-count/get/k",
        "range": b"\x30/stores/order-count/range?from=a+b&to=%FF",
        "range_all": b"\x30/stores/customer-v1-changelog/range?from=R&scope=all",
        "all": b"\x20/stores/order-count/all",
        "count_all": b"\x30/stores/order-count/approximate-num-entries?scope=all",
        "bad_scope": b"\x30/stores/order-count/all?scope=x",
        "range_desc_all": b"\x30/stores/order-count/range?from=a&to=b&order=desc&scope=all",
        "bad_order": b"\x30/stores/order-count/all?order=up",
        "unknown_store": b"\x30/stores/nope%22/get/1",
        "not_a_path": b"\x30*",
    },
    "http_access": {
        "open_localhost": b"\x00\x00localhost:5400\x00",
        "token_allowed_host": b"\x01iq-a.example\x00iq-a.example:5401\x00Bearer s3cret",
        "wrong_token": b"\x01\x00localhost:5400\x00Bearer wrong",
        "rebound": b"\x00\x00evil.example:5400\x00",
        "peer_v6": b"\x02 a.example , [fd00::1],B.example\x00[fd00::1]:5400\x00",
        "basic": b"\x01\x00iq1.example\x00Basic eDp5",
    },
}

for target, seeds in SEEDS.items():
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    for name, data in seeds.items():
        (d / name).write_bytes(data)

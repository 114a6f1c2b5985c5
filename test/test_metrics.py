"""Issue 19: GET /metrics, the Prometheus text format, scraped during a run.

Every scrape is parsed with prometheus_client's own parser
(text_string_to_metric_families): with pytest's python when it has the
package, else with /usr/bin/python3, which gets Debian's
python3-prometheus-client (scripts/lib.sh).  The counters are checked
against what the test produces and against iq_stats(), read between two
scrapes of the same instance; the HTTP counters against requests made;
the access rules as for the other endpoints (a rebound Host gets 421, over
TLS a client without a credential 401).
"""

import http.client
import json
import math
import subprocess

from conftest import (INSTANCES, http_connection, http_get, http_port, import_stores_sql, java_partition,
                      produce, psql, settled, ssl_context, tls_on, topics, unique, wait_until)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PARSE_SCRIPT = """
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type,
                "samples": [[s.name, s.labels, s.value] for s in f.samples]})
json.dump(out, sys.stdout)
"""

STAT_COLS = ["partition", "records_processed", "orders_joined", "orders_without_customer",
             "dropped_null_key", "dropped_malformed", "dropped_unprocessable", "wrong_partition",
             "changelog_offset", "state_rebuilds", "restored_records", "restore_total"]


def parse(text):
    """[{"name", "type", "samples": [[name, labels, value]]}] by prometheus_client's parser."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        r = subprocess.run(["/usr/bin/python3", "-c", PARSE_SCRIPT], input=text, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, f"prometheus_client's parser (with /usr/bin/python3): {r.stderr}"
        return json.loads(r.stdout)
    return [{"name": f.name, "type": f.type,
             "samples": [[s.name, dict(s.labels), s.value] for s in f.samples]}
            for f in text_string_to_metric_families(text)]


def scrape_text(i):
    status, body = http_get(i, "/metrics", timeout=10)
    assert status == 200, f"GET /metrics on instance {i}: {status} {body}"
    return body


def scrape(i):
    """{sample name: [(labels, value)]} and {family name: type} of instance i."""
    samples, types = {}, {}
    for f in parse(scrape_text(i)):
        types[f["name"]] = f["type"]
        for name, labels, value in f["samples"]:
            samples.setdefault(name, []).append((labels, value))
    return samples, types


def value(samples, name, **labels):
    """The value of the one sample of name with these labels (0 if none)."""
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == str(w) for k, w in labels.items())]
    assert len(found) <= 1, (name, labels, found)
    return found[0] if found else 0


def owned(samples, name):
    """{partition: value} of a per-partition metric, for partitions owned here."""
    return {int(lab["partition"]): v for lab, v in samples.get(name, []) if lab["role"] == "owner"}


def stats(i):
    """{partition: {column: int}} of iq_stats() on instance i, owned partitions."""
    rows = {}
    out = psql(i, f"SELECT {', '.join(STAT_COLS)} FROM iq_stats() WHERE role = 'owner'")
    for line in out.splitlines():
        row = dict(zip(STAT_COLS, (int(v) for v in line.split("|"))))
        rows[row["partition"]] = row
    return rows


def owners():
    return wait_until(lambda: settled(partitions=topics()["order"]), timeout=120, interval=0.5,
                      message="every partition held once, every worker running")


def test_format_types_and_histograms(instance):
    owners()  # every worker running: the state gauge says so below
    conn = http_connection(instance)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        r.read()
        assert r.status == 200
        assert r.getheader("Content-Type") == CONTENT_TYPE
    finally:
        conn.close()

    text = scrape_text(instance)
    families = parse(text)
    names = {f["name"]: f for f in families}
    for f in families:
        # every family came with its TYPE line (the parser says "unknown" otherwise)
        assert f["type"] in ("counter", "gauge", "histogram"), f["name"]
        for name, labels, _ in f["samples"]:
            assert name.startswith("iq_"), name
            if f["type"] == "counter":
                assert name.endswith("_total"), name
            # never a key: only the fixed label names
            assert set(labels) <= {"partition", "role", "kind", "topic", "state", "endpoint",
                                   "status", "peer", "store", "le"}, (name, labels)
        if f["type"] == "histogram":
            check_histogram(f)
    for name in ("iq_records_processed", "iq_orders_joined", "iq_records_dropped",
                 "iq_consumer_lag_records", "iq_changelog_offset", "iq_restore_records",
                 "iq_state_rebuilds", "iq_worker_state", "iq_worker_state_seconds", "iq_flushes",
                 "iq_flush_duration_seconds", "iq_changelog_records_produced",
                 "iq_http_requests", "iq_http_request_duration_seconds",
                 "iq_rocksdb_sst_files_bytes", "iq_memory_budget_bytes",
                 "iq_worker_resident_memory_bytes"):
        assert name in names, f"no {name} in /metrics of instance {instance}"
    states = {s[1]["state"]: s[2] for s in names["iq_worker_state"]["samples"]}
    assert sorted(states.values()) == [0] * (len(states) - 1) + [1], states
    assert states["running"] == 1, states
    budget_mb = psql(instance, "SELECT setting FROM pg_settings WHERE name = 'iq_fdw.memory_budget'")
    assert names["iq_memory_budget_bytes"]["samples"][0][2] == int(budget_mb) * 1024 * 1024
    assert names["iq_worker_resident_memory_bytes"]["samples"][0][2] > 0


def check_histogram(f):
    """Buckets cumulative and monotonic along le, +Inf equal to _count."""
    series = {}
    for name, labels, v in f["samples"]:
        key = tuple(sorted((k, w) for k, w in labels.items() if k != "le"))
        s = series.setdefault(key, {"buckets": [], "count": None})
        if name.endswith("_bucket"):
            s["buckets"].append((float(labels["le"]), v))
        elif name.endswith("_count"):
            s["count"] = v
    assert series, f["name"]
    for key, s in series.items():
        les = [le for le, _ in s["buckets"]]
        assert les == sorted(les) and math.isinf(les[-1]), (f["name"], key, les)
        counts = [v for _, v in s["buckets"]]
        assert all(a <= b for a, b in zip(counts, counts[1:])), (f["name"], key, counts)
        assert counts[-1] == s["count"], (f["name"], key, counts, s["count"])


def test_counters_move_with_orders_produced():
    owner = owners()
    parts = topics()["order"]
    before = {i: scrape(i)[0] for i in INSTANCES}
    prefix = unique("metrics")
    keys = [f"{prefix}_{n}" for n in range(300)]
    produce("order", [f"{k}--dish" for k in keys])
    per_partition = {p: 0 for p in range(parts)}
    for k in keys:
        per_partition[java_partition(k, parts)] += 1

    def processed(i):
        return owned(scrape(i)[0], "iq_records_processed_total")

    def caught_up():
        for p, n in per_partition.items():
            i = owner[p]
            if processed(i).get(p, 0) < owned(before[i], "iq_records_processed_total").get(p, 0) + n:
                return False
        return True

    wait_until(caught_up, timeout=120, interval=0.5, message="records processed grow by what was produced")
    assert settled(partitions=parts) == owner, "a rebalance during the test: counters moved"
    after = {i: scrape(i)[0] for i in INSTANCES}
    for p, n in per_partition.items():
        i = owner[p]
        grew = (owned(after[i], "iq_orders_without_customer_total").get(p, 0) +
                owned(after[i], "iq_orders_joined_total").get(p, 0) -
                owned(before[i], "iq_orders_without_customer_total").get(p, 0) -
                owned(before[i], "iq_orders_joined_total").get(p, 0))
        assert grew >= n, f"partition {p}: {grew} orders counted for {n} produced"
    # the flushes that made them durable, and their changelog records
    wait_until(lambda: sum(value(scrape(i)[0], "iq_changelog_records_produced_total") for i in INSTANCES)
               >= sum(value(before[i], "iq_changelog_records_produced_total") for i in INSTANCES) + len(keys),
               timeout=120, interval=0.5, message="changelog records produced grow by the new keys")
    after = {i: scrape(i)[0] for i in INSTANCES}
    for i in {owner[p] for p, n in per_partition.items() if n}:
        assert value(after[i], "iq_flushes_total") > value(before[i], "iq_flushes_total"), i
        assert value(after[i], "iq_flush_duration_seconds_count") > \
            value(before[i], "iq_flush_duration_seconds_count"), i
    # the new keys are in the state: the changelog offsets moved
    for p, n in per_partition.items():
        i = owner[p]
        if n:
            assert owned(after[i], "iq_changelog_offset")[p] > owned(before[i], "iq_changelog_offset")[p], p


def test_partition_numbers_are_iq_stats_numbers(instance):
    """iq_stats() read between two scrapes lies between them, counter by counter."""
    owners()
    cols = {"records_processed": "iq_records_processed_total", "orders_joined": "iq_orders_joined_total",
            "orders_without_customer": "iq_orders_without_customer_total",
            "changelog_offset": "iq_changelog_offset", "state_rebuilds": "iq_state_rebuilds_total",
            # gauges of the last restore, still while no partition moves (owners() above)
            "restored_records": "iq_restore_records", "restore_total": "iq_restore_total_records"}
    kinds = {"dropped_null_key": "null_key", "dropped_malformed": "malformed",
             "dropped_unprocessable": "unprocessable", "wrong_partition": "wrong_partition"}
    first = scrape(instance)[0]
    sql = stats(instance)
    second = scrape(instance)[0]
    assert sql and set(sql) == set(owned(first, "iq_records_processed_total")) == \
        set(owned(second, "iq_records_processed_total"))
    for p, row in sql.items():
        for col, metric in cols.items():
            lo, hi = owned(first, metric)[p], owned(second, metric)[p]
            assert lo <= row[col] <= hi, (p, col, lo, row[col], hi)
        for col, kind in kinds.items():
            lo = value(first, "iq_records_dropped_total", partition=p, role="owner", kind=kind)
            hi = value(second, "iq_records_dropped_total", partition=p, role="owner", kind=kind)
            assert lo <= row[col] <= hi, (p, col, lo, row[col], hi)


def test_http_requests_are_counted_by_route_and_status(instance):
    before, _ = scrape(instance)
    for _ in range(3):
        assert http_get(instance, "/metadata")[0] == 200
    assert http_get(instance, "/stores/no-such-store/get/" + unique("k"))[0] == 404
    after, _ = scrape(instance)

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("iq_http_requests_total", endpoint="metadata", status=200) >= 3
    assert grew("iq_http_request_duration_seconds_count", endpoint="metadata") >= 3
    assert grew("iq_http_request_duration_seconds_sum", endpoint="metadata") > 0
    # the store name is no label: an unknown store is a route like the others
    assert grew("iq_http_requests_total", endpoint="get", status=404) + \
        grew("iq_http_requests_total", endpoint="other", status=404) >= 1
    # the first scrape itself was counted once it ended
    assert grew("iq_http_requests_total", endpoint="metrics", status=200) >= 1


def test_forwarded_gets_are_counted_by_peer():
    owner = owners()
    parts = topics()["order"]
    asker = INSTANCES[0]
    key = next(k for k in (unique("fwd") for _ in range(1000))
               if owner[java_partition(k, parts)] != asker)
    before, _ = scrape(asker)
    status, body = http_get(asker, f"/stores/order-count/get/{key}")
    after, _ = scrape(asker)
    peer_port = http_port(owner[java_partition(key, parts)])
    fwd = {lab["peer"]: v for lab, v in after.get("iq_http_forwarded_gets_total", [])}
    was = {lab["peer"]: v for lab, v in before.get("iq_http_forwarded_gets_total", [])}
    grown = [p for p, v in fwd.items() if v > was.get(p, 0) and p.endswith(f":{peer_port}")]
    assert grown, (status, body, fwd, was)


def test_access_rules_apply():
    i = INSTANCES[0]
    port = http_port(i)
    conn = http_connection(i)
    try:
        conn.request("GET", "/metrics", headers={"Host": f"evil.example:{port}"})
        r = conn.getresponse()
        r.read()
        assert r.status == 421
    finally:
        conn.close()
    if tls_on():
        # no client certificate and no token: the seed's endpoints want a credential
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=10,
                                           context=ssl_context(client_cert=False))
        try:
            conn.request("GET", "/metrics")
            r = conn.getresponse()
            r.read()
            assert r.status == 401
        finally:
            conn.close()


def test_rocksdb_numbers(instance):
    """RocksDB's sizes for every partition and store held; its statistics
    exactly when iq_fdw.rocksdb_statistics keeps them."""
    owners()
    samples, types = scrape(instance)
    held = set(owned(samples, "iq_records_processed_total"))
    for name in ("iq_rocksdb_memtable_bytes", "iq_rocksdb_sst_files_bytes",
                 "iq_rocksdb_pending_compaction_bytes"):
        seen = {(int(lab["partition"]), lab["store"]) for lab, v in samples[name] if lab["role"] == "owner"}
        assert seen == {(p, s) for p in held for s in ("customer-v1-changelog", "order-count")}, name
    # what the state holds is somewhere: in a memtable or in SST files
    assert sum(v for _, v in samples["iq_rocksdb_memtable_bytes"] + samples["iq_rocksdb_sst_files_bytes"]) > 0
    on = psql(instance, "SHOW iq_fdw.rocksdb_statistics") == "on"
    assert ("iq_rocksdb_block_cache_hits_total" in samples) == on, on
    if on:
        assert {int(lab["partition"]) for lab, _ in samples["iq_rocksdb_block_cache_hits_total"]
                if lab["role"] == "owner"} == held
        assert types["iq_rocksdb_write_stall_seconds"] == "counter"


def test_value_cache_hits_and_misses_are_counted():
    """A local key looked up twice from SQL: the first asks the worker (a
    miss, which fills the cache with "absent"), the second is a hit."""
    owner = owners()
    i = INSTANCES[0]
    if psql(i, "SHOW iq_fdw.value_cache") in ("0", "0kB"):
        return  # no cache on this cluster: the metrics are rightly absent
    parts = topics()["order"]
    key = next(k for k in (unique("vc") for _ in range(1000)) if owner[java_partition(k, parts)] == i)
    lookup = f"SELECT count FROM metrics_vc.order_count WHERE key = '{key}';"
    psql(i, import_stores_sql("metrics_vc", "iq_metrics"))
    before, _ = scrape(i)
    assert psql(i, lookup) == ""
    assert psql(i, lookup) == ""
    after, _ = scrape(i)
    hits = value(after, "iq_value_cache_hits_total") - value(before, "iq_value_cache_hits_total")
    misses = value(after, "iq_value_cache_misses_total") - value(before, "iq_value_cache_misses_total")
    assert hits >= 1 and misses >= 1, (hits, misses)

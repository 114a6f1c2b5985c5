"""The cluster laid out as real hosts (scripts/hosts): each instance and the
broker in a network namespace of its own, every instance on the same ports
at its own address, and the network faults the script injects (partitions,
a slow or garbage-speaking peer behind the fault proxy).

The module brings up its own hosts cluster (IQ_HOSTS_NET=9, its own
IQ_HOME) and takes it down at the end; it needs root (namespaces) and skips
otherwise. It does not need the loopback cluster of the other modules.
"""

import os
import re
import shlex
import subprocess
import time
import uuid

import pytest

from conftest import PG_BIN, SCRIPTS, wait_until

NET = "9"
HOSTS = str(SCRIPTS / "hosts")
N = 3
PEER_TIMEOUT_S = 5  # iq_fdw.peer_timeout's default

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="scripts/hosts needs root (network namespaces)")


def hosts_env():
    env = dict(os.environ, IQ_HOSTS_NET=NET)
    for k in ("IQ_HOME", "IQ_HOSTS_HOME", "IQ_PORT_OFFSET"):
        env.pop(k, None)
    return env


def hosts(*args, timeout=300, check=True, input=None):
    """scripts/hosts ARGS with this module's network; its stdout."""
    r = subprocess.run([HOSTS, *args], env=hosts_env(), capture_output=True, text=True,
                       timeout=timeout, input=input)
    if check and r.returncode != 0:
        raise AssertionError(f"scripts/hosts {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


@pytest.fixture(scope="session", autouse=True)
def cluster_running():
    """This module runs on a cluster of its own: the loopback cluster's check
    (conftest) does not apply."""
    yield


@pytest.fixture(scope="module")
def env():
    """The hosts cluster, up for the module: `scripts/hosts env` as a dict."""
    hosts("up", "--fresh", "--instances", str(N), "--no-tls", timeout=600)
    try:
        values = dict(line.split("=", 1) for line in hosts("env").splitlines())
        values = {k: shlex.split(v)[0] if v else v for k, v in values.items()}
        for i in range(1, N + 1):
            psql(values, i, """SET client_min_messages = warning;
                CREATE SERVER IF NOT EXISTS streams FOREIGN DATA WRAPPER iq_fdw;
                DROP FOREIGN TABLE IF EXISTS customer, order_count;
                IMPORT FOREIGN SCHEMA food_server FROM SERVER streams INTO public;""")
        wait_until(lambda: all(owned_partitions(values, i) for i in range(1, N + 1)), timeout=120,
                   message="every instance owning a partition")
        yield values
    finally:
        hosts("heal", check=False)
        hosts("down", timeout=300, check=False)


class PsqlFailed(Exception):
    pass


def psql(env, i, sql, timeout=60):
    """sql on instance i through its Unix socket (from this namespace)."""
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-h", env[f"IQ_HOSTS_SOCKET_{i}"], "-p", "5432",
                        "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"],
                       input=sql, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise PsqlFailed(r.stderr.strip())
    return r.stdout.strip()


def owned_partitions(env, i):
    return psql(env, i, "SELECT partitions FROM iq_instances() WHERE is_local") not in ("", "{}")


def count(env, i, key, timeout=60):
    """order_count of key as instance i answers it (0 when absent)."""
    out = psql(env, i, f"SELECT count FROM order_count WHERE key = '{key}'", timeout=timeout)
    return int(out) if out else 0


def produce(topic, records):
    """records ("key:value") into topic, from the client host with the Java
    client's partitioner (murmur2), as the instances expect."""
    hosts("exec", "client", "kcat", "-P", "-b", "kafka:9092", "-t", topic, "-K", ":",
          "-X", "partitioner=murmur2_random", input="".join(f"{r}\n" for r in records), timeout=60)


def produce_orders(keys):
    """One order per key in keys."""
    produce("order", [f"{k}:dish" for k in keys])


def keys_by_owner(env):
    """A fresh key owned by each host: {instance number: key}."""
    found = {}
    while len(found) < N:
        cands = [f"hk-{uuid.uuid4().hex[:10]}" for _ in range(12)]
        arr = ",".join(f"'{k}'" for k in cands)
        rows = psql(env, 1, f"SELECT k, o.host FROM unnest(ARRAY[{arr}]) k, "
                            f"LATERAL iq_key_owner('order-count', k) o")
        for line in rows.splitlines():
            k, host = line.split("|")
            found.setdefault(int(host.lstrip("h")), k)
    return found


def counted_key(env, victim, reader):
    """A fresh key owned by host victim, with one order that reader sees."""
    key = keys_by_owner(env)[victim]
    produce_orders([key])
    wait_until(lambda: count(env, reader, key) == 1, timeout=60, message=f"the order of {key} counted")
    return key


def elapsed_ms(env, i, key):
    """The execution time of a read of key on instance i (EXPLAIN ANALYZE)."""
    out = psql(env, i, f"EXPLAIN (ANALYZE, COSTS OFF) SELECT count FROM order_count WHERE key = '{key}'")
    return float(re.search(r"Execution Time: ([0-9.]+) ms", out).group(1))


def other(i):
    return i % N + 1


# ---- the layout -----------------------------------------------------------------

def test_every_instance_answers_at_its_own_address_on_the_same_ports(env):
    for i in range(1, N + 1):
        addr = env[f"IQ_HOSTS_ADDR_{i}"]
        assert addr == f"10.77.{NET}.{10 + i}"
        out = hosts("exec", "client", str(PG_BIN / "psql"), "-X", "-At", "-h", f"h{i}", "-p", "5432",
                    "-U", "postgres", "-d", "postgres", "-c", "SELECT host(inet_server_addr()), current_setting('port')")
        assert out.strip() == f"{addr}|5432"
        body = hosts("exec", "client", "curl", "-sS", "-m", "10", f"http://{addr}:5400/metadata")
        assert '"state-store-names"' in body
    # the machine's own namespace has no address or route of its own in their
    # network (a connect from here may still succeed: some sandboxes answer
    # every address on their default route)
    for what in (["addr"], ["route"]):
        out = subprocess.run(["ip", "-o", *what], capture_output=True, text=True, check=True).stdout
        assert f"10.77.{NET}." not in out


def test_metadata_lists_every_instance_at_its_advertised_name(env):
    body = hosts("exec", "client", "curl", "-sS", "-m", "10", "http://h2:5400/metadata")
    listed = sorted(re.findall(r'"host":"([^"]*)","port":(\d+)', body))
    assert listed == [(f"h{i}", "5400") for i in range(1, N + 1)]
    rows = psql(env, 3, "SELECT host, port FROM iq_instances() ORDER BY host")
    assert rows.splitlines() == [f"h{i}|5400" for i in range(1, N + 1)]


def test_a_key_read_on_every_host_gives_its_owners_answer(env):
    keys = keys_by_owner(env)
    produce_orders(list(keys.values()) * 2)
    for owner, key in keys.items():
        for i in range(1, N + 1):
            wait_until(lambda: count(env, i, key) == 2, timeout=60,
                       message=f"instance {i} reading key {key} of h{owner}")


SEED_CUSTOMERS = ["1:john", "2:adam", "3:daniel", "4:james", "5:jack", "6:mathew", "7:will"]


def test_the_seeds_queries_work_with_the_hosts_addresses(env):
    """The seed's curl lines, from the client host to each host's address, and
    the SQL of scripts/demo on each instance."""
    produce("customer", SEED_CUSTOMERS)
    wait_until(lambda: all(psql(env, i, "SELECT value FROM customer WHERE key = '7'") == "will"
                           for i in range(1, N + 1)), timeout=60, message="the seed's customers")
    produce("order", ["1:spagety", "2:pizza"])
    wait_until(lambda: all(count(env, i, "2") == 1 for i in range(1, N + 1)), timeout=60,
               message="the seed's orders")
    for i in range(1, N + 1):
        base = f"http://{env[f'IQ_HOSTS_ADDR_{i}']}:5400"

        def get(path):
            return hosts("exec", "client", "curl", "-sS", "-m", "10", base + path)
        assert '"host":"h' in get("/metadata/stores/order-count/key/1")
        assert get("/stores/customer-v1-changelog/get/2") == '{"response":"adam"}'
        assert get("/stores/order-count/get/1") == '{"response":1}'
        assert '"key":"1"' in get("/stores/customer-v1-changelog/range?from=1&to=5&scope=all")
        assert get("/stores/customer-v1-changelog/approximate-num-entries?scope=all") == '{"result":7}'
        rows = psql(env, i, "SELECT c.key, c.value AS customer, o.count FROM customer c "
                            "LEFT JOIN order_count o USING (key) WHERE c.key BETWEEN '1' AND '7' ORDER BY key")
        assert rows.splitlines() == ["1|john|1", "2|adam|1", "3|daniel|", "4|james|", "5|jack|",
                                     "6|mathew|", "7|will|"]
        assert psql(env, i, "SELECT count(*) FROM customer") == "7"


# ---- partitions -----------------------------------------------------------------

def test_partition_from_the_peers_fails_remote_reads_but_not_consumption(env):
    victim = 2
    key = counted_key(env, victim, other(victim))
    hosts("partition", str(victim), "peers")
    try:
        t0 = time.monotonic()
        with pytest.raises(PsqlFailed) as e:
            count(env, other(victim), key, timeout=PEER_TIMEOUT_S * 4 + 20)
        assert f"h{victim}:5400" in str(e.value)
        assert "peer_timeout" in str(e.value)
        assert time.monotonic() - t0 < PEER_TIMEOUT_S * 4 + 20  # an error, not a hang
        # the victim still reads the broker
        produce_orders([key])
        wait_until(lambda: count(env, victim, key) == 2, timeout=60, message="the victim consuming")
    finally:
        hosts("heal", str(victim))
    wait_until(lambda: count(env, other(victim), key) == 2, timeout=60, message="the remote read after heal")


def test_partition_from_the_broker_stops_consumption_but_not_the_peers(env):
    keys = keys_by_owner(env)
    victim = 3
    produce_orders(keys.values())
    for owner, key in keys.items():
        wait_until(lambda: count(env, owner, key) == 1, timeout=60, message=f"key of h{owner} counted")
    hosts("partition", str(victim), "broker")
    try:
        produce_orders(keys.values())
        # the others' keys move, read from every host, the victim included
        for owner, key in keys.items():
            if owner == victim:
                continue
            for i in range(1, N + 1):
                wait_until(lambda: count(env, i, key) == 2, timeout=60,
                           message=f"instance {i} reading key of h{owner}")
        # produced before the others' records, yet not consumed by the victim
        assert count(env, victim, keys[victim]) == 1
    finally:
        hosts("heal", str(victim))
    wait_until(lambda: count(env, other(victim), keys[victim]) == 2, timeout=120,
               message="the victim's key counted after heal")


# ---- the fault proxy ------------------------------------------------------------

def test_slow_proxy_adds_its_delay_to_reads_of_the_hosts_keys(env):
    victim, reader = 1, 2
    key = counted_key(env, victim, reader)
    baseline = [elapsed_ms(env, reader, key) for _ in range(3)]
    hosts("proxy", str(victim), "slow", "200")
    try:
        slowed = [elapsed_ms(env, reader, key) for _ in range(3)]
        assert count(env, reader, key) == 1
    finally:
        hosts("proxy", str(victim), "off")
    assert min(slowed) >= 200.0, (baseline, slowed)
    assert min(slowed) > max(baseline), (baseline, slowed)
    # off takes the delay away
    assert elapsed_ms(env, reader, key) < min(slowed)


def test_garbage_proxy_gives_an_error_naming_the_instance(env):
    victim, reader = 3, 1
    key = counted_key(env, victim, reader)
    hosts("proxy", str(victim), "garbage")
    try:
        with pytest.raises(PsqlFailed) as e:
            count(env, reader, key)
        assert f"instance h{victim}:5400" in str(e.value)
        assert f"key '{key}'" in str(e.value)
    finally:
        hosts("proxy", str(victim), "off")
    assert count(env, reader, key) == 1


# ---- down -----------------------------------------------------------------------

def test_down_leaves_no_namespace_process_or_rule(env):
    home = env["IQ_HOSTS_HOME"]
    hosts("proxy", "2", "slow", "10")
    hosts("partition", "1", "peers")
    hosts("down", timeout=300)
    assert not [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                          check=True).stdout.split() if n.startswith(f"iq{NET}-")]
    assert not [d for d in (os.listdir("/etc/netns") if os.path.isdir("/etc/netns") else [])
                if d.startswith(f"iq{NET}-")]
    left = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                cmd = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if home in cmd or ("fault_proxy.py" in cmd and f"10.77.{NET}." in cmd):
                left.append(f"{p}: {cmd}")
    assert not left
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout
    assert "iq_cut" not in tables and "iq_proxy" not in tables
    assert f"iq-hosts-{NET}-state" not in open("/proc/self/mounts").read()

"""Issue 2: the cluster itself. Topics, instances with iq_fdw preloaded and
created, settings and their validation, the seed's console producer, and
scripts/cluster up/down/status.

The tests that restart instances or the whole cluster are marked
restarts_cluster and run after every other test of the suite (conftest.py);
they leave the cluster up.
"""

import re
import socket
import subprocess
import time

import pytest

from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, SCRIPTS, cluster_script, console_produce,
                      consume, create_topic, http_json, http_port, java_partition, kafka_port,
                      our_processes, pg_port, port_busy, psql, psql_error, topic_config,
                      topics, unique, wait_until)


# ---- topics -----------------------------------------------------------------

def test_topics_exist_with_three_partitions():
    t = topics()
    assert t.get("customer") == 3, t
    assert t.get("order") == 3, t


def test_customer_topic_is_compacted():
    assert topic_config("customer").get("cleanup.policy") == "compact"
    assert topic_config("order").get("cleanup.policy", "delete") == "delete"


def test_broker_does_not_create_topics_on_use():
    name = unique("never_created")
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-L", "-t", name, "-m", "5"], capture_output=True,
                   timeout=30)
    time.sleep(0.5)
    assert name not in topics()


# ---- the console producer ---------------------------------------------------

def test_console_producer_partitions_keys_like_the_java_client():
    name = unique("murmur")
    create_topic(name, 3)
    keys = [str(k) for k in range(1, 41)] + ["john", "order-17", "ü"]
    console_produce(name, [f"{k}--v{k}" for k in keys])
    recs = wait_until(lambda: (r := consume(name)) and len(r) == len(keys) and r,
                      message=f"{len(keys)} records in {name}")
    for part, key, value in recs:
        assert value == f"v{key}"
        assert part == java_partition(key, 3), f"key {key!r} in partition {part}"


def test_console_producer_takes_the_seeds_command_line():
    """The seed's own line, --broker-list and --property included."""
    name = unique("seedline")
    create_topic(name, 3)
    r = subprocess.run([str(SCRIPTS / "kafka"), "console-producer", "--broker-list",
                        f"localhost:{kafka_port()}", "--topic", name, "--property", "parse.key=true",
                        "--property", "key.separator=--"],
                       input="1--spagety\n2--pizza\n--pasta\n", capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got = sorted((k, v) for _, k, v in wait_until(lambda: len(consume(name)) == 3 and consume(name),
                                                    message="3 records"))
    assert got == [("", "pasta"), ("1", "spagety"), ("2", "pizza")]


def test_console_producer_is_fast_on_500k_lines():
    name = unique("bulk")
    create_topic(name, 3)
    n = 500_000
    start = time.monotonic()
    console_produce(name, (f"{i % 1000}--food{i}" for i in range(n)))
    took = time.monotonic() - start
    assert took < 60, f"{n} lines took {took:.1f}s"
    r = subprocess.run(f"kcat -b {BOOTSTRAP} -C -t {name} -o beginning -e -q -f 'x\\n' | wc -l",
                       shell=True, capture_output=True, text=True, timeout=120, check=True)
    assert int(r.stdout) == n


# ---- instances --------------------------------------------------------------

def test_extension_is_created(instance):
    assert psql(instance, "SELECT extname FROM pg_extension WHERE extname = 'iq_fdw'") == "iq_fdw"


def test_extension_is_preloaded(instance):
    assert "iq_fdw" in psql(instance, "SHOW shared_preload_libraries")


def test_listens_on_loopback_only(instance):
    assert psql(instance, "SHOW listen_addresses") == "127.0.0.1"
    assert psql(instance, "SHOW port") == str(pg_port(instance))


def test_cluster_settings(instance):
    show = lambda name: psql(instance, f"SHOW {name}")  # noqa: E731
    assert show("iq_fdw.bootstrap_servers") == BOOTSTRAP
    assert show("iq_fdw.http_listen") == f"127.0.0.1:{http_port(instance)}"
    assert show("iq_fdw.advertised_endpoint") == f"localhost:{http_port(instance)}"
    assert show("iq_fdw.state_dir").startswith(str(IQ_HOME) + "/")


def test_seed_defaults():
    assert psql(1, "SHOW iq_fdw.application_id") == "food-server"
    assert psql(1, "SHOW iq_fdw.customer_topic") == "customer"
    assert psql(1, "SHOW iq_fdw.order_topic") == "order"


def test_cluster_settings_are_not_in_auto_conf():
    """up writes postgresql.conf once; ALTER SYSTEM (postgresql.auto.conf) is the user's."""
    assert psql(1, "SELECT count(*) FROM pg_file_settings "
                   "WHERE name LIKE 'iq_fdw.%' AND sourcefile LIKE '%postgresql.auto.conf'") == "0"


# ---- settings are validated, and errors name them ---------------------------

def test_negative_peer_timeout_is_refused():
    err = psql_error(1, "SET iq_fdw.peer_timeout = -5")
    assert "iq_fdw.peer_timeout" in err


@pytest.mark.parametrize("value", ["", "no-port-here", "127.0.0.1:notaport", "127.0.0.1:9092,"])
def test_bad_bootstrap_servers_is_refused(value):
    err = psql_error(1, f"ALTER SYSTEM SET iq_fdw.bootstrap_servers = '{value}'")
    assert "iq_fdw.bootstrap_servers" in err


@pytest.mark.parametrize("value", ["relative/dir", "/usr"])
def test_bad_state_dir_is_refused(value):
    """A relative path, or a directory the server cannot write to."""
    err = psql_error(1, f"ALTER SYSTEM SET iq_fdw.state_dir = '{value}'")
    assert "iq_fdw.state_dir" in err


@pytest.mark.parametrize("name", ["iq_fdw.http_listen", "iq_fdw.advertised_endpoint"])
def test_bad_endpoint_is_refused(name):
    err = psql_error(1, f"ALTER SYSTEM SET {name} = 'localhost'")
    assert name in err


@pytest.mark.parametrize("name", ["iq_fdw.partitioner", "iq_fdw.processing_guarantee"])
def test_bad_enum_is_refused(name):
    err = psql_error(1, f"ALTER SYSTEM SET {name} = 'bogus'")
    assert name in err


@pytest.mark.parametrize("name", ["iq_fdw.application_id", "iq_fdw.customer_topic",
                                  "iq_fdw.order_topic"])
def test_bad_kafka_name_is_refused(name):
    err = psql_error(1, f"ALTER SYSTEM SET {name} = 'has space'")
    assert name in err


def test_refused_settings_leave_auto_conf_alone():
    psql_error(1, "ALTER SYSTEM SET iq_fdw.bootstrap_servers = 'no-port-here'")
    assert psql(1, "SELECT count(*) FROM pg_file_settings "
                   "WHERE sourcefile LIKE '%postgresql.auto.conf'") == "0"


def worker_reports(i, setting, timeout=90):
    """Wait until instance i's worker reports an error naming setting; return the message."""
    return wait_until(lambda: (m := psql(i, "SELECT message FROM iq_worker()")) and setting in m and m,
                      timeout=timeout, interval=0.3, message=f"instance {i}'s worker to name {setting}")


def reset_and_recover(i, setting):
    psql(i, f"ALTER SYSTEM RESET {setting}")
    psql(i, "SELECT pg_reload_conf()")
    wait_until(lambda: psql(i, "SELECT state FROM iq_worker()") == "running", timeout=120,
               message=f"instance {i}'s worker running again")
    wait_until(lambda: http_json(i, "/metadata"), timeout=60, message=f"instance {i} serving HTTP")


@pytest.mark.restarts_cluster
def test_http_port_in_use_is_reported_naming_the_setting():
    i = INSTANCES[-1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        psql(i, f"ALTER SYSTEM SET iq_fdw.http_listen = '127.0.0.1:{port}'")
        psql(i, "SELECT pg_reload_conf()")
        try:
            msg = worker_reports(i, "iq_fdw.http_listen")
            assert str(port) in msg
        finally:
            reset_and_recover(i, "iq_fdw.http_listen")


@pytest.mark.restarts_cluster
def test_unreachable_broker_is_reported_naming_the_setting():
    i = INSTANCES[-1]
    psql(i, "ALTER SYSTEM SET iq_fdw.bootstrap_servers = '127.0.0.1:1'")
    psql(i, "SELECT pg_reload_conf()")
    try:
        assert "127.0.0.1:1" in worker_reports(i, "iq_fdw.bootstrap_servers")
    finally:
        reset_and_recover(i, "iq_fdw.bootstrap_servers")


def test_metadata_lists_every_instance_at_its_advertised_endpoint(instance):
    """Three partitions, three instances: each holds state, as in the seed's /metadata."""
    expected = {("localhost", http_port(i)) for i in INSTANCES}
    hosts = lambda: {(h["host"], h["port"]) for h in http_json(instance, "/metadata")["result"]}  # noqa: E731
    wait_until(lambda: hosts() == expected, timeout=60, message=f"/metadata to list {expected}")


# ---- scripts/cluster --------------------------------------------------------

def status_lines():
    r = cluster_script("status", timeout=60)
    return r.returncode, r.stdout


def test_status_reports_everything_up():
    rc, out = status_lines()
    assert rc == 0, out
    assert f"IQ_HOME   {IQ_HOME} " in out
    assert re.search(rf"^broker\s+{re.escape(BOOTSTRAP)} .* up \(pid \d+\)", out, re.M), out
    for i in INSTANCES:
        assert re.search(rf"^{i}\s+{pg_port(i)}\s+{http_port(i)}\s+up \(pid \d+\)\s+"
                         rf"{re.escape(str(IQ_HOME))}/\S+", out, re.M), out


def test_up_again_is_idempotent():
    before = status_lines()[1]
    r = cluster_script("up", f"--instances={len(INSTANCES)}")
    assert r.returncode == 0, r.stderr
    assert status_lines()[1] == before   # same pids: nothing was restarted


@pytest.mark.restarts_cluster
def test_instance_restart_keeps_data_and_alter_system():
    i = INSTANCES[-1]
    psql(i, "DROP TABLE IF EXISTS restart_probe; CREATE TABLE restart_probe AS SELECT 42 AS x")
    psql(i, "ALTER SYSTEM SET work_mem = '7MB'")
    try:
        r = subprocess.run([str(SCRIPTS / "instance"), "stop", str(i)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert not port_busy(pg_port(i))
        r = subprocess.run([str(SCRIPTS / "instance"), "start", str(i)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert psql(i, "SELECT x FROM restart_probe") == "42"
        assert psql(i, "SHOW work_mem") == "7MB"
    finally:
        psql(i, "ALTER SYSTEM RESET work_mem")
        psql(i, "SELECT pg_reload_conf()")
        psql(i, "DROP TABLE IF EXISTS restart_probe")


@pytest.mark.restarts_cluster
def test_down_frees_every_port_and_up_restarts():
    """Last of all: down leaves no process of ours and frees every port; up brings it all back."""
    ports = [kafka_port(), kafka_port() + 1] + [p for i in INSTANCES
                                                for p in (pg_port(i), http_port(i))]
    r = cluster_script("down", timeout=180)
    try:
        assert r.returncode == 0, r.stderr
        assert our_processes() == []
        assert [p for p in ports if port_busy(p)] == []
        rc, out = status_lines()
        assert rc != 0 and " up " not in out
    finally:
        r = cluster_script("up", f"--instances={len(INSTANCES)}", timeout=600)
    assert r.returncode == 0, r.stderr
    assert topics().get("customer") == 3
    for i in INSTANCES:
        assert psql(i, "SELECT extname FROM pg_extension WHERE extname = 'iq_fdw'") == "iq_fdw"

"""Issue 15: the broker connection secured like any Kafka client's, and the
group's members checked.

A scratch instance (port 5445+offset, HTTP 13420+offset) reads topics and a
group of its own through the broker's SASL_PLAINTEXT listener (PLAIN, the
throwaway user scripts/kafka gives the broker), with the credentials in
iq_fdw.kafka_properties_file:

- the right password: orders are counted;
- a wrong one: iq_worker() shows the broker's authentication error, the
  worker serves nothing and counts nothing, until the file is fixed;
- a file others may read, a property iq_fdw sets itself (also under an
  alias), a property librdkafka does not know: refused, naming the file and
  the line, never showing a value;
- a member of the group whose client.id is not "iq_fdw|host:port" (a kcat
  consumer): one WARNING, not listed by iq_instances(), never asked; the
  partitions it holds have no owner.

The broker runs an authorizer and its SASL user iqfdw is no super user: the
instance works with the ACLs README gives the cluster's principal (granted
here, for this module's topics and group), under exactly_once; another
principal (intruder) cannot join the group at all.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import (BOOTSTRAP, IQ_HOME, OFFSET, PG_BIN, java_partition, kafka,
                      private_pipeline, scratch_instance, wait_until)

PORT = 5445 + OFFSET
HTTP = 13420 + OFFSET
SASL_BOOTSTRAP = f"127.0.0.1:{9094 + OFFSET}"
# the broker's throwaway SASL user (scripts/kafka, write_properties)
GOOD = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
        "sasl.username": "iqfdw", "sasl.password": "iqfdw-sasl-test"}
WRONG_PASSWORD = "not-the-password-7f3a"
INTRUDER = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN",
            "sasl.username": "intruder", "sasl.password": "intruder-sasl-test"}


def grant_readme_acls(principal, customer, order, app):
    """The ACLs README's "Broker ACLs" gives the cluster's principal."""
    for args in (["--group", app, "--operation", "Read", "--operation", "Describe"],
                 ["--group", f"{app}-restore", "--operation", "Describe"],
                 ["--topic", customer, "--topic", order, "--operation", "Read",
                  "--operation", "Describe"],
                 ["--topic", f"{app}-order-count-changelog", "--operation", "Create",
                  "--operation", "Write", "--operation", "Read", "--operation", "Describe"],
                 ["--transactional-id", f"{app}-", "--resource-pattern-type", "prefixed",
                  "--operation", "Write", "--operation", "Describe"]):
        kafka("acls", "--add", "--allow-principal", principal, *args)


def run(sql, check=True, timeout=60):
    """sql on the scratch instance; (stdout, stderr)."""
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-q", "-h", "127.0.0.1", "-p", str(PORT),
                        "-U", "postgres", "-d", "postgres", "-v",
                        "ON_ERROR_STOP=1" if check else "ON_ERROR_STOP=0"],
                       input=sql, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"psql failed: {r.stderr}\n  while running: {sql}")
    return r.stdout.strip(), r.stderr.strip()


def worker():
    """(state, message) of the scratch instance's worker."""
    state, _, message = run("SELECT state || '|' || coalesce(message, '') FROM iq_worker()")[0] \
        .partition("|")
    return state, message


class Scratch:
    def __init__(self, base, customer, order, app):
        self.base, self.customer, self.order, self.app = base, customer, order, app
        self.props = base / "kafka.properties"

    def write_props(self, text, mode=0o600):
        """Write the properties file as the PostgreSQL user's, then reload."""
        tmp = self.base / "kafka.properties.tmp"
        tmp.write_text(text)
        if os.geteuid() == 0:
            shutil.chown(tmp, "iqfdw", "iqfdw")
        os.chmod(tmp, mode)
        os.replace(tmp, self.props)
        run("SELECT pg_reload_conf();")

    def log(self):
        return (self.base / "log").read_text(errors="replace")


def props(d, extra=""):
    return "# iq_fdw's Kafka clients\n\n" + "".join(f"{k} = {v}\n" for k, v in d.items()) + extra


def produce(topic, records):
    data = "".join(f"{k}\t{v}\n" for k, v in records)
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", topic, "-K", "\t",
                    "-X", "partitioner=murmur2_random"], input=data, text=True, check=True,
                   timeout=60)


def count(key):
    """The count of key, or the error a read of it gives."""
    out, err = run("SET iq_fdw.ownership_wait = 1000;\n"
                   f"SELECT count FROM order_count WHERE key = '{key}';", check=False)
    return (int(out) if out else 0) if not err else err


@pytest.fixture(scope="module")
def scratch():
    customer, order, app, settings = private_pipeline("sec", HTTP, SASL_BOOTSTRAP)
    grant_readme_acls("User:iqfdw", customer, order, app)
    settings["iq_fdw.processing_guarantee"] = "exactly_once"
    # in the directory scratch_instance makes (and removes)
    props_path = IQ_HOME / f"kafkasec-{os.getpid()}" / "kafka.properties"
    settings["iq_fdw.kafka_properties_file"] = str(props_path)
    with scratch_instance("kafkasec", PORT, settings) as base:
        s = Scratch(base, customer, order, app)
        assert s.props == props_path
        s.write_props(props(GOOD))
        run("CREATE EXTENSION iq_fdw; CREATE SERVER iq FOREIGN DATA WRAPPER iq_fdw;\n"
            "IMPORT FOREIGN SCHEMA s FROM SERVER iq INTO public;")
        yield s


def wait_message(pattern, timeout=90):
    """Wait until iq_worker() shows error matching pattern; its message."""
    found = {}

    def shown():
        state, message = worker()
        found["m"] = (state, message)
        return state == "error" and re.search(pattern, message)
    try:
        wait_until(shown, timeout=timeout, interval=0.5, message=f"iq_worker() to show {pattern}")
    except AssertionError:
        raise AssertionError(f"iq_worker() shows {found.get('m')}, not {pattern}")
    return found["m"][1]


def wait_counted(key, n, timeout=120):
    wait_until(lambda: count(key) == n, timeout=timeout, interval=1,
               message=f"order_count of {key} to be {n} (it is {count(key)!r})")


def test_sasl_credentials_right_then_wrong(scratch):
    key = "sasl-1"
    produce(scratch.customer, [(key, "Alice")])
    produce(scratch.order, [(key, f"dish{i}") for i in range(3)])
    wait_counted(key, 3)
    assert "Kafka clients take 4 properties from" in scratch.log()

    # a wrong password: the worker restarts with it and the broker refuses it
    scratch.write_props(props(dict(GOOD, **{"sasl.password": WRONG_PASSWORD})))
    message = wait_message(r"(?i)authenticat")
    assert SASL_BOOTSTRAP in message, message
    produce(scratch.order, [(key, f"dish{i}") for i in range(3, 5)])
    time.sleep(3)
    assert worker()[0] in ("error", "starting")  # retried with backoff
    got = count(key)
    assert isinstance(got, str) and "knows no partitions" in got, got
    assert WRONG_PASSWORD not in scratch.log()

    # fixed: the two orders produced meanwhile are counted now
    scratch.write_props(props(GOOD))
    wait_counted(key, 5)


def test_file_others_may_read_is_refused(scratch):
    scratch.write_props(props(GOOD), mode=0o644)
    message = wait_message(r"group or world access")
    assert str(scratch.props) in message and "iq_fdw.kafka_properties_file" in message, message
    scratch.write_props(props(GOOD))
    wait_until(lambda: worker()[0] == "running", timeout=120, interval=1,
               message="the worker to run again")


@pytest.mark.parametrize("line, pattern", [
    ("group.id = intruders", r'line 7: property "group\.id" is set by iq_fdw itself from iq_fdw\.application_id'),
    ("metadata.broker.list = 127.0.0.1:1", r'line 7: property "metadata\.broker\.list" sets "bootstrap\.servers"'),
    ("no.such.property = 1", r'line 7: .*no\.such\.property'),
    ("security.protocol = SECRET_4ab1", r'line 7: .*security\.protocol'),
    ("security.protocol = S", r'line 7: Invalid value "\(value hidden\)" for configuration property "security\.protocol"'),
    ("this line has no equals sign", r"line 7: not a property"),
])
def test_bad_line_is_refused_naming_the_line(scratch, line, pattern):
    scratch.write_props(props(GOOD, line + "\n"))
    message = wait_message(pattern)
    assert str(scratch.props) in message, message
    assert "SECRET_4ab1" not in message and "SECRET_4ab1" not in scratch.log()
    assert GOOD["sasl.password"] not in message


def test_rogue_member_is_ignored(scratch):
    scratch.write_props(props(GOOD))
    wait_until(lambda: worker()[0] == "running", timeout=120, interval=1,
               message="the worker to run")
    keys = [f"rogue-{i}" for i in range(12)]
    produce(scratch.customer, [(k, "Bob") for k in keys])
    produce(scratch.order, [(k, "soup") for k in keys])
    for k in keys:
        wait_counted(k, 1)
    before = scratch.log().count("ignoring member")
    rogue_id = "iq_fdw|evil\r\nX: y:80"
    rogue = subprocess.Popen(["kcat", "-b", BOOTSTRAP, "-G", scratch.app, "-q",
                              "-X", f"client.id={rogue_id}", "-X", "enable.auto.commit=false",
                              "-X", "partition.assignment.strategy=range",
                              scratch.customer, scratch.order],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def rogue_holds():
            parts = run("SELECT assigned_partitions FROM iq_worker()")[0].strip("{}")
            mine = {int(p) for p in parts.split(",") if p}
            return sorted(set(range(3)) - mine) if mine and len(mine) < 3 else None
        wait_until(rogue_holds, timeout=90, interval=1, message="the rogue member to hold partitions")
        theirs = rogue_holds()
        wait_until(lambda: scratch.log().count("ignoring member") > before, timeout=30,
                   message="the WARNING about the rogue member")
        time.sleep(5)  # several describes of a group with unowned partitions
        log = scratch.log()
        assert log.count("ignoring member") == before + 1
        warning = log[log.rindex("ignoring member"):][:800]
        assert "evil\\x0d\\x0aX: y:80" in warning and "\r\nX: y" not in log

        rows = run("SELECT host, port FROM iq_instances()")[0].splitlines()
        assert rows == [f"localhost|{HTTP}"], rows
        listed = json.dumps(run("SELECT * FROM iq_instances()")[0])
        assert "evil" not in listed

        for k in keys:
            got = count(k)
            if java_partition(k, 3) in theirs:
                assert isinstance(got, str) and "no instance owns partition" in got, (k, got)
            else:
                assert got == 1, (k, got)
    finally:
        rogue.terminate()
        rogue.wait(timeout=30)
    for k in keys:
        wait_counted(k, 1)


def test_other_principal_cannot_join_the_group(scratch):
    """What keeps a rogue member out: the broker's ACLs (README)."""
    scratch.write_props(props(GOOD))
    wait_until(lambda: worker()[0] == "running", timeout=120, interval=1,
               message="the worker to run")
    warned = scratch.log().count("ignoring member")
    sasl = [x for k, v in INTRUDER.items() for x in ("-X", f"{k}={v}")]
    r = subprocess.run(["timeout", "20", "kcat", "-b", SASL_BOOTSTRAP, "-G", scratch.app, *sasl,
                        "-X", "client.id=iq_fdw|127.0.0.1:1", "-X", "enable.auto.commit=false",
                        scratch.customer, scratch.order],
                       capture_output=True, text=True, timeout=60)
    assert re.search(r"(?i)group.?authori[sz]ation.?failed", r.stderr), r.stderr[-2000:]
    parts = run("SELECT assigned_partitions FROM iq_worker()")[0]
    assert parts == "{0,1,2}", parts
    assert scratch.log().count("ignoring member") == warned  # never a member

"""Issue 16: the fault suite's subset (faults/README.md): one worker SIGKILL
and one broker bounce on this cluster, and a partition from the peers on a
cluster of hosts (scripts/hosts, IQ_HOSTS_NET=9) where namespaces exist;
faults of 15 s, while a producer writes orders and users query every
instance. Each must lose no record, give no wrong answer, and end with
every instance's stores equal to the producer's log; beside them a plain-SQL
session per instance, which a kill of the stream engine must not reach: no
error, no cut, no restart of the instance (issue 17). On the same cluster of
hosts, the partition from the peers again with a standby replica of each
partition read by the users (issue 18): the failed host's keys answer from
the standbys, so no query of them fails for the whole cut.

The harness runs with Debian's python3 (psycopg2, confluent_kafka): this
module uses only the standard library and pytest.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import REPO, SCRIPTS

HARNESS = REPO / "faults" / "run.py"
PYTHON = "/usr/bin/python3"


def harness_ready():
    """Why the harness cannot run here, or None."""
    if os.geteuid() != 0:
        return "the fault suite needs root"
    r = subprocess.run([PYTHON, "-c", "import psycopg2, confluent_kafka"], capture_output=True)
    if r.returncode != 0:
        return "Debian's python3 lacks python3-psycopg2 or python3-confluent-kafka"
    return None


def run_faults(out, *args, env=None, timeout=900):
    """faults/run.py --quick ARGS; its results (a list, one per scenario)."""
    r = subprocess.run([PYTHON, str(HARNESS), "--quick", "--out", str(out), *args],
                       cwd=HARNESS.parent, capture_output=True, text=True, timeout=timeout,
                       env=env)
    results = out / "results.json"
    assert results.exists(), f"the harness ended ({r.returncode}) without results:\n{r.stderr[-3000:]}"
    return json.loads(results.read_text()), r


def check(result, stdout):
    assert "failed" not in result and "skipped" not in result, f"{result}\n{stdout}"
    assert result["producer_rc"] == 0, result
    assert result["produced"] > 1000, result
    assert result["lost"] == 0 and not result["final_problems"], result["final_problems"]
    assert result["wrong"] == 0, json.dumps(result["wrong_examples"], indent=1)[:4000]
    assert result["queries"] > 100, result
    # issue 17: a fault of the stream engine alone never reaches PostgreSQL
    assert result["plain_statements"] > 100, result
    assert not result.get("postgres_hit"), json.dumps(result["plain_error_examples"], indent=1)


@pytest.fixture
def out():
    d = Path(tempfile.mkdtemp(prefix="iq-faults-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.restarts_cluster
def test_worker_kill_and_broker_bounce_lose_nothing_and_answer_right(out):
    why = harness_ready()
    if why:
        pytest.skip(why)
    results, r = run_faults(out, "--adapter", "loopback", "--reset", "kill1", "broker")
    assert [x["scenario"] for x in results] == ["kill1", "broker"]
    for result in results:
        check(result, r.stdout)


def hosts_skip():
    """Why a cluster of hosts cannot run here, or None."""
    why = harness_ready()
    if why:
        return why
    if not (SCRIPTS / "hosts").exists():
        return "no scripts/hosts on this branch"
    if subprocess.run(["ip", "netns", "list"], capture_output=True).returncode != 0:
        return "no network namespaces here"
    return None


@pytest.fixture(scope="module")
def hosts_env():
    """A cluster of hosts (scripts/hosts, IQ_HOSTS_NET=9 unless
    IQ_FAULTS_HOSTS_NET says), up for this module's cases, down after;
    the environment that reaches it."""
    why = hosts_skip()
    if why:
        pytest.skip(why)
    # scripts/hosts decides its own IQ_HOME: not the loopback cluster's of scripts/test
    env = {k: v for k, v in os.environ.items() if k not in ("IQ_HOME", "IQ_PORT_OFFSET")}
    env["IQ_HOSTS_NET"] = os.environ.get("IQ_FAULTS_HOSTS_NET", "9")
    hosts = lambda *a, **kw: subprocess.run([str(SCRIPTS / "hosts"), *a], env=env,  # noqa: E731
                                            capture_output=True, text=True, timeout=600, **kw)
    up = hosts("up", "--fresh", "--instances", "3")
    try:
        assert up.returncode == 0, up.stderr
        yield env
    finally:
        hosts("down")


@pytest.mark.restarts_cluster
def test_partition_from_peers_loses_nothing_and_answers_right(out, hosts_env):
    results, r = run_faults(out, "--adapter", "hosts", "part-peers", env=hosts_env)
    check(results[0], r.stdout)


@pytest.mark.restarts_cluster
def test_partition_from_peers_answers_from_standbys(out, hosts_env):
    """Issue 18: with a standby of each partition and read_from
    owner_or_standby, a host cut from its peers for 15 s loses nothing,
    every answer is right within max_lag, and its keys are answered by the
    standbys on the other hosts: a query that waits iq_fdw.peer_timeout for
    the cut owner then reads a standby, so none of them fails (without
    standbys they all fail, for the whole cut)."""
    results, r = run_faults(out, "--adapter", "hosts", "--standby", "1",
                            "--read-from", "owner_or_standby", "part-peers", env=hosts_env)
    result = results[0]
    check(result, r.stdout)
    assert result["standby"] == 1 and result["read_from"] == "owner_or_standby", result
    assert result["queries_victim"] > 20, result
    assert result["errors_victim"] == 0, (result["error_kinds"], r.stdout[-3000:])
    assert result["longest_fail_victim_s"] < result["fault_s"] / 2, result

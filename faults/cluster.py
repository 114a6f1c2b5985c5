"""faults/cluster.py: the cluster the suite runs against, behind one small
interface, so that a scenario never knows how instances are laid out.

    Loopback  scripts/cluster's instances on 127.0.0.1, a port each
              (IQ_PORT_OFFSET); no network faults.
    Hosts     scripts/hosts: a network namespace per instance and for the
              broker, every instance on 5432/5400; loads run in `client`.

Both offer: n, sql(i, ...), worker_pid(i), engine_pid(i), epoch(i), spawn(argv) (the harness's own
processes: producer, query loops, Kafka admin), loop_dsn(i), bootstrap,
kill_worker, stop/start, broker, state_dir, and the network
faults (Hosts only: partition, heal, proxy).
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"


def _run(argv, timeout=300, env=None):
    """Run argv, raise with its stderr when it fails; return stdout."""
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


# An instance's epoch: pg_postmaster_start_time() stays the same across a
# crash restart (the postmaster lives on and reinitialises shared memory,
# "all server processes terminated; reinitializing"); the checkpointer is
# started anew then, so its start time marks every reinitialisation too.
EPOCH_SQL = ("SELECT pg_postmaster_start_time()::text, (SELECT backend_start::text"
             " FROM pg_stat_activity WHERE backend_type = 'checkpointer')")

# the process iq_worker().pid names: the engine (issue 17), or before it the worker
ENGINE_TITLES = ("iq_fdw stream engine", "iq_fdw stream worker")


class Unsupported(Exception):
    """This adapter cannot inject that fault (no namespaces on loopback)."""


class Cluster:
    """What both adapters share: SQL on an instance, the worker's pid."""

    def sql(self, i, query, args=None, timeout=30):
        """Rows of query on instance i, on a fresh autocommit connection."""
        conn = psycopg2.connect(self.control_dsn(i), connect_timeout=5,
                                options=f"-c statement_timeout={int(timeout * 1000)}")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(query, args)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def worker(self, i):
        """(state, message, pid, assigned partitions, partition count) of iq_worker() on i."""
        state, message, pid, parts, count = self.sql(
            i, "SELECT state, message, pid, assigned_partitions, partition_count FROM iq_worker()")[0]
        return state, message, pid, list(parts or []), count

    def worker_pid(self, i):
        return self.worker(i)[2]

    def engine_pid(self, i):
        """iq_worker()'s pid, checked to be the engine by its process title (not
        the supervisor, not a pid reused since)."""
        pid = self.worker_pid(i)
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, TypeError) as e:
            raise RuntimeError(f"instance {i}: iq_worker() names pid {pid}, no process: {e}")
        if not any(t in title for t in ENGINE_TITLES):
            raise RuntimeError(f"instance {i}: iq_worker() names pid {pid}, which is {title!r}, "
                               f"not the engine")
        return pid

    def epoch(self, i):
        """Instance i's (postmaster start, checkpointer start): see EPOCH_SQL."""
        return list(self.sql(i, EPOCH_SQL)[0])

    def kill_worker(self, i, sig=signal.SIGKILL):
        os.kill(self.engine_pid(i), sig)

    def partition(self, i, what):
        raise Unsupported("network partitions need scripts/hosts")

    def heal(self, i=None):
        raise Unsupported("network partitions need scripts/hosts")

    def proxy(self, i, mode, *args):
        raise Unsupported("the fault proxy needs scripts/hosts")


class Loopback(Cluster):
    """scripts/cluster at IQ_PORT_OFFSET (the environment's), IQ_HOME as lib.sh says."""

    name = "loopback"

    def __init__(self):
        self.offset = int(os.environ.get("IQ_PORT_OFFSET", "0"))
        self.home, self.pg_bin = map(Path, _run(
            ["bash", "-c", f'source "{SCRIPTS}/lib.sh" && echo "$IQ_HOME" && echo "$PG_BIN"']).split())
        try:
            self.n = int((self.home / "instances").read_text())
        except (OSError, ValueError):
            self.n = 3
        self.bootstrap = f"127.0.0.1:{9092 + self.offset}"

    def control_dsn(self, i):
        return f"host=127.0.0.1 port={5432 + i + self.offset} user=postgres dbname=postgres"

    loop_dsn = control_dsn

    def data_dir(self, i):
        return self.home / "pg" / str(i) / "data"

    def state_dir(self, i):
        return self.home / "pg" / str(i) / "state"

    def spawn(self, argv, **kw):
        return subprocess.Popen([str(a) for a in argv], **kw)

    def stop(self, i, immediate=False):
        if immediate:
            _run(["runuser", "-u", "iqfdw", "--", self.pg_bin / "pg_ctl", "-D",
                  self.data_dir(i), "-m", "immediate", "-w", "stop"])
        else:
            _run([SCRIPTS / "instance", "stop", str(i)])

    def start(self, i):
        _run([SCRIPTS / "instance", "start", str(i)])

    def broker(self, action):
        _run([SCRIPTS / "kafka", action])


class Hosts(Cluster):
    """scripts/hosts (IQ_HOSTS_NET from the environment)."""

    name = "hosts"

    def __init__(self):
        self.env = {}
        for line in _run([SCRIPTS / "hosts", "env"]).splitlines():
            k, sep, v = line.strip().removeprefix("export ").partition("=")
            if sep:
                self.env[k] = v.strip("'\"")
        self.home = Path(self.env["IQ_HOSTS_HOME"])
        self.bootstrap = self.env["IQ_HOSTS_BOOTSTRAP"]
        self.n = int(self.env["IQ_HOSTS_INSTANCES"])

    def control_dsn(self, i):
        return f"host={self.env[f'IQ_HOSTS_SOCKET_{i}']} port=5432 user=postgres dbname=postgres"

    def loop_dsn(self, i):
        return f"host={self.env[f'IQ_HOSTS_ADDR_{i}']} port=5432 user=postgres dbname=postgres"

    def data_dir(self, i):
        return Path(self.env[f"IQ_HOSTS_DATA_{i}"])

    def state_dir(self, i):
        return Path(self.env[f"IQ_HOSTS_STATE_{i}"])

    def spawn(self, argv, **kw):
        return subprocess.Popen([str(SCRIPTS / "hosts"), "exec", "client", *map(str, argv)], **kw)

    def hosts(self, *args):
        return _run([SCRIPTS / "hosts", *map(str, args)])

    def kill_worker(self, i, sig=signal.SIGKILL):
        self.hosts("kill-worker", i, signal.Signals(sig).name)

    def stop(self, i, immediate=False):
        self.hosts("stop", i, *(["--immediate"] if immediate else []))

    def start(self, i):
        self.hosts("start", i)

    def broker(self, action):
        self.hosts("broker", action)

    def partition(self, i, what):
        self.hosts("partition", i, what)

    def heal(self, i=None):
        self.hosts("heal", *([i] if i else []))

    def proxy(self, i, mode, *args):
        self.hosts("proxy", i, mode, *args)


def wait_until(predicate, timeout, interval=0.5, what="condition"):
    """predicate()'s first truthy value; exceptions count as not yet."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            v = predicate()
            if v:
                return v
            last = v
        except Exception as e:  # noqa: BLE001 -- retried until the deadline
            last = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout}s; last: {last!r}")

"""Integration-test helpers: a running cluster of one Kafka broker and N
PostgreSQL instances with iq_fdw, as scripts/cluster starts it.

scripts/test starts a private cluster (IQ_PORT_OFFSET=10000) and runs these
tests against it. To run them against the development cluster instead:

    scripts/cluster up && python3 -m pytest test/

Ports follow scripts/lib.sh: broker 9092, instance i on PostgreSQL port
5432+i and HTTP port (4+i)*1000+400, each plus IQ_PORT_OFFSET. On a cluster
started with --tls (scripts/test --tls) the HTTP ports speak HTTPS: tests
reach them only through the helpers under "HTTP" below.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"

OFFSET = int(os.environ.get("IQ_PORT_OFFSET", "0"))


def kafka_port():
    return 9092 + OFFSET


def pg_port(i):
    return 5432 + i + OFFSET


def http_port(i):
    return (4 + i) * 1000 + 400 + OFFSET


BOOTSTRAP = f"127.0.0.1:{kafka_port()}"


def _from_lib_sh(name):
    """NAME from the environment, else as scripts/lib.sh decides it, so that
    the two never disagree."""
    if os.environ.get(name):
        return Path(os.environ[name])
    out = subprocess.run(["bash", "-c", f'source "{SCRIPTS}/lib.sh" && echo "${name}"'],
                         capture_output=True, text=True, check=True, timeout=30)
    return Path(out.stdout.strip())


IQ_HOME = _from_lib_sh("IQ_HOME")
# the PostgreSQL that pg_config names (15 on Debian 12, 17 on Debian 13)
PG_BIN = _from_lib_sh("PG_BIN")


def _instance_count():
    try:
        return int((IQ_HOME / "instances").read_text().strip())
    except (OSError, ValueError):
        return 3


N_INSTANCES = _instance_count()
INSTANCES = list(range(1, N_INSTANCES + 1))


# ---- waiting ----------------------------------------------------------------

def wait_until(predicate, timeout=30.0, interval=0.2, message="condition"):
    """Poll predicate() until it returns something truthy, and return that.

    Exceptions raised by predicate count as "not yet". After timeout seconds,
    fail with message and the last value or exception seen."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = predicate()
            if value:
                return value
            last = value
        except Exception as e:  # noqa: BLE001 -- retried until the deadline
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}; last: {last!r}")
        time.sleep(interval)


def wait_for_counts(query, table, prefix, expect, what):
    """Until every instance's table holds expect ("rows|sum of count") in
    the keys under prefix; query(i, sql) runs sql on instance i."""
    for i in INSTANCES:
        wait_until(lambda: query(i, f"SELECT count(*), sum(count) FROM {table} "
                                    f"WHERE key >= '{prefix}' AND key < '{prefix}~'") == expect,
                   timeout=300, interval=1, message=f"instance {i} to hold {what}")


def freeze(pid):
    """SIGSTOP pid and return once every one of its threads is stopped.

    kill() returns before a multi-threaded process has stopped: the thread
    the signal went to must run to stop the others, and on a busy machine
    the others (an HTTP server thread, say) may answer for milliseconds
    meanwhile."""
    os.kill(pid, signal.SIGSTOP)

    def all_stopped():
        states = []
        for t in Path(f"/proc/{pid}/task").iterdir():
            try:
                # "tid (comm) S ...": the state follows the last ')'
                states.append((t / "stat").read_text().rsplit(")", 1)[1].split()[0])
            except OSError:
                pass  # the thread ended meanwhile
        return all(s in ("T", "t") for s in states)

    wait_until(all_stopped, timeout=10, interval=0.01, message=f"every thread of {pid} stopped")


def thaw(pid):
    """SIGCONT what freeze stopped."""
    os.kill(pid, signal.SIGCONT)


# ---- PostgreSQL -------------------------------------------------------------

def asan_env():
    """["env", VAR=value...] to start a PostgreSQL that loads a sanitizer
    build (IQ_ASAN=1, scripts/test --asan), as scripts/instance does; [] otherwise."""
    if os.environ.get("IQ_ASAN") != "1":
        return []
    libasan = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                             text=True, check=True, timeout=30).stdout.strip()
    reports = IQ_HOME / "asan"
    return ["env", f"LD_PRELOAD={libasan} {os.environ['IQ_LIB_DIR']}/asan_preload.so",
            f"ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path={reports}/asan",
            f"UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=0:log_path={reports}/ubsan"]


def local_socket_path(i):
    """Instance i's worker's local socket: iq_fdw.sock in its data directory."""
    return str(IQ_HOME / "pg" / str(i) / "data" / "iq_fdw.sock")


def assignment(i):
    """(state, assigned partitions, pid) of instance i's worker."""
    state, parts, pid = psql(i, "SELECT state, assigned_partitions, pid FROM iq_worker()").split("|")
    return state, [int(p) for p in parts.strip("{}").split(",") if p], int(pid) if pid else None


def settled(instances=None, partitions=3):
    """{partition: instance} once every one of instances (all by default)
    runs and together they hold each partition once; else None."""
    owner = {}
    for i in instances or INSTANCES:
        state, parts, _ = assignment(i)
        if state != "running":
            return None
        for p in parts:
            if p in owner:
                return None
            owner[p] = i
    return owner if sorted(owner) == list(range(partitions)) else None


@contextlib.contextmanager
def scratch_instance(name, port, settings, initdb_args=()):
    """A PostgreSQL with iq_fdw preloaded, outside the cluster: its own data
    directory under IQ_HOME (which the PostgreSQL user can reach), port
    `port`, and the iq_fdw `settings` ({"iq_fdw.http_listen": ...});
    loads IQ_LIB_DIR's build, and libasan under IQ_ASAN.  Yields the base
    directory; stopped (immediate) and removed on exit."""
    base = IQ_HOME / f"{name}-{os.getpid()}"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    as_pg = []
    if os.geteuid() == 0:
        shutil.chown(base, "iqfdw", "iqfdw")
        as_pg = ["runuser", "-u", "iqfdw", "--"]
    data = base / "data"
    subprocess.run(as_pg + [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                            "--auth=trust", *initdb_args],
                   check=True, capture_output=True, timeout=120, cwd="/")
    with open(data / "postgresql.conf", "a") as f:
        f.write(f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{base}'\nshared_preload_libraries = 'iq_fdw'\n")
        for k, v in settings.items():
            f.write(f"{k} = '{v}'\n")
        if os.environ.get("IQ_LIB_DIR"):
            f.write(f"dynamic_library_path = '{os.environ['IQ_LIB_DIR']}:$libdir'\n")
    subprocess.run(as_pg + asan_env() + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l",
                                         str(base / "log"), "-w", "start"],
                   check=True, capture_output=True, timeout=120, cwd="/")
    try:
        yield base
    finally:
        subprocess.run(as_pg + [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(base, ignore_errors=True)


class PsqlError(Exception):
    """psql failed; .stderr has the server's message."""

    def __init__(self, instance, sql, stderr):
        super().__init__(f"instance {instance}: {stderr.strip()}\n  while running: {sql}")
        self.instance = instance
        self.sql = sql
        self.stderr = stderr


def psql_cmd(instance, *extra):
    return [str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(pg_port(instance)),
            "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", *extra]


def psql(instance, sql, timeout=60):
    """Run sql on an instance (one psql call, so SET lasts for the whole of
    sql); return its unaligned, tuples-only output, stripped. Raise PsqlError
    on any error."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="5", PGOPTIONS="")
    r = subprocess.run(psql_cmd(instance), input=sql, capture_output=True, text=True,
                       timeout=timeout, env=env)
    if r.returncode != 0:
        raise PsqlError(instance, sql, r.stderr)
    return r.stdout.strip()


def psql_error(instance, sql, timeout=60):
    """Run sql that must fail; return the error text."""
    try:
        out = psql(instance, sql, timeout)
    except PsqlError as e:
        return e.stderr
    raise AssertionError(f"instance {instance}: expected an error from {sql!r}, got {out!r}")


class Session:
    """One psql session, so one backend, kept across statements: for tests of
    what a backend keeps between queries (its pooled connections).

        with Session(1) as s:
            s.run("SELECT 1")            # -> "1"; an error's text is returned too
    """
    MARK = "--session-done--"

    def __init__(self, instance):
        env = dict(os.environ, PGCONNECT_TIMEOUT="5", PGOPTIONS="")
        self.proc = subprocess.Popen(psql_cmd(instance, "-q", "-v", "ON_ERROR_STOP=0"), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self.pending = b""

    def run(self, sql, timeout=60):
        """Run sql; return what it printed (results, and errors: ON_ERROR_STOP is off)."""
        import select
        sql = sql.rstrip()
        if not sql.endswith(";"):
            sql += ";"  # else psql would hold the statement and run the mark first
        self.proc.stdin.write(f"{sql}\n\\echo {self.MARK}\n".encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while (self.MARK + "\n").encode() not in self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"no answer within {timeout}s to {sql!r}; so far {self.pending!r}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"psql ended while running {sql!r}: {self.pending!r}")
            self.pending += chunk
        out, self.pending = self.pending.split((self.MARK + "\n").encode(), 1)
        return out.decode().strip()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def import_stores_sql(schema, server):
    """SQL that (re)creates schema with the stores imported from server (made if missing)."""
    return f"""
DROP SCHEMA IF EXISTS {schema} CASCADE;
CREATE SCHEMA {schema};
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_foreign_server WHERE srvname = '{server}') THEN
    CREATE SERVER {server} FOREIGN DATA WRAPPER iq_fdw;
  END IF;
END $$;
IMPORT FOREIGN SCHEMA stores FROM SERVER {server} INTO {schema};
"""


PUSHDOWN_LABELS = ("Key Lookup:", "Key Range:", "Full Scan:")


def pushdown(run, sql):
    """What each foreign scan of sql asks its store, as EXPLAIN (VERBOSE,
    COSTS OFF) shows it (src/explain.c): a list of lines such as
    "Key Lookup: key IN ('a', 'b')", "Key Range: key <= 'b'" or
    "Full Scan: all partitions", one per foreign scan in plan order.

    run takes SQL text and returns psql's output (a test's own q()).  Every
    qual is also rechecked by PostgreSQL, so a lookup or range that is no
    longer pushed down still returns the right rows: tests of lookups and
    ranges check this beside them."""
    plan = run("EXPLAIN (VERBOSE, COSTS OFF) " + sql)
    return [line.strip() for line in plan.splitlines()
            if line.strip().startswith(PUSHDOWN_LABELS)]


# ---- HTTP -------------------------------------------------------------------
#
# A cluster runs TLS or not (scripts/cluster up --tls); every test reaches
# the HTTP ports through what follows, so that the same test runs both
# ways. On a TLS cluster the client presents scripts/certs' client.crt,
# signed by the cluster's CA: that satisfies the peer endpoints (/iq/v1/*)
# and the seed's, which then ask for a credential (http_auth = required).

def tls_dir():
    """Where scripts/certs put the cluster's CA and certificates."""
    return IQ_HOME / "tls"


_tls = []


def tls_on():
    """Whether the cluster speaks HTTPS: scripts/cluster's mark, else what
    instance 1 says (a cluster started some other way)."""
    if not _tls:
        on = (IQ_HOME / "tls_on").exists()
        if not on:
            try:
                on = psql(1, "SHOW iq_fdw.ssl_cert_file") != ""
            except (PsqlError, OSError, subprocess.SubprocessError):
                on = False  # no instance, or a build without the setting
        _tls.append(on)
    return _tls[0]


def base_url(i=None, port=None, tls=None):
    """https://127.0.0.1:<HTTP port of instance i> on a TLS cluster, else
    http://...; port instead of i for a server outside the cluster, and tls
    to say how that one speaks."""
    tls = tls_on() if tls is None else tls
    return f"{'https' if tls else 'http'}://127.0.0.1:{port or http_port(i)}"


def ssl_context(client_cert=True):
    """A client context trusting the cluster's CA and, with client_cert,
    presenting client.crt; None on a cluster without TLS."""
    if not tls_on():
        return None
    import ssl
    ctx = ssl.create_default_context(cafile=str(tls_dir() / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(tls_dir() / "client.crt"), str(tls_dir() / "client.key"))
    return ctx


def tls_settings(i):
    """The TLS settings scripts/instance gives instance i, for a scratch
    instance that speaks as the cluster does ({} without TLS)."""
    if not tls_on():
        return {}
    t = tls_dir()
    return {"iq_fdw.ssl_cert_file": t / f"instance{i}.crt", "iq_fdw.ssl_key_file": t / f"instance{i}.key",
            "iq_fdw.ssl_ca_file": t / "ca.crt", "iq_fdw.http_auth": "required",
            "iq_fdw.http_token_file": t / "token"}


def server_ssl_context(i):
    """A server context with instance i's certificate: for a test that
    stands in for instance i (a proxy answering in its place)."""
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(tls_dir() / f"instance{i}.crt"), str(tls_dir() / f"instance{i}.key"))
    return ctx


def urlopen(req, timeout=5.0, tls=None):
    """urllib.request.urlopen with the cluster's client context (req is a
    URL made with base_url, or a Request)."""
    tls = tls_on() if tls is None else tls
    return urllib.request.urlopen(req, timeout=timeout, context=ssl_context() if tls else None)


def http_connection(i, timeout=30.0):
    """An http.client connection to instance i, HTTPS on a TLS cluster."""
    import http.client
    if tls_on():
        return http.client.HTTPSConnection("127.0.0.1", http_port(i), timeout=timeout,
                                           context=ssl_context())
    return http.client.HTTPConnection("127.0.0.1", http_port(i), timeout=timeout)


def curl_tls_args():
    """What a curl command line needs to reach the cluster: the CA and the
    client certificate on a TLS cluster, nothing otherwise."""
    if not tls_on():
        return []
    t = tls_dir()
    return ["--cacert", str(t / "ca.crt"), "--cert", str(t / "client.crt"),
            "--key", str(t / "client.key")]


def wrap_client(sock, client_cert=True):
    """sock, connected to an instance's HTTP port, after the TLS handshake on
    a TLS cluster (the bytes a test then sends and reads are the HTTP ones,
    inside TLS records), presenting client.crt unless not client_cert (an
    anonymous client); sock itself otherwise."""
    ctx = ssl_context(client_cert)
    return ctx.wrap_socket(sock, server_hostname="127.0.0.1") if ctx else sock


def connect_http(i=None, timeout=10.0, source=None, port=None, rcvbuf=None, client_cert=True):
    """A connection to instance i's HTTP port (or port) that speaks as the
    cluster does: for the tests that write HTTP by hand. source binds a
    client address (127.x.y.z); rcvbuf sets SO_RCVBUF before connecting;
    client_cert as wrap_client's."""
    import socket
    s = socket.socket()
    try:
        s.settimeout(timeout)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port or http_port(i)))
        return wrap_client(s, client_cert)
    except BaseException:
        s.close()
        raise


def recv_until_closed(s):
    """Every byte s receives until the other side hangs up."""
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return got
        got += chunk


def recv_now(s, n=65536):
    """What s has for us now, after select() said it was readable: bytes,
    b"" when the server hung up, None when what came was no application data
    (on TLS, a session ticket or part of a record), where a blocking recv
    would wait."""
    import ssl
    timeout = s.gettimeout()
    s.setblocking(False)
    try:
        return s.recv(n)
    except (ssl.SSLWantReadError, BlockingIOError):
        return None
    finally:
        s.settimeout(timeout)


def http_get_at(base, path, timeout=5.0, tls=None):
    """GET base + path (base from base_url); return (status, body text)."""
    try:
        with urlopen(base + path, timeout=timeout, tls=tls) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def http_get(instance, path, timeout=5.0):
    """GET path on instance's HTTP port (https on a TLS cluster); return (status, body text)."""
    return http_get_at(base_url(instance), path, timeout)


def http_json(instance, path, timeout=5.0):
    """GET path, require 200, return the parsed JSON body."""
    status, body = http_get(instance, path, timeout)
    assert status == 200, f"GET {path} on instance {instance}: {status} {body}"
    return json.loads(body)


class KeepAlive:
    """GETs on one kept-alive connection to instance i, for a test that asks
    thousands of questions: a TLS handshake each (a new connection per
    urlopen) would cost minutes. A connection the server closed meanwhile
    is opened again, once per request.

        with KeepAlive(1) as h:
            h.json("/metadata")
    """

    def __init__(self, i, timeout=10.0):
        self.i, self.timeout, self.conn = i, timeout, None

    def get(self, path):
        """(status, body text) of GET path."""
        import http.client
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http_connection(self.i, timeout=self.timeout)
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.status, r.read().decode()
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def json(self, path):
        """GET path, require 200, return the parsed JSON body."""
        status, body = self.get(path)
        assert status == 200, f"GET {path} on instance {self.i}: {status} {body}"
        return json.loads(body)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def post_wire(instance, path, body, timeout=10.0):
    """POST body (a wire request) to path on instance; (status, answer bytes),
    an HTTP error's too."""
    req = urllib.request.Request(base_url(instance) + path, data=body,
                                 headers={"Content-Type": "application/octet-stream"})
    try:
        with urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# ---- Kafka ------------------------------------------------------------------

def kafka(*args, input=None, timeout=120):
    """Run scripts/kafka ARGS; return stdout."""
    r = subprocess.run([str(SCRIPTS / "kafka"), *args], input=input, capture_output=True,
                       text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"scripts/kafka {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout


def produce(topic, lines, timeout=300):
    """Produce "key--value" lines to topic as the seed's console producer
    would: split at the first "--", an empty key is a key, partitioned by
    Java's murmur2 (librdkafka's murmur2_random is that hash for keys).
    With kcat: a JVM started for each call cost some 3 s of CPU, and the
    suite produces some fifty times (test_cluster checks the seed's Java
    producer itself, with console_produce)."""
    data = "".join(line + "\n" for line in lines)
    r = subprocess.run(["kcat", "-P", "-b", BOOTSTRAP, "-t", topic, "-K", "--",
                        "-X", "partitioner=murmur2_random", "-X", "message.timeout.ms=60000"],
                       input=data, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"kcat could not produce to {topic} ({r.returncode}):\n{r.stderr}")


def console_produce(topic, lines, timeout=300):
    """Produce "key--value" lines with the seed's Java console producer
    (scripts/kafka produce)."""
    data = "".join(line + "\n" for line in lines)
    kafka("produce", topic, input=data, timeout=timeout)


def create_topic(name, partitions=3, **config):
    """Create a topic if missing; config as cleanup_policy="compact"."""
    kafka("create-topic", name, str(partitions),
          *(f"{k.replace('_', '.')}={v}" for k, v in config.items()))


def topic_config(name):
    """The topic's non-default configs as a dict, from kafka-topics --describe."""
    out = kafka("topic", "--describe", "--topic", name)
    m = re.search(r"Configs:\s*(\S*)", out)
    return dict(kv.split("=", 1) for kv in m.group(1).split(",") if "=" in kv) if m else {}


def topics():
    """{topic: partition count} from the broker's metadata (kcat -L -J)."""
    r = subprocess.run(["kcat", "-b", BOOTSTRAP, "-L", "-J", "-m", "10"], capture_output=True,
                       text=True, timeout=30, check=True)
    md = json.loads(r.stdout)
    return {t["topic"]: len(t["partitions"]) for t in md["topics"]}


def consume(topic, timeout=60):
    """Every record of topic from the beginning: [(partition, key, value)]."""
    r = subprocess.run(["kcat", "-b", BOOTSTRAP, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
                        "-J"], capture_output=True, text=True, timeout=timeout, check=True)
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    return [(m["partition"], m["key"], m["payload"]) for m in recs]


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit int."""
    m, r, mask = 0x5BD1E995, 24, 0xFFFFFFFF
    length = len(data)
    h = (0x9747B28C ^ length) & mask
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & mask
        k ^= k >> r
        k = (k * m) & mask
        h = (h * m) & mask
        h ^= k
    tail = length % 4
    base = length - tail
    if tail == 3:
        h ^= data[base + 2] << 16
    if tail >= 2:
        h ^= data[base + 1] << 8
    if tail >= 1:
        h ^= data[base]
        h = (h * m) & mask
    h ^= h >> 13
    h = (h * m) & mask
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def java_partition(key: str, partitions: int) -> int:
    """The partition the Java client's default partitioner picks for key."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def unique(prefix):
    """A name no earlier test run used on this broker."""
    return f"{prefix}_{os.getpid()}_{time.monotonic_ns()}"


def private_pipeline(prefix, http, bootstrap=BOOTSTRAP):
    """Topics and a group of their own for a scratch instance, so that its
    records reach no other test's reader: (customer, order, application_id,
    the iq_fdw settings naming them, with HTTP on 127.0.0.1:http)."""
    customer, order, app = unique(f"{prefix}cust"), unique(f"{prefix}ord"), unique(f"{prefix}app")
    create_topic(customer, 3, cleanup_policy="compact")
    create_topic(order, 3)
    return customer, order, app, {
        "iq_fdw.bootstrap_servers": bootstrap, "iq_fdw.customer_topic": customer,
        "iq_fdw.order_topic": order, "iq_fdw.application_id": app,
        "iq_fdw.http_listen": f"127.0.0.1:{http}",
        "iq_fdw.advertised_endpoint": f"localhost:{http}"}


# ---- processes --------------------------------------------------------------

def _ancestors():
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return pids


def our_processes():
    """Pids, other than this test run and its parents, whose command line or
    working directory is inside IQ_HOME."""
    home = str(IQ_HOME)
    mine = _ancestors()
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit() or int(p.name) in mine:
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(p / "cwd") if os.access(p / "cwd", os.R_OK) else ""
        except OSError:
            continue
        if home in cmd or cwd == home or cwd.startswith(home + "/"):
            pids.append(int(p.name))
    return pids


def port_busy(port):
    import socket
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def cluster_script(*args, timeout=300):
    """Run scripts/cluster ARGS; return the CompletedProcess (not checked)."""
    return subprocess.run([str(SCRIPTS / "cluster"), *args], capture_output=True, text=True,
                          timeout=timeout)


# ---- ordering ---------------------------------------------------------------

def pytest_configure(config):
    config.addinivalue_line(
        "markers", "restarts_cluster: stops and starts instances or the whole cluster; "
                   "runs after every other test, so that no other test meets a rejoining group")
    config.addinivalue_line(
        "markers", "grows_state: leaves millions of records in the cluster's topics, which "
                   "every later restart restores; runs last, so that no other test pays for them")


def pytest_collection_modifyitems(session, config, items):
    items.sort(key=lambda item: (item.get_closest_marker("restarts_cluster") is not None,
                                 item.get_closest_marker("grows_state") is not None))


# ---- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def cluster_running():
    """Fail fast, with the way out, when no cluster answers."""
    down = []
    try:
        topics()
    except Exception:  # noqa: BLE001
        down.append(f"broker {BOOTSTRAP}")
    for i in INSTANCES:
        r = subprocess.run([str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(pg_port(i)),
                            "-U", "postgres", "-t", "5"])
        if r.returncode != 0:
            down.append(f"instance {i} (port {pg_port(i)})")
    if down:
        pytest.exit(f"cluster not running ({', '.join(down)}): start it with "
                    f"IQ_PORT_OFFSET={OFFSET} scripts/cluster up, or run scripts/test", returncode=3)
    # A cluster just started may still be joining its group or restoring: the
    # first test would meet a 503 that says so, not what it tests.
    wait_until(readable_everywhere, timeout=240, interval=0.5,
               message="every partition owned once and readable on its owner")
    yield


def readable_everywhere():
    """True once every partition has one owner that answers reads of it: a
    local count on each instance needs every partition it holds restored."""
    if settled() is None:
        return False
    for i in INSTANCES:
        for store in ("order-count", "customer-v1-changelog"):
            status, body = http_get(i, f"/stores/{store}/approximate-num-entries")
            if status != 200:
                # raised, not returned: wait_until keeps it as the last reason
                raise AssertionError(f"instance {i}, {store}: {status} {body[:200]}")
    return True


@pytest.fixture(params=INSTANCES, ids=lambda i: f"instance{i}")
def instance(request):
    """Each instance number in turn."""
    return request.param

"""Reads between instances with TLS on (#15), against real traffic.

A rogue group member: a Kafka client joins the workers' consumer group
with an instance's client.id ("iq_fdw|<endpoint>"), so every instance takes
the endpoint it advertises for the owner of the partitions it is given.
Behind that endpoint a server of the test's answers every request with
plausible rows.  With TLS on, a backend asked for a key of those partitions
must refuse the server before sending it anything (its certificate is
signed by another CA, or by the cluster's CA for another name, or it does
not speak TLS at all) and fail naming the endpoint and the certificate
problem: no row, and a full scan fails rather than returning the other
instances' rows alone.  When the rogue leaves, the group rebalances and
the queries answer again.

No clear text on the wire: loopback traffic on the instances' HTTP ports
is captured (tcpdump) while backends read keys, ranges and full scans of
other instances and the workers forward gets and gather scans, for keys
and values made for the test; the capture holds bytes and none of them.
The same reads return those keys and values, so the markers were on the
wire (encrypted) and the test cannot pass for want of traffic.

The TLS material a backend presents follows the settings: an instance
reloaded with a certificate of another CA is refused by the others (403 to
its upgrade), also on the connections its backends had pooled, and a key
file that cannot be used fails the read naming the setting and the file.

Skipped unless the cluster runs with TLS (scripts/cluster up --tls).
"""

import contextlib
import json
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request

import pytest

from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, PsqlError, Session, http_port,
                      import_stores_sql, java_partition, produce, psql, unique, wait_until)

TLS_DIR = IQ_HOME / "tls"
SETUP = import_stores_sql("accesstest", "iq_access")


def _tls_on():
    try:
        return psql(1, "SHOW iq_fdw.ssl_cert_file") != ""
    except PsqlError:
        return False


pytestmark = pytest.mark.skipif(not _tls_on(), reason="the cluster runs without TLS between "
                                "instances (iq_fdw.ssl_cert_file is empty): start it with "
                                "scripts/cluster up --tls")


# ---- a rogue peer -------------------------------------------------------------

def _answer(request):
    """A plausible wire answer to request: OK, the partitions asked at
    position 0, and a row for every key asked (a scan: two rows)."""
    op, npart = request[3], struct.unpack(">H", request[9:11])[0]
    parts = struct.unpack(f">{npart}H", request[11:11 + 2 * npart])
    at = 11 + 2 * npart
    keys = []
    if op == 1:
        (nkeys,) = struct.unpack(">I", request[at:at + 4])
        at += 4
        for _ in range(nkeys):
            (n,) = struct.unpack(">I", request[at:at + 4])
            keys.append(request[at + 4:at + 4 + n])
            at += 4 + n
    else:
        keys = [b"rogue-a", b"rogue-b"]
    out = b"IQ\x01\x00" + struct.pack(">H", len(parts))
    for p in parts:
        out += struct.pack(">Hqq", p, 0, 0)
    for k in keys:
        value = struct.pack(">q", 7)
        out += b"R" + struct.pack(">I", len(k)) + k + struct.pack(">i", len(value)) + value
    return out + b"E\x00" + struct.pack(">I", 0)


class RoguePeer:
    """A server on 127.0.0.1:port answering anything as a worker would: 101
    to the upgrade, then a plausible answer to every wire request.  over
    TLS with (cert, key), or in clear text with None; swap() changes that.
    `served` counts wire requests it read: a backend that verified it
    never sends one."""

    def __init__(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.context = None
        self.served = 0
        self.connections = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def swap(self, cert_key):
        if cert_key is None:
            self.context = None
            return
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*cert_key)
        self.context = ctx

    def _accept(self):
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.context), daemon=True).start()

    def _read(self, conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def _serve(self, conn, ctx):
        conn.settimeout(30)
        try:
            if ctx is not None:
                conn = ctx.wrap_socket(conn, server_side=True)
            else:
                # clear text: whatever came first (a TLS hello), answered as an upgrade
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                             b"Upgrade: iq-wire/1\r\n\r\n")
                return
            head = b""
            while b"\r\n\r\n" not in head:
                head += self._read(conn, 1)
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                         b"Upgrade: iq-wire/1\r\n\r\n")
            while True:
                (n,) = struct.unpack(">I", self._read(conn, 4))
                request = self._read(conn, n)
                self.served += 1
                conn.sendall(_answer(request))
        except (OSError, EOFError, ssl.SSLError, struct.error):
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.listener.close()


@contextlib.contextmanager
def rogue_member(port):
    """A Kafka client in the workers' group, advertising 127.0.0.1:port as
    an instance does (its client.id), consuming nothing it commits; the
    group forgets it a few seconds after it is done.

    A static member as the workers are, with an id that sorts before
    theirs: the range assignor lays static members out by group.instance.id,
    so it is given a partition although the three workers could hold all
    three. Static members send no LeaveGroup as they close: a short session
    timeout lets the group forget it soon."""
    proc = subprocess.Popen(
        ["kcat", "-b", BOOTSTRAP, "-G", "food-server", "-q",
         "-X", f"client.id=iq_fdw|127.0.0.1:{port}",
         "-X", "group.instance.id=0-rogue", "-X", "session.timeout.ms=6000",
         "-X", "partition.assignment.strategy=range",
         "-X", "enable.auto.commit=false", "-X", "auto.offset.reset=latest",
         "customer", "order"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rogue_partitions(port):
    """Partitions instance 1 sees the rogue holding."""
    row = psql(1, f"SELECT partitions FROM iq_instances() WHERE port = {port}")
    return [int(p) for p in row.strip("{}").split(",") if p] if row else []


def key_of(prefix, partition):
    return next(f"{prefix}{j}" for j in range(10_000) if java_partition(f"{prefix}{j}", 3) == partition)


def owned_by_instances():
    """{partition: instance number} for partitions the cluster's own instances hold."""
    out = {}
    for line in psql(1, "SELECT port, partitions FROM iq_instances()").splitlines():
        port, parts = line.split("|")
        for i in INSTANCES:
            if http_port(i) == int(port):
                out.update({int(p): i for p in parts.strip("{}").split(",") if p})
    return out


def misnamed_cert(tmp_path):
    """A certificate the cluster's CA signed, for a name that is not the
    rogue's host: what a real instance's certificate presented from
    another address would look like."""
    key, csr, crt = tmp_path / "misnamed.key", tmp_path / "misnamed.csr", tmp_path / "misnamed.crt"
    ext = tmp_path / "misnamed.ext"
    ext.write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
                   "subjectAltName=DNS:elsewhere.invalid\n")
    for cmd in (["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                 "-out", key],
                ["openssl", "req", "-new", "-key", key, "-subj", "/CN=elsewhere.invalid", "-out", csr],
                ["openssl", "x509", "-req", "-in", csr, "-CA", TLS_DIR / "ca.crt", "-CAkey",
                 TLS_DIR / "ca.key", "-CAcreateserial", "-CAserial", tmp_path / "ca.srl",
                 "-days", "2", "-sha256", "-extfile", ext, "-out", crt]):
        subprocess.run([str(c) for c in cmd], check=True, capture_output=True, timeout=60)
    return crt, key


def test_a_rogue_group_member_is_refused_and_never_read(tmp_path):
    for i in INSTANCES:
        psql(i, SETUP)
    prefix = unique("acc") + "_"
    keys = {p: key_of(prefix, p) for p in range(3)}
    produce("order", [f"{k}--food" for k in keys.values()])
    lookup = "SELECT key, count FROM accesstest.order_count WHERE key = '{}'"
    for k in keys.values():
        wait_until(lambda: psql(1, lookup.format(k)) == f"{k}|1", timeout=120,
                   message=f"the count of {k}")

    rogue = RoguePeer()
    cases = [
        ("a certificate of another CA", (TLS_DIR / "rogue.crt", TLS_DIR / "rogue.key"),
         "certificate problem"),
        ("a certificate of the cluster's CA naming another host", misnamed_cert(tmp_path),
         "subject name"),
        ("clear text", None, "SSL"),
    ]
    try:
        with rogue_member(rogue.port):
            held = wait_until(lambda: rogue_partitions(rogue.port), timeout=120, interval=0.5,
                              message=f"the rogue 127.0.0.1:{rogue.port} holding partitions")
            p = held[0]
            for what, cert_key, detail in cases:
                rogue.swap(cert_key)
                for i in INSTANCES:
                    err = psql_fails(i, lookup.format(keys[p]))
                    assert f"127.0.0.1:{rogue.port}" in err, (what, err)
                    assert "could not make a verified TLS connection" in err, (what, err)
                    assert detail in err, (what, err)
                    # a full scan fails too, rather than returning the others' rows
                    err = psql_fails(i, "SELECT count(*) FROM accesstest.order_count")
                    assert f"127.0.0.1:{rogue.port}" in err, (what, err)
                assert rogue.served == 0, f"{what}: the rogue was sent {rogue.served} requests"
                assert rogue.connections > 0, f"{what}: the rogue was never tried"
    finally:
        rogue.close()

    # the rogue left: the group rebalances and the instances answer again
    for i in INSTANCES:
        for k in keys.values():
            wait_until(lambda: psql(i, lookup.format(k)) == f"{k}|1", timeout=180, interval=1,
                       message=f"instance {i} answering {k} after the rogue left")


def psql_fails(i, sql):
    """The error text of sql on instance i, which must fail and return no row."""
    try:
        out = psql(i, sql)
    except PsqlError as e:
        return e.stderr
    raise AssertionError(f"instance {i}: {sql!r} returned {out!r} instead of failing")


# ---- the material a backend presents, after a reload -----------------------------

def reload_with(i, settings):
    """ALTER SYSTEM on instance i (value None: RESET), then reload."""
    sql = "".join(f"ALTER SYSTEM RESET {k};\n" if v is None else f"ALTER SYSTEM SET {k} = '{v}';\n"
                  for k, v in settings.items())
    psql(i, sql + "SELECT pg_reload_conf();")


def test_reloaded_material_is_used_and_pooled_connections_follow(tmp_path):
    asker, owner = INSTANCES[-1], INSTANCES[0]
    for i in INSTANCES:
        psql(i, SETUP)
    owners = owned_by_instances()
    p = next(p for p, i in owners.items() if i == owner)
    key = key_of(unique("rel") + "_", p)
    produce("order", [f"{key}--food"])
    lookup = f"SELECT key, count FROM accesstest.order_count WHERE key = '{key}'"
    wait_until(lambda: psql(asker, lookup) == f"{key}|1", timeout=120, message=f"the count of {key}")
    bad_key = tmp_path / "readable.key"
    bad_key.write_bytes((TLS_DIR / "instance1.key").read_bytes())
    bad_key.chmod(0o644)
    names = ("iq_fdw.ssl_cert_file", "iq_fdw.ssl_key_file")
    with Session(asker) as s:
        s.run("\\set VERBOSITY verbose\nSELECT 1;")
        assert s.run(lookup) == f"{key}|1"  # a pooled connection to the owner now
        try:
            # a certificate the cluster's CA did not sign: the owner refuses it
            reload_with(asker, dict(zip(names, (TLS_DIR / "rogue.crt", TLS_DIR / "rogue.key"))))
            err = wait_until(lambda: (lambda out: "ERROR" in out and out)(s.run(lookup)),
                             timeout=30, message="the reloaded certificate presented")
            assert "42501" in err and "refused to be read by this instance" in err, err
            assert f"localhost:{http_port(owner)}" in err and "HTTP 403" in err, err
            assert f"{key}|1" not in err

            # a key file others may read: the read fails naming it, before connecting
            reload_with(asker, {"iq_fdw.ssl_key_file": bad_key})
            err = wait_until(lambda: (lambda out: "F0000" in out and out)(s.run(lookup)),
                             timeout=30, message="the unusable key file refused")
            assert "could not load the TLS material" in err and "iq_fdw.ssl_key_file" in err, err
            assert str(bad_key) in err and "PRIVATE KEY" not in err, err
        finally:
            reload_with(asker, dict.fromkeys(names))
        wait_until(lambda: s.run(lookup) == f"{key}|1", timeout=60,
                   message="the read answered again with the cluster's certificate")


# ---- no clear text on the wire ----------------------------------------------------

def _client_context():
    ctx = ssl.create_default_context(cafile=str(TLS_DIR / "ca.crt"))
    ctx.load_cert_chain(str(TLS_DIR / "client.crt"), str(TLS_DIR / "client.key"))
    return ctx


def https_get(i, path):
    with urllib.request.urlopen(f"https://127.0.0.1:{http_port(i)}{path}",
                                context=_client_context(), timeout=30) as r:
        assert r.status == 200, (i, path, r.status)
        return r.read().decode()


@contextlib.contextmanager
def capture(ports, path):
    """tcpdump of loopback TCP on ports into path, running while inside."""
    expr = " or ".join(f"tcp port {p}" for p in ports)
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-s", "0", "-w", str(path), expr],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()  # "listening on lo ..." once it captures
        assert "listening" in line, f"tcpdump did not start: {line}"
        yield
        time.sleep(1)  # what is in flight reaches the file
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_no_clear_text_between_instances(tmp_path):
    for i in INSTANCES:
        psql(i, SETUP)
    tag = unique("wire")
    keys = [f"MK{tag}_{j}" for j in range(12)]
    values = {k: f"MV{tag}_{j}" for j, k in enumerate(keys)}
    produce("customer", [f"{k}--{values[k]}" for k in keys])
    produce("order", [f"{k}--food" for k in keys])
    for i in INSTANCES:
        wait_until(lambda: psql(i, f"SELECT count(*) FROM accesstest.order_count "
                                   f"WHERE key LIKE 'MK{tag}%'") == str(len(keys)),
                   timeout=120, message=f"instance {i} reading every marker key")
    owners = owned_by_instances()
    remote = {i: [k for k in keys if owners[java_partition(k, 3)] != i] for i in INSTANCES}
    assert all(remote.values()), f"every instance has keys of others to read: {owners}"

    seen = []
    pcap = tmp_path / "lo.pcap"
    store = json.loads(https_get(1, "/metadata"))["result"][0]["state-store-names"][0]
    with capture([http_port(i) for i in INSTANCES], pcap):
        for i in INSTANCES:
            in_list = ", ".join(f"'{k}'" for k in remote[i])
            seen.append(psql(i, f"SELECT c.key, c.* FROM accesstest.customer c "
                                f"WHERE c.key IN ({in_list})"))
            seen.append(psql(i, f"SELECT c.* FROM accesstest.customer c "
                                f"WHERE c.key >= 'MK{tag}' AND c.key < 'MK{tag}~'"))
            seen.append(psql(i, "SELECT c.* FROM accesstest.customer c"))
            seen.append(psql(i, f"SELECT key, count FROM accesstest.order_count "
                                f"WHERE key = '{remote[i][0]}'"))
            # the worker forwards a get to the owner, and gathers a scan from all
            seen.append(https_get(i, f"/stores/{store}/get/{remote[i][0]}"))
            seen.append(https_get(i, f"/stores/{store}/all?scope=all"))
    results = "\n".join(seen)
    for marker in keys + list(values.values()):
        assert marker in results, f"{marker} not read back: the test would prove nothing"

    data = pcap.read_bytes()
    assert len(data) > 24 + 10_000, f"the capture holds {len(data)} bytes: no traffic seen"
    leaked = [m for m in keys + list(values.values()) if m.encode() in data]
    assert not leaked, f"clear text on the wire: {leaked[:5]} in {pcap}"
    assert tag.encode() not in data, "the test's tag is on the wire in clear text"

"""Issue 15, access: who may call which HTTP endpoint.

Without TLS (any cluster): the Host header must name this server (a page
whose name is rebound to 127.0.0.1 is refused with 421), names are added
with iq_fdw.http_allowed_hosts on reload, and a listen address that is not
loopback is refused at start unless iq_fdw.http_insecure (a scratch
instance on 0.0.0.0).  With TLS (`scripts/cluster up --tls`): every
endpoint against every kind of credential, none, the token, the cluster's
client certificate, a certificate of another CA, a wrong token.
"""

import http.client
import json
import socket
import ssl
import struct

import pytest

from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, OFFSET, PG_BIN, create_topic, http_port, psql,
                      scratch_instance, unique, wait_until)

TLS_DIR = IQ_HOME / "tls"
UPGRADE_HEAD = ("GET /iq/v1/stream HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\n"
                "Upgrade: iq-wire/1\r\n{extra}\r\n")
WIRE_FORBIDDEN = 7


def tls_on():
    return psql(1, "SHOW iq_fdw.ssl_cert_file") != ""


def context(cert=None):
    """A client's TLS context trusting the cluster's CA, presenting cert
    ("client", "rogue") if given."""
    ctx = ssl.create_default_context(cafile=str(TLS_DIR / "ca.crt"))
    if cert:
        ctx.load_cert_chain(str(TLS_DIR / f"{cert}.crt"), str(TLS_DIR / f"{cert}.key"))
    return ctx


def token():
    return (TLS_DIR / "token").read_text().strip()


def request(i, method, path, host=None, headers=None, body=None, cert="client", tls=None):
    """(status, headers, body bytes) of one request to instance i, over TLS
    when the cluster has it (presenting cert), with Host host if given."""
    tls = tls_on() if tls is None else tls
    if tls:
        conn = http.client.HTTPSConnection("localhost", http_port(i), timeout=10,
                                           context=context(cert))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", http_port(i), timeout=10)
    h = dict(headers or {})
    if host is not None:
        h["Host"] = host
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, r.headers, r.read()
    finally:
        conn.close()


def scan_request():
    """A wire scan of customer-v1-changelog over the partitions held."""
    return b"IQ" + struct.pack(">BBBBI", 1, 2, 0, 0, 0) + struct.pack(">H", 0)


def upgrade(i, host=None, extra="", cert="client"):
    """The status of GET /iq/v1/stream with an upgrade, over TLS when on."""
    raw = socket.create_connection(("127.0.0.1", http_port(i)), timeout=10)
    s = context(cert).wrap_socket(raw, server_hostname="localhost") if tls_on() else raw
    try:
        s.sendall(UPGRADE_HEAD.format(host=host or f"localhost:{http_port(i)}", extra=extra).encode())
        head = b""
        while b"\r\n\r\n" not in head:
            c = s.recv(4096)
            if not c:
                break
            head += c
        return int(head.split(b" ")[1]) if head.startswith(b"HTTP/1.1 ") else None
    finally:
        s.close()


def worker(port):
    """(state, message) of iq_worker() on a PostgreSQL at port."""
    import subprocess
    r = subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(port),
                        "-U", "postgres", "-d", "postgres", "-c",
                        "SELECT state, message FROM iq_worker()"],
                       capture_output=True, text=True, timeout=30)
    return tuple(r.stdout.strip().split("|", 1)) if r.returncode == 0 else ("", r.stderr)


def listening(port):
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def reload_setting(i, name, value):
    if value is None:
        psql(i, f"ALTER SYSTEM RESET {name}; SELECT pg_reload_conf()")
    else:
        psql(i, f"ALTER SYSTEM SET {name} = '{value}'; SELECT pg_reload_conf()")


# ---- the Host check (any cluster) ------------------------------------------------

def test_a_rebound_host_is_refused_and_ours_are_allowed():
    i = INSTANCES[0]
    port = http_port(i)
    advertised = psql(i, "SHOW iq_fdw.advertised_endpoint") or psql(i, "SHOW iq_fdw.http_listen")
    for path in ("/metadata", "/stores/customer-v1-changelog/all"):
        for host in (f"evil.example:{port}", "evil.example", f"localhost:{port + 1}",
                     f"127.0.0.2:{port}", f"localhost.evil.example:{port}", "[::1"):
            status, _, body = request(i, "GET", path, host=host)
            assert status == 421, (path, host, status, body)
            assert "iq_fdw.http_allowed_hosts" in json.loads(body)["error"]
        for host in (f"localhost:{port}", f"LocalHost:{port}", f"127.0.0.1:{port}",
                     f"[::1]:{port}", advertised, "localhost"):
            status, _, body = request(i, "GET", path, host=host)
            assert status == 200, (path, host, status, body)
    # the peer endpoints too: the read answered in the wire's form
    status, _, body = request(i, "POST", "/iq/v1/read", host=f"evil.example:{port}",
                              body=scan_request())
    assert status == 421 and body[:3] == b"IQ\x01" and body[3] == WIRE_FORBIDDEN, (status, body)
    status, _, body = request(i, "POST", "/iq/v1/read", host=f"localhost:{port}", body=scan_request())
    assert status == 200 and body[:3] == b"IQ\x01" and body[3] != WIRE_FORBIDDEN, (status, body)
    assert upgrade(i, host=f"evil.example:{port}") == 421
    assert upgrade(i) == (501 if tls_on() else 101)  # no stream over TLS (upgrade.c)


def test_http10_without_host_is_let_through():
    """Only browsers can be used for rebinding, and they always send Host."""
    if tls_on():
        pytest.skip("raw HTTP/1.0 is tried on a cluster without TLS")
    with socket.create_connection(("127.0.0.1", http_port(1)), timeout=10) as s:
        s.sendall(b"GET /metadata HTTP/1.0\r\n\r\n")
        got = b""
        while (c := s.recv(65536)):
            got += c
    assert got.startswith(b"HTTP/1.0 200") or got.startswith(b"HTTP/1.1 200"), got[:200]


def test_allowed_hosts_apply_on_reload_without_a_restart():
    i = INSTANCES[-1]
    port = http_port(i)
    pid = psql(i, "SELECT pid FROM iq_worker()")
    try:
        reload_setting(i, "iq_fdw.http_allowed_hosts", "iq-a.example, Other.Example ,[fd00::5]")
        wait_until(lambda: request(i, "GET", "/metadata", host=f"iq-a.example:{port}")[0] == 200,
                   timeout=30, message="iq-a.example allowed after the reload")
        for host in (f"other.example:{port}", f"OTHER.example:{port}", f"[fd00::5]:{port}"):
            assert request(i, "GET", "/metadata", host=host)[0] == 200, host
        assert request(i, "GET", "/metadata", host=f"iq-b.example:{port}")[0] == 421
        # a name with a port is refused, and the rules in force stay
        log = IQ_HOME / "pg" / str(i) / "server.log"
        seen = log.read_text(errors="replace").count('"iq-c.example:80" has a port')
        reload_setting(i, "iq_fdw.http_allowed_hosts", "iq-c.example:80")
        wait_until(lambda: log.read_text(errors="replace").count('"iq-c.example:80" has a port') > seen,
                   timeout=30, message="the bad value logged")
        assert "the previous ones stay in force" in log.read_text(errors="replace")
        assert request(i, "GET", "/metadata", host=f"iq-c.example:{port}")[0] == 421
        assert request(i, "GET", "/metadata", host=f"iq-a.example:{port}")[0] == 200
        assert psql(i, "SELECT pid FROM iq_worker()") == pid
    finally:
        reload_setting(i, "iq_fdw.http_allowed_hosts", None)
    wait_until(lambda: request(i, "GET", "/metadata", host=f"iq-a.example:{port}")[0] == 421,
               timeout=30, message="iq-a.example refused again once the setting is reset")


# ---- secure by default (a scratch instance) ---------------------------------------

def wildcard_settings(port):
    """A scratch worker of its own (topics of one partition, its own
    group, so it runs without touching the cluster's) listening on
    0.0.0.0:port; the worker shows a servers' failure over "running" only."""
    topics = {name: unique(f"acc{name}") for name in ("customer", "order")}
    create_topic(topics["customer"], 1, cleanup_policy="compact")
    create_topic(topics["order"], 1)
    return {"iq_fdw.bootstrap_servers": BOOTSTRAP, "iq_fdw.application_id": unique("acc"),
            **{f"iq_fdw.{name}_topic": t for name, t in topics.items()},
            "iq_fdw.http_listen": f"0.0.0.0:{port}", "iq_fdw.advertised_endpoint": f"localhost:{port}"}


def test_a_non_loopback_listen_address_is_refused_unless_insecure():
    pg, port = 11450 + OFFSET, 13450 + OFFSET
    with scratch_instance("access", pg, wildcard_settings(port)):
        scratch_sql(pg, "CREATE EXTENSION iq_fdw")
        wait_until(lambda: "iq_fdw.http_insecure" in worker(pg)[1], timeout=120, interval=0.5,
                   message="the scratch worker refusing 0.0.0.0")
        state, message = worker(pg)
        assert state == "error", (state, message)
        for name in ("iq_fdw.http_listen", "0.0.0.0", "iq_fdw.ssl_cert_file", "iq_fdw.http_auth"):
            assert name in message, message
        assert not listening(port)
        # the explicit override: the servers start on their next try
        scratch_sql(pg, "ALTER SYSTEM SET iq_fdw.http_insecure = on; SELECT pg_reload_conf()")
        wait_until(lambda: listening(port), timeout=90, interval=0.5,
                   message="the servers listening once iq_fdw.http_insecure is on")
        wait_until(lambda: worker(pg)[0] == "running", timeout=60, message="the worker running")
        # and taken back: the servers stop at the reload
        scratch_sql(pg, "ALTER SYSTEM RESET iq_fdw.http_insecure; SELECT pg_reload_conf()")
        wait_until(lambda: not listening(port), timeout=30, interval=0.5,
                   message="the servers stopping once iq_fdw.http_insecure is off again")
        wait_until(lambda: "iq_fdw.http_insecure" in worker(pg)[1], timeout=60,
                   message="the refusal shown again")


def test_a_non_loopback_listen_address_is_served_with_tls_and_a_credential(tls_cluster):
    """The other way out of the secure default: TLS on and http_auth =
    required; http_auth back to none on reload stops the servers."""
    pg, port = 11451 + OFFSET, 13451 + OFFSET
    settings = wildcard_settings(port)
    settings.update({"iq_fdw.ssl_cert_file": TLS_DIR / "instance1.crt",
                     "iq_fdw.ssl_key_file": TLS_DIR / "instance1.key",
                     "iq_fdw.ssl_ca_file": TLS_DIR / "ca.crt", "iq_fdw.http_auth": "required",
                     "iq_fdw.http_token_file": TLS_DIR / "token"})
    with scratch_instance("access-tls", pg, settings):
        scratch_sql(pg, "CREATE EXTENSION iq_fdw")
        wait_until(lambda: listening(port), timeout=120, interval=0.5,
                   message="the scratch worker serving 0.0.0.0 with TLS and http_auth = required")
        conn = http.client.HTTPSConnection("localhost", port, timeout=10, context=context("client"))
        conn.request("GET", "/metadata")
        assert conn.getresponse().status == 200
        conn.close()
        scratch_sql(pg, "ALTER SYSTEM SET iq_fdw.http_auth = none; SELECT pg_reload_conf()")
        wait_until(lambda: not listening(port), timeout=30, interval=0.5,
                   message="the servers stopping once http_auth is none")
        wait_until(lambda: "iq_fdw.http_auth = none" in worker(pg)[1], timeout=60,
                   message="the refusal naming http_auth")


def scratch_sql(port, sql):
    import subprocess
    subprocess.run([str(PG_BIN / "psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(port),
                    "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1"],
                   input=sql, capture_output=True, text=True, timeout=60, check=True)


# ---- with TLS: every endpoint against every credential ----------------------------

SEED_PATHS = ("/stores/customer-v1-changelog/all", "/stores/customer-v1-changelog/get/1",
              "/stores/order-count/all", "/metadata")


@pytest.fixture
def tls_cluster():
    if not tls_on():
        pytest.skip("the cluster runs without TLS (iq_fdw.ssl_cert_file is empty): "
                    "start it with scripts/cluster up --tls")
    assert psql(1, "SHOW iq_fdw.http_auth") == "required"


CREDENTIALS = {
    # name: (certificate, Authorization header, seed status, peer status)
    "none": (None, None, 401, 403),
    "token": (None, "token", 200, 403),
    "client certificate": ("client", None, 200, 200),
    "rogue certificate": ("rogue", None, 403, 403),
    "wrong token": (None, "Bearer " + "0" * 64, 403, 403),
    "rogue certificate and token": ("rogue", "token", 200, 403),
}


@pytest.mark.parametrize("name", list(CREDENTIALS))
def test_every_endpoint_against_a_credential(tls_cluster, name):
    cert, auth, seed_status, peer_status = CREDENTIALS[name]
    headers = {}
    if auth == "token":
        headers["Authorization"] = f"Bearer {token()}"
    elif auth:
        headers["Authorization"] = auth
    for i in INSTANCES:
        for path in SEED_PATHS:
            status, h, body = request(i, "GET", path, headers=headers, cert=cert)
            assert status == seed_status, (name, i, path, status, body)
            if status == 401:
                assert h["WWW-Authenticate"] == "Bearer", dict(h)
            if status == 200:
                json.loads(body)
        status, _, body = request(i, "POST", "/iq/v1/read", headers=headers, cert=cert,
                                  body=scan_request())
        assert status == peer_status, (name, i, status, body)
        assert body[:3] == b"IQ\x01", body[:40]
        assert (body[3] == WIRE_FORBIDDEN) == (peer_status == 403), (name, body[:80])
        extra = f"Authorization: {headers['Authorization']}\r\n" if headers else ""
        # over TLS the stream is not served (501, upgrade.c): refused first when not a peer
        assert upgrade(i, extra=extra, cert=cert) == (501 if peer_status == 200 else 403), name


def test_plain_http_is_not_answered_with_tls_on(tls_cluster):
    """HTTPS only: a plain request gets no store data."""
    with socket.create_connection(("127.0.0.1", http_port(1)), timeout=10) as s:
        s.sendall(b"GET /stores/customer-v1-changelog/all HTTP/1.1\r\nHost: localhost\r\n\r\n")
        got = b""
        try:
            while (c := s.recv(65536)):
                got += c
        except (ConnectionResetError, socket.timeout):
            pass
    assert b"result" not in got and b"200 OK" not in got, got[:200]

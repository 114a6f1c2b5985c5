"""Issue 15: the worker's HTTP port over TLS, and the worker as a TLS client of its peers.

Against a cluster started with `scripts/cluster up --tls` (certificates from
scripts/certs in IQ_HOME/tls, http_auth = required): the port speaks HTTPS
only; the seed's answers come to a client trusting the cluster's CA (with
the client certificate or the token); gets forwarded to the owner and
?scope=all gathers go between instances over TLS, and an owner whose
certificate the cluster's CA did not sign gives an error naming it, never
its data; the upgraded stream is refused over TLS (501), POST serves; a reload with
an unreadable key keeps the old material and says why, naming the setting;
a certificate rotated in place is served after a reload; TLS turned off and
on again by reload. Every test that changes an instance's settings or
files puts them back, and reloads, whatever happens.
"""

import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import INSTANCES, IQ_HOME, http_port, produce, psql, recv_until_closed, wait_until
from test_http import parse_answer, wire_request

if psql(1, "SHOW iq_fdw.ssl_cert_file") == "":
    pytest.skip("the cluster does not speak TLS (iq_fdw.ssl_cert_file is empty on instance 1): "
                "start it with scripts/cluster up --tls", allow_module_level=True)

TLS = IQ_HOME / "tls"
STORE = "customer-v1-changelog"
RUN = f"t{os.getpid() % 10000:04d}{time.monotonic_ns() % 100000:05d}"
KEYS = [f"{RUN}-k{i:02d}" for i in range(30)]


def context(client_cert=True):
    """A client trusting the cluster's CA alone, presenting the client certificate if asked."""
    ctx = ssl.create_default_context(cafile=str(TLS / "ca.crt"))
    if client_cert:
        ctx.load_cert_chain(str(TLS / "client.crt"), str(TLS / "client.key"))
    return ctx


def https_get(i, path, ctx=None, headers=None, timeout=15.0):
    """GET https://localhost:<port of i><path>; (status, body text)."""
    req = urllib.request.Request(f"https://localhost:{http_port(i)}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, context=ctx or context(), timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def https_json(i, path):
    status, body = https_get(i, path)
    assert status == 200, f"GET {path} on instance {i}: {status} {body}"
    return json.loads(body)


def served_fingerprint(i):
    """SHA-256 of the certificate instance i's port serves (not verified: a rogue one too)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", http_port(i)), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def file_fingerprint(path):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(path.read_text())).hexdigest()


def worker(i):
    """(state, message) of instance i's worker."""
    state, _, message = psql(i, "SELECT state, message FROM iq_worker()").partition("|")
    return state, message


@contextlib.contextmanager
def settings(i, **values):
    """ALTER SYSTEM SET iq_fdw.<name> on instance i and reload; reset and reload after."""
    try:
        for name, value in values.items():
            psql(i, f"ALTER SYSTEM SET iq_fdw.{name} = '{value}'")
        psql(i, "SELECT pg_reload_conf()")
        yield
    finally:
        for name in values:
            psql(i, f"ALTER SYSTEM RESET iq_fdw.{name}")
        psql(i, "SELECT pg_reload_conf()")


def serves_its_own_certificate(i):
    """After a test: instance i serves its certificate again, and its worker runs."""
    want = file_fingerprint(TLS / f"instance{i}.crt")
    wait_until(lambda: served_fingerprint(i) == want, timeout=60,
               message=f"instance {i} serves its own certificate again")
    wait_until(lambda: worker(i)[0] == "running", timeout=60,
               message=f"instance {i}'s worker running without an error")


@pytest.fixture(scope="module")
def data():
    """KEYS produced, served by every instance (over TLS), and the owner of each."""
    produce("customer", [f"{k}--name of {k}" for k in KEYS])

    def caught_up():
        return all(https_json(i, f"/stores/{STORE}/get/{KEYS[-1]}") == {"response": f"name of {KEYS[-1]}"}
                   for i in INSTANCES)

    wait_until(caught_up, timeout=120, message="every instance serves the produced keys over TLS")
    return {k: https_json(1, f"/metadata/stores/{STORE}/key/{k}")["result"]["port"] for k in KEYS}


def key_owned_by(owners, i):
    keys = [k for k, port in owners.items() if port == http_port(i)]
    assert keys, f"no key of {KEYS[0]}.. is owned by instance {i}: {owners}"
    return keys[0]


def test_port_speaks_tls_only():
    for i in INSTANCES:
        with socket.create_connection(("127.0.0.1", http_port(i)), timeout=10) as s:
            s.sendall(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                got = s.recv(4096)
            except ConnectionResetError:
                got = b""
            assert not got.startswith(b"HTTP/"), (i, got[:200])
        # a client that does not trust the cluster's CA refuses the server
        with pytest.raises(urllib.error.URLError) as e:
            urllib.request.urlopen(f"https://localhost:{http_port(i)}/metadata",
                                   context=ssl.create_default_context(), timeout=10)
        assert isinstance(e.value.reason, ssl.SSLCertVerificationError), e.value


def test_seed_answers_with_client_certificate_or_token(data):
    token = (TLS / "token").read_text().strip()
    for i in INSTANCES:
        meta = https_json(i, "/metadata")
        assert sorted(m["port"] for m in meta["result"]) == sorted(http_port(j) for j in INSTANCES)
        status, body = https_get(i, f"/stores/{STORE}/get/{KEYS[0]}", ctx=context(client_cert=False),
                                 headers={"Authorization": f"Bearer {token}"})
        assert (status, json.loads(body)) == (200, {"response": f"name of {KEYS[0]}"})


def test_forwarded_gets_and_gathers_cross_instances_over_tls(data):
    owners = data
    assert len(set(owners.values())) > 1, owners  # some gets must be forwarded
    for i in INSTANCES:
        for k in KEYS:
            assert https_json(i, f"/stores/{STORE}/get/{k}") == {"response": f"name of {k}"}, (i, k)
        rows = https_json(i, f"/stores/{STORE}/all?scope=all")["result"]
        got = {r["key"]: r["value"] for r in rows if r["key"].startswith(RUN)}
        assert got == {k: f"name of {k}" for k in KEYS}, i


def stream_lookups(i, owners, rounds=20):
    """Over TLS, GET /iq/v1/stream on instance i is refused with 501 naming
    POST /iq/v1/read (libmicrohttpd's TLS relay of upgraded connections is
    what backends no longer use); lookups of the keys it owns, POSTed one
    after the other, are each answered, and malformed requests between
    them get an error answer."""
    held = [p for p in range(3)
            if parse_answer(post_read(i, wire_request(4, 0, partitions=[p])))[0] == 0]
    keys = sorted(k.encode() for k, port in owners.items() if port == http_port(i))
    assert held and keys, (held, owners)
    get = wire_request(1, 0, partitions=held, keys=keys)
    with socket.create_connection(("127.0.0.1", http_port(i)), timeout=10) as raw:
        with context().wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET /iq/v1/stream HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
                      b"Upgrade: iq-wire/1\r\nConnection: close\r\n\r\n")
            answer = recv_until_closed(s)
            assert answer.startswith(b"HTTP/1.1 501"), answer[:200]
            assert b"/iq/v1/read" in answer, answer[:400]
    for n in range(rounds):
        assert parse_answer(post_read(i, get))[2] == [(k, b"name of " + k) for k in keys], n
        assert parse_answer(post_read(i, b"IQ\x01\x07garbage"))[0] == 4, n


def test_stream_refused_over_tls_lookups_by_post(data):
    stream_lookups(1, data)


def post_read(i, body):
    req = urllib.request.Request(f"https://localhost:{http_port(i)}/iq/v1/read", data=body,
                                 headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, context=context(), timeout=15) as r:
        return r.read()


@contextlib.contextmanager
def stranger_certificate(kind):
    """(crt, key) an instance must not be trusted with: signed by another CA
    (scripts/certs' rogue), or by the cluster's CA for another host only."""
    if kind == "another-ca":
        yield TLS / "rogue.crt", TLS / "rogue.key"
        return
    owner = (TLS / "instance1.key").stat()
    crt, key = make_certificate(TLS, f"{RUN}-elsewhere", san="DNS:elsewhere.invalid")
    try:
        os.chown(key, owner.st_uid, owner.st_gid)  # the instance reads it, 0600
        yield crt, key
    finally:
        for f in TLS.glob(f"{RUN}-elsewhere.*"):
            f.unlink()


@pytest.mark.parametrize("kind", ["another-ca", "another-host"])
def test_owner_with_a_certificate_it_must_not_have_is_named_and_its_data_never_shown(data, kind):
    """Forwarded gets and gathers verify the owner's certificate: the
    cluster's CA signed it and it names the host called."""
    owners = data
    rogue = 2
    k = key_owned_by(owners, rogue)
    try:
        with stranger_certificate(kind) as (crt, key), settings(rogue, ssl_cert_file=crt, ssl_key_file=key):
            want = file_fingerprint(crt)
            wait_until(lambda: served_fingerprint(rogue) == want, timeout=60,
                       message=f"instance {rogue} serves the stranger's certificate")
            name = f"localhost:{http_port(rogue)}"
            for i in INSTANCES:
                if i == rogue:
                    continue
                status, body = https_get(i, f"/stores/{STORE}/get/{k}")
                assert status == 502, (i, status, body)
                assert name in json.loads(body)["error"] and "name of" not in body, body
                status, body = https_get(i, f"/stores/{STORE}/all?scope=all")
                assert status == 502 and name in body, (i, status, body[:500])
                assert "certificate" in body.lower() or "host name" in body.lower(), body[:500]
    finally:
        serves_its_own_certificate(rogue)

    # the rogue's restarts moved its partitions: a get forwarded while one
    # moves answers 503 (the documented error); the key is served once settled
    def served_again():
        status, body = https_get(1, f"/stores/{STORE}/get/{k}")
        return status == 200 and json.loads(body) == {"response": f"name of {k}"}

    wait_until(served_again, timeout=60, message=f"instance 1 serves {k} of instance {rogue} again")


@pytest.mark.parametrize("key, says", [
    ("no-such-instance.key", '"{tls}/no-such-instance.key" of iq_fdw.ssl_key_file'),
    # a key of its own, not the certificate's: GnuTLS says so before MHD is tried
    ("rogue.key", "The key of iq_fdw.ssl_key_file does not belong to the certificate of "
                  "iq_fdw.ssl_cert_file"),
], ids=["unreadable", "not-the-certificates"])
def test_reload_with_a_bad_key_keeps_the_old_material_and_names_the_setting(data, key, says):
    i = 3
    before = served_fingerprint(i)
    try:
        with settings(i, ssl_key_file=TLS / key):
            wait_until(lambda: "iq_fdw.ssl_key_file" in worker(i)[1], timeout=60,
                       message=f"instance {i}'s worker naming iq_fdw.ssl_key_file")
            state, message = worker(i)
            assert state == "error" and says.format(tls=TLS) in message, (state, message)
            assert served_fingerprint(i) == before
            for k in KEYS[:5]:
                assert https_json(i, f"/stores/{STORE}/get/{k}") == {"response": f"name of {k}"}
    finally:
        serves_its_own_certificate(i)
    assert worker(i) == ("running", "")


def make_certificate(directory, name, san="DNS:localhost,IP:127.0.0.1,IP:::1"):
    """A new key and certificate for san signed by the cluster's CA: (crt, key) paths."""
    key, crt, csr = directory / f"{name}.key", directory / f"{name}.crt", directory / f"{name}.csr"
    ext = directory / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth,clientAuth\n"
                   f"subjectAltName={san}\n")
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    run("openssl", "req", "-new", "-key", str(key), "-subj", f"/CN={name}", "-out", str(csr))
    run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(TLS / "ca.crt"), "-CAkey", str(TLS / "ca.key"),
        "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30", "-sha256",
        "-extfile", str(ext), "-out", str(crt))
    return crt, key


def put_file(source, target):
    """Replace target's bytes with source's, keeping target's owner and mode."""
    st = target.stat()
    shutil.copyfile(source, target)
    os.chown(target, st.st_uid, st.st_gid)
    os.chmod(target, st.st_mode & 0o777)


def test_certificate_rotated_in_place_is_served_after_reload(data):
    i = 2
    crt, key = TLS / f"instance{i}.crt", TLS / f"instance{i}.key"
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy2(crt, tmp / "old.crt")
        shutil.copy2(key, tmp / "old.key")
        new_crt, new_key = make_certificate(tmp, f"instance{i}-rotated")
        old = served_fingerprint(i)
        try:
            put_file(new_crt, crt)
            put_file(new_key, key)
            psql(i, "SELECT pg_reload_conf()")
            want = file_fingerprint(new_crt)
            assert want != old
            wait_until(lambda: served_fingerprint(i) == want, timeout=60,
                       message=f"instance {i} serves the rotated certificate")
            # the others still verify it (same CA), and it still calls them
            k = key_owned_by(data, i)
            for j in INSTANCES:
                assert https_json(j, f"/stores/{STORE}/get/{k}") == {"response": f"name of {k}"}, j
                rows = https_json(j, f"/stores/{STORE}/all?scope=all")["result"]
                assert {r["key"] for r in rows if r["key"].startswith(RUN)} == set(KEYS), j
            assert worker(i)[0] == "running"
            # a server restarted with new material answers peers as before
            stream_lookups(i, data, rounds=3)
        finally:
            put_file(tmp / "old.crt", crt)
            put_file(tmp / "old.key", key)
            psql(i, "SELECT pg_reload_conf()")
            serves_its_own_certificate(i)


def test_tls_turned_off_and_on_by_reload():
    i = 3
    try:
        with settings(i, ssl_cert_file="", ssl_key_file="", ssl_ca_file=""):
            def plain_http():
                with socket.create_connection(("127.0.0.1", http_port(i)), timeout=10) as s:
                    s.sendall(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                    return s.recv(4096).startswith(b"HTTP/1.1 ")
            wait_until(plain_http, timeout=60, message=f"instance {i} speaking plain HTTP")
    finally:
        serves_its_own_certificate(i)
    assert https_json(i, "/metadata")["result"]

"""Issue 12 (backend side of the wire): iq_fdw.peer_timeout against a peer
that trickles its answer, the bound on what a backend buffers for one
answer, and keys escaped in the server log.

Instance 3 advertises a TCP proxy run by this test (127.0.0.1, a free port)
as its endpoint, so every other instance's backends reach it through the
proxy, which forwards as told: at once, a byte at a time, in paced chunks,
or in place of instance 3 with an answer of its own making.

On a TLS cluster the proxy forwards the TLS records as they come (the
backends verify instance 3's certificate through it: it names 127.0.0.1),
and where it answers in place of instance 3 it speaks TLS with instance 3's
certificate.
"""

import socket
import subprocess
import threading
import time

import pytest

from conftest import (BOOTSTRAP, INSTANCES, IQ_HOME, base_url, curl_tls_args, http_port,
                      import_stores_sql, java_partition, produce, psql, psql_error,
                      server_ssl_context, tls_on, unique, wait_until)

PEER = 3          # the instance behind the proxy
ASKER = 1         # the instance whose backends are asked to read it
N_KEYS = 30_000   # so that PEER's part of a full scan is some 400 kB
SETUP = import_stores_sql("hbtest", "iq_hb")


class Proxy:
    """A TCP proxy on 127.0.0.1 to an instance's HTTP port.

    The mode applies to connections accepted after it is set:
      pass     both ways as they come
      trickle  the answer's first `fast` bytes at once, then one byte every `delay` s
      pace     the answer in chunks of `chunk` bytes, one every `delay` s
      big_row  no upstream: a 101, then a wire answer whose first row is
               `size` bytes of key (sent in full), then a count and the end
      refuse   no upstream: `status` (not 101) to every request
    Bytes sent to clients are counted in .sent (for the last connection);
    the request lines of refused requests are kept in .refused."""

    def __init__(self, upstream_port):
        self.upstream = ("127.0.0.1", upstream_port)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.mode = {"name": "pass"}
        self.sent = 0
        self.refused = []
        self.stopping = False
        self.socks = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def set_mode(self, name, **kw):
        self.mode = dict(name=name, **kw)

    def stop(self):
        self.stopping = True
        self.thread.join(timeout=5)
        self.listener.close()
        with self.lock:
            for s in self.socks:
                try:
                    s.close()
                except OSError:
                    pass

    def _track(self, s):
        s.settimeout(60)
        with self.lock:
            self.socks.append(s)
        return s

    def _accept(self):
        while not self.stopping:
            try:
                c, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            mode = dict(self.mode)
            threading.Thread(target=self._serve, args=(self._track(c), mode), daemon=True).start()

    def _serve(self, c, mode):
        try:
            if mode["name"] in ("big_row", "refuse") and tls_on():
                c = server_ssl_context(PEER).wrap_socket(c, server_side=True)
            if mode["name"] == "big_row":
                self._big_row(c, mode["size"])
                return
            if mode["name"] == "refuse":
                self._refuse(c, mode["status"])
                return
            u = self._track(socket.create_connection(self.upstream, timeout=10))
            threading.Thread(target=self._pipe, args=(c, u), daemon=True).start()
            self.sent = 0
            while not self.stopping:
                data = u.recv(65536)
                if not data:
                    break
                self._send(c, data, mode)
        except OSError:
            pass
        finally:
            for s in (c,):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _send(self, c, data, mode):
        name = mode["name"]
        if name == "pass":
            c.sendall(data)
            self.sent += len(data)
            return
        step = 1 if name == "trickle" else mode["chunk"]
        i = 0
        while i < len(data) and not self.stopping:
            if name == "trickle" and self.sent < mode["fast"]:
                n = min(len(data) - i, mode["fast"] - self.sent)
            else:
                n = step
                time.sleep(mode["delay"])
            c.sendall(data[i:i + n])
            self.sent += len(data[i:i + n])
            i += n

    def _pipe(self, src, dst):
        try:
            while not self.stopping:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _big_row(self, c, size):
        got = b""
        while b"\r\n\r\n" not in got:  # the upgrade request (the wire request follows)
            data = c.recv(65536)
            if not data:
                return
            got += data
        # over TLS backends POST /iq/v1/read (src/channel_post.c): the answer is the body
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Connection: close\r\n\r\n" if tls_on() else
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                b"Upgrade: iq-wire/1\r\n\r\n")
        c.sendall(head +
                  b"IQ\x01\x00" + (0).to_bytes(2, "big") + b"R" + size.to_bytes(4, "big"))
        chunk = b"a" * 65536
        left = size
        while left > 0 and not self.stopping:
            n = min(left, len(chunk))
            c.sendall(chunk[:n])
            left -= n
        c.sendall((8).to_bytes(4, "big") + (1).to_bytes(8, "big") + b"E\x00" + (0).to_bytes(4, "big"))


    def _refuse(self, c, status):
        got = b""
        while b"\r\n\r\n" not in got:  # the request's head (a wire request may follow)
            data = c.recv(65536)
            if not data:
                return
            got += data
        self.refused.append(got.split(b"\r\n")[0])
        c.sendall(b"HTTP/1.1 %d Refused\r\nContent-Length: 0\r\n\r\n" % status)


def instances_seen(i):
    """{port: partitions} of iq_instances() on instance i."""
    out = psql(i, "SELECT port, partitions FROM iq_instances()")
    return {int(line.split("|")[0]): line.split("|")[1] for line in out.splitlines()}


def all_running():
    for i in INSTANCES:
        if psql(i, "SELECT state FROM iq_worker()") != "running":
            return False
    return True


def advertise(endpoint, expect_port):
    """Set (or, with None, reset) PEER's advertised endpoint; wait until every
    other instance routes PEER's partitions to expect_port."""
    sql = (f"ALTER SYSTEM SET iq_fdw.advertised_endpoint = '{endpoint}'" if endpoint
           else "ALTER SYSTEM RESET iq_fdw.advertised_endpoint")
    psql(PEER, f"{sql}; SELECT pg_reload_conf()")
    wait_until(lambda: all_running() and all(expect_port in instances_seen(i)
                                             for i in INSTANCES if i != PEER),
               timeout=180, interval=0.5, message=f"instances route to port {expect_port}")


@pytest.fixture(scope="module")
def proxy():
    """PEER reached through a proxy; N_KEYS counted keys in the stores."""
    p = Proxy(http_port(PEER))
    try:
        prefix = unique("hb") + "_"
        produce("order", [f"{prefix}{k}--x" for k in range(N_KEYS)], timeout=600)
        advertise(f"127.0.0.1:{p.port}", p.port)
        for i in INSTANCES:
            psql(i, SETUP)
        wait_until(lambda: psql(PEER, f"SELECT count(*) FROM hbtest.order_count "
                                      f"WHERE key LIKE '{prefix}%'") == str(N_KEYS),
                   timeout=180, interval=1, message=f"{N_KEYS} keys counted")
        yield p
    finally:
        p.set_mode("pass")
        try:
            advertise(None, http_port(PEER))
        finally:
            p.stop()


FULL_SCAN = "\\set QUIET on\nSELECT count(*), sum(count) FROM hbtest.order_count"


@pytest.mark.parametrize("fast", [0, 2000], ids=["from_the_start", "mid_answer"])
def test_a_peer_trickling_its_answer_fails_within_peer_timeout(proxy, fast):
    """One byte every 50 ms (from the 101 on, or after 2000 bytes at once) is
    no progress: the query fails about iq_fdw.peer_timeout after the last
    progress, naming the peer, instead of running on until statement_timeout
    (a byte restarted the timeout before)."""
    if fast and tls_on():
        fast = 40_000  # past the handshake and the first whole TLS records (16 kB at most)
    proxy.set_mode("trickle", fast=fast, delay=0.05)
    start = time.monotonic()
    err = psql_error(ASKER, FULL_SCAN.replace("SELECT", "SET iq_fdw.peer_timeout = 1000; SET statement_timeout = '60s';\nSELECT"), timeout=120)
    took = time.monotonic() - start
    assert "iq_fdw.peer_timeout" in err, err
    assert f"127.0.0.1:{proxy.port}" in err, err
    if fast:
        assert "stopped making progress" in err, err
    assert took < 20, f"took {took:.1f}s (peer_timeout 1 s): {err}"
    # the backend's instance is still fine
    proxy.set_mode("pass")
    assert psql(ASKER, FULL_SCAN) == psql(PEER, FULL_SCAN)


def test_a_gather_from_a_trickling_peer_fails_within_peer_timeout(proxy):
    """The worker's own gather (`?scope=all`) reads PEER through the proxy
    too: after 2000 bytes at once, a byte every 300 ms (a row every ten
    seconds or so) is too slow there too: the request fails (504 naming the
    peer, or a broken chunked answer once rows went out) about the worker's
    iq_fdw.peer_timeout (5 s) after the last complete row, instead of
    running for hours (each byte restarted the timeout).  curl's --max-time
    bounds the test whatever the build does."""
    proxy.set_mode("trickle", fast=2000, delay=0.3)
    try:
        r = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "60",
                            *curl_tls_args(),
                            f"{base_url(ASKER)}/stores/order-count/all?scope=all"],
                           capture_output=True, text=True, timeout=90)
    finally:
        proxy.set_mode("pass")
    body, _, code = r.stdout.rpartition("\n")
    assert r.returncode != 28, "the gather was still running after 60 s"
    if r.returncode == 0:
        assert code == "504", (code, body[-300:])
        assert f"127.0.0.1:{proxy.port}" in body, body[-300:]
    else:
        # rows went out before the peer stalled: the chunked answer is broken, never complete
        assert code == "200" and r.returncode in (18, 56), (r.returncode, code, r.stderr)


def test_a_long_answer_that_keeps_coming_is_not_cut(proxy):
    """PEER's part of a full scan arrives in 2 kB chunks every 20 ms, which
    takes far longer than peer_timeout in all; each chunk completes rows, so
    the scan succeeds with every row."""
    chunk, delay, timeout_ms = 2048, 0.02, 1500
    proxy.set_mode("pace", chunk=chunk, delay=delay)
    got = psql(ASKER, FULL_SCAN.replace("SELECT", f"SET iq_fdw.peer_timeout = {timeout_ms};\nSELECT"),
               timeout=300)
    paced = proxy.sent
    proxy.set_mode("pass")
    assert got == psql(PEER, FULL_SCAN)
    # the pacing alone took at least twice peer_timeout
    assert paced / chunk * delay >= 2 * timeout_ms / 1000, paced


def test_a_row_beyond_the_frame_bound_is_refused_naming_the_peer(proxy):
    """A row of 64 MiB + 9 bytes (IQ_WIRE_MAX_FRAME is 64 MiB) is refused
    when its length arrives; before, rows up to 256 MiB were buffered whole."""
    proxy.set_mode("big_row", size=64 * 1024 * 1024)
    try:
        err = psql_error(ASKER, FULL_SCAN.replace("SELECT", "SET iq_fdw.peer_timeout = 10000;\nSELECT"),
                         timeout=120)
    finally:
        proxy.set_mode("pass")
    assert f"127.0.0.1:{proxy.port}" in err, err
    assert "IQ_WIRE_MAX_FRAME" in err, err
    assert psql(ASKER, FULL_SCAN) == psql(PEER, FULL_SCAN)


def test_a_peer_refusing_the_upgrade_fails_the_read_naming_it(proxy):
    """A backend reaches another instance over the upgraded stream only (the
    POST /iq/v1/read fallback for workers from before the stream is gone): a
    peer that answers the upgrade with 404 fails the read, naming the peer
    and the status, and is never asked over POST.  Over TLS, where the
    stream is not served, POST /iq/v1/read is the only way, and refused."""
    proxy.set_mode("refuse", status=404)
    try:
        err = psql_error(ASKER, FULL_SCAN)
    finally:
        proxy.set_mode("pass")
    assert f"127.0.0.1:{proxy.port}" in err and "HTTP 404" in err, err
    asked = b"POST /iq/v1/read " if tls_on() else b"GET /iq/v1/stream "  # over TLS: channel_post.c
    assert proxy.refused and all(line.startswith(asked) for line in proxy.refused), \
        proxy.refused
    assert psql(ASKER, FULL_SCAN) == psql(PEER, FULL_SCAN)


def test_a_key_in_the_wrong_partition_is_logged_escaped():
    """The worker logs the first key of a partition that hashes elsewhere;
    its bytes are the producer's and are escaped, not written raw."""
    prefix = unique("hbwrong") + "_\x01\x1b[31m"
    p = 2                       # test_worker's own check uses partition 1
    key = next(f"{prefix}{j}" for j in range(100) if java_partition(f"{prefix}{j}", 3) != p)
    owner = next(i for i in INSTANCES
                 if str(p) in psql(i, "SELECT assigned_partitions FROM iq_worker()").strip("{}").split(","))
    log = IQ_HOME / "pg" / str(owner) / "server.log"
    size = log.stat().st_size
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", "order", "-p", str(p), "-K", "--"],
                   input=f"{key}--x\n", text=True, check=True, timeout=60)
    shown = key.replace("\x01", "\\x01").replace("\x1b", "\\x1b")

    def logged():
        with open(log, "rb") as f:
            f.seek(size)
            return f.read().decode(errors="replace")
    text = wait_until(lambda: "is in partition 2" in logged() and logged(), timeout=60,
                      message="the wrong partition logged")
    assert f'with key "{shown}"' in text, text
    assert "\x1b" not in text and "\x01" not in text

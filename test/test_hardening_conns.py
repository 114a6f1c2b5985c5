"""Issue #12, the worker's servers and connections: what a client can make
a worker hold, and for how long.

- One client address cannot take every HTTP connection (idle upgraded
  streams included): beyond iq_fdw.http_connections_per_client its new
  connections are closed at once, while other addresses, the cluster's own
  traffic (FDW lookups and scans, pgbench, HTTP gathers) keep working.
  Every peer here is 127.0.0.1, so the abusive client binds 127.0.0.5.
- An idle stream (upgraded HTTP or local socket) is closed after
  iq_fdw.stream_idle_timeout, and a backend whose pooled connections were
  closed simply reconnects.
- A Content-Length over the limit is refused at once (413), not waited for;
  large bodies in flight together stay within iq_fdw.request_memory.
- A request trickled a byte at a time is cut at iq_fdw.request_timeout,
  counted from its start, whatever the pace (HTTP head, HTTP body, a
  kept-alive connection's next request, a stream request).
- The local socket lives in the data directory; a squatter on the old
  /tmp path does not stop the worker's servers, and a live socket of
  another server in its place is never unlinked.

Settings are changed with ALTER SYSTEM and a reload: the servers' limits
apply without a worker restart.

On a TLS cluster every connection here is TLS, presenting the test client's
certificate (which the peer endpoints ask for): the bytes written by hand
are the HTTP ones, inside TLS records, so a byte trickled is a record of
its own, and a connection the server closes at once fails its handshake.
"""

import contextlib
import os
import select
import signal
import socket
import ssl
import stat
import subprocess
import threading
import time

import pytest

from conftest import (INSTANCES, IQ_HOME, PG_BIN, SCRIPTS, Session, base_url, connect_http,
                      http_get_at, http_port, import_stores_sql, java_partition, pg_port, produce,
                      psql, recv_now, tls_on, unique, wait_for_counts, wait_until)

PREFIX = unique("conns") + ":"
N_KEYS = 300
N_ORDERS = 900
ABUSER = "127.0.0.5"  # an anonymous client with many connections
OTHER = "127.0.0.6"  # another client
RELOAD_WAIT = 2.0  # for every worker to apply a reloaded setting (its main loop wakes every 100 ms)
UPGRADE = (b"GET /iq/v1/stream HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\n"
           b"Upgrade: iq-wire/1\r\n\r\n")
MIB = 1024 * 1024


def key(n):
    return f"{PREFIX}{n:04d}"


def q(i, sql, timeout=120):
    return psql(i, "\\set QUIET on\nSET search_path = connstest, public;\n" + sql, timeout=timeout)


_produced = {}


@pytest.fixture(scope="module")
def stores():
    """{key: count} of this run's keys, visible on every instance.  Made
    again for the tests that restart the cluster (run last, after other
    modules): the records are produced once, or the counts would double."""
    for i in INSTANCES:
        psql(i, import_stores_sql("connstest", "iq_conns"))
    if not _produced:
        counts = {key(n): 0 for n in range(N_KEYS)}
        orders = [key((n * 7) % N_KEYS) for n in range(N_ORDERS)]
        for k in orders:
            counts[k] += 1
        produce("customer", (f"{k}--name{k}" for k in counts))
        produce("order", (f"{k}--food" for k in orders))
        _produced.update(counts)
    counts = dict(_produced)
    want = f"{N_KEYS}|{N_ORDERS}"
    wait_for_counts(q, "order_count", PREFIX, want, "the counts")
    return counts


@contextlib.contextmanager
def setting(name, value):
    """A server setting at value on every instance for the block (reload, no restart)."""
    for i in INSTANCES:
        psql(i, f"ALTER SYSTEM SET {name} = '{value}';\nSELECT pg_reload_conf();")
    time.sleep(RELOAD_WAIT)
    try:
        yield
    finally:
        for i in INSTANCES:
            psql(i, f"ALTER SYSTEM RESET {name};\nSELECT pg_reload_conf();")
        time.sleep(RELOAD_WAIT)


def worker_pid(i):
    return int(psql(i, "SELECT pid FROM iq_worker()"))


def threads(pid, name):
    """Threads of the worker process pid named name."""
    task = f"/proc/{pid}/task"
    n = 0
    for t in os.listdir(task):
        try:
            with open(f"{task}/{t}/comm") as f:
                n += f.read().strip() == name
        except OSError:
            pass  # ended meanwhile
    return n


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def connect_from(source, port, timeout=10):
    """A connection to 127.0.0.1:port from address source (TLS on a TLS cluster)."""
    return connect_http(port=port, source=source, timeout=timeout)


def read_head(s):
    """An HTTP answer's head, or what came before the server hung up."""
    got = b""
    while b"\r\n\r\n" not in got:
        try:
            c = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            break
        if not c:
            break
        got += c
    return got


def hold_from(source, port, timeout=5):
    """A connection held open from source, as an anonymous client: an
    upgraded stream, or over TLS (where the stream is not served) a
    handshake done without a client certificate, which no verified peer's
    exemption from the cap covers; None if the server closed it at once."""
    if not tls_on():
        return upgrade_from(source, port, timeout)
    try:
        return connect_http(port=port, source=source, timeout=timeout, client_cert=False)
    except socket.timeout:
        raise NotAccepted() from None
    except OSError:
        return None  # closed during the handshake: beyond the cap


class NotAccepted(Exception):
    """The server left a connection unanswered: it accepts no more."""


def upgrade_from(source, port, timeout=5):
    """An upgraded stream from source, or None if the server closed it at
    once; NotAccepted if it did not answer within timeout (on a TLS
    cluster, the handshake is that answer)."""
    try:
        s = connect_from(source, port, timeout=timeout)
    except socket.timeout:
        raise NotAccepted() from None
    except OSError:
        return None  # closed during the handshake
    try:
        s.sendall(UPGRADE)
        if read_head(s).startswith(b"HTTP/1.1 101"):
            s.settimeout(10)
            return s
    except socket.timeout:
        s.close()
        raise NotAccepted() from None
    except OSError:
        pass
    s.close()
    return None


def closed_within(s, seconds):
    """Wait up to seconds for the server to hang up on s; the time it took, or None."""
    start = time.monotonic()
    s.settimeout(seconds)
    try:
        while True:
            c = s.recv(65536)
            if not c:
                return time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return time.monotonic() - start
    except socket.timeout:
        return None


def lookups_sql(keys):
    return "".join(f"SELECT coalesce((SELECT count FROM order_count WHERE key = '{k}'), -1);\n"
                   for k in keys)


# ---- one address cannot take every connection ---------------------------------

def test_one_address_cannot_take_every_connection(stores, tmp_path):
    """An anonymous client opening more idle upgraded streams than the server
    has connections (512 before this fix: the descriptor limit's half) gets
    at most its cap; meanwhile another address is answered, and the
    cluster's own traffic (all from 127.0.0.1) goes on: FDW lookups and
    scans from every instance, pgbench with remote lookups and full scans,
    an HTTP gather from every instance."""
    cap = int(psql(1, "SHOW iq_fdw.http_connections_per_client"))
    held = []
    try:
        for _ in range(max(640, cap + 100)):
            try:
                s = hold_from(ABUSER, http_port(1))
            except NotAccepted:
                break  # the server is full: what the cap is there to prevent
            if s is not None:
                held.append(s)
        assert len(held) <= cap, len(held)
        assert len(held) >= cap // 2, len(held)  # it was throttled, not shut out

        # another client is answered
        with connect_from(OTHER, http_port(1), timeout=5) as s:
            s.sendall(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            assert read_head(s).startswith(b"HTTP/1.1 200"), "GET /metadata from another address"

        # the cluster's own traffic
        keys = [key(n) for n in range(0, N_KEYS, 7)]
        want = "\n".join(str(stores[k]) for k in keys)
        total = f"{N_KEYS}|{N_ORDERS}"
        for i in INSTANCES:
            assert q(i, lookups_sql(keys)) == want, i
            assert q(i, f"SELECT count(*), sum(count) FROM order_count "
                        f"WHERE key >= '{PREFIX}' AND key < '{PREFIX}~'") == total, i
            st, body = http_raw(i, "/stores/order-count/all?scope=all")
            assert st == 200 and f'"{key(1)}"' in body, (i, st, body[:200])
        lookup = tmp_path / "lookup.sql"
        lookup.write_text(f"\\set k random(0, {N_KEYS - 1})\n"
                          f"SELECT count FROM connstest.order_count "
                          f"WHERE key = '{PREFIX}' || lpad(:k::text, 4, '0');\n")
        scan = tmp_path / "scan.sql"
        scan.write_text(f"SELECT count(*) FROM connstest.order_count WHERE key >= '{PREFIX}';\n")
        r = subprocess.run([str(PG_BIN / "pgbench"), "-n", "-h", "127.0.0.1", "-p", str(pg_port(2)),
                            "-U", "postgres", "-c", "4", "-j", "2", "-T", "5",
                            "-f", f"{lookup}@9", "-f", f"{scan}@1", "postgres"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr + r.stdout
        assert "number of failed transactions: 0" in r.stdout, r.stdout
    finally:
        for s in held:
            s.close()


def http_raw(i, path):
    """(status, body) of GET path on instance i, from 127.0.0.1."""
    return http_get_at(base_url(i), path, timeout=30)


# ---- idle streams ---------------------------------------------------------------

def test_idle_streams_are_closed_and_backends_reconnect(stores):
    """With iq_fdw.stream_idle_timeout = 2s, an idle upgraded stream is
    closed by the server; a backend's pooled connections (local socket and
    upgraded streams to the other owners) are closed while it is idle, and
    its next queries, on fresh connections, answer right."""
    keys = [key(n) for n in range(0, N_KEYS, 5)]
    assert len({java_partition(k, 3) for k in keys}) == 3
    want = "\n".join(str(stores[k]) for k in keys)

    pids = [worker_pid(i) for i in INSTANCES]

    def streams():
        return sum(threads(p, "iq_http_stream") + threads(p, "iq_local_conn") for p in pids)

    with setting("iq_fdw.stream_idle_timeout", "2s"):
        # over TLS the stream is refused (501, upgrade.c): backends' kept-alive
        # POSTs follow the HTTP deadlines instead
        if not tls_on():
            s = upgrade_from(OTHER, http_port(1))
            assert s is not None
            with s:
                took = closed_within(s, 20)
                assert took is not None, "an idle upgraded stream was never closed"
        with Session(1) as sess:
            # max_lag bypasses the value cache: every lookup asks a worker
            sess.run("SET search_path = connstest, public; SET iq_fdw.max_lag = 1000000000")
            for _ in range(3):
                assert sess.run(lookups_sql(keys)) == want
                assert streams() >= 1  # pooled while the session lives
                wait_until(lambda: streams() == 0, timeout=30, interval=0.2,
                           message="the idle session's connections to be closed by the workers")


# ---- request bodies -------------------------------------------------------------

def post_head(length, extra=b""):
    return (b"POST /iq/v1/read HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/octet-stream\r\n" + extra +
            b"Content-Length: %d\r\n\r\n" % length)


def test_content_length_over_the_limit_is_refused_at_once():
    """A body declared larger than a request may be (16 MiB) is refused
    before any of it is sent, also when the client waits for 100 Continue;
    a body without a length is refused too (411)."""
    for extra in (b"", b"Expect: 100-continue\r\n"):
        with connect_from(OTHER, http_port(1), timeout=10) as s:
            s.sendall(post_head(16 * MIB + 1, extra))
            head = read_head(s)
            assert head.startswith(b"HTTP/1.1 413"), head
    with connect_from(OTHER, http_port(1), timeout=10) as s:
        s.sendall(b"POST /iq/v1/read HTTP/1.1\r\nHost: localhost\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        head = read_head(s)
        assert head.startswith(b"HTTP/1.1 411"), head


def test_large_bodies_together_stay_within_request_memory():
    """Twelve clients each send a 15 MB request (six POST bodies, six
    stream requests) and hold back its last byte: what the worker holds
    for them stays within iq_fdw.request_memory (64 MB by default), where
    before each was kept whole (180 MB); those beyond it are refused."""
    size = 15_000_000
    budget = 64 * MIB
    pid = worker_pid(1)
    base = rss_bytes(pid)
    peak = base
    socks = []
    refused = []
    lock = threading.Lock()

    def client(n):
        try:
            s = connect_from(OTHER, http_port(1), timeout=60)
        except OSError:
            with lock:
                refused.append(n)
            return
        with lock:
            socks.append(s)
        try:
            if n % 2:
                s.sendall(post_head(size))
            else:
                s.sendall(UPGRADE + size.to_bytes(4, "big"))
            s.sendall(b"\0" * (size - 1))
        except OSError:
            with lock:
                refused.append(n)

    ts = [threading.Thread(target=client, args=(n,)) for n in range(12)]
    for t in ts:
        t.start()
    try:
        deadline = time.monotonic() + 120
        while any(t.is_alive() for t in ts) and time.monotonic() < deadline:
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        for _ in range(20):  # a second more with every body in (or refused)
            peak = max(peak, rss_bytes(pid))
            time.sleep(0.05)
        assert not any(t.is_alive() for t in ts), "clients still sending after 120 s"
        grew = peak - base
        assert grew < budget + 40 * MIB, f"worker RSS grew {grew / MIB:.0f} MiB"
        assert refused, "every 15 MB body was taken: the budget did not bind"
    finally:
        for s in socks:
            s.close()
        for t in ts:
            t.join(timeout=30)


# ---- whole-request deadlines ------------------------------------------------------

def trickle(s, data, every=0.25, limit=20.0):
    """Send data a byte at a time; the time until the server hung up, or None."""
    start = time.monotonic()
    for b in data:
        if time.monotonic() - start > limit:
            return None
        try:
            s.sendall(bytes([b]))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return time.monotonic() - start
        r, _, _ = select.select([s], [], [], every)
        if r:
            try:
                if recv_now(s) == b"":
                    return time.monotonic() - start
            except (ConnectionResetError, ssl.SSLError):
                return time.monotonic() - start
    return None


def test_trickled_requests_are_cut_at_the_request_deadline():
    """With iq_fdw.request_timeout = 2s, a request sent a byte every 250 ms
    (well inside any idle timeout) is cut about 2 s after it began: an HTTP
    head from the accept, an HTTP body, the next request on a kept-alive
    connection, a request on an upgraded stream."""
    bound = 2.0 + 4.0  # the deadline, plus the watchdog's tick and a loaded machine
    filler = b"X-Filler: " + b"a" * 200 + b"\r\n"
    with setting("iq_fdw.request_timeout", "2s"):
        # a head, from the accept
        with connect_from(OTHER, http_port(1)) as s:
            took = trickle(s, b"GET /metadata HTTP/1.1\r\n" + filler)
            assert took is not None and took < bound, took
        # a body
        with connect_from(OTHER, http_port(1)) as s:
            s.sendall(post_head(1000))
            took = trickle(s, b"\0" * 1000)
            assert took is not None and took < bound, took
        # a kept-alive connection's next request
        with connect_from(OTHER, http_port(1)) as s:
            s.sendall(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert read_head(s).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /metadata HTTP/1.1\r\n")
            took = trickle(s, filler)
            assert took is not None and took < bound, took
        # a stream request, from its first byte
        if tls_on():
            return  # the stream is refused over TLS (501, upgrade.c)
        s = upgrade_from(OTHER, http_port(1))
        assert s is not None
        with s:
            s.sendall((1000).to_bytes(4, "big"))
            took = trickle(s, b"\0" * 1000)
            assert took is not None and took < bound, took


# ---- the local socket's place -----------------------------------------------------

LISTEN = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


def squat(user, path):
    """A process of user listening on the Unix socket path."""
    p = subprocess.Popen(["runuser", "-u", user, "--", "python3", "-c", LISTEN, path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd="/",
                         start_new_session=True)  # stopped with its group: runuser and python
    line = p.stdout.readline()
    assert line.strip() == "ready", (line, p.stderr.read() if p.poll() is not None else "")
    return p


def live(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        try:
            s.connect(path)
            return True
        except OSError:
            return False


def instance_script(*args):
    subprocess.run([str(SCRIPTS / "instance"), *args], check=True, capture_output=True,
                   text=True, timeout=180)


def local_lookup_works(i, stores):
    keys = [key(n) for n in range(0, N_KEYS, 3)]
    want = "\n".join(str(stores[k]) for k in keys)
    return q(i, "SET iq_fdw.max_lag = 1000000000;\n" + lookups_sql(keys)) == want


@pytest.mark.restarts_cluster
def test_local_socket_in_the_data_directory_survives_squatters(stores):
    """The local socket is iq_fdw.sock in the data directory, 0600.  With
    another user listening on the old path (/tmp/iq_fdw.<port>.sock) and a
    live server of the PostgreSQL user on iq_fdw.sock, a restarted worker
    serves HTTP and its backends all the same (on the next name,
    iq_fdw.sock.1), and the live socket is not unlinked.  Once that server
    is gone its socket file is stale: the next worker takes the name back,
    and a stopping worker removes only its own socket."""
    data = IQ_HOME / "pg" / "1" / "data"
    sock = data / "iq_fdw.sock"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)

    old = f"/tmp/iq_fdw.{pg_port(1)}.sock"
    if os.path.exists(old) and not live(old):
        os.unlink(old)  # left by a build before this one
    squatters = [squat("nobody", old)]
    try:
        instance_script("stop", "1")
        assert not sock.exists(), "the stopped worker left its socket"
        squatters.append(squat("iqfdw", str(sock)))
        ino = os.stat(sock).st_ino
        instance_script("start", "1")
        wait_until(lambda: psql(1, "SELECT state FROM iq_worker()") == "running", timeout=180,
                   interval=1, message="instance 1's worker running")
        wait_until(lambda: http_raw(1, "/metadata")[0] == 200, timeout=60,
                   message="instance 1's HTTP server")
        wait_until(lambda: local_lookup_works(1, stores), timeout=60,
                   message="lookups over instance 1's local socket")
        assert os.stat(sock).st_ino == ino and live(str(sock)), "the live socket was replaced"
        assert stat.S_ISSOCK(os.stat(str(sock) + ".1").st_mode)
    finally:
        for p in squatters:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=30)
        if os.path.exists(old):
            os.unlink(old)
    # the squatter's socket is stale now: the next worker takes its name back
    instance_script("stop", "1")
    assert sock.exists() and not os.path.exists(str(sock) + ".1")
    instance_script("start", "1")
    wait_until(lambda: psql(1, "SELECT state FROM iq_worker()") == "running", timeout=180,
               interval=1, message="instance 1's worker running")
    wait_until(lambda: local_lookup_works(1, stores), timeout=60,
               message="lookups over instance 1's local socket")
    # the squatter is dead, so whoever answers on the name is the worker (not
    # the inode: a file system may give the new socket the freed number)
    assert stat.S_ISSOCK(os.stat(sock).st_mode) and live(str(sock))
    wait_until(lambda: all(psql(i, "SELECT state FROM iq_worker()") == "running" for i in INSTANCES),
               timeout=180, interval=1, message="every worker running")

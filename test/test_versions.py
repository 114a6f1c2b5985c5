"""Issue 14: versions on the wire and on disk, for rolling upgrades.

A store whose format a newer release wrote (its checkpoint column family's
"format" mark, set here by a small RocksDB program the test builds) is not
opened for writing: it is moved aside, said in the log, and rebuilt from
the changelog with the same counts. A wire request of a newer protocol
version gets an answer naming both versions, and the connection goes on.
And, when the previous release is tagged, an instance built from it serves
this release's queries and takes over its partitions, and the other way
round.
"""

import os
import shutil
import socket
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (INSTANCES, REPO, SCRIPTS, http_json, import_stores_sql, local_socket_path,
                      post_wire, produce, psql, tls_on, unique, wait_until)
from test_http import local_call, parse_answer, wire_request
from test_worker import (_orders_per_partition, all_counts, all_running,
                         restart_with_state_edited, state_rebuilds, wait_counts, worker)


@pytest.fixture(scope="module", autouse=True)
def data():
    """Orders and customers of keys on every partition, counted."""
    wait_until(all_running, timeout=120, interval=0.5, message="every worker running")
    prefix = unique("ver") + "_"
    lines, truth = _orders_per_partition(prefix, 7)
    produce("customer", [f"{k}--name of {k}" for k in truth])
    produce("order", lines)
    wait_counts(prefix, truth)

# put (or, without a number, print) the 4-byte big-endian "format" mark of
# the checkpoint column family of the RocksDB database at argv[1]
FORMAT_TOOL = r"""
#include <rocksdb/c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(char *err) { if (err) { fprintf(stderr, "%s\n", err); exit(1); } }

int main(int argc, char **argv)
{
    char *err = NULL, *v;
    size_t n = 0, vlen = 0;
    int ck = -1;
    rocksdb_options_t *o = rocksdb_options_create();
    char **names = rocksdb_list_column_families(o, argv[1], &n, &err);
    check(err);
    const rocksdb_options_t **opts = calloc(n, sizeof(*opts));
    rocksdb_column_family_handle_t **h = calloc(n, sizeof(*h));
    for (size_t i = 0; i < n; i++) {
        opts[i] = o;
        if (strcmp(names[i], "checkpoint") == 0) ck = (int) i;
    }
    if (ck < 0) { fprintf(stderr, "no checkpoint column family\n"); return 1; }
    rocksdb_t *db = rocksdb_open_column_families(o, argv[1], (int) n, (const char *const *) names,
                                                 opts, h, &err);
    check(err);
    if (argc > 2) {
        unsigned f = (unsigned) atoi(argv[2]);
        unsigned char b[4] = {f >> 24, f >> 16, f >> 8, f};
        rocksdb_put_cf(db, rocksdb_writeoptions_create(), h[ck], "format", 6, (char *) b, 4, &err);
        check(err);
    }
    v = rocksdb_get_cf(db, rocksdb_readoptions_create(), h[ck], "format", 6, &vlen, &err);
    check(err);
    if (v == NULL) printf("none\n");
    else if (vlen != 4) printf("bad\n");
    else printf("%u\n", ((unsigned char) v[0] << 24) | ((unsigned char) v[1] << 16) |
                        ((unsigned char) v[2] << 8) | (unsigned char) v[3]);
    for (size_t i = 0; i < n; i++) rocksdb_column_family_handle_destroy(h[i]);
    rocksdb_close(db);
    return 0;
}
"""


@pytest.fixture(scope="module")
def format_tool():
    d = Path(tempfile.mkdtemp(prefix="iq_format_tool_"))
    try:
        (d / "format_tool.c").write_text(FORMAT_TOOL)
        subprocess.run(["cc", "-O1", "-o", str(d / "format_tool"), str(d / "format_tool.c"),
                        "-lrocksdb"], check=True, capture_output=True, text=True, timeout=120)
        os.chmod(d, 0o755)
        yield d / "format_tool"
    finally:
        shutil.rmtree(d, ignore_errors=True)


def store_format(tool, db_dir, value=None):
    """The format mark of a stopped instance's store (set to value first), as
    the owner of the state directory, so no file of it becomes root's."""
    st = db_dir.stat()
    args = [str(tool), str(db_dir)] + ([str(value)] if value is not None else [])
    kw = {"user": st.st_uid, "group": st.st_gid} if os.geteuid() == 0 and st.st_uid != 0 else {}
    r = subprocess.run(args, capture_output=True, text=True, timeout=60, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def instance_cmd(*args):
    subprocess.run([str(SCRIPTS / "instance"), *args], check=True, capture_output=True,
                   text=True, timeout=120)


def test_store_of_a_newer_format_is_set_aside_and_rebuilt(format_tool):
    """A store marked with a format this build does not read (99, as a newer
    release would write) is moved aside as <n>.format-99-<time> untouched,
    said in the log, and rebuilt from the changelog and the customer topic:
    the same counts and customers, one rebuild per partition."""
    earlier = set()

    def mark_newer(app_dir, held):
        earlier.update(app_dir.glob("*.*-*"))
        for p in held:
            # this build marks its stores with the format it writes
            assert store_format(format_tool, app_dir / str(p)) == "1"
            assert store_format(format_tool, app_dir / str(p), 99) == "99"

    held, app_dir, text = restart_with_state_edited(1, mark_newer)
    rebuilds = state_rebuilds(1)
    for p in held:
        line = (f"LOG:  iq_fdw worker: the state of partition {p} is in store format 99, which "
                f'this build does not read; moved it to "{app_dir / str(p)}.format-99-')
        assert line in text, text[-3000:]
        assert "This build reads store formats 1 to 1" in text
        aside = [x for x in app_dir.glob(f"{p}.*-*") if x not in earlier]
        assert len(aside) == 1 and aside[0].name.startswith(f"{p}.format-99-"), aside
        # set aside as it was: still the newer release's
        assert store_format(format_tool, aside[0]) == "99"
        assert rebuilds[p] == 1, rebuilds


def with_version(request, version):
    return request[:2] + bytes([version]) + request[3:]


def read_error_answer(s):
    """An answer that is only a failure: "IQ" version status u32 len message."""
    data = b""
    while len(data) < 8 or len(data) < 8 + struct.unpack(">I", data[4:8])[0]:
        c = s.recv(65536)
        assert c, f"connection closed after {data!r}"
        data += c
    return data


def test_request_of_a_newer_wire_version_is_refused_naming_both():
    """A request in wire protocol version 2 is answered, in version 1, with
    status UNKNOWN_VERSION (6) and a message naming both versions, over the
    local socket (which then serves the next request) and POST /iq/v1/read."""
    positions = wire_request(4, 0)
    want = "wire protocol version 2 is not one this instance reads (versions 1 to 1)"
    for i in INSTANCES:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(local_socket_path(i))
            body = with_version(positions, 2)
            s.sendall(struct.pack(">I", len(body)) + body)
            answer = read_error_answer(s)
            assert answer[:4] == b"IQ\x01\x06", answer
            assert want in answer[8:].decode(), answer
            # the connection goes on, in version 1
            st, _, _, msg = parse_answer(local_call(s, positions))
            assert st == 0, msg
        _, body = post_wire(i, "/iq/v1/read", with_version(positions, 7))
        st, _, _, msg = parse_answer(body)
        assert st == 6 and "wire protocol version 7 is not one this instance reads" in msg, msg


# ---- against the previous release ------------------------------------------------

PREVIOUS_TAG = os.environ.get("IQ_PREVIOUS_RELEASE", "v0.1")
# the PostgreSQL versions the previous release was built for: on another,
# it is not tried (it never built there)
PREVIOUS_SUPPORTS = set(os.environ.get("IQ_PREVIOUS_RELEASE_PG", "15").split(","))


def previous_revision():
    try:
        r = subprocess.run(["git", "-C", str(REPO), "rev-list", "-n", "1", PREVIOUS_TAG],
                           capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no previous release to test against: git is not installed")
    return r.stdout.strip() if r.returncode == 0 else None


def pg_major():
    out = subprocess.run(["pg_config", "--version"], capture_output=True, text=True).stdout
    return out.split()[1].split(".")[0]


@pytest.fixture(scope="module")
def previous_build():
    """The previous release (IQ_PREVIOUS_RELEASE, default tag v0.1) built in a
    temporary directory, for IQ_LIB_DIR."""
    if tls_on():
        pytest.skip(f"{PREVIOUS_TAG} has no TLS: it cannot join a cluster that speaks HTTPS")
    major = pg_major()
    if major not in PREVIOUS_SUPPORTS:
        pytest.skip(f"{PREVIOUS_TAG} was made for PostgreSQL {', '.join(sorted(PREVIOUS_SUPPORTS))} "
                    f"only, not {major}")
    rev = previous_revision()
    if rev is None:
        pytest.skip(f"no previous release to test against: git tag {PREVIOUS_TAG} is absent "
                    "(set IQ_PREVIOUS_RELEASE to a revision)")
    d = Path(tempfile.mkdtemp(prefix="iq_previous_"))
    try:
        subprocess.run(f"git -C {REPO} archive {rev} | tar -x -C {d}", shell=True, check=True,
                       timeout=120)
        built = subprocess.run(["make", "-s", "-j2"], cwd=d, capture_output=True, text=True,
                               timeout=900)
        assert built.returncode == 0, f"{PREVIOUS_TAG} did not build:\n{built.stderr[-3000:]}"
        os.chmod(d, 0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def restart_with(i, lib_dir):
    env = dict(os.environ, IQ_LIB_DIR=str(lib_dir))
    for cmd in ("stop", "start"):
        subprocess.run([str(SCRIPTS / "instance"), cmd, str(i)], check=True, capture_output=True,
                       text=True, timeout=180, env=env)


def test_previous_release_serves_and_takes_over(previous_build):
    """One instance runs the previous release, the others this one: every
    instance answers every key (each asking the owner, of either release),
    then the previous release's instance takes over every partition while
    the others are stopped, and gives them back, with the same counts."""
    old = INSTANCES[-1]
    this_build = os.environ.get("IQ_LIB_DIR", str(REPO))
    wait_until(all_running, timeout=120, interval=0.5, message="every worker running")
    before = all_counts()
    assert before
    restart_with(old, previous_build)
    others = [i for i in INSTANCES if i != old]
    try:
        wait_until(all_running, timeout=180, interval=0.5, message="every worker running")
        wait_until(lambda: all_counts() == before, timeout=120, message="counts across releases")
        keys = sorted(before)[:50]
        in_list = ",".join("'%s'" % k.replace("'", "''") for k in keys)
        for i in INSTANCES:
            psql(i, import_stores_sql("versiontest", "iq_test"))
            out = psql(i, "\\set QUIET on\nSELECT key, count FROM versiontest.order_count "
                          f"WHERE key IN ({in_list})")
            got = {k: int(v) for k, v in (line.split("|") for line in out.splitlines())}
            assert got == {k: before[k] for k in keys}, i
        for i in others:
            instance_cmd("stop", str(i))
        try:
            wait_until(lambda: worker(old)[0] == "running" and sorted(worker(old)[3]) == [0, 1, 2],
                       timeout=180, interval=0.5, message="the previous release holds everything")
            got = {r["key"]: r["value"] for r in
                   http_json(old, "/stores/order-count/all?scope=local")["result"]}
            assert got == before
        finally:
            for i in others:
                instance_cmd("start", str(i))
        wait_until(all_running, timeout=180, interval=0.5, message="every worker running")
        wait_until(lambda: all_counts() == before, timeout=120, message="counts handed back")
    finally:
        restart_with(old, this_build)

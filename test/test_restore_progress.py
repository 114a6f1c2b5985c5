"""Issue 19: a restore shows its progress.  A sizeable partition (a
million customers of distinct keys) is restored into an instance whose
state directory was wiped; while it runs, iq_worker() shows the restore
under way (partition, topic, records read of the total, rate, seconds
left), its records growing, GET /metrics shows it too (scraped and parsed
by prometheus_client's parser), and the server log has the progress lines.

The log interval is 10 s in production; a restore of that length takes
ten million records here (a million a second), too much for a shared
machine, so the instance is restarted with the hidden hook
IQ_TEST_RESTORE_REPORT_MS=300 and the restore is still a real one of a
million records.  Run it with IQ_LIB_DIR as the cluster was started: it
restarts an instance with scripts/instance.
"""

import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import BOOTSTRAP, IQ_HOME, SCRIPTS, psql, settled, unique, wait_until
from test_metrics import owned, scrape

# over the 3 partitions, murmur2 as Kafka's producers: a million in each
RECORDS = 3_000_000
PER_PARTITION = RECORDS // 4
COLUMNS = ["restore_partition", "restore_topic", "restored_records", "restore_total",
           "restore_rate", "restore_seconds_left"]


def instance_script(*args, env=None):
    subprocess.run([str(SCRIPTS / "instance"), *args], check=True, capture_output=True,
                   text=True, timeout=180, env=env)


def restore_row(i):
    """iq_worker()'s restore columns on instance i, with its state: a dict,
    None for NULL."""
    out = psql(i, f"SELECT state, {', '.join(COLUMNS)} FROM iq_worker()")
    vals = [v if v != "" else None for v in out.split("|")]
    row = dict(zip(["state"] + COLUMNS, vals))
    for k in ("restore_partition", "restored_records", "restore_total"):
        row[k] = int(row[k]) if row[k] is not None else None
    for k in ("restore_rate", "restore_seconds_left"):
        row[k] = float(row[k]) if row[k] is not None else None
    return row


def customer_caught_up(i, p):
    """Instance i has processed partition p of the customer topic up to its
    end, which lies beyond the records produced."""
    out = psql(i, f"SELECT customer_offset, customer_end_offset FROM iq_stats() "
                  f"WHERE partition = {p} AND role = 'owner'")
    if not out:
        return False
    offset, end = map(int, out.split("|"))
    return offset >= end >= PER_PARTITION


@pytest.mark.restarts_cluster
@pytest.mark.grows_state
def test_restore_shows_its_progress_in_iq_worker_and_the_log():
    owners = wait_until(settled, timeout=120, message="a settled cluster")
    p = 0
    victim = owners[p]
    prefix = unique("rprog")
    lines = "".join(f"{prefix}-{j:07d}--customer {j}\n" for j in range(RECORDS))
    subprocess.run(["kcat", "-b", BOOTSTRAP, "-P", "-t", "customer", "-K", "--",
                    "-X", "partitioner=murmur2_random"],
                   input=lines, text=True, check=True, timeout=300)
    del lines
    wait_until(lambda: customer_caught_up(victim, p), timeout=300, interval=1,
               message=f"instance {victim} has processed partition {p} of the customers")
    # nothing restores on a settled instance
    assert restore_row(victim)["restore_partition"] is None

    log = IQ_HOME / "pg" / str(victim) / "server.log"
    instance_script("stop", str(victim))
    log_from = log.stat().st_size
    for d in (IQ_HOME / "pg" / str(victim) / "state").iterdir():
        shutil.rmtree(d)
    try:
        instance_script("start", str(victim),
                        env=dict(os.environ, IQ_TEST_RESTORE_REPORT_MS="300"))
        samples = []
        # GET /metrics while partition p restores, by the total of the topic
        # being restored: its changelog's (small) first, then its customers'
        scrapes = {}
        started = time.monotonic()
        while time.monotonic() < started + 300:
            row = restore_row(victim)
            if row["restore_partition"] is not None:
                samples.append(row)
                customers_seen = sum(len(d) for t, d in scrapes.items() if t >= PER_PARTITION)
                if row["restore_partition"] == p and customers_seen < 20:
                    try:
                        metrics, _ = scrape(victim)
                    except (AssertionError, OSError):
                        metrics = None      # the HTTP server not listening yet
                    if metrics and owned(metrics, "iq_partition_restoring").get(p) == 1:
                        total = owned(metrics, "iq_restore_total_records")[p]
                        scrapes.setdefault(total, []).append(owned(metrics, "iq_restore_records")[p])
            elif row["state"] == "running" and (
                    any(s["restore_topic"] == "customer" for s in samples)
                    or time.monotonic() > started + 60):
                break
        customer = [s for s in samples if s["restore_partition"] == p and s["restore_topic"] == "customer"]
        assert customer, f"no sample of the restore of partition {p}'s customers: {samples[:5]}"
        # the whole partition is restored, and the records read move
        assert all(s["restore_total"] >= PER_PARTITION for s in customer), customer[:3]
        read = [s["restored_records"] for s in customer]
        assert read == sorted(read), read
        assert max(read) > min(read), f"restored_records did not move in {len(read)} samples: {read}"
        assert all(0 <= r <= s["restore_total"] for r, s in zip(read, customer))
        moving = [s for s in customer if s["restored_records"] > 0]
        assert moving and all(s["restore_rate"] > 0 and s["restore_seconds_left"] is not None
                              for s in moving), moving[:3]
        # /metrics shows the same restore, its records moving within its total
        # (its changelog comes first: a scrape then sees that small total)
        assert any(total >= PER_PARTITION for total in scrapes), \
            f"no scrape of /metrics showed the restore of partition {p}'s customers: {scrapes}"
        for total, done in scrapes.items():
            assert all(0 <= d <= total for d in done), scrapes
            assert done == sorted(done), scrapes
        # the log has the progress, in the form of the other restore lines
        wait_until(lambda: restore_row(victim)["state"] == "running", timeout=120,
                   message=f"instance {victim} running again")
        with open(log, "rb") as f:
            f.seek(log_from)
            text = f.read().decode(errors="replace")
        progress = re.findall(
            rf'iq_fdw worker: restoring partition {p} of "customer": (\d+) of (\d+) records '
            r'\(\d+ %\), \d+ records/s, (?:about \d+ s left|no record read yet)', text)
        assert progress, f"no progress line for partition {p} in {log}"
        assert all(int(total) >= PER_PARTITION for _, total in progress), progress
        assert re.search(rf'restored partition {p} of "customer": \d+ records', text)
    finally:
        # back to the production interval
        instance_script("stop", str(victim))
        instance_script("start", str(victim))
        wait_until(settled, timeout=180, interval=0.5, message="a settled cluster again")

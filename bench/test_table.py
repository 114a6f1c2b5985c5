"""bench/table's parsing, on made-up RESULT lines (no cluster, no timing):

  python3 -m pytest -q bench/test_table.py
"""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

TABLE = Path(__file__).with_name("table")

RAW = """\
1 ingest.ingest_worker 600000 records/s
1 ingest.ingest_baseline 1200000 records/s
1 ingest.ingest_kcat 300000 records/s
1 fdw.fdw_local 50000 tps
1 fdw.heap_local 40000 tps
1 http.http_local_p99 9.5 ms
2 fdw.fdw_local 30000 tps
2 fdw.heap_local 60000 tps
2 fdw.fdw_remote not-a-number tps
"""


def table(*args):
    return subprocess.run([sys.executable, str(TABLE), *map(str, args)],
                          capture_output=True, text=True)


@pytest.fixture
def results(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW)
    r = table("csv", raw, "quick", "abc1234", "2026-12-07")
    assert r.returncode == 0, r.stderr
    assert "not-a-number" in r.stderr  # reported, not silently taken
    out = tmp_path / "results.csv"
    out.write_text(r.stdout)
    return out


def test_csv_pairs_ours_with_baseline_per_round(results):
    rows = list(csv.DictReader(results.open()))
    ratios = {(r["metric"], r["round"]): r for r in rows if r["ratio"]}
    assert ratios[("join+count vs bare C consumer", "1")]["ratio"] == "0.500"
    assert ratios[("join+count vs kcat", "1")]["ratio"] == "2.000"
    assert ratios[("local keys vs heap PK", "1")]["ratio"] == "1.250"
    assert ratios[("local keys vs heap PK", "2")]["ratio"] == "0.500"
    assert ratios[("local keys vs heap PK", "2")]["goal"] == ">= 0.67"
    # a pair with a side missing gives no row
    assert not any(r["metric"] == "remote keys vs heap PK" for r in rows)
    single = [r for r in rows if r["metric"] == "local get p99"]
    assert single[0]["ours"] == "9.5" and single[0]["ratio"] == ""
    assert {r["mode"] for r in rows} == {"quick"} and {r["git_revision"] for r in rows} == {"abc1234"}


def test_summary_min_median_max_and_goal(results):
    r = table("summary", results)
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if "local keys vs heap PK" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:] == ["2", "0.50", "0.88", "1.25", ">= 0.67", "met"]
    line = next(l for l in r.stdout.splitlines() if "bare C consumer" in l)
    assert line.rstrip().endswith("| >= 0.5 | met |")


def test_readme_rewritten_between_markers_only(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- bench:table begin -->\nold table\n<!-- bench:table end -->\nafter\n")
    r = table("readme", results, readme, "results.png")
    assert r.returncode == 0, r.stderr
    text = readme.read_text()
    assert text.startswith("before\n<!-- bench:table begin -->") and text.endswith("<!-- bench:table end -->\nafter\n")
    assert "old table" not in text and "local keys vs heap PK" in text and "(results.png)" in text
    # rewriting again gives the same text
    assert table("readme", results, readme, "results.png").returncode == 0
    assert readme.read_text() == text


def test_readme_without_markers_fails(results, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    r = table("readme", results, readme)
    assert r.returncode != 0 and "bench:table begin" in r.stderr
    assert readme.read_text() == "no markers\n"

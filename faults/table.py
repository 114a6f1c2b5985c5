"""faults/table.py: the results table (markdown), one row per scenario.

    markdown(results) -> the whole table;  row(result) -> one row
"""

HEAD = ("| fault | guarantee | produced | lost | wrong | errors / queries | sessions cut "
        "| plain SQL errors / statements | plain sessions cut | instances restarted "
        "| longest failing, failed host's keys (s) | longest failing, other keys (s) "
        "| owned and caught up after (s) | error kinds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _kinds(r):
    kinds = r.get("error_kinds") or {}
    return "; ".join(f"{n}x {k}" for k, n in list(kinds.items())[:4]).replace("|", "/")


def _restarts(r):
    """'h2 x1, ...' or 'none'; FAIL marks a fault of the engine alone that reached PostgreSQL."""
    text = ", ".join(f"h{i} x{n}" for i, n in (r.get("restarts") or {}).items()) or "none"
    return text + (" (FAIL)" if r.get("postgres_hit") else "")


def row(r):
    if "skipped" in r or "failed" in r:
        why = r.get("skipped") or "FAILED: " + r["failed"]
        return f"| {r['what']} | | | | | | | | | | | | | {why[:200].replace('|', '/')} |"
    lost = r["lost"] if not r.get("excess") else f"{r['lost']} (+{r['excess']} counted twice)"
    return (f"| {r['what']} | {r['guarantee']} | {r['produced']} | {lost} | {r['wrong']} "
            f"| {r['errors']} / {r['queries']} | {r['sessions_cut']} "
            f"| {r.get('plain_errors', '')} / {r.get('plain_statements', '')} "
            f"| {r.get('plain_sessions_cut', '')} | {_restarts(r)} | {r['longest_fail_victim_s']} "
            f"| {r['longest_fail_others_s']} | {r['recovery_s']} | {_kinds(r)} |")


def markdown(results):
    return "\n".join([HEAD] + [row(r) for r in results]) + "\n"

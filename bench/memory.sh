#!/usr/bin/env bash
# bench/memory.sh: resident memory of the stream worker against
# iq_fdw.memory_budget while it counts many distinct keys.
#
#   IQ_PORT_OFFSET=N bench/memory.sh [ORDERS] [KEYS] [BUDGET_MB]   (default 10000000 10000000 64)
#
# Needs a running cluster (scripts/cluster up). Fresh topics and application
# id on instance 1 (ALTER SYSTEM, reset at the end). Order i has key
# u<(i * 2654435761 + 12345) mod KEYS>, so ORDERS <= KEYS gives ORDERS
# distinct keys; every tenth key has a customer.
#
# 1. the worker on the empty topics: its RSS with no keys is the fixed
#    baseline (the process, its libraries and threads; no budget in use);
# 2. instance 1 stopped, the topics filled, instance 1 started: the worker
#    restores the customers and counts the orders, its RSS sampled every
#    two seconds (ps -o rss) with the keys counted so far.
# Prints the samples as "seconds rss_MB orders_counted" and a summary, and
# for bench/run "RESULT memory_<what> <MB> MB" lines (baseline_rss,
# peak_rss, above_baseline, budget).
# It restarts instance 1: export the IQ_LIB_DIR the cluster was started with,
# or the restarted instance loads the installed library instead of the build.
set -euo pipefail
RUN_PREFIX=mem
source "$(dirname "${BASH_SOURCE[0]}")/private_run.sh"
ORDERS=${1:-10000000}
KEYS=${2:-10000000}
BUDGET=${3:-64}

worker_pid() { q "select pid from iq_worker()" 2>/dev/null || true; }
rss_mb() { echo $(($(ps -o rss= -p "$1") / 1024)); }
trap 'reset_settings; rm -rf "$WORK"' EXIT

create_run_topics
use_run_settings memory_budget="${BUDGET}MB"
q "select pg_reload_conf()" >/dev/null
sleep 2
until [[ $(q "select state = 'running' and cardinality(assigned_partitions) > 0 from iq_worker()" 2>/dev/null) == t ]]; do sleep 0.5; done
sleep 3
pid=$(worker_pid)
base_rss=$(rss_mb "$pid")
echo "baseline: worker $pid with no keys, iq_fdw.memory_budget = ${BUDGET}MB: RSS $(rss_mb "$pid") MB"

"$HERE/instance" stop $I >/dev/null
python3 - "$ORDERS" "$KEYS" "$WORK" <<'PY'
import sys
n, k, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(f"{d}/orders", "w") as f:
    f.writelines(f"u{(i * 2654435761 + 12345) % k}--dish{i % 97}\n" for i in range(n))
with open(f"{d}/customers", "w") as f:
    f.writelines(f"u{i}--name{i}\n" for i in range(0, k, 10))
PY
kp "$CT" <"$WORK/customers"
kp "$OT" <"$WORK/orders"
rm -f "$WORK/orders" "$WORK/customers"
"$HERE/instance" start $I >/dev/null

t0=$(date +%s)
peak=0
echo "seconds rss_MB orders_counted"
while :; do
	pid=$(worker_pid)
	done_n=$(q "select coalesce(sum(greatest(order_offset, 0)), 0) from iq_stats()" 2>/dev/null || echo 0)
	if [[ -n $pid ]] && r=$(rss_mb "$pid" 2>/dev/null); then
		((r > peak)) && peak=$r
		echo "$(($(date +%s) - t0)) $r $done_n"
	fi
	((done_n >= ORDERS)) && break
	sleep 2
done
t1=$(date +%s)
echo "summary: $ORDERS orders over $(q "select sum(restore_total) from iq_stats()") restored customer records, counted in $((t1 - t0)) s ($((ORDERS / (t1 - t0 > 0 ? t1 - t0 : 1))) orders/s including restore); peak RSS $peak MB, final $(rss_mb "$(worker_pid)") MB, budget ${BUDGET} MB"
# for bench/run: what the keys took above the baseline, against the budget
echo "RESULT memory_baseline_rss $base_rss MB"
echo "RESULT memory_peak_rss $peak MB"
echo "RESULT memory_above_baseline $((peak - base_rss)) MB"
echo "RESULT memory_budget $BUDGET MB"

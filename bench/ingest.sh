#!/usr/bin/env bash
# bench/ingest.sh: throughput of the stream worker on one instance, next to a
# bare librdkafka consumer (kcat) reading the same topic in the same run, and
# the restore throughput from the changelog, next to kcat reading the changelog.
#
#   IQ_PORT_OFFSET=N bench/ingest.sh [ORDERS] [KEYS]     (default 2000000 500000)
#
# KCAT_ROUNDS (default 3) is how many times kcat and the bare C consumer
# (bench/baseline_consumer.c, built into bench/.build on first use) read the
# order topic. BENCH_GUARANTEE (at_least_once or exactly_once) sets the
# worker's iq_fdw.processing_guarantee for this run (default: the instance's).
#
# Besides its human lines it prints machine-readable ones for bench/run:
#   RESULT <name> <value> <unit>
# ingest_worker, ingest_baseline and ingest_kcat (medians of the rounds),
# restore_worker, restore_baseline and restore_kcat, in records/s.
#
# Needs a running cluster (scripts/cluster up). Uses fresh topics and a fresh
# application id on instance 1 (ALTER SYSTEM, reset at the end), so the
# cluster's own topics and group are not touched; the other instances keep
# running. Prints one line per measurement. It restarts instance 1: export the
# IQ_LIB_DIR the cluster was started with, or the restarted instance loads the
# installed library instead of the build under test.
set -euo pipefail
RUN_PREFIX=bench
source "$(dirname "${BASH_SOURCE[0]}")/private_run.sh"
ORDERS=${1:-2000000}
KEYS=${2:-500000}
trap 'rm -rf "$WORK"' EXIT
BASELINE=$(build_baseline_consumer)

now() { date +%s.%N; }
rate() { python3 -c "import sys; n,a,b=float(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'{n/(b-a):,.0f} records/s ({n:,.0f} records in {b-a:.2f} s)')" "$@"; }

msg "topics $CT and $OT (3 partitions), $ORDERS orders over $KEYS keys"
create_run_topics
# restarted, so that the ingest runs the library under test (IQ_LIB_DIR)
# rather than the one an earlier run left loaded in the postmaster
"$HERE/instance" stop $I >/dev/null
"$HERE/instance" start $I >/dev/null
fill_run_topics "$ORDERS" "$KEYS" "$WORK"

# bare consumer: every record of the order topic, keys printed and counted.
# Its rate moves twofold from run to run on a shared machine, so it is read
# KCAT_ROUNDS times; the worker is compared with the median and the best.
kcat_rates=() base_rates=()
for ((round = 1; round <= ${KCAT_ROUNDS:-3}; round++)); do
	t0=$(now)
	n=$(kcat -b "$(bootstrap)" -C -t "$OT" -o beginning -e -q -f '%k\n' | wc -l)
	t1=$(now)
	echo "bare kcat consumer:        $(rate "$n" "$t0" "$t1")"
	kcat_rates+=("$(python3 -c "import sys; print(float(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2])))" "$n" "$t0" "$t1")")
	# the same topic read by the bare C consumer: no pipe, no formatting
	read -r _ n _ b _ secs _ r < <("$BASELINE" "$(bootstrap)" "$OT")
	echo "bare C consumer:           ${r} records/s ($n records, $b bytes, in $secs s)"
	base_rates+=("$r")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] }'; }
echo "RESULT ingest_kcat $(median "${kcat_rates[@]}") records/s"
echo "RESULT ingest_baseline $(median "${base_rates[@]}") records/s"

# the worker: same topic, join + count + changelog + RocksDB, at_least_once
guarantee=$(q "show iq_fdw.processing_guarantee")
use_run_settings ${BENCH_GUARANTEE:+processing_guarantee=$BENCH_GUARANTEE}
[[ -z ${BENCH_GUARANTEE:-} ]] || guarantee=$BENCH_GUARANTEE
trap 'reset_settings; rm -rf "$WORK"' EXIT
total=$ORDERS
t0=$(now)
q "select pg_reload_conf()" >/dev/null
first= first_n=0
while :; do
	# customers are read by the restore at assignment: orders tell the
	# progress.  Counted records start the clock (the first write may come
	# much later: writes are behind while there is a backlog); written
	# offsets stop it.
	row=$(q "select coalesce(sum(records_processed), 0), coalesce(sum(greatest(order_offset, 0)), 0) from iq_stats()" 2>/dev/null || echo "0|0")
	IFS='|' read -r counted_n done_n <<<"$row"
	if [[ -z $first && $counted_n -gt 0 ]]; then first=$(now); first_n=$counted_n; fi
	((done_n >= total)) && break
	sleep 0.1
done
t1=$(now)
echo "iq_fdw worker ($guarantee): $(rate $((total - first_n)) "$first" "$t1") from the first counted record to the last one written; $(rate "$total" "$t0" "$t1") including restart and group join"
python3 - "$((total - first_n))" "$first" "$t1" "${#kcat_rates[@]}" "${kcat_rates[@]}" "${base_rates[@]}" <<'PY'
import statistics, sys
n, a, b, k = float(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
bare = sorted(float(x) for x in sys.argv[5:5 + k])
base = sorted(float(x) for x in sys.argv[5 + k:])
worker = n / (b - a)
print(f"worker / bare kcat:        {worker / statistics.median(bare):.2f} of the median, "
      f"{worker / bare[-1]:.2f} of the best of {len(bare)} kcat runs")
print(f"worker / bare C consumer:  {worker / statistics.median(base):.2f} of the median, "
      f"{worker / base[-1]:.2f} of the best of {len(base)} runs")
print(f"RESULT ingest_worker {worker:.0f} records/s")
PY
pid=$(q "select pid from iq_worker()")
# CPU time is steadier than the rate on a shared machine: the worker was
# started by the reload above, so its time is this ingest's (and its start)
read -r utime stime < <(awk '{print $14, $15}' "/proc/$pid/stat")
python3 - "$utime" "$stime" "$(getconf CLK_TCK)" "$total" <<'PY'
import sys
u, s, hz, n = (float(x) for x in sys.argv[1:])
cpu = (u + s) / hz
print(f"worker CPU time:           {cpu:.2f} s (user {u / hz:.2f}, system {s / hz:.2f}, all threads): "
      f"{cpu * 1e6 / n:.2f} us a record")
PY
echo "worker resident memory:    $(($(ps -o rss= -p "$pid") / 1024)) MB (iq_fdw.memory_budget = $(q "show iq_fdw.memory_budget"))"
keys=$(q "select sum(restore_total) from iq_stats()")

# the changelog read by a bare consumer, as the restore reads it (committed
# records only), with fetches as large as the restore's: what the broker on
# this machine can hand out
fetch=$((4 * 1024 * 1024))
t0=$(now)
n=$(kcat -b "$(bootstrap)" -X isolation.level=read_committed -X fetch.max.bytes=$fetch \
	-X max.partition.fetch.bytes=$fetch -X message.max.bytes=$fetch \
	-C -t "$APP-order-count-changelog" -o beginning -e -q -f '%k\n' | wc -l)
t1=$(now)
echo "bare kcat, the changelog:  $(rate "$n" "$t0" "$t1")"
echo "RESULT restore_kcat $(python3 -c "import sys; print(round(float(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2]))))" "$n" "$t0" "$t1") records/s"
read -r _ n _ b _ secs _ r < <("$BASELINE" "$(bootstrap)" "$APP-order-count-changelog" -1 \
	isolation.level=read_committed fetch.max.bytes=$fetch max.partition.fetch.bytes=$fetch)
echo "bare C consumer, changelog: ${r} records/s ($n records in $secs s)"
echo "RESULT restore_baseline $r records/s"

# restore: the state of instance 1 wiped, rebuilt from the changelog
"$HERE/instance" stop $I >/dev/null
rm -rf "$(instance_dir $I)/state/$APP"
"$HERE/instance" start $I >/dev/null
first= first_n=0 last_n=0
while :; do
	row=$(q "select coalesce(sum(restored_records),0), coalesce(sum(restore_total),0), bool_and(not restoring) from (select *, state = 'restoring' as restoring from iq_stats()) s" 2>/dev/null || echo "0|0|f")
	IFS='|' read -r got tot fin <<<"$row"
	st=$(q "select state from iq_worker()" 2>/dev/null || echo starting)
	if [[ -z $first && $got -gt 0 ]]; then first=$(now); first_n=$got; fi
	if [[ -n $first && $st == running && $fin == t ]]; then last_n=$got; break; fi
	sleep 0.05
done
t1=$(now)
echo "restore from changelog:    $(rate $((last_n - first_n)) "$first" "$t1") ($last_n records restored in all)"
echo "RESULT restore_worker $(python3 -c "import sys; print(round(float(sys.argv[1])/(float(sys.argv[3])-float(sys.argv[2]))))" $((last_n - first_n)) "$first" "$t1") records/s"

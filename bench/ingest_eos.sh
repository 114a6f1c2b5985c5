#!/usr/bin/env bash
# bench/ingest_eos.sh: the worker's ingest under exactly_once against
# at_least_once in one run, alternated, so that their ratio is not two runs'
# different loads on a shared machine (issue 20: >= 0.7).
#
#   IQ_PORT_OFFSET=N IQ_LIB_DIR=$PWD bench/ingest_eos.sh [ORDERS] [KEYS]
#
# The topics are filled once; each round ingests them twice, at_least_once
# then exactly_once, each with a fresh application id (so a fresh group and
# changelog), at the instance's iq_fdw.commit_interval (the default: -1)
# unless BENCH_COMMIT_INTERVAL sets one for both (BENCH_EOS_COMMIT_INTERVAL:
# for exactly_once alone). BENCH_ROUNDS (default 2).
# Prints per round the two rates, the changelog records each wrote, the
# worker's CPU time, and the ratio; then
#   RESULT ingest_alo <median> records/s
#   RESULT ingest_eos <median> records/s
#   RESULT ingest_eos_ratio <median of the rounds' ratios> ratio
# Needs a running cluster; restarts instance 1 once (IQ_LIB_DIR as for
# bench/ingest.sh) and resets its settings at the end.
set -euo pipefail
RUN_PREFIX=eos
source "$(dirname "${BASH_SOURCE[0]}")/private_run.sh"
ORDERS=${1:-2000000}
KEYS=${2:-500000}
ROUNDS=${BENCH_ROUNDS:-2}
trap 'reset_settings; rm -rf "$WORK"' EXIT

now() { date +%s.%N; }

msg "topics $CT and $OT (3 partitions), $ORDERS orders over $KEYS keys, $ROUNDS rounds"
create_run_topics
"$HERE/instance" stop $I >/dev/null
"$HERE/instance" start $I >/dev/null
fill_run_topics "$ORDERS" "$KEYS" "$WORK"

# ingest TAG: one ingest of the whole order topic under the application id
# $RUN-TAG, set by the caller (use_run_settings, in this shell so that
# reset_settings knows it); prints "rate changelog_records cpu_seconds"
ingest() {
	local app=$RUN-$1 first= first_n=0 t1 counted_n done_n pid ticks0 ticks1
	q "select pg_reload_conf()" >/dev/null
	# the pipeline restarts for the new application id: wait until it is
	# this one's (its stats start at zero)
	sleep 0.5
	while :; do
		IFS='|' read -r counted_n done_n <<<"$(q "select coalesce(sum(records_processed), 0), coalesce(sum(greatest(order_offset, 0)), 0) from iq_stats()" 2>/dev/null || echo "0|0")"
		if [[ -z $first && $counted_n -gt 0 ]]; then
			first=$(now) first_n=$counted_n
			pid=$(q "select pid from iq_worker()")
			ticks0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
		fi
		((done_n >= ORDERS)) && break
		sleep 0.05
	done
	t1=$(now)
	ticks1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
	local cl
	cl=$(kcat -b "$(bootstrap)" -X isolation.level=read_committed -C -t "$app-order-count-changelog" \
		-o beginning -e -q -f '%k\n' 2>/dev/null | wc -l)
	python3 -c "import sys; n,a,b=float(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'{n/(b-a):.0f}', sys.argv[4], f'{(int(sys.argv[6])-int(sys.argv[5]))/float(sys.argv[7]):.2f}')" \
		$((ORDERS - first_n)) "$first" "$t1" "$cl" "$ticks0" "$ticks1" "$(getconf CLK_TCK)"
}

alo=() eos=() ratios=()
ci=${BENCH_COMMIT_INTERVAL:+commit_interval=$BENCH_COMMIT_INTERVAL}
eci=${BENCH_EOS_COMMIT_INTERVAL:+commit_interval=$BENCH_EOS_COMMIT_INTERVAL}
for ((round = 1; round <= ROUNDS; round++)); do
	use_run_settings application_id="$RUN-alo$round" processing_guarantee=at_least_once $ci
	read -r ra ca ua < <(ingest "alo$round")
	use_run_settings application_id="$RUN-eos$round" processing_guarantee=exactly_once ${eci:-$ci}
	read -r re ce ue < <(ingest "eos$round")
	ratio=$(python3 -c "import sys; print(f'{float(sys.argv[2])/float(sys.argv[1]):.2f}')" "$ra" "$re")
	echo "round $round: at_least_once $ra rec/s (changelog $ca, CPU $ua s), exactly_once $re rec/s (changelog $ce, CPU $ue s): $ratio"
	alo+=("$ra") eos+=("$re") ratios+=("$ratio")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
echo "commit interval: $(q "show iq_fdw.commit_interval") (-1: 30 s at_least_once, the exactly_once default of this build)"
echo "RESULT ingest_alo $(median "${alo[@]}") records/s"
echo "RESULT ingest_eos $(median "${eos[@]}") records/s"
echo "RESULT ingest_eos_ratio $(median "${ratios[@]}") ratio"

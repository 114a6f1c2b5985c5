#!/usr/bin/env bash
# bench/engine_cost.sh: what running the stream engine in a process of its
# own costs the lookups (issue 17), one build against another in one session
# on one machine: FDW lookups of this instance's keys (from the value cache,
# and with it bypassed: the local socket) and of other instances' keys, each
# against the same lookup on a heap table with a primary key
# (bench/fdw_lookup.sh).
#
#   IQ_PORT_OFFSET=... bench/engine_cost.sh BEFORE_LIB AFTER_LIB [ROUNDS] [ROWS]
#                                          (default 3 rounds, 200000 rows)
#
# BEFORE_LIB and AFTER_LIB are build trees holding iq_fdw.so (for the
# engine in the worker, build the revision before it in a worktree: git
# worktree add /tmp/before <rev> && make -C /tmp/before). Needs a cluster
# (scripts/cluster up); restarts its instances with each build in turn
# (IQ_LIB_DIR), which goes first alternating by round, and leaves them on
# AFTER_LIB. Prints a markdown table: min, median and max over the rounds,
# and the ratio of the medians (after / before).
#
# Environment: BENCH_SECONDS (default 8) per pgbench run, BENCH_CLIENTS.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"
source "$HERE/compare_lib.sh"

(($# >= 2)) || die "usage: bench/engine_cost.sh BEFORE_LIB AFTER_LIB [ROUNDS] [ROWS]"
declare -A LIB=([before]=$(cd "$1" && pwd) [after]=$(cd "$2" && pwd))
ROUNDS=${3:-3}
ROWS=${4:-200000}
SECS=${BENCH_SECONDS:-8}
COMPARE_WORK=$(mktemp -d)
trap 'rm -rf "$COMPARE_WORK"' EXIT

# restart_with BUILD: every instance restarted on that build's iq_fdw.so
restart_with() {
	msg "restarting the instances on the $1 build (${LIB[$1]})"
	IQ_LIB_DIR=${LIB[$1]} "$IQ_REPO/scripts/cluster" down >/dev/null
	IQ_LIB_DIR=${LIB[$1]} "$IQ_REPO/scripts/cluster" up >/dev/null
	compare_wait_running
}

for ((round = 1; round <= ROUNDS; round++)); do
	order="before after"
	((round % 2)) || order="after before"
	for build in $order; do
		restart_with "$build"
		BENCH_RUNS="heap_local fdw_local fdw_local_socket heap_remote fdw_remote" \
			BENCH_ROUNDS=1 BENCH_SECONDS=$SECS BENCH_RESULTS=$COMPARE_WORK/$build \
			"$HERE/fdw_lookup.sh" "$ROWS" >/dev/null
		msg "round $round, $build: $(tail -n 5 "$COMPARE_WORK/$build" | tr '\n' ' ')"
	done
done
[[ $build == after ]] || restart_with after

cat <<EOT

### One build against another ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(recorded_instances) instances, $ROUNDS rounds alternating, ${SECS}s a run; min / median / max)

before: ${LIB[before]}; after: ${LIB[after]}

| what | before | after | after / before (medians) |
|---|---|---|---|
EOT
compare_rows before after \
	"heap_local|heap table, keys of this instance (control), tps" \
	"fdw_local|FDW lookup, keys of this instance (value cache), tps" \
	"fdw_local_socket|the same, value cache bypassed (local socket), tps" \
	"heap_remote|heap table, keys of other instances (control), tps" \
	"fdw_remote|FDW lookup, keys of other instances, tps"
echo
echo "FDW against heap in each build (medians): $(compare_ratio before fdw_local heap_local) before, $(compare_ratio after fdw_local heap_local) after, keys of this instance"

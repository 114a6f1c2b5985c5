#!/usr/bin/env bash
# bench/tls_cost.sh: what TLS costs (issue 15), TLS off against TLS on in
# one session on one machine: FDW lookups of this instance's keys and of
# other instances' keys (pgbench, bench/fdw_lookup.sh), and HTTP gets of
# local and forwarded keys (wrk, bench/http_get.sh).
#
#   IQ_PORT_OFFSET=... IQ_LIB_DIR=... bench/tls_cost.sh [ROUNDS] [ROWS]
#                                          (default 3 rounds, 200000 rows)
#
# Needs a cluster (scripts/cluster up); restarts it (scripts/cluster down,
# then up --tls or --no-tls) before each run, so export the IQ_LIB_DIR it
# was started with. The modes alternate, and which goes first alternates
# by round (off on, on off, ...), so that a busy neighbour weighs on both;
# leaves the cluster in the mode it found. The first run of each mode also
# fills the value caches again after the restart (heap_local goes first). Prints a markdown table: min,
# median and max over the rounds of each mode, and the ratio of the
# medians (on / off).
#
# Environment: BENCH_SECONDS (default 8) per pgbench run and per wrk run,
# BENCH_CLIENTS for pgbench, WRK_CONNECTIONS (default 64).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"
source "$HERE/compare_lib.sh"

ROUNDS=${1:-3}
ROWS=${2:-200000}
SECS=${BENCH_SECONDS:-8}
CONNS=${WRK_CONNECTIONS:-64}
COMPARE_WORK=$(mktemp -d)
trap 'rm -rf "$COMPARE_WORK"' EXIT
FOUND=off
tls_on && FOUND=on

# restart_in MODE: the cluster down, then up with TLS MODE (on|off), every
# worker running and holding its partitions
restart_in() {
	local flag=--no-tls
	[[ $1 == on ]] && flag=--tls
	msg "restarting the cluster with TLS $1"
	"$IQ_REPO/scripts/cluster" down >/dev/null
	"$IQ_REPO/scripts/cluster" up "$flag" >/dev/null
	compare_wait_running
}

# measure MODE: one round of every figure, added to $COMPARE_WORK/MODE ("name value")
# and said
measure() {
	local out=$COMPARE_WORK/$1.round line
	BENCH_RUNS="heap_local fdw_local fdw_local_socket heap_remote fdw_remote fdw_remote_socket" \
		BENCH_ROUNDS=1 BENCH_SECONDS=$SECS BENCH_RESULTS=$out "$HERE/fdw_lookup.sh" "$ROWS" >/dev/null
	while IFS= read -r line; do
		[[ $line =~ ^(local|remote)\ .*requests/s\ ([0-9]+).*errors\ ([0-9]+)\ non2xx\ ([0-9]+) ]] || continue
		((BASH_REMATCH[3] == 0 && BASH_REMATCH[4] == 0)) || die "wrk had errors with TLS $1: $line"
		echo "http_${BASH_REMATCH[1]} ${BASH_REMATCH[2]}" >>"$out"
	done < <("$HERE/http_get.sh" "$SECS" "$CONNS")
	grep -q '^http_remote ' "$out" || die "bench/http_get.sh gave no figures with TLS $1"
	msg "round $round, TLS $1: $(tr '\n' ' ' <"$out")"
	cat "$out" >>"$COMPARE_WORK/$1"
	rm -f "$out"
}

for ((round = 1; round <= ROUNDS; round++)); do
	order="off on"
	((round % 2)) || order="on off"
	for mode in $order; do
		restart_in "$mode"
		measure "$mode"
	done
done
[[ $FOUND == "$mode" ]] || restart_in "$FOUND"

cat <<EOF

### TLS off against TLS on ($(date -u +%Y-%m-%d), $(nproc) CPUs, $(recorded_instances) instances, $ROUNDS rounds alternating, ${SECS}s a run; min / median / max)

| what | TLS off | TLS on | on / off (medians) |
|---|---|---|---|
EOF
compare_rows off on \
	"fdw_local|FDW lookup, keys of this instance (value cache), tps" \
	"fdw_local_socket|the same, value cache bypassed (local socket), tps" \
	"fdw_remote|FDW lookup, keys of other instances (upgraded stream), tps" \
	"fdw_remote_socket|the same, value cache bypassed, tps" \
	"heap_local|heap table, the same keys (control), tps" \
	"http_local|HTTP get, local keys (wrk, $CONNS connections), req/s" \
	"http_remote|HTTP get, forwarded to the owner, req/s"

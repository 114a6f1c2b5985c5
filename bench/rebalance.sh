#!/usr/bin/env bash
# bench/rebalance.sh: eager vs cooperative rebalancing (iq_fdw.rebalance_protocol),
# side by side, as the instances that stay see a fourth instance join and leave.
#
#   IQ_PORT_OFFSET=N IQ_LIB_DIR=$PWD bench/rebalance.sh [eager|cooperative ...]
#
# Starts a loopback cluster of its own with 4 instances at IQ_PORT_OFFSET
# (scripts/cluster up --fresh --instances 4: it wipes that offset's cluster,
# so 0, the development cluster's, is refused) and stops it at the end
# (BENCH_KEEP=1 keeps it). The measuring is bench/rebalance.py's (read its
# header): query loops on instances 1-3 and the counting of every partition
# sampled while instance 4 joins and leaves, orders flowing; prints a
# markdown table. Environment: BENCH_ROUNDS (default 2 joins and leaves per
# protocol), BENCH_RATE (orders/s, default 2000), BENCH_GUARANTEE
# (default exactly_once).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"

((IQ_PORT_OFFSET != 0)) || die "give IQ_PORT_OFFSET a cluster of its own (not 0): this wipes and stops it"
# psycopg2: the system Python's (python3 on PATH may be another)
PY=/usr/bin/python3
"$PY" -c 'import psycopg2' 2>/dev/null || die "$PY lacks psycopg2 (apt-get install python3-psycopg2)"

"$IQ_REPO/scripts/cluster" up --fresh --instances 4 >&2
[[ ${BENCH_KEEP:-0} == 1 ]] || trap '"$IQ_REPO/scripts/cluster" down >&2' EXIT
"$PY" "$HERE/rebalance.py" "$@"

#!/usr/bin/env bash
# bench/fdw_lookup.sh: the speed goals of issue 5, on one instance, in one run.
#
#   IQ_PORT_OFFSET=... bench/fdw_lookup.sh [ROWS]      (default 1000000)
#
# Needs a running cluster (scripts/cluster up). Produces ROWS orders with
# distinct keys "b:NNNNNNN" (once; skipped when the store already has them),
# copies the order-count store into a heap table with a primary key, then
# with pgbench -M prepared on instance 1:
#   1. SELECT count FROM order_count WHERE key = :k   keys owned by instance 1
#      (repeated keys: answered from the value cache), and again with the
#      cache bypassed (iq_fdw.max_lag set), so every lookup asks the worker
#   2. the same on the heap table                     (same keys)
#   3. the same for keys owned by other instances, and on the heap table
#   4. ranges: WHERE key >= :k ORDER BY key LIMIT 1000 (and LIMIT 10), from
#      200 start keys spread over the bench keys, on the store (a table with
#      invalid_utf8 'error', so that the bound, order and limit are pushed
#      down) and on the heap; and backward pages, WHERE key <= :k ORDER BY
#      key DESC LIMIT 10
#   5. a full scan of the store vs a sequential scan of the heap table (rows/s):
#      SELECT * FROM t OFFSET <rows>, so that PostgreSQL itself sees every
#      row (count(*) would let a scan skip making tuples; no aggregate is
#      pushed down either way)
# The key is picked by pgbench from a constant array of 200 keys, so both
# sides pay the same for choosing it.  Prints a markdown table.
#
# Environment: BENCH_SECONDS (default 15) per pgbench run, BENCH_ROUNDS
# (default 3), BENCH_CLIENTS (default: number of CPUs), BENCH_INSTANCE
# (default 1). For another script (bench/tls_cost.sh): BENCH_RUNS, the runs
# to make, of heap_local fdw_local fdw_local_socket heap_remote fdw_remote
# fdw_remote_socket heap_scan fdw_scan (a *_socket run bypasses the value
# cache; the table needs the default, every run but fdw_remote_socket), and
# BENCH_RESULTS, a file each run's figure is added to ("run value").
# At the end, for bench/run, one line per run: "RESULT <run> <median> <unit>".
#
# On a cluster started with --tls (scripts/cluster up --tls) the lookups of
# other instances' keys go over TLS; the table's title says which it was.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"

ROWS=${1:-1000000}
SECONDS_PER_RUN=${BENCH_SECONDS:-15}
CLIENTS=${BENCH_CLIENTS:-$(nproc)}
I=${BENCH_INSTANCE:-1}
PORT=$(pg_port "$I")
PGB="$PG_BIN/pgbench"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

sql() { "$PG_BIN/psql" -X -At -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

msg "instance $I (port $PORT), $ROWS rows, ${SECONDS_PER_RUN}s per run, $CLIENTS clients"

sql <<-'EOF'
	CREATE SCHEMA IF NOT EXISTS bench;
	DO $$ BEGIN
	  IF NOT EXISTS (SELECT FROM pg_foreign_server WHERE srvname = 'iq_bench') THEN
	    CREATE SERVER iq_bench FOREIGN DATA WRAPPER iq_fdw;
	  END IF;
	END $$;
	DROP FOREIGN TABLE IF EXISTS bench.order_count, bench.customer;
	IMPORT FOREIGN SCHEMA stores FROM SERVER iq_bench INTO bench;
	-- ranges: invalid_utf8 'error' lets the store answer lower bounds,
	-- ORDER BY key and LIMIT (README, "Keys and values that are not UTF-8")
	DROP FOREIGN TABLE IF EXISTS bench.order_count_ordered;
	CREATE FOREIGN TABLE bench.order_count_ordered (key text COLLATE "C", count bigint)
	  SERVER iq_bench OPTIONS (store 'order-count', invalid_utf8 'error');
EOF

have=$(sql -c "SELECT count(*) FROM bench.order_count WHERE key >= 'b:' AND key < 'b;'")
if ((have < ROWS)); then
	msg "producing $ROWS orders (have $have)"
	awk -v n="$ROWS" 'BEGIN { for (i = 0; i < n; i++) printf "b:%07d--food\n", i }' |
		"$IQ_REPO/scripts/kafka" produce order
	deadline=$((SECONDS + 900))
	until have=$(sql -c "SELECT count(*) FROM bench.order_count WHERE key >= 'b:' AND key < 'b;'") &&
		((have >= ROWS)); do
		((SECONDS < deadline)) || die "the store holds $have of $ROWS bench keys after 15 minutes"
		sleep 2
	done
fi

msg "copying the store into bench.heap"
sql <<-'EOF'
	DROP TABLE IF EXISTS bench.heap;
	CREATE TABLE bench.heap (key text COLLATE "C" PRIMARY KEY, count bigint);
	INSERT INTO bench.heap SELECT key, count FROM bench.order_count;
	VACUUM ANALYZE bench.heap;
EOF
total=$(sql -c "SELECT count(*) FROM bench.heap")

# 200 keys owned by this instance, and 200 owned by others
keys() {
	sql -c "SELECT string_agg(quote_literal(key), ',') FROM (
	          SELECT key FROM bench.heap WHERE key >= 'b:' AND key < 'b:0002000'
	             AND (iq_key_owner('order-count', key)).is_local = $1
	           ORDER BY key LIMIT 200) s"
}
local_keys=$(keys true)
remote_keys=$(keys false)
[[ -n $local_keys ]] || die "instance $I owns no bench key (does it hold partitions? SELECT * FROM iq_worker())"
[[ -n $remote_keys ]] || die "every bench key is owned by instance $I: start more instances"

script() { # script NAME TABLE KEYS
	printf '\\set r random(1, 200)\nSELECT count FROM %s WHERE key = (ARRAY[%s])[:r];\n' "$2" "$3" >"$WORK/$1.sql"
}
script fdw_local bench.order_count "$local_keys"
script heap_local bench.heap "$local_keys"
script fdw_remote bench.order_count "$remote_keys"
script heap_remote bench.heap "$remote_keys"
# ranges: start keys spread over the bench keys, each with 1,000 after it
starts=$(sql -c "SELECT string_agg(quote_literal(key), ',') FROM (
          SELECT key FROM bench.heap WHERE key >= 'b:' AND key < 'b:' || lpad(greatest($ROWS - 1000, 1)::text, 7, '0')
           ORDER BY md5(key) LIMIT 200) s")
range_script() { # range_script NAME TABLE LIMIT [DESC]
	printf '\\set r random(1, %d)\nSELECT key, count FROM %s WHERE key %s (ARRAY[%s])[:r] ORDER BY key %s LIMIT %d;\n' \
		"$(tr -cd , <<<"$starts," | wc -c)" "$2" "$([[ -n ${4:-} ]] && echo '<=' || echo '>=')" \
		"$starts" "${4:-}" "$3" >"$WORK/$1.sql"
}
range_script fdw_range bench.order_count_ordered 1000
range_script heap_range bench.heap 1000
range_script fdw_range10 bench.order_count_ordered 10
range_script heap_range10 bench.heap 10
# backward pages: the stores read backwards (ORDER BY key DESC)
range_script fdw_desc10 bench.order_count_ordered 10 DESC
range_script heap_desc10 bench.heap 10 DESC
# every row reaches the executor and is thrown away by OFFSET: the same
# work for both sides, and no aggregate to push down
printf 'SELECT * FROM bench.order_count OFFSET %d;\n' "$total" >"$WORK/fdw_scan.sql"
printf 'SELECT * FROM bench.heap OFFSET %d;\n' "$total" >"$WORK/heap_scan.sql"

tps() { # tps SCRIPT CLIENTS SECONDS [PGOPTIONS...]
	# the store is read by one backend: so is the heap table
	PGOPTIONS="-c max_parallel_workers_per_gather=0 ${4:-}" \
		"$PGB" -n -M prepared -h 127.0.0.1 -p "$PORT" -U postgres -c "$2" -j "$2" -T "$3" \
		-f "$WORK/$1.sql" postgres 2>&1 | tee "$WORK/$1.log" |
		sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

# Rounds of all runs, one after the other, so that a busy neighbour slows
# both sides of a ratio alike; the median ratio of the rounds is reported.
declare -A R
ROUNDS=${BENCH_ROUNDS:-3}
ALL_RUNS="heap_local fdw_local fdw_local_socket heap_remote fdw_remote heap_range fdw_range heap_range10 fdw_range10 heap_desc10 fdw_desc10 heap_scan fdw_scan"
RUNS=${BENCH_RUNS:-$ALL_RUNS}
for ((round = 1; round <= ROUNDS; round++)); do
	for s in $RUNS; do
		# max_lag set: no answer from the value cache, every lookup asks the worker
		opts= clients=$CLIENTS unit=tps
		[[ $s == *_socket ]] && opts="-c iq_fdw.max_lag=2147483647"
		[[ $s == *_scan ]] && clients=1 unit=scans/s
		v=$(tps "${s%_socket}" "$clients" "$SECONDS_PER_RUN" "$opts")
		[[ -n $v ]] || { cat "$WORK/${s%_socket}.log" >&2; die "pgbench $s failed"; }
		R[$s]+="$v "
		[[ -z ${BENCH_RESULTS:-} ]] || echo "$s $v" >>"$BENCH_RESULTS"
		msg "round $round $s: $v $unit"
	done
done
[[ $RUNS == "$ALL_RUNS" ]] || exit 0
tls=off
[[ -n $(sql -c "SHOW iq_fdw.ssl_cert_file" 2>/dev/null) ]] && tls=on

# median LIST: of the rounds; median_ratio A B: median over rounds of A/B
median() { printf '%s\n' $1 | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
median_ratio() {
	paste <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ print $1 / $2 }' | sort -g |
		awk '{ v[NR] = $1 } END { printf "%.2f", v[int((NR + 1) / 2)] }'
}
rows_s() { awk -v t="$1" -v n="$total" 'BEGIN { printf "%.0f", t * n }'; }
tps_m() { printf '%.0f' "$(median "${R[$1]}")"; }

cat <<EOF

### iq_fdw lookups and scans ($(date -u +%Y-%m-%d), $(nproc) CPUs, instance $I of $(recorded_instances), TLS $tls, $CLIENTS clients, $ROUNDS rounds of ${SECONDS_PER_RUN}s, pgbench -M prepared; medians)

| query | iq_fdw | heap table | ratio | goal |
|---|---|---|---|---|
| key = :k, keys owned by this instance | $(tps_m fdw_local) tps | $(tps_m heap_local) tps | $(median_ratio "${R[fdw_local]}" "${R[heap_local]}") | >= 0.67 |
| the same, value cache bypassed (every lookup asks the worker) | $(tps_m fdw_local_socket) tps | $(tps_m heap_local) tps | $(median_ratio "${R[fdw_local_socket]}" "${R[heap_local]}") | (reported) |
| key = :k, keys owned by other instances | $(tps_m fdw_remote) tps | $(tps_m heap_remote) tps | $(median_ratio "${R[fdw_remote]}" "${R[heap_remote]}") | >= 0.33 |
| key >= :k ORDER BY key LIMIT 1000 | $(tps_m fdw_range) tps | $(tps_m heap_range) tps | $(median_ratio "${R[fdw_range]}" "${R[heap_range]}") | >= 0.33 |
| key >= :k ORDER BY key LIMIT 10 | $(tps_m fdw_range10) tps | $(tps_m heap_range10) tps | $(median_ratio "${R[fdw_range10]}" "${R[heap_range10]}") | >= 0.5 |
| key <= :k ORDER BY key DESC LIMIT 10 | $(tps_m fdw_desc10) tps | $(tps_m heap_desc10) tps | $(median_ratio "${R[fdw_desc10]}" "${R[heap_desc10]}") | (reported) |
| SELECT * OFFSET $total: all $total rows | $(rows_s "$(median "${R[fdw_scan]}")") rows/s | $(rows_s "$(median "${R[heap_scan]}")") rows/s | $(median_ratio "${R[fdw_scan]}" "${R[heap_scan]}") | >= 0.33 |
EOF
for s in $RUNS; do
	case $s in
	*_scan) echo "RESULT $s $(rows_s "$(median "${R[$s]}")") rows/s" ;;
	*) echo "RESULT $s $(tps_m "$s") tps" ;;
	esac
done

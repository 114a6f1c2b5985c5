# bench/compare_lib.sh: what the scripts that compare two setups in one
# session share (bench/tls_cost.sh, bench/engine_cost.sh): waiting for a
# restarted cluster, and the min / median / max of the figures each run
# added to $COMPARE_WORK/<setup> ("name value" lines). Sourced, never run.

# compare_wait_for WHAT SECONDS CMD...: until CMD prints something
compare_wait_for() {
	local what=$1 deadline=$((SECONDS + $2))
	shift 2
	until [[ -n $("$@" 2>/dev/null) ]]; do
		((SECONDS < deadline)) || die "no $what after $2 s"
		sleep 1
	done
}

# compare_wait_running: every worker holding partitions, every partition
# caught up (or fdw_lookup.sh would find the store short and produce
# again). Asked of iq_stats, whose shape every release shares, so that a
# build older than the installed SQL can be measured too.
compare_wait_running() {
	local i
	for i in $(seq 1 "$(recorded_instances)"); do
		compare_wait_for "instance $i's worker holding partitions" 180 \
			"$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$(pg_port "$i")" -U postgres -c \
			"SELECT 1 FROM iq_stats() WHERE state <> 'restoring' LIMIT 1"
	done
	compare_wait_for "partition caught up everywhere" 300 \
		"$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$(pg_port 1)" -U postgres -c \
		"SELECT 1 WHERE (SELECT count(*) FROM iq_freshness() WHERE lag = 0) = 3"
}

# compare_stats SETUP NAME: "min median max" of NAME's figures in SETUP
compare_stats() {
	awk -v n="$2" '$1 == n { print $2 }' "$COMPARE_WORK/$1" | sort -g |
		awk '{ v[NR] = $1 } END { printf "%.0f %.0f %.0f", v[1], v[int((NR + 1) / 2)], v[NR] }'
}

# compare_ratio SETUP A B: the median of A over the median of B, in SETUP
compare_ratio() {
	local a b
	read -r _ a _ <<<"$(compare_stats "$1" "$2")"
	read -r _ b _ <<<"$(compare_stats "$1" "$3")"
	awk -v x="$a" -v y="$b" 'BEGIN { printf "%.2f", x / y }'
}

# compare_rows X Y "NAME|label"...: a markdown row per figure, X then Y,
# and the ratio of the medians (Y / X)
compare_rows() {
	local x=$1 y=$2 row name a b c d e f
	shift 2
	for row in "$@"; do
		name=${row%%|*}
		read -r a b c <<<"$(compare_stats "$x" "$name")"
		read -r d e f <<<"$(compare_stats "$y" "$name")"
		printf '| %s | %s / **%s** / %s | %s / **%s** / %s | %s |\n' "${row#*|}" "$a" "$b" "$c" "$d" "$e" "$f" \
			"$(awk -v x="$e" -v y="$b" 'BEGIN { printf "%.2f", x / y }')"
	done
}

# bench/private_run.sh: sourced by bench/ingest.sh and bench/memory.sh, with
# RUN_PREFIX set. Instance 1's worker is pointed at topics and an application
# id of this run alone (ALTER SYSTEM, reset by reset_settings), so the
# cluster's own topics and consumer group are not touched.
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
HERE=$IQ_REPO/scripts
RUN=$RUN_PREFIX$(date +%s)
APP=$RUN-app
CT=$RUN-customer
OT=$RUN-order
I=1
PORT=$(pg_port $I)
WORK=$(mktemp -d)
RUN_SETTINGS=()

q() { "$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c "$1"; }

# kp TOPIC: "key--value" lines from stdin; murmur2_random is librdkafka's
# Java-compatible partitioner for keyed records
kp() { kcat -b "$(bootstrap)" -P -K -- -X partitioner=murmur2_random -X linger.ms=20 -t "$1"; }

create_run_topics() {
	"$HERE/kafka" create-topic "$CT" 3 cleanup.policy=compact
	"$HERE/kafka" create-topic "$OT" 3
}

# fill_run_topics ORDERS KEYS DIR: ORDERS orders over KEYS keys ("uN"), the
# same every run (seeded), and a customer for every tenth key, produced to
# the run's topics (their files written in DIR)
fill_run_topics() {
	python3 - "$1" "$2" "$3" <<'EOF'
import random, sys
n, k, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rnd = random.Random(7)
with open(f"{d}/orders", "w") as f:
    for i in range(n):
        f.write(f"u{rnd.randrange(k)}--dish{i % 97}\n")
with open(f"{d}/customers", "w") as f:
    for i in range(0, k, 10):
        f.write(f"u{i}--name{i}\n")
EOF
	kp "$CT" <"$3/customers"
	kp "$OT" <"$3/orders"
}

# use_run_settings [SETTING=VALUE...]: this run's topics and group, and any
# other iq_fdw setting; they take effect on the caller's pg_reload_conf()
use_run_settings() {
	local kv
	for kv in application_id="$APP" customer_topic="$CT" order_topic="$OT" "$@"; do
		q "alter system set iq_fdw.${kv%%=*} = '${kv#*=}'" >/dev/null
		RUN_SETTINGS+=("${kv%%=*}")
	done
}

reset_settings() {
	local s
	for s in "${RUN_SETTINGS[@]}"; do
		q "alter system reset iq_fdw.$s" >/dev/null
	done
	q "select pg_reload_conf()" >/dev/null
}

# build_baseline_consumer: prints the path of bench/baseline_consumer.c's
# binary, compiled into bench/.build when missing or older than its source
build_baseline_consumer() {
	local src=$IQ_REPO/bench/baseline_consumer.c bin=$IQ_REPO/bench/.build/baseline_consumer
	if [[ ! -x $bin || $src -nt $bin ]]; then
		mkdir -p "${bin%/*}"
		cc -O2 -Wall -Wextra "$src" -o "$bin" -lrdkafka >&2 || die "could not build $src (librdkafka-dev)"
	fi
	echo "$bin"
}

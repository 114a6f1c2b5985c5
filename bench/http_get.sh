#!/usr/bin/env bash
# bench/http_get.sh: wrk against GET /stores/order-count/get/:k on instance 1,
# for keys it owns (answered from its RocksDB) and for keys another instance
# owns (forwarded over a peer stream, or a reused HTTPS connection with TLS
# on), requests/s and p99.
#
#   IQ_PORT_OFFSET=... bench/http_get.sh [seconds] [connections] [keys]
#
# Needs a running cluster (scripts/cluster up).  Produces the keys
# bench-00000.. once to the order topic (a count of 1 each, or more when run
# again), waits until instance 1 serves them, then runs wrk twice.
#
# On a cluster started with --tls (scripts/cluster up --tls) it speaks
# https, trusting the cluster's CA, with the bearer token (http_auth =
# required): wrk's connections are kept alive, so what TLS costs here is
# mostly its records, a handshake once per connection; forwarded gets go to
# the owner over TLS too. Each result line says which it was.
# For bench/run it also prints "RESULT http_local|http_remote <req/s> requests/s"
# and "RESULT http_local_p99|http_remote_p99 <ms> ms".
#
# Measured 2026-11-25 on the 2-CPU development box, wrk on the same box,
# 64 connections, the 3-instance development cluster (load average 3.3):
#   local gets      53,683, 54,666 and 55,194 req/s, p99 17 to 24 ms;
#                   77,370, 53,861 and 61,398 on a fresh scripts/demo
#                   cluster (load average 1.3 to 3.6)
#   forwarded gets  10,351 to 11,713 req/s, p99 12 to 37 ms (one reused
#                   connection per transfer slot, no new TCP connection
#                   per request)
# 2026-12-07, forwarded gets over pooled iq-wire/1 streams (no TLS): 26,477
# and 25,923 req/s against 13,254 and 14,626 with a curl transfer each,
# local gets 58,005 to 67,075 in the same session (bench/README.md).
# With 4 server threads instead of one per CPU (the default before), the
# same box gave a fifth fewer local gets (56,649 and 46,767 against 66,869
# and 55,223 with 2, alternated in one session).  Earlier builds copied the
# whole ownership table twice and built a JSON tree per get: 41,700 req/s.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"
SECONDS_RUN=${1:-10}
CONNS=${2:-64}
NKEYS=${3:-3000}
THREADS=${WRK_THREADS:-2}
PORT=$(http_port 1)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

command -v wrk >/dev/null || die "wrk is not installed (apt-get install wrk)"
MODE=http BASE=http://127.0.0.1:$PORT CA= AUTH=()
if tls_on; then
	MODE=https BASE=https://127.0.0.1:$PORT CA=$(tls_dir)/ca.crt
	AUTH=(-H "Authorization: Bearer $(<"$(tls_dir)/token")")
fi
get() { curl -s ${CA:+--cacert "$CA"} "${AUTH[@]}" "$BASE$1"; }
get /metadata >/dev/null || die "instance 1 does not answer on $BASE"

last=$(printf 'bench-%05d' $((NKEYS - 1)))
if [[ $(get "/stores/order-count/get/$last") == '{"response":null}' ]]; then
	msg "producing $NKEYS keys to the order topic"
	for ((k = 0; k < NKEYS; k++)); do printf 'bench-%05d--bench\n' "$k"; done |
		"$HERE/../scripts/kafka" produce order >/dev/null
	for _ in $(seq 1 120); do
		[[ $(get "/stores/order-count/get/$last") != '{"response":null}' ]] && break
		sleep 1
	done
fi

# split the keys by owner, as instance 1 sees it
python3 - "$PORT" "$NKEYS" "$WORK" "$BASE" "$CA" "${AUTH[@]}" <<'PY'
import json, ssl, sys, urllib.request
port, n, work, base, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
headers = dict([sys.argv[7].split(": ", 1)]) if len(sys.argv) > 7 else {}
context = ssl.create_default_context(cafile=ca) if ca else None
local, remote = open(f"{work}/local", "w"), open(f"{work}/remote", "w")
for k in range(n):
    key = f"bench-{k:05d}"
    req = urllib.request.Request(f"{base}/metadata/stores/order-count/key/{key}", headers=headers)
    with urllib.request.urlopen(req, context=context) as r:
        owner = json.load(r)["result"]["port"]
    (local if owner == port else remote).write(key + "\n")
PY
msg "$(wc -l <"$WORK/local") keys owned by instance 1, $(wc -l <"$WORK/remote") by others"

for kind in local remote; do
	out=$(KEYFILE="$WORK/$kind" wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_RUN}s" --latency \
		"${AUTH[@]}" -s "$HERE/http_get.lua" "$BASE")
	line=$(grep RESULT <<<"$out" | sed 's/^RESULT //')
	echo "$kind ($MODE): $line"
	# for bench/run: requests/s and p99 of this kind
	read -r _ rps _ _ _ _ p99 _ <<<"$line"
	echo "RESULT http_$kind $rps requests/s"
	echo "RESULT http_${kind}_p99 $p99 ms"
done

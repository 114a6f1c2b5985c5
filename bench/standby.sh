#!/usr/bin/env bash
# bench/standby.sh: bench/standby.py on a cluster of its own: a fresh
# loopback cluster of three instances (scripts/cluster up --fresh) at the
# caller's IQ_PORT_OFFSET, torn down at the end whatever happens.
#
#   IQ_PORT_OFFSET=N IQ_LIB_DIR=$PWD bench/standby.sh [KEYS]   (default 1000000)
#
# Prints bench/standby.py's table: standby_replicas 0 against 1, side by
# side: ingest, memory and disk, the first answer after an owner's
# immediate stop (read_from = owner_or_standby and owner), the records the
# new owner restored against the partition's changelog.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$HERE/../scripts/lib.sh"

[[ -n ${IQ_PORT_OFFSET:-} && $IQ_PORT_OFFSET != 0 ]] ||
	die "set IQ_PORT_OFFSET to a cluster of this benchmark's own (not 0, the development cluster)"
trap '"$IQ_REPO/scripts/cluster" down >/dev/null 2>&1 || true' EXIT
"$IQ_REPO/scripts/cluster" up --fresh --instances 3 >/dev/null
/usr/bin/python3 "$HERE/standby.py" "$@"

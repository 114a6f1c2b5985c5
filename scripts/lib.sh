# scripts/lib.sh: what scripts/{kafka,instance,cluster,test,demo} share.
# Paths, the port scheme, the PostgreSQL user, and installing what is missing.
# Sourced, never run.
#
# Environment:
#   IQ_PORT_OFFSET  added to every port (default 0: broker 9092, PostgreSQL
#                   5432+i, HTTP (4+i)*1000+400 for instance i)
#   IQ_HOME         all cluster state (default <repo>/.cluster, or
#                   <repo>/.cluster-<offset> when the offset is not 0)
#   IQ_LIB_DIR      a build tree to load iq_fdw.so from (dynamic_library_path)
#   IQ_NO_PRELOAD   1: start PostgreSQL without the extension (debugging only)
#
# What scripts/hosts sets to run the same scripts on hosts of their own (a
# network namespace each); unset, everything is on 127.0.0.1 as above:
#   IQ_NETNS        the network namespace scripts/kafka and scripts/instance
#                   start their processes in, and probe them from
#   IQ_LISTEN_ADDR  the address the broker and instances listen on (127.0.0.1)
#   IQ_FIXED_PORTS  1: the same ports on every host (broker 9092, PostgreSQL
#                   5432, HTTP 5400), IQ_PORT_OFFSET ignored
#   IQ_BOOTSTRAP    the broker as the instances and tools reach it (addr:port)
#   IQ_SOCKET_PER_INSTANCE  1: instance i's Unix socket in IQ_HOME/run/i

IQ_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IQ_PROG=$(basename "$0")
IQ_PG_USER=iqfdw

# what we create, the PostgreSQL user must be able to traverse
umask 022

msg() { printf '%s: %s\n' "$IQ_PROG" "$*" >&2; }
die() { progress_end; msg "error: $*"; exit 1; }

# ---- progress while waiting -----------------------------------------------
# progress TEXT: what a wait is waiting for and how far it is, on stdout: one
# line rewritten in place when stdout is a terminal; otherwise (CI logs) a
# line at the first call and then every IQ_PROGRESS_EVERY (5) seconds.
# progress_end [TEXT]: the wait is over: clear the line in place, then print
# TEXT if given.
IQ_PROGRESS_NEXT=0
IQ_PROGRESS_SHOWN=
progress() {
	if [[ -t 1 ]]; then
		# cut to the terminal's width: a line that wraps is not rewritten
		local line="$IQ_PROG: $*" cols
		cols=$(tput cols 2>/dev/null) || cols=0
		((cols > 1 && ${#line} >= cols)) && line=${line:0:cols-1}
		printf '\r\033[K%s' "$line"
		IQ_PROGRESS_SHOWN=1
	elif ((SECONDS >= IQ_PROGRESS_NEXT)); then
		printf '%s: %s\n' "$IQ_PROG" "$*"
		IQ_PROGRESS_NEXT=$((SECONDS + ${IQ_PROGRESS_EVERY:-5}))
	fi
}
progress_end() {
	if [[ -n $IQ_PROGRESS_SHOWN ]]; then
		printf '\r\033[K'
		IQ_PROGRESS_SHOWN=
	fi
	IQ_PROGRESS_NEXT=0
	(($# == 0)) || printf '%s: %s\n' "$IQ_PROG" "$*"
}
# thousands N: 12000 as 12,000
thousands() {
	local n=$1 out=
	while ((${#n} > 3)); do
		out=,${n: -3}$out
		n=${n:0:${#n}-3}
	done
	echo "$n$out"
}

# ---- versions: what this Debian release ships ----------------------------

# debian_release: the codename of the Debian this runs on (bookworm, trixie)
debian_release() { (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}"); }

# release_versions RELEASE: "PG JAVA CLANG", the PostgreSQL major version, the
# Java runtime's major and clang's major that Debian RELEASE ships; the one
# place a new Debian release is taught to the scripts
release_versions() {
	case $1 in
	bookworm) echo "15 17 14" ;;
	trixie) echo "17 21 19" ;;
	*) return 1 ;;
	esac
}

IQ_RELEASE=$(debian_release)
read -r _iq_pg IQ_JAVA_MAJOR IQ_CLANG_MAJOR < <(release_versions "$IQ_RELEASE") ||
	die "unknown Debian release '$IQ_RELEASE' (/etc/os-release): teach release_versions in scripts/lib.sh"
# The PostgreSQL built against is the one pg_config names (the newest
# postgresql-server-dev-N installed); before any is installed, the release's.
export PG_CONFIG=${PG_CONFIG:-/usr/bin/pg_config}
if IQ_PG_MAJOR=$("$PG_CONFIG" --version 2>/dev/null) && [[ $IQ_PG_MAJOR =~ ^PostgreSQL\ ([0-9]+) ]]; then
	IQ_PG_MAJOR=${BASH_REMATCH[1]}
	PG_BIN=$("$PG_CONFIG" --bindir)
else
	IQ_PG_MAJOR=$_iq_pg
	PG_BIN=
fi
# libpq-dev's pg_config (no server package yet) names /usr/bin: Debian's layout
[[ -x ${PG_BIN:-}/pg_ctl ]] || PG_BIN=/usr/lib/postgresql/$IQ_PG_MAJOR/bin
export PG_BIN IQ_PG_MAJOR
unset _iq_pg

IQ_PORT_OFFSET=${IQ_PORT_OFFSET:-0}
[[ $IQ_PORT_OFFSET =~ ^[0-9]+$ ]] && ((IQ_PORT_OFFSET <= 50000)) ||
	die "IQ_PORT_OFFSET must be a number from 0 to 50000, not '$IQ_PORT_OFFSET'"
export IQ_PORT_OFFSET

# ---- ports ----------------------------------------------------------------

IQ_LISTEN_ADDR=${IQ_LISTEN_ADDR:-127.0.0.1}
# one host per process (scripts/hosts): no offsets, every host the same ports
fixed_ports() { [[ ${IQ_FIXED_PORTS:-0} == 1 ]]; }
port_offset() { if fixed_ports; then echo 0; else echo "$IQ_PORT_OFFSET"; fi; }

kafka_port() { echo $((9092 + $(port_offset))); }
controller_port() { echo $((9093 + $(port_offset))); }
pg_port() { if fixed_ports; then echo 5432; else echo $((5432 + $1 + IQ_PORT_OFFSET)); fi; }
http_port() { if fixed_ports; then echo 5400; else echo $(((4 + $1) * 1000 + 400 + IQ_PORT_OFFSET)); fi; }
bootstrap() { echo "${IQ_BOOTSTRAP:-$IQ_LISTEN_ADDR:$(kafka_port)}"; }

# in_ns CMD...: run CMD in IQ_NETNS when one is set (with its /etc/netns
# files: the hosts' names), else here
in_ns() {
	if [[ -n ${IQ_NETNS:-} ]]; then
		ip netns exec "$IQ_NETNS" "$@"
	else
		"$@"
	fi
}

# port_busy PORT: true when something accepts connections on the listen address's PORT
port_busy() { in_ns timeout 2 bash -c "exec 3<>/dev/tcp/$IQ_LISTEN_ADDR/$1" 2>/dev/null; }

# ---- the PostgreSQL user --------------------------------------------------

# PostgreSQL refuses to run as root: as root, instances run as $IQ_PG_USER.
is_root() { [[ $EUID -eq 0 ]]; }

ensure_pg_user() {
	is_root || return 0
	id -u "$IQ_PG_USER" >/dev/null 2>&1 && return 0
	useradd --system --user-group --no-create-home --home-dir /nonexistent \
		--shell /usr/sbin/nologin "$IQ_PG_USER" ||
		die "could not create the system user $IQ_PG_USER"
}

# as_pg CMD...: run CMD as the PostgreSQL user, from a directory it can
# read, in IQ_NETNS if set
as_pg() {
	if is_root; then
		(cd / && in_ns runuser -u "$IQ_PG_USER" -- "$@")
	else
		(cd / && in_ns "$@")
	fi
}

# pg_owns DIR...: hand directories to the PostgreSQL user
pg_owns() { if is_root; then chown "$IQ_PG_USER:$IQ_PG_USER" "$@"; fi; }

# ---- where state lives ----------------------------------------------------

# The repository, unless the PostgreSQL user cannot reach it (a clone under
# /root, say): then a directory of its own under /var/lib/iq_fdw.
iq_state_root() {
	if is_root && ! runuser -u "$IQ_PG_USER" -- test -x "$IQ_REPO" 2>/dev/null; then
		echo "/var/lib/iq_fdw/$(basename "$IQ_REPO")-$(printf %s "$IQ_REPO" | sha256sum | cut -c1-8)"
	else
		echo "$IQ_REPO"
	fi
}

ensure_pg_user
if [[ -z ${IQ_HOME:-} ]]; then
	IQ_HOME=$(iq_state_root)/.cluster
	((IQ_PORT_OFFSET == 0)) || IQ_HOME+="-$IQ_PORT_OFFSET"
fi
[[ $IQ_HOME == /* ]] || IQ_HOME=$PWD/$IQ_HOME
export IQ_HOME

KAFKA_DIR=$IQ_HOME/kafka
instance_dir() { echo "$IQ_HOME/pg/$1"; }
# socket_dir I: where instance I's Unix socket is (one directory for all,
# unless IQ_SOCKET_PER_INSTANCE=1)
socket_dir() {
	if [[ ${IQ_SOCKET_PER_INSTANCE:-0} == 1 ]]; then
		echo "$IQ_HOME/run/$1"
	else
		echo "$IQ_HOME/run"
	fi
}

# The instance numbers that exist under IQ_HOME, ascending.
existing_instances() {
	local d
	for d in "$IQ_HOME"/pg/*/; do
		d=${d%/}
		d=${d##*/}
		[[ $d =~ ^[0-9]+$ ]] && echo "$d"
	done | sort -n
}

# How many instances `up` started last (3 before the first `up`).
# TLS between the instances and on the seed's API (scripts/cluster up --tls):
# the certificates scripts/certs made, under tls_dir
tls_dir() { echo "$IQ_HOME/tls"; }
tls_on() { [[ -e $IQ_HOME/tls_on ]]; }

recorded_instances() {
	local n=3
	[[ -r $IQ_HOME/instances ]] && n=$(<"$IQ_HOME/instances")
	echo "$n"
}

# ---- the seed's data ------------------------------------------------------

# The records the seed's README produces, as "key--value" lines (scripts/kafka
# produce); the order "--pasta" has an empty key. scripts/demo and
# scripts/package_test load them.
IQ_SEED_CUSTOMERS=$'1--john\n2--adam\n3--daniel\n4--james\n5--jack\n6--mathew\n7--will\n'
IQ_SEED_ORDERS=$'1--spagety\n2--pizza\n--pasta\n'

# ---- installing what is missing --------------------------------------------

# What building, running and testing need; `scripts/test` and `scripts/demo`
# install all of it, `scripts/cluster up` only what running needs.
# set_packages PG JAVA CLANG: the lists for these versions (release_versions)
set_packages() {
	IQ_JAVA_PACKAGE=openjdk-$2-jre-headless
	# libicu-dev: PostgreSQL's utils/pg_locale.h includes ICU's headers
	IQ_BUILD_PACKAGES=(build-essential pkg-config "postgresql-server-dev-$1" libicu-dev
		librdkafka-dev librocksdb-dev libcurl4-openssl-dev libmicrohttpd-dev libgnutls28-dev libjansson-dev
		zlib1g-dev)
	IQ_RUN_PACKAGES=("postgresql-$1" kcat "$IQ_JAVA_PACKAGE" maven curl openssl)
	# clang and its runtimes: the fuzz targets (make fuzz, fuzz/run); wrk: bench/
	IQ_TEST_PACKAGES=(wrk clang "libclang-rt-$3-dev" tcpdump)
	# bench/run: gnuplot draws its chart, wrk the HTTP gets, pgbench (in
	# postgresql) the lookups, kcat and librdkafka-dev (build) the baselines
	IQ_BENCH_PACKAGES=(gnuplot-nox wrk kcat librdkafka-dev)
	# scripts/hosts: namespaces and veths, the fault rules, the fault proxy;
	# faults/ (scripts/faults, test/test_faults.py): its producer and query loops;
	# test/test_metrics.py: Prometheus' text parser (with /usr/bin/python3 when
	# pytest's python lacks it); scripts/test installs these always, and the
	# root's list below takes them too
	IQ_HOSTS_PACKAGES=(iproute2 nftables python3 python3-psycopg2 python3-confluent-kafka
		python3-prometheus-client)
	# a root of scripts/root: building, running and the suite but the fuzz
	# targets (they run on the host: the codec is the same everywhere)
	IQ_ROOT_PACKAGES=("${IQ_BUILD_PACKAGES[@]}" "${IQ_RUN_PACKAGES[@]}" python3 python3-pytest
		procps ca-certificates tcpdump "${IQ_HOSTS_PACKAGES[@]}")
}
set_packages "$IQ_PG_MAJOR" "$IQ_JAVA_MAJOR" "$IQ_CLANG_MAJOR"

_iq_apt_updated=
apt_install() {
	export DEBIAN_FRONTEND=noninteractive
	if [[ -z $_iq_apt_updated ]]; then
		apt-get update -qq >/dev/null || die "apt-get update failed"
		_iq_apt_updated=1
	fi
	apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
		die "apt-get install $* failed"
}

# ensure_packages PKG...: install the Debian packages that are not installed
ensure_packages() {
	local p missing=()
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
	done
	((${#missing[@]})) || return 0
	is_root || die "missing Debian packages: ${missing[*]} (sudo apt-get install ${missing[*]})"
	msg "installing ${missing[*]}"
	if [[ " ${missing[*]} " == *" postgresql-$IQ_PG_MAJOR "* ]]; then
		# No stray 'main' cluster on 5432: our instances are all we want.
		apt_install postgresql-common
		sed -i 's/^#\?\s*create_main_cluster\b.*/create_main_cluster = false/' \
			/etc/postgresql-common/createcluster.conf
	fi
	apt_install "${missing[@]}"
}

# ensure_kafka_jars: kafka/lib holds what kafka/pom.xml names
ensure_kafka_jars() {
	local lib=$IQ_REPO/kafka/lib sum
	sum=$(sha256sum "$IQ_REPO/kafka/pom.xml" | cut -d' ' -f1)
	[[ -r $lib/.pom.sha256 && $(<"$lib/.pom.sha256") == "$sum" ]] && return 0
	ensure_packages "$IQ_JAVA_PACKAGE" maven
	msg "fetching the Kafka jars from Maven Central (kafka/pom.xml)"
	rm -rf "$lib"
	local log
	log=$(mktemp)
	if ! (cd "$IQ_REPO/kafka" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies) >"$log" 2>&1; then
		tail -n 30 "$log" >&2
		rm -f "$log"
		die "mvn could not fetch the Kafka jars"
	fi
	rm -f "$log"
	echo "$sum" >"$lib/.pom.sha256"
}

# python_with_pytest: print a python3 that can import pytest, installing it if need be
python_with_pytest() {
	local py
	for py in python3 /usr/bin/python3; do
		if command -v "$py" >/dev/null && "$py" -c 'import pytest' 2>/dev/null; then
			command -v "$py"
			return 0
		fi
	done
	ensure_packages python3 python3-pytest
	echo /usr/bin/python3
}

# build_extension: make and make install the extension from this tree
build_extension() {
	ensure_packages "${IQ_BUILD_PACKAGES[@]}" "postgresql-$IQ_PG_MAJOR"
	msg "building iq_fdw"
	make -C "$IQ_REPO" -s WERROR=1 PG_CONFIG="$PG_CONFIG" || die "the build failed"
	make -C "$IQ_REPO" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || die "make install failed"
}

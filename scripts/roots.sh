# scripts/roots.sh: root file systems of Debian suites, made by debootstrap
# from Debian's own packages and kept under IQ_ROOTS so that a rerun finds
# them. Sourced after lib.sh, never run; needs root.
#
#   ensure_root SUITE [PKG...]   print the root of SUITE, made if missing,
#                                with PKG... installed if missing
#   in_root ROOT CMD...          run CMD chrooted in ROOT
#
# IQ_ROOTS (default /var/cache/iq_fdw/roots), IQ_DEBIAN_MIRROR.

IQ_ROOTS=${IQ_ROOTS:-/var/cache/iq_fdw/roots}
IQ_DEBIAN_MIRROR=${IQ_DEBIAN_MIRROR:-http://deb.debian.org/debian}

# ensure_root SUITE [PKG...]: the root of SUITE with PKG... installed.
# debootstrap writes into SUITE.tmp, renamed when complete: a root that is
# there is whole, and an interrupted run starts over.
ensure_root() {
	local suite=$1 root=$IQ_ROOTS/$1
	shift
	is_root || die "making a root file system needs root"
	if [[ ! -e $root/.iq-root-complete ]]; then
		ensure_packages debootstrap
		mkdir -p "$IQ_ROOTS"
		rm -rf "$root.tmp"
		msg "debootstrap $suite into $root (a few minutes; log $IQ_ROOTS/$suite.log)"
		debootstrap --variant=minbase "$suite" "$root.tmp" "$IQ_DEBIAN_MIRROR" \
			>"$IQ_ROOTS/$suite.log" 2>&1 || die "debootstrap $suite failed; see $IQ_ROOTS/$suite.log"
		root_sources "$suite" >"$root.tmp/etc/apt/sources.list"
		touch "$root.tmp/.iq-root-complete"
		mv "$root.tmp" "$root"
	fi
	local p missing=()
	for p in "$@"; do
		in_root "$root" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' ||
			missing+=("$p")
	done
	if ((${#missing[@]})); then
		msg "installing ${missing[*]} in $root"
		in_root "$root" apt-get update -qq >/dev/null || die "apt-get update failed in $root"
		in_root "$root" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends "${missing[@]}" >/dev/null ||
			die "apt-get install ${missing[*]} failed in $root"
	fi
	echo "$root"
}

# root_sources SUITE: the root's apt sources: a release as a machine runs it,
# with its point-release updates and security fixes (packages built on an
# up-to-date host depend on them: pg_buildext's minor_versions)
root_sources() {
	echo "deb $IQ_DEBIAN_MIRROR $1 main"
	case $1 in
	sid | unstable | experimental) ;;
	*)
		echo "deb $IQ_DEBIAN_MIRROR $1-updates main"
		echo "deb http://security.debian.org/debian-security $1-security main"
		;;
	esac
}

# in_root ROOT CMD...: CMD chrooted in ROOT, with /proc and /dev/shm (POSIX
# shared memory, which PostgreSQL uses) mounted in a mount namespace of its
# own: the mounts go when its last process ends, and none leaks to the host.
# The network is the host's, so the broker on the host is reachable.
in_root() {
	local root=$1
	shift
	unshare --mount --propagation private -- bash -c '
		root=$1; shift
		mount -t proc proc "$root/proc" &&
			mount -t tmpfs -o mode=1777 shm "$root/dev/shm" &&
			exec chroot "$root" "$@"' in_root "$root" "$@"
}

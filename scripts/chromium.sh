#!/usr/bin/env bash
# Chromium for browser-based tests (PDF rendering, UI checks).
#
# Usage:
#   scripts/chromium.sh path   print the chromium binary path, installing the
#                              Debian "chromium" package first when missing (root only)
set -euo pipefail

prog=$(basename "$0")

die() {
	echo "$prog: $*" >&2
	exit 1
}

# apt_install PKG...: install Debian packages (root only), without starting
# their services.
apt_install() {
	if [[ $EUID -ne 0 ]]; then
		die "missing $*; install as root with: apt-get install -y --no-install-recommends $*"
	fi
	echo "$prog: installing $* with apt-get" >&2
	(
		export DEBIAN_FRONTEND=noninteractive
		policy=/usr/sbin/policy-rc.d
		if [[ ! -e $policy ]]; then
			# Keep package scripts from starting system-wide services.
			trap 'rm -f "$policy"' EXIT
			printf '#!/bin/sh\nexit 101\n' >"$policy"
			chmod 755 "$policy"
		fi
		apt-get -o DPkg::Lock::Timeout=300 -q update >&2
		apt-get -o DPkg::Lock::Timeout=300 -q install -y --no-install-recommends "$@" >&2
	)
}

cmd_path() {
	local bin
	if ! bin=$(command -v chromium); then
		apt_install chromium
		bin=$(command -v chromium) || die "chromium not found after installing it"
	fi
	echo "$bin"
}

case ${1:-} in
path) cmd_path ;;
*)
	echo "usage: $prog path" >&2
	exit 2
	;;
esac

#!/usr/bin/env bash
# Chromium for browser-based tests (PDF rendering, UI checks).
#
# Usage:
#   scripts/chromium.sh path   print the chromium binary path, installing the
#                              Debian "chromium" package first when missing (root only)
set -euo pipefail

prog=$(basename "$0")
# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

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

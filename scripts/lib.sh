# Shell helpers shared by the service scripts; source it after setting $prog.
# shellcheck shell=bash
# shellcheck disable=SC2154 # prog is set by the script that sources this file

die() {
	echo "$prog: $*" >&2
	exit 1
}

info() {
	echo "$prog: $*" >&2
}

# apt_install PKG...: install Debian packages (root only), without starting
# their services.
apt_install() {
	if [[ $EUID -ne 0 ]]; then
		die "missing $*; install as root with: apt-get install -y --no-install-recommends $*"
	fi
	info "installing $* with apt-get"
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

# port_free PORT: true when nothing listens on 127.0.0.1:PORT.
port_free() {
	local port=$1
	if command -v python3 >/dev/null 2>&1; then
		python3 - "$port" <<'EOF' 2>/dev/null
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
EOF
	elif (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		return 1
	fi
}

# free_port: print a currently unused TCP port on 127.0.0.1.
free_port() {
	local port i
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
		return
	fi
	for ((i = 0; i < 100; i++)); do
		port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
		if port_free "$port"; then
			echo "$port"
			return
		fi
	done
	die "no free TCP port found"
}

#!/usr/bin/env bash
# Local throwaway Redis server for development and tests.
#
# Usage:
#   scripts/redis.sh start DIR   start redis-server on a free 127.0.0.1 port, without
#                                persistence; print redis://127.0.0.1:PORT/0 as last
#                                stdout line (also written to DIR/redis.url)
#   scripts/redis.sh stop DIR    stop it (no error if not running)
#
# DIR holds redis.pid, redis.log and redis.url. When redis-server is missing it
# is installed with apt-get (root only).
set -euo pipefail

prog=$(basename "$0")
# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat >&2 <<EOF
usage: $prog start DIR
       $prog stop DIR
EOF
	exit 2
}

# redis_ping PORT: true when the server on PORT answers PONG.
redis_ping() {
	local port=$1 reply
	if command -v redis-cli >/dev/null 2>&1; then
		reply=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) || return 1
		[[ $reply == PONG ]]
		return
	fi
	(
		exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
		printf 'PING\r\n' >&3
		IFS= read -r -t 2 reply <&3 || exit 1
		[[ ${reply%$'\r'} == +PONG ]]
	) 2>/dev/null
}

# running_pid: print the pid of the redis-server started in $dir, if alive.
running_pid() {
	local pid
	[[ -s $pidfile ]] || return 1
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/comm && $(<"/proc/$pid/comm") == redis-server* ]] || return 1
	echo "$pid"
}

set_paths() {
	[[ -n $1 ]] || usage
	dir=$(realpath -m -- "$1")
	pidfile=$dir/redis.pid
	logfile=$dir/redis.log
	urlfile=$dir/redis.url
}

cmd_start() {
	set_paths "$1"
	if ! command -v redis-server >/dev/null 2>&1; then
		apt_install redis-server
		command -v redis-server >/dev/null 2>&1 || die "redis-server not found after installing it"
	fi
	mkdir -p "$dir"

	local pid port
	if pid=$(running_pid) && [[ -s $urlfile ]]; then
		port=$(sed -n 's#^redis://127\.0\.0\.1:\([0-9]*\)/.*#\1#p' "$urlfile")
		if [[ -n $port ]] && redis_ping "$port"; then
			info "redis already running on 127.0.0.1:$port (pid $pid)"
			cat "$urlfile"
			return
		fi
	fi

	local attempt i
	for attempt in 1 2 3; do
		port=$(free_port)
		rm -f "$pidfile"
		redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no \
			--dir "$dir" --pidfile "$pidfile" --logfile "$logfile" --daemonize yes >&2 ||
			die "redis-server failed to start (log: $logfile)"
		for ((i = 0; i < 100; i++)); do
			if redis_ping "$port"; then
				printf 'redis://127.0.0.1:%s/0\n' "$port" >"$urlfile"
				info "redis running on 127.0.0.1:$port"
				cat "$urlfile"
				return
			fi
			# The daemon exits early when it cannot bind (port taken meanwhile).
			if ((i >= 20)) && ! running_pid >/dev/null; then
				break
			fi
			sleep 0.1
		done
		info "redis did not come up on port $port (attempt $attempt)"
		cmd_stop "$dir"
	done
	tail -n 20 "$logfile" >&2 || true
	die "redis-server failed to start (log: $logfile)"
}

cmd_stop() {
	set_paths "$1"
	local pid i
	pid=$(running_pid) || {
		rm -f "$pidfile"
		return 0
	}
	kill "$pid" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		info "redis (pid $pid) did not stop, killing it"
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$pidfile"
}

[[ $# -eq 2 ]] || usage
case $1 in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
*) usage ;;
esac

#!/usr/bin/env bash
# Run a command with throwaway backing services (used by `make test` / `make bench`).
#
# Usage:
#   scripts/test-services.sh [--pg] [--pg2] [--redis] [--opensearch] [--chromium] [--podman] -- COMMAND ARGS...
#
#   --pg          PostgreSQL cluster   -> TENANTPLANE_TEST_DATABASE_URL
#   --pg2         second, independent  -> TENANTPLANE_TEST_SHARD2_URL
#                 PostgreSQL cluster (shard tests); both run with wal_level = logical
#                 (scripts/pg.sh PG_WAL_LEVEL) for the online move between shards
#   --redis       Redis server         -> TENANTPLANE_TEST_REDIS_URL
#   --opensearch  OpenSearch node      -> TENANTPLANE_TEST_OPENSEARCH_URL
#                 (and its directory   -> TENANTPLANE_TEST_OPENSEARCH_DIR)
#   --chromium    Chromium binary      -> TENANTPLANE_TEST_CHROMIUM
#   --podman      podman (with runc)   -> TENANTPLANE_TEST_PODMAN
#                 for the container image test; each test writes its own
#                 containers.conf
#
# Everything lives in a fresh temporary directory. Missing Debian packages are
# installed first (root only; otherwise the script says what to install), then
# the services start in parallel. Whatever happens, all services are stopped and
# the directory is removed on exit. The exit status is COMMAND's.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
prog=$(basename "$0")
# shellcheck source=scripts/lib.sh
source "$here/lib.sh"

usage() {
	echo "usage: $prog [--pg] [--pg2] [--redis] [--opensearch] [--chromium] [--podman] -- COMMAND ARGS..." >&2
	exit 2
}

want_pg=0 want_pg2=0 want_redis=0 want_opensearch=0 want_chromium=0 want_podman=0
while [[ $# -gt 0 ]]; do
	case $1 in
	--pg) want_pg=1 ;;
	--pg2) want_pg2=1 ;;
	--redis) want_redis=1 ;;
	--opensearch) want_opensearch=1 ;;
	--chromium) want_chromium=1 ;;
	--podman) want_podman=1 ;;
	--)
		shift
		break
		;;
	*) usage ;;
	esac
	shift
done
[[ $# -gt 0 ]] || usage

# --- packages ---------------------------------------------------------------

have_pg_server() {
	local dir major
	for dir in /usr/lib/postgresql/*/bin; do
		[[ -x $dir/initdb ]] || continue
		major=${dir#/usr/lib/postgresql/}
		major=${major%%/*}
		[[ $major =~ ^[0-9]+$ ]] && ((major >= 15)) && return 0
	done
	return 1
}

# Install everything missing in one apt-get run, before starting anything in
# parallel (concurrent apt-get runs would fight over the dpkg lock).
missing=()
if ((want_pg || want_pg2)) && ! have_pg_server; then
	missing+=(postgresql-15)
fi
if ((want_redis)) && ! command -v redis-server >/dev/null 2>&1; then
	missing+=(redis-server)
fi
if ((want_chromium)) && ! command -v chromium >/dev/null 2>&1; then
	missing+=(chromium)
fi
if ((want_podman)); then
	# runc, because crun fails on hosts with hybrid cgroups.
	command -v podman >/dev/null 2>&1 || missing+=(podman)
	command -v runc >/dev/null 2>&1 || missing+=(runc)
fi
if ((${#missing[@]})); then
	apt_install "${missing[@]}"
fi

# --- services ---------------------------------------------------------------

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tenantplane-test.XXXXXX")
if [[ $EUID -eq 0 ]]; then
	# The postgres server user must be able to reach its data directory inside.
	chmod 711 "$tmp"
fi

declare -A start_pid=()
started=()

# shellcheck disable=SC2317 # called from cleanup
stop_service() {
	case $1 in
	pg) "$here/pg.sh" stop "$tmp/pg" ;;
	pg2) "$here/pg.sh" stop "$tmp/pg2" ;;
	redis) "$here/redis.sh" stop "$tmp/redis" ;;
	opensearch) "$here/opensearch.sh" stop "$tmp/opensearch" ;;
	*) ;;
	esac
}

# shellcheck disable=SC2317 # called on EXIT
cleanup() {
	local status=$? name pid
	trap - EXIT INT TERM
	set +e
	# Let starts still in flight finish, so that what they start gets stopped.
	for pid in "${start_pid[@]}"; do
		wait "$pid" 2>/dev/null
	done
	local -a stop_pids=()
	for name in "${started[@]}"; do
		stop_service "$name" >/dev/null 2>"$tmp/$name.stop.err" &
		stop_pids+=($!)
	done
	for pid in "${stop_pids[@]}"; do
		wait "$pid"
	done
	for name in "${started[@]}"; do
		if [[ -s $tmp/$name.stop.err ]]; then
			echo "$prog: stopping $name:" >&2
			cat "$tmp/$name.stop.err" >&2
		fi
	done
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_service NAME CMD...: run CMD in the background; its last stdout line
# is the service URL.
start_service() {
	local name=$1
	shift
	started+=("$name")
	"$@" >"$tmp/$name.out" 2>"$tmp/$name.err" &
	start_pid[$name]=$!
}

# await_service NAME: wait for NAME's start and set url to its URL.
await_service() {
	local name=$1 pid=${start_pid[$1]}
	unset "start_pid[$name]"
	if ! wait "$pid"; then
		cat "$tmp/$name.err" >&2
		die "$name failed to start"
	fi
	url=$(tail -n 1 "$tmp/$name.out")
	if [[ -z $url ]]; then
		cat "$tmp/$name.err" >&2
		die "$name printed no URL"
	fi
}

# host_port URL: the host:port part of URL, without credentials.
host_port() {
	local rest=${1#*://}
	rest=${rest%%/*}
	echo "${rest##*@}"
}

began=$SECONDS
url=
if ((want_pg)); then
	start_service pg env PG_FAST=1 PG_WAL_LEVEL=logical "$here/pg.sh" start "$tmp/pg"
fi
if ((want_pg2)); then
	start_service pg2 env PG_FAST=1 PG_WAL_LEVEL=logical "$here/pg.sh" start "$tmp/pg2"
fi
if ((want_redis)); then
	start_service redis "$here/redis.sh" start "$tmp/redis"
fi
if ((want_opensearch)); then
	start_service opensearch "$here/opensearch.sh" start "$tmp/opensearch"
fi

if ((want_pg)); then
	await_service pg
	export TENANTPLANE_TEST_DATABASE_URL=$url
	echo "postgres ready at $(host_port "$TENANTPLANE_TEST_DATABASE_URL")" >&2
fi
if ((want_pg2)); then
	await_service pg2
	export TENANTPLANE_TEST_SHARD2_URL=$url
	echo "postgres (shard 2) ready at $(host_port "$TENANTPLANE_TEST_SHARD2_URL")" >&2
fi
if ((want_redis)); then
	await_service redis
	export TENANTPLANE_TEST_REDIS_URL=$url
	echo "redis ready at $(host_port "$TENANTPLANE_TEST_REDIS_URL")" >&2
fi
if ((want_opensearch)); then
	await_service opensearch
	export TENANTPLANE_TEST_OPENSEARCH_URL=$url
	export TENANTPLANE_TEST_OPENSEARCH_DIR=$tmp/opensearch # outage tests stop and restart the node
	echo "opensearch ready at $(host_port "$TENANTPLANE_TEST_OPENSEARCH_URL")" >&2
fi
if ((want_chromium)); then
	TENANTPLANE_TEST_CHROMIUM=$("$here/chromium.sh" path)
	export TENANTPLANE_TEST_CHROMIUM
	echo "chromium ready at $TENANTPLANE_TEST_CHROMIUM" >&2
fi
if ((want_podman)); then
	TENANTPLANE_TEST_PODMAN=$(command -v podman)
	export TENANTPLANE_TEST_PODMAN
	echo "podman ready at $TENANTPLANE_TEST_PODMAN" >&2
fi
if ((${#started[@]})); then
	echo "services ready in $((SECONDS - began))s" >&2
fi

set +e
"$@"
status=$?
set -e
exit "$status"

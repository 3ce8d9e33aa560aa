#!/usr/bin/env bash
# Local PostgreSQL cluster for development and tests.
#
# Usage:
#   scripts/pg.sh start DATADIR [PORT]   create (if needed) and start a cluster,
#                                        print its connection URL as last stdout line
#   scripts/pg.sh stop DATADIR           stop it (no error if missing or not running)
#   scripts/pg.sh url DATADIR            print the connection URL
#
# Files (all beside or inside DATADIR):
#   DATADIR/                  the cluster; DATADIR/tenantplane.conf holds the settings
#                             managed here (port, sockets, tuning), rewritten on each start
#   DATADIR/run/              unix socket directory (trust auth, only the server user
#                             can enter it); a short per-cluster dir under /tmp is used
#                             instead when the socket path would be too long
#   DATADIR.password          generated superuser password (mode 0600, invoking user)
#   DATADIR.url               postgres://postgres:PASSWORD@127.0.0.1:PORT/postgres?sslmode=disable
#   DATADIR.log               initdb and server log
#
# TCP connections require the password (scram-sha-256); the server only listens
# on 127.0.0.1. A restarted cluster keeps its port unless something else took it.
#
# Environment:
#   PG_FAST=1   fsync, synchronous_commit and full_page_writes off (tests only)
#   PG_SHARED_BUFFERS=SIZE
#               shared_buffers (default 128MB), e.g. 1GB for a cluster of many tenants
#   PG_WAL_LEVEL=logical
#               wal_level = logical, with room for replication slots and senders: what
#               an online move between shards (logical replication) needs
#
# PostgreSQL refuses to run as root: when run as root, the server runs as the
# "postgres" system user (or the owner of an existing cluster), via runuser.
# PostgreSQL >= 15 server binaries are taken from /usr/lib/postgresql/*/bin;
# when missing they are installed with apt-get (root only).
set -euo pipefail

prog=$(basename "$0")
# shellcheck source=scripts/lib.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
min_pg_major=15
pg_package=postgresql-15

usage() {
	cat >&2 <<EOF
usage: $prog start DATADIR [PORT]
       $prog stop DATADIR
       $prog url DATADIR
EOF
	exit 2
}

# find_bindir: print the newest /usr/lib/postgresql/N/bin holding initdb, N >= 15.
find_bindir() {
	local dir best="" best_major=0 major
	for dir in /usr/lib/postgresql/*/bin; do
		[[ -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]] || continue
		major=${dir#/usr/lib/postgresql/}
		major=${major%%/*}
		[[ $major =~ ^[0-9]+$ ]] || continue
		if ((major >= min_pg_major && major > best_major)); then
			best=$dir
			best_major=$major
		fi
	done
	[[ -n $best ]] || return 1
	echo "$best"
}

ensure_bindir() {
	if ! bindir=$(find_bindir); then
		apt_install "$pg_package"
		bindir=$(find_bindir) || die "PostgreSQL >= $min_pg_major server binaries not found after installing $pg_package"
	fi
}

# run_pg CMD...: run CMD as the cluster's server user.
run_pg() {
	if [[ $EUID -eq 0 ]]; then
		runuser -u "$pg_user" -- "$@"
	else
		"$@"
	fi
}

# set_paths DATADIR: derive all file names from the (absolute) data directory.
set_paths() {
	[[ -n $1 ]] || usage
	datadir=$(realpath -m -- "$1")
	[[ $datadir != / ]] || die "refusing to use / as data directory"
	pwfile=$datadir.password
	urlfile=$datadir.url
	logfile=$datadir.log
	conffile=$datadir/tenantplane.conf
	pg_user=$(id -un)
	if [[ $EUID -eq 0 ]]; then
		pg_user=postgres
		if [[ -e $datadir/PG_VERSION ]]; then
			local owner
			owner=$(stat -c %U -- "$datadir")
			[[ $owner == root ]] || pg_user=$owner
		fi
	fi
}

have_cluster() {
	[[ -f $datadir/PG_VERSION ]]
}

is_running() {
	have_cluster || return 1
	run_pg "$bindir/pg_ctl" -D "$datadir" status >/dev/null 2>&1
}

# socket_dir PORT: the unix socket directory for this cluster.
socket_dir() {
	local dir=$datadir/run
	# sun_path is limited to 107 bytes; stay well below.
	if ((${#dir} + ${#1} + 10 >= 100)); then
		dir=/tmp/tenantplane-pg-$(printf '%s' "$datadir" | cksum | cut -d' ' -f1)
	fi
	echo "$dir"
}

# conf_value NAME: value of NAME in tenantplane.conf (quotes removed).
conf_value() {
	[[ -f $conffile ]] || return 0
	sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*'\{0,1\}\([^' #]*\).*/\1/p" "$conffile" | tail -n 1
}

make_url() {
	local port=$1 password
	[[ -s $pwfile ]] || die "password file $pwfile is missing; cannot build the connection URL"
	password=$(<"$pwfile")
	echo "postgres://postgres:$password@127.0.0.1:$port/postgres?sslmode=disable"
}

write_url() {
	local url
	url=$(make_url "$1")
	(
		umask 077
		printf '%s\n' "$url" >"$urlfile"
	)
	echo "$url"
}

# ensure_traversable DIR: as root, let the server user reach DIR's contents.
ensure_traversable() {
	local dir=$1
	while [[ -n $dir && $dir != / ]]; do
		if ! runuser -u "$pg_user" -- test -x "$dir" 2>/dev/null; then
			chmod o+x "$dir"
		fi
		dir=$(dirname "$dir")
	done
}

init_cluster() {
	local parent tmp_pw password
	parent=$(dirname "$datadir")
	mkdir -p "$parent"
	if [[ $EUID -eq 0 ]]; then
		id -u "$pg_user" >/dev/null 2>&1 ||
			useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash "$pg_user"
		ensure_traversable "$parent"
	fi
	if [[ -e $datadir ]] && [[ -n $(ls -A -- "$datadir") ]]; then
		die "$datadir exists, is not empty and holds no cluster"
	fi
	mkdir -p "$datadir"
	chmod 700 "$datadir"
	[[ $EUID -ne 0 ]] || chown "$pg_user:" "$datadir"

	password=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	(
		umask 077
		printf '%s\n' "$password" >"$pwfile"
	)
	tmp_pw=$(mktemp "$parent/.pg-password.XXXXXX")
	printf '%s\n' "$password" >"$tmp_pw"
	[[ $EUID -ne 0 ]] || chown "$pg_user:" "$tmp_pw"

	local -a initdb_args=(
		-D "$datadir" -U postgres --pwfile="$tmp_pw"
		--auth-local=trust --auth-host=scram-sha-256
		--encoding=UTF8 --locale=C
	)
	[[ ${PG_FAST:-} != 1 ]] || initdb_args+=(--no-sync)
	info "initializing cluster in $datadir"
	if ! run_pg "$bindir/initdb" "${initdb_args[@]}" >>"$logfile" 2>&1; then
		rm -f "$tmp_pw"
		tail -n 20 "$logfile" >&2
		die "initdb failed (log: $logfile)"
	fi
	rm -f "$tmp_pw"
	printf "\ninclude_if_exists = 'tenantplane.conf'\n" | run_pg tee -a "$datadir/postgresql.conf" >/dev/null
}

write_conf() {
	local port=$1 sockdir=$2
	{
		echo "# Managed by scripts/pg.sh; rewritten on each start."
		echo "listen_addresses = '127.0.0.1'"
		echo "port = $port"
		echo "unix_socket_directories = '$sockdir'"
		echo "unix_socket_permissions = 0700"
		echo "max_connections = 300"
		echo "shared_buffers = ${PG_SHARED_BUFFERS:-128MB}"
		echo "max_locks_per_transaction = 256"
		if [[ ${PG_FAST:-} == 1 ]]; then
			echo "fsync = off"
			echo "synchronous_commit = off"
			echo "full_page_writes = off"
		fi
		if [[ -n ${PG_WAL_LEVEL:-} ]]; then
			echo "wal_level = $PG_WAL_LEVEL"
			echo "max_replication_slots = 64"
			echo "max_wal_senders = 64"
			echo "max_logical_replication_workers = 16"
			echo "max_worker_processes = 32"
		fi
	} | run_pg tee "$conffile" >/dev/null
}

prepare_socket_dir() {
	local sockdir=$1
	if [[ $sockdir == "$datadir"/* ]]; then
		run_pg mkdir -p -m 700 "$sockdir"
	else
		mkdir -p "$sockdir"
		chmod 700 "$sockdir"
		[[ $EUID -ne 0 ]] || chown "$pg_user:" "$sockdir"
	fi
}

cmd_start() {
	local want_port=${2:-}
	[[ -z $want_port || $want_port =~ ^[0-9]+$ ]] || die "invalid port: $want_port"
	set_paths "$1"
	ensure_bindir

	if is_running; then
		local port
		port=$(sed -n 4p "$datadir/postmaster.pid")
		if [[ -n $want_port && $want_port != "$port" ]]; then
			info "cluster already running on port $port (ignoring requested port $want_port)"
		fi
		write_url "$port"
		return
	fi

	if [[ -n $want_port ]] && ! port_free "$want_port"; then
		die "port $want_port on 127.0.0.1 is already in use"
	fi
	if ! have_cluster; then
		init_cluster
	elif [[ $EUID -eq 0 ]]; then
		ensure_traversable "$(dirname "$datadir")"
	fi
	if [[ ! -e $logfile ]]; then
		: >"$logfile"
	fi
	[[ $EUID -ne 0 ]] || chown "$pg_user:" "$logfile"

	local port attempt sockdir
	port=$want_port
	if [[ -z $port ]]; then
		port=$(conf_value port)
		if [[ -z $port ]] || ! port_free "$port"; then
			[[ -z $port ]] || info "port $port is taken, picking another one"
			port=$(free_port)
		fi
	fi
	for attempt in 1 2 3; do
		sockdir=$(socket_dir "$port")
		prepare_socket_dir "$sockdir"
		write_conf "$port" "$sockdir"
		local before
		before=$(wc -l <"$logfile")
		if run_pg "$bindir/pg_ctl" -D "$datadir" -l "$logfile" -w -t 60 -s start >&2; then
			info "postgres running on 127.0.0.1:$port (data: $datadir)"
			write_url "$port"
			return
		fi
		# Another process may have grabbed the port between probe and bind.
		if [[ -z $want_port ]] && tail -n +"$((before + 1))" "$logfile" | grep -q 'could not bind'; then
			info "port $port got taken (attempt $attempt), retrying with another one"
			port=$(free_port)
			continue
		fi
		break
	done
	tail -n 20 "$logfile" >&2
	die "postgres failed to start (log: $logfile)"
}

cmd_stop() {
	set_paths "$1"
	have_cluster || return 0
	bindir=$(find_bindir) || return 0
	if is_running; then
		run_pg "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 60 -s stop >&2
	fi
	local sockdir
	sockdir=$(conf_value unix_socket_directories)
	if [[ -n $sockdir && $sockdir != "$datadir"/* ]]; then
		rmdir "$sockdir" 2>/dev/null || true
	fi
}

cmd_url() {
	set_paths "$1"
	[[ -s $urlfile ]] || die "no URL file $urlfile (start the cluster first)"
	cat "$urlfile"
}

[[ $# -ge 2 ]] || usage
command=$1
shift
# Server processes must not inherit a directory they may not enter.
data_arg=$(realpath -m -- "$1")
shift
cd /
case $command in
start)
	[[ $# -le 1 ]] || usage
	cmd_start "$data_arg" "$@"
	;;
stop)
	[[ $# -eq 0 ]] || usage
	cmd_stop "$data_arg"
	;;
url)
	[[ $# -eq 0 ]] || usage
	cmd_url "$data_arg"
	;;
*)
	usage
	;;
esac

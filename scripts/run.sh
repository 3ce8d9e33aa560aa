#!/usr/bin/env bash
# `make run`: one machine, nothing else running. Starts (or reuses) a local Postgres
# cluster whose data lives in .data/pg, creates the control database, generates a
# signing key once (.data/secret_key), records both in .data/env (mode 0600) so that
# bin/tenantplane finds them from the checkout in another terminal, applies the registry
# migrations and serves on 127.0.0.1:8000. Ctrl-C stops the server; the cluster keeps
# running and is reused next time (`make stop` stops it). Set DATABASE_URL to use
# another Postgres instead. An existing .env is read by the binary, never written.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data

record=()
if [ -z "${DATABASE_URL:-}" ]; then
	admin_url=$(scripts/pg.sh start "$PWD/.data/pg" | tail -n 1)
	if ! psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'tenantplane'" | grep -q 1; then
		psql "$admin_url" -qc "CREATE DATABASE tenantplane" >/dev/null
	fi
	DATABASE_URL=${admin_url/\/postgres\?//tenantplane?}
	export DATABASE_URL
	record+=("DATABASE_URL=$DATABASE_URL")
fi

if [ -z "${TENANTPLANE_SECRET_KEY:-}" ] && [ -z "${SECRET_KEY:-}" ]; then
	if [ ! -s .data/secret_key ]; then
		(umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n=' > .data/secret_key)
	fi
	TENANTPLANE_SECRET_KEY=$(cat .data/secret_key)
	export TENANTPLANE_SECRET_KEY
	record+=("TENANTPLANE_SECRET_KEY=$TENANTPLANE_SECRET_KEY")
fi

# What this script made up (not what the caller set) is recorded for the CLI.
(
	umask 077
	{
		echo "# written by make run: the local cluster and signing key of this checkout"
		printf '%s\n' "${record[@]}"
	} > .data/env.tmp && mv .data/env.tmp .data/env
)

export TENANTPLANE_LISTEN=${TENANTPLANE_LISTEN:-127.0.0.1:8000}
go build -o bin/tenantplane ./cmd/tenantplane
bin/tenantplane migrate shared
echo "serving on $TENANTPLANE_LISTEN (Ctrl-C stops the server; the Postgres cluster keeps running, \`make stop\` stops it)" >&2
exec bin/tenantplane serve

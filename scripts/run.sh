#!/usr/bin/env bash
# `make run`: one machine, nothing else running. Starts (or reuses) a local Postgres
# cluster whose data lives in .data/pg, creates the control database, generates a
# signing key once (.data/secret_key), applies the registry migrations and serves on
# :8000. Ctrl-C stops the server; the cluster keeps running and is reused next time
# (`make stop` stops it). Set DATABASE_URL to use another Postgres instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .data

if [ -z "${DATABASE_URL:-}" ]; then
	admin_url=$(scripts/pg.sh start "$PWD/.data/pg" | tail -n 1)
	if ! psql "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'tenantplane'" | grep -q 1; then
		psql "$admin_url" -qc "CREATE DATABASE tenantplane" >/dev/null
	fi
	DATABASE_URL=${admin_url/\/postgres\?//tenantplane?}
	export DATABASE_URL
fi

if [ -z "${TENANTPLANE_SECRET_KEY:-}" ] && [ -z "${SECRET_KEY:-}" ]; then
	if [ ! -s .data/secret_key ]; then
		(umask 077 && head -c 48 /dev/urandom | base64 | tr -d '\n=' > .data/secret_key)
	fi
	TENANTPLANE_SECRET_KEY=$(cat .data/secret_key)
	export TENANTPLANE_SECRET_KEY
fi

go build -o bin/tenantplane ./cmd/tenantplane
bin/tenantplane migrate shared
echo "serving on ${TENANTPLANE_LISTEN:-:8000} (Ctrl-C stops the server; the Postgres cluster keeps running, \`make stop\` stops it)" >&2
exec bin/tenantplane serve

#!/usr/bin/env bash
# `make bench`: every benchmark program under bench/ and the Go benchmarks, against the
# services scripts/test-services.sh started (it exports their URLs). Each program
# prints its own report with its baseline measured in the same run; read medians and
# ratios, not absolute times, on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
run() {
	echo
	echo "=== $* ==="
	if ! "$@"; then
		echo "!!! failed: $*"
		status=1
	fi
}

run go run ./bench/provision -tenants "${BENCH_PROVISION_TENANTS:-100}"
run go run ./bench/fleet
run go run ./bench/dataplane
run go run ./bench/search
run go run ./bench/move
run go run ./bench/notify
run go test -run '^$' -bench . -benchmem -count 3 ./token/... ./password/... ./dataplane/...
exit $status

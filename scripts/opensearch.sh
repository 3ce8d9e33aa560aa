#!/usr/bin/env bash
# Real single-node OpenSearch (2.19.6) for the search tests, built from the
# Maven Central artifacts by scripts/opensearch-node (no distribution needed).
#
#   scripts/opensearch.sh start DIR   build the launcher if needed, start the node
#                                     with its home and data under DIR/home, wait
#                                     until the cluster is at least yellow and print
#                                     its URL (http://127.0.0.1:PORT) as last line
#   scripts/opensearch.sh stop DIR    SIGTERM, SIGKILL after 20 s; fine if not running
#
# Files in DIR: opensearch.pid, opensearch.url, opensearch.log, home/ (data kept
# across restarts). A restart on the same DIR reuses the previous HTTP port when
# it is still free, so clients can keep their URL.
#
# Environment:
#   OPENSEARCH_HEAP           JVM heap (default 512m)
#   OPENSEARCH_JAVA_OPTS      extra JVM options
#   OPENSEARCH_START_TIMEOUT  seconds to wait for a yellow cluster (default 180)
#   OPENSEARCH_JAVA_HOME      JDK (17 or newer) to run the node with; else JAVA_HOME; else java on PATH
set -euo pipefail
set +m # background jobs stay in our process group, so "setsid" does not fork and $! is the JVM

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NODE_DIR="$SCRIPT_DIR/opensearch-node"
TARGET="$NODE_DIR/target"
MAIN_CLASS="com.github.tenantplane.opensearchnode.OpenSearchNode"

HEAP="${OPENSEARCH_HEAP:-512m}"
START_TIMEOUT="${OPENSEARCH_START_TIMEOUT:-180}"
STOP_GRACE=20

die() {
  echo "opensearch.sh: $*" >&2
  exit 1
}

usage() {
  echo "usage: $0 {start|stop} DIR" >&2
  exit 2
}

java_bin() {
  local home="${OPENSEARCH_JAVA_HOME:-${JAVA_HOME:-}}"
  if [[ -n "$home" && -x "$home/bin/java" ]]; then
    echo "$home/bin/java"
  elif command -v java >/dev/null 2>&1; then
    command -v java
  else
    die "java not found (need Java 17 or newer; set OPENSEARCH_JAVA_HOME)"
  fi
}

java_major() {
  "$1" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9][0-9]*\).*/\1/p' | head -n1
}

# True when the compiled launcher and its resolved classpath are up to date.
build_is_current() {
  local stamp="$TARGET/build.stamp" cp jar
  [[ -f "$stamp" && -f "$TARGET/classpath.txt" ]] || return 1
  [[ -z "$(find "$NODE_DIR/pom.xml" "$NODE_DIR/src" -newer "$stamp" -print -quit)" ]] || return 1
  cp="$(cat "$TARGET/classpath.txt")"
  local IFS=:
  for jar in $cp; do
    [[ -f "$jar" ]] || return 1 # e.g. the Maven repository was cleaned
  done
  return 0
}

build() {
  mkdir -p "$TARGET"
  # Serialise concurrent builds (several test packages may start nodes at once).
  exec 9>"$TARGET/build.lock"
  if command -v flock >/dev/null 2>&1; then flock 9; fi
  if build_is_current; then
    exec 9>&-
    return 0
  fi
  command -v mvn >/dev/null 2>&1 || die "mvn not found (Maven is needed to fetch the OpenSearch artifacts)"
  command -v javac >/dev/null 2>&1 || die "javac not found (a JDK 17 is needed to build the launcher)"
  echo "opensearch.sh: building the OpenSearch launcher (first run downloads ~60 MB into ~/.m2)" >&2
  # Only the dependency plugin is needed: it resolves the jars and writes the classpath;
  # javac then compiles the single source file (no compiler/jar/surefire plugins to fetch).
  if ! mvn -B -q -f "$NODE_DIR/pom.xml" dependency:build-classpath \
    -Dmdep.outputFile="$TARGET/classpath.txt.tmp" -Dmdep.includeScope=runtime >&2; then
    die "resolving the OpenSearch artifacts with Maven failed"
  fi
  mv -f "$TARGET/classpath.txt.tmp" "$TARGET/classpath.txt"
  rm -rf "$TARGET/classes"
  mkdir -p "$TARGET/classes"
  local sources=()
  mapfile -t sources < <(find "$NODE_DIR/src/main/java" -name '*.java')
  javac --release 17 -nowarn -d "$TARGET/classes" -cp "$(cat "$TARGET/classpath.txt")" "${sources[@]}" >&2 ||
    die "compiling the OpenSearch launcher failed"
  touch "$TARGET/build.stamp"
  exec 9>&-
}

# PID of the node recorded in DIR, if that process is alive and is our launcher.
running_pid() {
  local dir="$1" pid
  [[ -f "$dir/opensearch.pid" ]] || return 1
  pid="$(tr -dc '0-9' <"$dir/opensearch.pid")"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$MAIN_CLASS" || return 1
  fi
  echo "$pid"
}

http_ok() {
  curl -fsS -o /dev/null --max-time 15 "$1" 2>/dev/null
}

fail_start() {
  local dir="$1" msg="$2"
  echo "opensearch.sh: $msg" >&2
  echo "----- last lines of $dir/opensearch.log -----" >&2
  tail -n 40 "$dir/opensearch.log" >&2 || true
  echo "---------------------------------------------" >&2
  exit 1
}

cmd_start() {
  local dir="$1"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  local pid url
  if pid="$(running_pid "$dir")"; then
    url="$(cat "$dir/opensearch.url" 2>/dev/null || true)"
    if [[ -n "$url" ]] && http_ok "$url/_cluster/health?wait_for_status=yellow&timeout=30s"; then
      echo "opensearch.sh: already running (pid $pid)" >&2
      echo "$url"
      return 0
    fi
    die "a node is already running in $dir (pid $pid) but does not answer; run: $0 stop $dir"
  fi
  command -v curl >/dev/null 2>&1 || die "curl not found"

  build

  local java major
  java="$(java_bin)"
  major="$(java_major "$java")"
  [[ -n "$major" && "$major" -ge 17 ]] || die "$java is not Java 17 or newer (found '${major:-unknown}')"

  # Reuse the previous HTTP port when possible so that clients keep their URL.
  local port=0
  if [[ -s "$dir/opensearch.url" ]]; then
    port="$(sed -n 's#^http://127\.0\.0\.1:\([0-9][0-9]*\).*#\1#p' "$dir/opensearch.url" | head -n1)"
    port="${port:-0}"
  fi
  rm -f "$dir/opensearch.url" "$dir/opensearch.pid"
  mkdir -p "$dir/home" "$dir/tmp"

  local opts=(
    "-Xms$HEAP" "-Xmx$HEAP" -Xss1m
    -XX:+UseG1GC -XX:-OmitStackTraceInFastThrow
    -Dfile.encoding=UTF-8 -Djna.nosys=true -Djava.io.tmpdir="$dir/tmp"
    -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true
    -Dio.netty.recycler.maxCapacityPerThread=0 -Dio.netty.allocator.numDirectArenas=0
    -Dlog4j.shutdownHookEnabled=false -Dlog4j2.disable.jmx=true
  )
  # Same date/locale behaviour as the OpenSearch 2.x distribution (COMPAT is gone from Java 23 on).
  if [[ "$major" -lt 23 ]]; then opts+=("-Djava.locale.providers=SPI,COMPAT"); fi
  if [[ -n "${OPENSEARCH_JAVA_OPTS:-}" ]]; then
    local extra=()
    read -r -a extra <<<"$OPENSEARCH_JAVA_OPTS"
    opts+=("${extra[@]}")
  fi

  local launcher=()
  if command -v setsid >/dev/null 2>&1; then launcher=(setsid); fi
  {
    echo
    echo "===== $(date '+%Y-%m-%dT%H:%M:%S%z') starting OpenSearch node (pid $$ launching) ====="
  } >>"$dir/opensearch.log"
  "${launcher[@]}" "$java" "${opts[@]}" -cp "$TARGET/classes:$(cat "$TARGET/classpath.txt")" "$MAIN_CLASS" \
    --home "$dir/home" --http-port "$port" --transport-port 0 \
    --url-file "$dir/opensearch.url" --pid-file "$dir/opensearch.pid" \
    >>"$dir/opensearch.log" 2>&1 </dev/null &
  pid=$!
  # The launcher also writes its own PID there once the JVM runs (the same PID,
  # since neither "setsid" nor the JVM forks).
  echo "$pid" >"$dir/opensearch.pid"

  local deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid" 2>/dev/null && rc=0 || rc=$?
      rm -f "$dir/opensearch.pid"
      fail_start "$dir" "the OpenSearch node exited during start-up (exit code $rc)"
    fi
    if [[ -s "$dir/opensearch.url" ]]; then
      url="$(cat "$dir/opensearch.url")"
      if http_ok "$url/_cluster/health?wait_for_status=yellow&timeout=5s"; then
        break
      fi
    fi
    if ((SECONDS >= deadline)); then
      cmd_stop "$dir" >/dev/null 2>&1 || true
      fail_start "$dir" "the OpenSearch node did not become ready (yellow) within ${START_TIMEOUT}s"
    fi
    sleep 0.5
  done
  echo "$url"
}

cmd_stop() {
  local dir="$1" pid
  [[ -d "$dir" ]] || return 0
  dir="$(cd "$dir" && pwd)"
  if ! pid="$(running_pid "$dir")"; then
    rm -f "$dir/opensearch.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_GRACE))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do
    sleep 0.2
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "opensearch.sh: node (pid $pid) still running after ${STOP_GRACE}s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  rm -f "$dir/opensearch.pid"
  # opensearch.url stays: the next start reuses its port when it is free.
}

[[ $# -eq 2 ]] || usage
case "$1" in
start) cmd_start "$2" ;;
stop) cmd_stop "$2" ;;
*) usage ;;
esac

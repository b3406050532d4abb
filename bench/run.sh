#!/usr/bin/env bash
# HTTP throughput/latency of the RPC path against a bare axum route, on loopback.
# A report, not a test: always exits 0. Usage: bench/run.sh
#
#   ALIAS_BENCH_SKIP_BUILD=1  use the existing target/release/alias-server
#   BENCH_DURATION=10         seconds per measured run (plus a 2 s warm-up)
#   BENCH_CONNECTIONS=32      concurrent connections (wrk -c)
#   BENCH_PIN=1               server on core 0, wrk on core 1 (0: let the kernel schedule)
#   ALIAS_LOG=...             passed to the server; unset runs the server default (info) and warn
#
# To add a benchmark: write a function that calls `measure NAME URL [wrk args]` and call it
# from `suite` (or a new suite); `report` prints every row measured since `start_server`.
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
WARMUP=${BENCH_WARMUP:-2}
PIN=${BENCH_PIN:-1}
TARGET_RATIO=80
BIN=target/release/alias-server
WORK=$(mktemp -d -t alias-bench.XXXXXX)
SERVER_PID=""
BASE=""
ROWS=()

SERVER_CPU=() WRK_CPU=()
if [[ $PIN == 1 ]] && command -v taskset >/dev/null; then
    SERVER_CPU=(taskset -c 0) WRK_CPU=(taskset -c 1)
else
    PIN=0
fi

log() { printf '>> %s\n' "$*" >&2; }

stop_server() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server LABEL [env args...]: fresh data dir, free loopback port (bound by the server
# itself on port 0, read back with ss), waits for GET /ready = 200. Sets BASE.
start_server() {
    local label=${1//[^a-zA-Z0-9]/_}; shift
    local data="$WORK/data-$label" logfile="$WORK/server-$label.log" port="" i
    mkdir -p "$data"
    "${SERVER_CPU[@]}" env "$@" ALIAS_BIND=127.0.0.1:0 ALIAS_DATA_DIR="$data" "$BIN" \
        >"$logfile" 2>&1 &
    SERVER_PID=$!
    ROWS=()
    for i in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$logfile" >&2; log "server exited"; exit 1; }
        port=$(ss -Hltnp 2>/dev/null | awk -v p="pid=$SERVER_PID," \
            'index($0, p) { n = split($4, a, ":"); print a[n]; exit }')
        if [[ -n $port ]] && curl -fs -o /dev/null "http://127.0.0.1:$port/ready"; then
            BASE="http://127.0.0.1:$port"
            log "server $label up at $BASE (pid $SERVER_PID, log $logfile)"
            return
        fi
        sleep 0.1
    done
    log "server did not become ready in 10 s"; cat "$logfile" >&2; exit 1
}

# measure NAME URL [extra wrk args]: warm-up, then a measured run; appends a report row.
measure() {
    local name=$1 url=$2; shift 2
    local out="$WORK/wrk-$name.txt"
    curl -fsS -o /dev/null "$url" || { log "$url does not answer 2xx"; exit 1; }
    "${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${WARMUP}s" "$@" "$url" >/dev/null
    "${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$out"
    # wrk prints latencies as 850.00us / 1.20ms / 1.01s: normalise to ms.
    ROWS+=("$(awk -v name="$name" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /s$/) return v * 1000; return v }
        $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx|Socket errors/ { err = err " [" $0 "]" }
        END { printf "%-10s %12.0f %9.3f %9.3f%s", name, rps, p50, p99, err }' "$out")")
}

rps_of() { printf '%s\n' "${ROWS[@]}" | awk -v n="$1" '$1 == n { print $2 }'; }

report() {
    local title=$1 bare rpc
    printf '\n== %s (%ss, %s connections, pinned=%s) ==\n' "$title" "$DURATION" "$CONNECTIONS" "$PIN"
    printf '%-10s %12s %9s %9s\n' name 'req/s' 'p50 ms' 'p99 ms'
    printf '%s\n' "${ROWS[@]}"
    bare=$(rps_of bare) rpc=$(rps_of rpc)
    awk -v b="$bare" -v r="$rpc" -v t="$TARGET_RATIO" 'BEGIN {
        ratio = 100 * r / b
        printf "RPC/bare throughput: %.1f%% -> %s (target: RPC path >= %d%% of bare route)\n",
            ratio, ratio >= t ? "PASS" : "FAIL", t }'
}

suite() { # suite LABEL [VAR=value...]
    local label=$1
    start_server "$@"
    measure bare "$BASE/health"
    measure rpc "$BASE/trpc/system.health"
    report "logging: $label"
    stop_server
}

if [[ ${ALIAS_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    log "building release binary"
    cargo build --release --bin alias-server
fi
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    apt-get install -y wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y wrk >/dev/null; }
fi

if [[ -n ${ALIAS_LOG:-} ]]; then
    suite "$ALIAS_LOG" ALIAS_LOG="$ALIAS_LOG"
else
    suite "info (default)" -u ALIAS_LOG
    suite warn ALIAS_LOG=warn
fi
exit 0

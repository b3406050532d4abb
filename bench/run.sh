#!/usr/bin/env bash
# HTTP throughput/latency of the RPC path (/trpc/system.health) against a bare axum route
# (/health), on loopback with wrk. A report, not a test: it always exits 0.
#
#   ALIAS_BENCH_SKIP_BUILD=1  use the existing release binary (CARGO_TARGET_DIR: bench/lib.sh)
#   BENCH_DURATION=5          seconds per measured run (each preceded by a 1 s warm-up)
#   BENCH_CONNECTIONS=32      concurrent connections (wrk -c, one wrk thread)
#   BENCH_ROUNDS=3            rounds per suite; targets alternate, the best run of each counts
#   BENCH_PIN=0               1: server on core 0, wrk on core 1 (see below)
#   ALIAS_LOG=...             passed to the server; unset: one suite at the server default
#                             (info: successful calls log at debug, so no line per call)
#                             and one at warn
#
# Pinning is off by default: on an idle 2-core box it gives 10-25% more req/s, but the
# server then has one tokio worker on one core, and any other process on that core (a cargo
# build) cuts its throughput 2-3x with 10-20 ms p99; unpinned runs degrade far less.
# Best-of-N with alternating targets is for the same reason: interference only slows runs down.
#
# Adding a benchmark: call `measure NAME URL [wrk args]` inside a suite's round loop; `report`
# prints the best row per NAME measured since `start_server`. The shared functions are in
# bench/lib.sh (bench/auth.sh uses them too).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
TARGET_RATIO=80

# report TITLE: best run (highest req/s) per name, then the RPC/bare verdict.
report() {
    printf '\n== %s | %s x %ss, %s connections, pinned=%s ==\n' \
        "$1" "$ROUNDS" "$DURATION" "$CONNECTIONS" "$PIN"
    print_best
    local bare rpc
    bare=$(best bare 2) rpc=$(best rpc 2)
    [[ -n $bare && -n $rpc ]] || return 0
    awk -v bare="$bare" -v rpc="$rpc" -v bcpu="$(best bare 5)" -v rcpu="$(best rpc 5)" \
        -v t="$TARGET_RATIO" 'BEGIN { r = 100 * rpc / bare
            printf "RPC/bare server CPU per request: %.2fx\n", rcpu / bcpu
            printf "RPC/bare throughput: %.1f%%  =>  %s (target: RPC path >= %d%% of bare route)\n",
                r, r >= t ? "PASS" : "FAIL", t }'
}

suite() { # suite LABEL [env args for the server...]
    start_server "$@"
    for _ in $(seq "$ROUNDS"); do
        measure bare "$BASE/health"
        measure rpc "$BASE/trpc/system.health"
    done
    report "logging: $1"
    stop_server
}

ensure_built

if [[ -n ${ALIAS_LOG:-} ]]; then
    suite "$ALIAS_LOG" ALIAS_LOG="$ALIAS_LOG"
else
    suite "info (server default)" -u ALIAS_LOG
    suite warn ALIAS_LOG=warn
fi
printf '\n(best of %s runs per row; cpu us/req: server CPU time per request;\n bg cpu: machine busy %% in the second before the run, high values mean noisy numbers)\n' "$ROUNDS"
exit 0

# shellcheck shell=bash disable=SC2034  # variables used by the scripts that source this
# Shared by the wrk benchmarks (bench/run.sh, bench/auth.sh) and bench/chat.sh: source it
# from a script that has `set -euo pipefail`. It moves to the repository root, makes a
# scratch directory ($WORK, removed on exit) and stops the server it started on exit.
#
#   ALIAS_BENCH_SKIP_BUILD=1  use the existing release binary
#   CARGO_TARGET_DIR=target   where cargo builds it (<dir>/release/alias-server); set it to keep
#                             one release target apart from the debug one the tests use
#   BENCH_DURATION=5          seconds per measured run (each preceded by a 1 s warm-up)
#   BENCH_CONNECTIONS=32      concurrent connections (wrk -c, one wrk thread)
#   BENCH_ROUNDS=3            rounds per suite; targets alternate, the best run of each counts
#   BENCH_PIN=0               1: server on core 0, wrk on core 1 (see bench/run.sh)
#
# Functions: `ensure_built`, `start_server LABEL [env args]`, `stop_server`,
# `measure NAME URL [wrk args]`, `print_best`, `best NAME COLUMN`, `cpu_busy`, `log`.

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
DURATION=${BENCH_DURATION:-5}
CONNECTIONS=${BENCH_CONNECTIONS:-32}
ROUNDS=${BENCH_ROUNDS:-3}
PIN=${BENCH_PIN:-0}
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/alias-server
WORK=$(mktemp -d -t alias-bench.XXXXXX)
SERVER_PID="" BASE="" ROWS=()
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
trap 'stop_server; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# ensure_built: the release binary (unless ALIAS_BENCH_SKIP_BUILD=1) and wrk.
ensure_built() {
    if [[ ${ALIAS_BENCH_SKIP_BUILD:-0} != 1 ]]; then
        log "building release binary"
        cargo build --release --bin alias-server
    fi
    if ! command -v wrk >/dev/null; then
        log "installing wrk"
        apt-get install -y wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y wrk >/dev/null; }
    fi
}

# The benchmarks drive one account far past the per-user budgets and daily quotas (issue 14):
# raised here unless set, so they measure the server's path, not its refusals.
export ALIAS_USER_CALLS_PER_MINUTE=${ALIAS_USER_CALLS_PER_MINUTE:-1000000000}
export ALIAS_USER_CHAT_SENDS_PER_MINUTE=${ALIAS_USER_CHAT_SENDS_PER_MINUTE:-1000000000}
export ALIAS_QUOTA_FREE_MESSAGES_PER_DAY=${ALIAS_QUOTA_FREE_MESSAGES_PER_DAY:-unlimited}
export ALIAS_QUOTA_FREE_TOKENS_PER_DAY=${ALIAS_QUOTA_FREE_TOKENS_PER_DAY:-unlimited}

# start_server LABEL [env args...]: fresh SQLite data dir (DATABASE_URL is ignored), free
# loopback port (the server binds port 0; ss reads it back), output to a log file in $WORK;
# waits for GET /ready = 200. Sets BASE, SERVER_PID and SERVER_LOG, and clears ROWS.
start_server() {
    local label=$1 name=${1//[^a-zA-Z0-9]/_}; shift
    local data="$WORK/data-$name" port=""
    SERVER_LOG="$WORK/server-$name.log"
    mkdir -p "$data"
    "${SERVER_CPU[@]}" env -u DATABASE_URL "$@" ALIAS_BIND=127.0.0.1:0 ALIAS_DATA_DIR="$data" "$BIN" \
        >"$SERVER_LOG" 2>&1 &
    SERVER_PID=$! ROWS=()
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; log "server exited"; exit 1; }
        port=$(ss -Hltnp | awk -v p="pid=$SERVER_PID," 'index($0, p) { sub(/.*:/, "", $4); print $4; exit }')
        if [[ -n $port ]] && curl -fs -o /dev/null "http://127.0.0.1:$port/ready"; then
            BASE="http://127.0.0.1:$port"
            log "server '$label' at $BASE (pid $SERVER_PID)"
            return
        fi
        sleep 0.1
    done
    cat "$SERVER_LOG" >&2; log "server not ready after 10 s"; exit 1
}

# CPU busy % of the whole machine over 1 s (run while the server idles: other processes' load).
cpu_busy() {
    local a b
    read -ra a </proc/stat; sleep 1; read -ra b </proc/stat
    awk -v a="${a[*]:1:8}" -v b="${b[*]:1:8}" 'BEGIN { split(a, x); split(b, y)
        for (i = 1; i <= 8; i++) { t += y[i] - x[i]; if (i == 4 || i == 5) idle += y[i] - x[i] }
        printf "%.0f", t ? 100 * (t - idle) / t : 0 }'
}

server_ticks() { awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat"; } # utime + stime

# measure NAME URL [extra wrk args]: warm-up, then a measured run; appends a row to ROWS:
# req/s, p50/p99 latency, server CPU time per request (less sensitive to other load than req/s).
# MEASURE_CONNECTIONS overrides BENCH_CONNECTIONS for one call; MEASURE_BUSY replaces the 1 s
# background-CPU sample (for runs beside a load the caller started on purpose).
# The URL must answer 2xx to a GET with the -H headers given, unless a -s script is given.
measure() {
    local name=$1 url=$2; shift 2
    local out="$WORK/wrk.txt" busy ticks conns=${MEASURE_CONNECTIONS:-$CONNECTIONS}
    local check=(curl -fsS -o /dev/null) args=("$@") i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
            -H | --header) check+=(-H "${args[i + 1]}") ;;
            -s | --script) check=() ;;
        esac
    done
    if ((${#check[@]})); then
        "${check[@]}" "$url" || { log "$url does not answer 2xx"; exit 1; }
    fi
    busy=${MEASURE_BUSY:-$(cpu_busy)}
    "${WRK_CPU[@]}" wrk -t1 -c"$conns" -d1s "$@" "$url" >/dev/null
    ticks=$(server_ticks)
    "${WRK_CPU[@]}" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$@" "$url" >"$out"
    ticks=$(($(server_ticks) - ticks))
    # wrk prints latencies as 850.00us / 1.20ms / 1.01s: normalise to ms.
    ROWS+=("$(awk -v name="$name" -v busy="$busy" -v cpu="$ticks / $(getconf CLK_TCK)" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                         if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
        $1 == "50%" { p50 = ms($2) }  $1 == "99%" { p99 = ms($2) }
        $2 == "requests" { reqs = $1 }  $1 == "Requests/sec:" { rps = $2 }
        /Non-2xx|Socket errors/ { err = err " [" $0 "]" }
        END { split(cpu, c, " / "); us = reqs ? 1e6 * c[1] / c[2] / reqs : 0
              printf "%-12s %10.1f %8.3f %8.3f %10.1f %6s%s", name, rps, p50, p99, us, busy "%", err }' "$out")")
}

# print_best: the column header, then the best row (highest req/s) per name measured since
# start_server, in first-measured order.
print_best() {
    printf '%-12s %10s %8s %8s %10s %6s\n' name 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req' 'bg cpu'
    printf '%s\n' "${ROWS[@]}" | awk '
        !($1 in best) { order[++n] = $1 }
        !($1 in best) || $2 > rps[$1] { best[$1] = $0; rps[$1] = $2 }
        END { for (i = 1; i <= n; i++) print best[order[i]] }'
}

# best NAME COLUMN: one column (2 req/s, 3 p50, 4 p99, 5 cpu us/req) of NAME's best row.
best() {
    print_best | awk -v name="$1" -v col="$2" 'NR > 1 && $1 == name { print $col; exit }'
}

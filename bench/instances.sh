#!/usr/bin/env bash
# `users.me` throughput and latency: the embedded default (one instance, SQLite) against the
# several-instances deployment (PostgreSQL + Redis, every per-IP/per-user limit counted in
# Redis), on loopback with wrk (functions from bench/lib.sh). A report, not a test: it always
# exits 0. Needs PostgreSQL (BENCH_POSTGRES_URL, a server URL without a database: a fresh one is
# created and dropped) and Redis (BENCH_REDIS_URL); the rows that need them are left out
# otherwise.
#
#   pg+redis A      one instance of the pair answering alone
#   pg+redis A+B    both instances loaded at once by two wrk processes: their sum
#
# The per-user budgets are raised (bench/lib.sh) so no call is refused, but each call still
# runs the budget's Lua script in Redis: "limits on". On a 2-core machine the two instances
# and wrk share the same cores, so A+B measures the cost of the shared state, not scaling.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}
ensure_built

# register BASE: a new account's access token.
register() {
    curl -fsS -X POST "$1/trpc/auth.register" -H 'content-type: application/json' \
        -d "{\"email\":\"bench-$RANDOM$RANDOM@example.com\",\"password\":\"correct horse battery\",\"name\":\"Bench\"}" |
        grep -o '"accessToken":"[^"]*"' | cut -d'"' -f4
}

start_server sqlite
TOKEN=$(register "$BASE")
for _ in $(seq "$ROUNDS"); do measure sqlite "$BASE/trpc/users.me" -H "Authorization: Bearer $TOKEN"; done
SQLITE_ROWS=("${ROWS[@]}")
stop_server

db="alias_bench_$$"
if ! psql "$PG/postgres" -qc "create database $db" 2>/dev/null || ! redis-cli -u "$REDIS" ping >/dev/null 2>&1; then
    log "PostgreSQL or Redis unreachable: only the SQLite row"
    ROWS=("${SQLITE_ROWS[@]}"); print_best; exit 0
fi
trap 'stop_server; kill "${A_PID:-}" "${B_PID:-}" 2>/dev/null || true; psql "$PG/postgres" -qc "drop database if exists $db" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
shared=(DATABASE_URL="$PG/$db" ALIAS_REDIS_URL="$REDIS" ALIAS_REDIS_KEY_PREFIX="bench$$:")
start_server pg-a "${shared[@]}"
A_PID=$SERVER_PID A=$BASE
# B signs with A's key, as instances behind one address must.
start_server pg-b "${shared[@]}" ALIAS_JWT_PRIVATE_KEY_FILE="$WORK/data-pg_a/jwt-ed25519.pem"
B=$BASE B_PID=$SERVER_PID
SERVER_PID=$A_PID # measure reads the server's CPU time from SERVER_PID
TOKEN=$(register "$A")
ROWS=("${SQLITE_ROWS[@]}")
for _ in $(seq "$ROUNDS"); do
    measure 'pg+redis_A' "$A/trpc/users.me" -H "Authorization: Bearer $TOKEN"
done
print_best

# Both at once: two wrk processes, their requests per second summed.
both=$(for url in "$A" "$B"; do
    wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -H "Authorization: Bearer $TOKEN" "$url/trpc/users.me" &
done; wait)
printf '%s\n' "$both" | awk '$1 == "Requests/sec:" { sum += $2; n++ }
    /Non-2xx|Socket errors/ { err = err " [" $0 "]" }
    END { printf "%-12s %10.1f  (%d instances at once)%s\n", "pg+redis_A+B", sum, n, err }'

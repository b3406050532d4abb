#!/usr/bin/env bash
# Chat replies across two instances on PostgreSQL + Redis (bench/instances-chat.mjs): the
# delay a client following a reply through the other instance adds, against a client on the
# instance writing it, and 1,000 replies at once over both. Builds the release server (see
# bench/lib.sh), makes a fresh database (dropped on exit), raises the open-file limit and
# prints the tables. A report, not a test: exits 0. Needs Node 20+, PostgreSQL
# (BENCH_POSTGRES_URL, a server URL without a database) and Redis (BENCH_REDIS_URL).
#
#   ALIAS_BENCH_SKIP_BUILD=1      use the existing release binary
#   ALIAS_DB_MAX_CONNECTIONS=32   each instance's database pool
#   RESUME_REPLIES=10 RESUME_WORDS=30 STREAMS=1000 WORDS=5 PACE_MS=20   (see the .mjs)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
REDIS=${BENCH_REDIS_URL:-redis://127.0.0.1:6379}

ensure_built
command -v node >/dev/null || { log "node (20 or later) is needed"; exit 0; }
db="alias_bench_chat_$$"
if ! psql "$PG/postgres" -qc "create database $db" 2>/dev/null || ! redis-cli -u "$REDIS" ping >/dev/null 2>&1; then
    log "PostgreSQL ($PG) or Redis ($REDIS) unreachable: nothing to measure"
    exit 0
fi
trap 'psql "$PG/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
# Each stream holds client and provider sockets in both servers and in node, and a Redis
# connection per follower on the instance not writing it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BUSY=$(cpu_busy)

export ALIAS_DB_MAX_CONNECTIONS=${ALIAS_DB_MAX_CONNECTIONS:-32}
export ALIAS_AUTH_IP_LIMIT_PER_MINUTE=${ALIAS_AUTH_IP_LIMIT_PER_MINUTE:-1000}
export ALIAS_BIN=$BIN DATABASE_URL="$PG/$db" ALIAS_REDIS_URL="$REDIS"
timeout -k 5 270 node bench/instances-chat.mjs || log "benchmark ended with status $?"
printf '\n(ALIAS_DB_MAX_CONNECTIONS=%s per instance; machine busy %s%% in the second before the run:\n high values mean other processes competed for the cores and the numbers are noisy)\n' \
    "$ALIAS_DB_MAX_CONNECTIONS" "$BUSY"
exit 0

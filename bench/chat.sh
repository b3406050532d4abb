#!/usr/bin/env bash
# Chat streaming benchmark (bench/chat.mjs): builds the release server, raises the open-file
# limit and runs the Node script, which starts a fake Gemini and the server (pointed at it
# with ALIAS_GEMINI_BASE_URL), then prints the tables. A report, not a test: exits 0.
#
#   ALIAS_BENCH_SKIP_BUILD=1      use the existing release binary (see bench/lib.sh)
#   ALIAS_DB_MAX_CONNECTIONS=32   the server's database pool (default 10 is for a laptop)
#   CHAT_LATENCY_STREAMS=200 CHAT_CONCURRENT_STREAMS=1000 CHAT_IDLE_STREAMS=500
#   CHAT_BURSTS=2 CHAT_LONG_SECONDS=20 CHAT_WORDS=5 CHAT_PACE_MS=20   (see bench/chat.mjs)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

ensure_built
command -v node >/dev/null || { log "node (20 or later) is needed"; exit 0; }
# Each stream holds a client socket and a provider socket in the server, and two in node.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
BUSY=$(cpu_busy)

export ALIAS_DB_MAX_CONNECTIONS=${ALIAS_DB_MAX_CONNECTIONS:-32}
export ALIAS_AUTH_IP_LIMIT_PER_MINUTE=${ALIAS_AUTH_IP_LIMIT_PER_MINUTE:-1000}
export ALIAS_BIN=$BIN
# A bounded run: chat.mjs stops itself at CHAT_HARD_LIMIT_SECONDS (170); this is the backstop.
timeout -k 5 200 node bench/chat.mjs || log "chat benchmark ended with status $?"
printf '\n(ALIAS_DB_MAX_CONNECTIONS=%s; open files limit %s; machine busy %s%% in the second before the run:\n high values mean other processes competed for the 2 cores and the numbers are noisy)\n' \
    "$ALIAS_DB_MAX_CONNECTIONS" "$(ulimit -n)" "$BUSY"
exit 0

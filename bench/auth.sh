#!/usr/bin/env bash
# Signed-in request cost and password sign-in, on loopback with wrk (functions from
# bench/lib.sh; same BENCH_* variables as bench/run.sh). A report, not a test: always exits 0.
#
#   (a) users.me (Bearer token: JWT check + session/user lookup) against system.health;
#       target: users.me >= 50% of system.health's req/s.
#   (b) auth.login latency (argon2id verify, then a new session) with BENCH_LOGIN_CONNECTIONS
#       (1) connections: the p50 is what a person signing in waits.
#   (c) users.me p99 while a second wrk floods auth.login with BENCH_FLOOD_CONNECTIONS (16)
#       connections from the same loopback address; target: p99 < 20 ms. Two variants:
#       - hashing: the per-IP limit raised (ALIAS_AUTH_IP_LIMIT_PER_MINUTE=1000000), so every
#         flood request verifies a password: argon2id holds one core (the server allows
#         cores - 1 hashes at once) and each success also writes a session and an audit row;
#       - rate-limited: the default limit (60 per IP per minute, on a fresh server), so after
#         the first 60 the flood gets quick 429s: a second full-speed client, no hashing.
#       The flood table says how many flood answers were 2xx and how many 429.
#   (d) informational: users.me with the session cache off (ALIAS_SESSION_CACHE_SECONDS=0:
#       the session and user read from the database on every call, as several instances
#       that must see a revocation at once everywhere would run); verified tokens are still
#       remembered.
#
# The account signs in with its correct password: 5 failures would lock it (ALIAS_LOGIN_LOCK_SECONDS).
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ME_TARGET=50     # users.me req/s, % of system.health
P99_TARGET=20    # users.me p99 ms under a login flood
LOGIN_CONNECTIONS=${BENCH_LOGIN_CONNECTIONS:-1}
FLOOD_CONNECTIONS=${BENCH_FLOOD_CONNECTIONS:-16}
SETTLE=3         # seconds of flood before users.me is measured (the first 60 logins take ~2 s)
LOGIN_LUA=bench/login.lua
FLOODS=()        # per flood round: name round login-req/s 2xx 429 other login-p50 me-p99

# register: creates the benchmark account on the running server; sets TOKEN.
register() {
    local body
    body=$(curl -fsS -X POST "$BASE/trpc/auth.register" -H 'content-type: application/json' \
        -d '{"email":"bench@example.com","password":"correct horse battery","name":"Bench"}')
    TOKEN=$(printf '%s' "$body" | grep -o '"accessToken":"[^"]*"' | cut -d'"' -f4)
    [[ -n $TOKEN ]] || { log "registration answered no token: $body"; exit 1; }
    AUTH=(-H "Authorization: Bearer $TOKEN")
}

# me_during_flood NAME ROUND: floods auth.login in the background while `measure` runs
# users.me, then records the flood's answers by status.
me_during_flood() {
    local name=$1 round=$2 busy out="$WORK/flood.txt" flood
    busy=$(cpu_busy)
    wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$((SETTLE + 1 + DURATION + 1))s" --latency \
        -s "$LOGIN_LUA" "$BASE/trpc/auth.login" >"$out" &
    flood=$!
    sleep "$SETTLE"
    MEASURE_BUSY=$busy measure "$name" "$BASE/trpc/users.me" "${AUTH[@]}"
    wait "$flood" || true
    local p99=${ROWS[-1]}
    p99=$(awk '{ print $4 }' <<<"$p99")
    FLOODS+=("$(awk -v name="$name" -v round="$round" -v p99="$p99" '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0
                         if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
        $1 == "50%" { p50 = ms($2) }  $1 == "Requests/sec:" { rps = $2 }
        $1 == "status" { s = $2 + 0; n = $3 + 0
                         if (s >= 200 && s < 300) ok += n; else if (s == 429) limited += n; else other += n }
        END { printf "%-12s %5d %10.1f %7d %7d %7d %9.1f %9.3f", name, round, rps, ok, limited, other, p50, p99 }' "$out")")
}

flood_table() { # flood_table NAME: the flood rounds of NAME
    printf '%-12s %5s %10s %7s %7s %7s %9s %9s\n' 'flood beside' round 'login/s' 2xx 429 other \
        'login p50' 'me p99'
    printf '%s\n' "${FLOODS[@]}" | awk -v name="$1" '$1 == name'
}

verdict() { # verdict LABEL VALUE OP TARGET UNIT
    awk -v label="$1" -v v="$2" -v op="$3" -v t="$4" -v unit="$5" 'BEGIN {
        ok = (op == ">=") ? v >= t : v < t
        printf "%-44s %8.1f %-3s =>  %s (target: %s %s %s)\n", label, v, unit, ok ? "PASS" : "FAIL", op, t, unit }'
}

ensure_built

# (a), (b), (c) hashing: the per-IP limit out of the way.
start_server "raised limit" ALIAS_AUTH_IP_LIMIT_PER_MINUTE=1000000 ALIAS_ACCESS_TTL_SECONDS=3600
register
for round in $(seq "$ROUNDS"); do
    measure health "$BASE/trpc/system.health"
    measure me "$BASE/trpc/users.me" "${AUTH[@]}"
    MEASURE_CONNECTIONS=$LOGIN_CONNECTIONS measure "login/c$LOGIN_CONNECTIONS" \
        "$BASE/trpc/auth.login" -s "$LOGIN_LUA"
    me_during_flood me+floodhash "$round"
done
printf '\n== auth | ALIAS_AUTH_IP_LIMIT_PER_MINUTE=1000000 | %s x %ss, %s connections (login: %s, flood: %s), pinned=%s ==\n' \
    "$ROUNDS" "$DURATION" "$CONNECTIONS" "$LOGIN_CONNECTIONS" "$FLOOD_CONNECTIONS" "$PIN"
print_best
printf '\n'
flood_table me+floodhash
RAISED=$(print_best)
stop_server

# (c) rate-limited: a fresh server at the default limit, so its first minute starts here.
start_server "default limit" -u ALIAS_AUTH_IP_LIMIT_PER_MINUTE ALIAS_ACCESS_TTL_SECONDS=3600
register
for round in $(seq "$ROUNDS"); do
    me_during_flood me+flood429 "$round"
done
printf '\n== auth | default limit (60 sign-ins per IP per minute) | %s x %ss, %s connections (flood: %s) ==\n' \
    "$ROUNDS" "$DURATION" "$CONNECTIONS" "$FLOOD_CONNECTIONS"
print_best
printf '\n'
flood_table me+flood429
LIMITED=$(print_best)
LIMITED_LOG="$(grep -c 'outcome=TooManyRequests' "$SERVER_LOG" || true) log lines with outcome=TooManyRequests, $(wc -l <"$SERVER_LOG") lines / $(($(wc -c <"$SERVER_LOG") / 1024 / 1024)) MiB in all"
printf 'server log (ALIAS_LOG=%s): %s\n' "${ALIAS_LOG:-info}" "$LIMITED_LOG"
stop_server

# (d) the session cache off.
start_server "session cache off" ALIAS_SESSION_CACHE_SECONDS=0 ALIAS_ACCESS_TTL_SECONDS=3600
register
for round in $(seq "$ROUNDS"); do
    measure health "$BASE/trpc/system.health"
    measure me/nocache "$BASE/trpc/users.me" "${AUTH[@]}"
done
printf '\n== auth | ALIAS_SESSION_CACHE_SECONDS=0 | %s x %ss, %s connections ==\n' \
    "$ROUNDS" "$DURATION" "$CONNECTIONS"
print_best
UNCACHED=$(print_best)
stop_server

column() { awk -v name="$2" -v col="$3" '$1 == name { print $col; exit }' <<<"$1"; }
printf '\n== auth verdicts ==\n'
verdict "(a) users.me req/s vs system.health" \
    "$(awk -v a="$(column "$RAISED" me 2)" -v b="$(column "$RAISED" health 2)" 'BEGIN { print b ? 100 * a / b : 0 }')" \
    ">=" "$ME_TARGET" "%"
printf '%-44s %8.1f ms (p99 %.1f ms, %.1f logins/s; informational)\n' \
    "(b) auth.login p50, $LOGIN_CONNECTIONS connection(s)" \
    "$(column "$RAISED" "login/c$LOGIN_CONNECTIONS" 3)" "$(column "$RAISED" "login/c$LOGIN_CONNECTIONS" 4)" \
    "$(column "$RAISED" "login/c$LOGIN_CONNECTIONS" 2)"
verdict "(c) users.me p99, no flood" "$(column "$RAISED" me 4)" "<" "$P99_TARGET" ms
verdict "(c) users.me p99, login flood hashing" "$(column "$RAISED" me+floodhash 4)" "<" "$P99_TARGET" ms
verdict "(c) users.me p99, login flood rate-limited" "$(column "$LIMITED" me+flood429 4)" "<" "$P99_TARGET" ms
printf '%s\n' "${FLOODS[@]}" | awk '
    $1 == "me+floodhash" { h[1] += $4; h[2] += $5; h[3] += $6; hr += $3; hn++ }
    $1 == "me+flood429"  { l[1] += $4; l[2] += $5; l[3] += $6; lr += $3; ln++ }
    END {
        printf "    hashing flood: %d answers, %d 2xx (a password verified each), %d 429, %d other; %.1f logins/s\n", h[1] + h[2] + h[3], h[1], h[2], h[3], hn ? hr / hn : 0
        printf "    rate-limited flood: %d answers, %d 2xx (the per-minute budget), %d 429, %d other; %.0f answers/s\n", l[1] + l[2] + l[3], l[1], l[2], l[3], ln ? lr / ln : 0 }'
printf '    %s\n' "rate-limited flood's server log: $LIMITED_LOG"
printf '%-44s %8.1f %% (informational)\n' "(d) users.me vs system.health, cache off" \
    "$(awk -v a="$(column "$UNCACHED" me/nocache 2)" -v b="$(column "$UNCACHED" health 2)" 'BEGIN { print b ? 100 * a / b : 0 }')"
printf '\n(best of %s runs per row, by req/s; cpu us/req: server CPU time per request (for me+flood*, per\n users.me request but including the CPU spent on the flood); bg cpu: machine busy %% in the second\n before the run (before the flood for me+flood*), high values mean noisy numbers;\n flood rows: every round, over the whole flood including %s s before users.me is measured)\n' \
    "$ROUNDS" "$SETTLE"
exit 0

#!/usr/bin/env bash
# Every check and test of the project, in the order that fails fastest.
# PostgreSQL variants run when ALIAS_TEST_POSTGRES_URL is set (.ci/run sets it).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "Rust tests (unit, integration, bindings freshness)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi

step "TypeScript: install, typecheck, end-to-end tests against the real server"
[ -d node_modules ] || npm ci --no-audit --no-fund
npm run --silent typecheck
ALIAS_SERVER_BIN="${ALIAS_SERVER_BIN:-target/debug/alias-server}" npm test

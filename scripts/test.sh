#!/usr/bin/env bash
# Runs every check of the project: formatting, clippy, the release build, and all
# tests (unit, bridge against PostgreSQL, integration against redis-server with the
# module). Installs what a fresh Debian machine lacks when run as root.
#
# PostgreSQL for the tests: $CONSISTENCY_TEST_PG if set, else the one on
# 127.0.0.1:5432 if it lets user postgres in, else a throwaway cluster started
# here (on a free port, in a temp dir) and stopped on exit.
#
# Environment: CARGO_TEST_ARGS (extra args after `cargo test --release --workspace`,
# e.g. "-- --test-threads=1").
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=test.sh

START=$SECONDS
STEP="setup"
PG_TMP=""

finish() {
    local rc=$?
    if [ -n "$PG_TMP" ]; then
        stop_throwaway_pg "$PG_TMP"
        rm -rf "$PG_TMP"
    fi
    if [ "$rc" -eq 0 ]; then
        printf '\ntest.sh: OK: fmt, clippy, release build and all tests passed (%ss)\n' "$((SECONDS - START))"
    else
        printf '\ntest.sh: FAILED during %s (exit %s, after %ss)\n' "$STEP" "$rc" "$((SECONDS - START))"
    fi
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

step() {
    STEP=$1
    heading "$1"
}

step "installing missing packages"
ensure_packages
ensure_test_tools
ensure_cargo
for tool in redis-server redis-cli; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (install redis-server / redis-tools)"
done

step "PostgreSQL for the tests"
DEFAULT_PG="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
pg_usable() {
    # $1: libpq string. pg_isready answers without logging in; psql checks we can.
    pg_isready -d "$1" -t 3 >/dev/null 2>&1 || return 1
    if command -v psql >/dev/null 2>&1; then
        psql -w -X -Atq -d "$1 connect_timeout=3" -c 'SELECT 1' >/dev/null 2>&1 || return 1
    fi
}
if [ -n "${CONSISTENCY_TEST_PG:-}" ]; then
    log "using CONSISTENCY_TEST_PG=$CONSISTENCY_TEST_PG"
elif pg_usable "$DEFAULT_PG"; then
    export CONSISTENCY_TEST_PG="$DEFAULT_PG"
    log "using the PostgreSQL on 127.0.0.1:5432 (each test makes and drops its own database)"
else
    PG_TMP=$(mktemp -d "${TMPDIR:-/tmp}/rc-test-pg.XXXXXX")
    PG_PORT=$(free_port)
    start_throwaway_pg "$PG_TMP" "$PG_PORT"
    export CONSISTENCY_TEST_PG="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy --workspace --all-targets --features redis-consistency/test-hooks -- -D warnings

step "cargo build --release"
cargo build --release

step "cargo test --release"
# Release, so the 100k-key tests see realistic timings; the release .so lands in
# target/release, next to the test binaries' deps/ directory, where the tests find it.
# shellcheck disable=SC2086
cargo test --release --workspace --no-fail-fast --features redis-consistency/test-hooks ${CARGO_TEST_ARGS:-}

#!/usr/bin/env bash
# The benchmark of docs/BENCHMARKS.md: at each size, a seed 000 ledger in
# PostgreSQL and its cache in a redis-server of our own (module loaded, about 1%
# drift injected), then, in the same run: the truth SQL alone (psql),
# CONSISTENCY.CHECK, a client-side checker (bench/src/checker.rs), the seed's
# per-user loop (sampled, extrapolated), CHECK CHANGED after 1% of the users'
# keys were written, a json rule next to the number rule, FIX of one id, FIX ALL
# and PURGE, with
# redis-server's peak RSS and the longest PING of a second client.
#
# Usage: scripts/bench.sh [--quick | --sizes small,medium,large] [--write-doc | --no-doc]
#                         [--repeat N] [--seed-sample N] [--fix-samples N] [--keep-db] [--perf]
#   no size option  all three sizes (about 20k, 100k and 330k users; 1M, 5M and
#                   16.5M ledger rows; up to 1M cache keys); writes the tables
#                   into docs/BENCHMARKS.md
#   --quick         the small size only, for development; prints the tables
#   --sizes LIST    the sizes named; prints the tables
#   --write-doc     write docs/BENCHMARKS.md even for --quick / --sizes
#   --no-doc        never write it
#   --keep-db       leave the databases (consistency_bench_<size>) behind
#   --perf          perf record -g redis-server during the first CHECK per size
#   --repeat N      interleaved runs of truth SQL / CHECK / client checker
#                   (median reported; default 5, or 3 at the large size)
#   --seed-sample N users the per-user loop is timed on (default 200)
#   --fix-samples N single-id FIXes timed (default 200)
# Other options go to the driver as they are (target/release/consistency-bench --help).
#
# Environment: BENCH_PG, libpq key=value without dbname (default
# "host=127.0.0.1 port=5432 user=postgres"); the user must be allowed to create
# databases. Redis: only servers this script starts, on free loopback ports.
# Timings are ratios from one run on whatever machine runs it; they are not tests.
# The write-path cost of CHECK CHANGED's tracking is scripts/bench-writes.sh;
# a watched rule under a steady write load is scripts/bench-watch.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
PG=${BENCH_PG:-host=127.0.0.1 port=5432 user=postgres}

say() { printf '[bench.sh] %s\n' "$*" >&2; }
die() {
    say "ERROR: $*"
    exit 1
}

SIZES=small,medium,large
FULL=1
DOC=auto
PASS=()
while [ $# -gt 0 ]; do
    case $1 in
        --quick)
            SIZES=small
            FULL=0
            ;;
        --sizes)
            [ $# -ge 2 ] || die "--sizes needs a list (small,medium,large)"
            SIZES=$2
            FULL=0
            shift
            ;;
        --sizes=*)
            SIZES=${1#--sizes=}
            FULL=0
            ;;
        --write-doc) DOC=yes ;;
        --no-doc) DOC=no ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
            exit 0
            ;;
        *) PASS+=("$1") ;;
    esac
    shift
done
if [ "$DOC" = auto ]; then
    if [ "$FULL" = 1 ]; then DOC=yes; else DOC=no; fi
fi

for tool in cargo redis-server redis-cli psql awk; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found (scripts/test.sh installs what is missing)"
done
psql -X -w -Atq -d "$PG dbname=postgres connect_timeout=5" -c 'SELECT 1' >/dev/null ||
    die "cannot reach PostgreSQL with \"$PG\" (set BENCH_PG)"

say "building the module and the bench driver (release)"
cargo build --release --quiet
cargo build --release --quiet -p consistency-bench
MODULE=$ROOT/target/release/libredis_consistency.so
BIN=$ROOT/target/release/consistency-bench
[ -f "$MODULE" ] || die "$MODULE was not built"

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/consistency-bench.XXXXXX")
BENCH_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill "$BENCH_PID" 2>/dev/null || true
        wait "$BENCH_PID" 2>/dev/null || true
    fi
    # Only redis-servers the driver started write pidfiles here.
    local pidfile pid
    for pidfile in "$WORKDIR"/redis-*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    if [ "$rc" -ne 0 ]; then
        case " ${PASS[*]:-} " in
            *" --keep-db "*) ;;
            *)
                local size
                for size in ${SIZES//,/ }; do
                    psql -X -w -Atq -d "$PG dbname=postgres" \
                        -c "DROP DATABASE IF EXISTS consistency_bench_$size WITH (FORCE)" >/dev/null 2>&1 || true
                done
                ;;
        esac
        say "failed (exit $rc); configs and logs kept in $WORKDIR"
    else
        say "configs, logs and results.md in $WORKDIR"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ARGS=(--module "$MODULE" --pg "$PG" --sizes "$SIZES" --workdir "$WORKDIR")
if [ "$DOC" = yes ]; then
    ARGS+=(--doc "$ROOT/docs/BENCHMARKS.md")
fi
say "sizes: $SIZES; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$BIN" "${ARGS[@]}" "${PASS[@]}" &
BENCH_PID=$!
wait "$BENCH_PID"

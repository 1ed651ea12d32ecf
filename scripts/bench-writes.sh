#!/usr/bin/env bash
# The write-path cost of CHECK CHANGED's tracking: redis-benchmark throughput
# of the seed 000 application's writes (INCRBYFLOAT on `user:<id>:cost_weekly`,
# ZADD on `user:<id>:cost_5h_rolling`, pipelined) against a redis-server with
# the module loaded and rules.example.json's rules tracking, and against the
# same redis-server without the module. Runs alternate (module, plain, module,
# ...) and the median of each is reported, as a ratio from one run.
#
# Usage: scripts/bench-writes.sh [--rounds N] [--requests N]
# Needs redis-server and redis-benchmark; starts its own servers on free
# loopback ports (PostgreSQL is not needed: tracking never queries it).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
ROUNDS=3
REQUESTS=400000
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) ROUNDS=$2; shift ;;
        --requests) REQUESTS=$2; shift ;;
        -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-writes.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
    shift
done
for tool in redis-server redis-cli redis-benchmark; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench-writes.sh: $tool not found" >&2; exit 1; }
done

MODULE=$ROOT/target/release/libredis_consistency.so
[ -f "$MODULE" ] || cargo build --release --quiet
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/consistency-bench-writes.XXXXXX")
cleanup() {
    local pidfile pid
    for pidfile in "$WORKDIR"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if [ -n "$pid" ] && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$WORKDIR"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME [loadmodule args...]: prints the port.
start() {
    local name=$1 port
    shift
    port=$(free_port)
    {
        echo "port $port"
        echo "bind 127.0.0.1"
        echo "save \"\""
        echo "appendonly no"
        echo "dir $WORKDIR"
        echo "logfile $WORKDIR/$name.log"
        echo "pidfile $WORKDIR/$name.pid"
        echo "daemonize yes"
        if [ $# -gt 0 ]; then echo "loadmodule $*"; fi
    } >"$WORKDIR/$name.conf"
    # Daemonized, so this function's output (the port) is not held open.
    redis-server "$WORKDIR/$name.conf" >/dev/null 2>&1
    for _ in $(seq 100); do
        redis-cli -p "$port" PING >/dev/null 2>&1 && break
        sleep 0.05
    done
    echo "$port"
}

MODULE_PORT=$(start module "$MODULE" rules-file "$ROOT/rules.example.json" pg-url "host=127.0.0.1 port=1 user=nobody")
PLAIN_PORT=$(start plain)
redis-cli -p "$MODULE_PORT" CONSISTENCY.STATUS >/dev/null || { echo "module not loaded" >&2; exit 1; }

# rps PORT ARGS...: requests per second of one redis-benchmark run.
rps() {
    local port=$1
    shift
    redis-benchmark -p "$port" -n "$REQUESTS" -P 16 -r 100000 -q "$@" 2>/dev/null |
        tr '\r' '\n' | awk '/requests per second/ { for (i = 1; i <= NF; i++) if ($(i+1) == "requests") v = $i } END { print v }'
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

row() {
    local what=$1
    shift
    local m=() p=() i
    for i in $(seq "$ROUNDS"); do
        m+=("$(rps "$MODULE_PORT" "$@")")
        p+=("$(rps "$PLAIN_PORT" "$@")")
    done
    local mm pm
    mm=$(printf '%s\n' "${m[@]}" | median)
    pm=$(printf '%s\n' "${p[@]}" | median)
    awk -v what="$what" -v mm="$mm" -v pm="$pm" -v ms="${m[*]}" -v ps="${p[*]}" 'BEGIN {
        printf "| %s | %.0f (%s) | %.0f (%s) | %.3f |\n", what, mm, ms, pm, ps, mm / pm }'
}

echo "| writes (redis-benchmark, $REQUESTS requests, pipeline 16, 100k ids) | with the module, rules tracking (req/s, median) | without the module | ratio |"
echo "| --- | ---: | ---: | ---: |"
row "INCRBYFLOAT user:<id>:cost_weekly 0.5" INCRBYFLOAT user:__rand_int__:cost_weekly 0.5
row "ZADD user:<id>:cost_5h_rolling <ms> <ms>:0.5" ZADD user:__rand_int__:cost_5h_rolling __rand_int__ __rand_int__:0.5
echo
echo "dirty ids recorded: $(redis-cli -p "$MODULE_PORT" INFO consistency | grep -o 'dirty=[0-9]*' | paste -sd' ')"

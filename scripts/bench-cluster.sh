#!/usr/bin/env bash
# What a full CHECK costs PostgreSQL in Redis Cluster against one node: the
# seed's weekly totals (`user:{<id>}:cost_weekly`, a rule that ignores missing
# keys) in a plain redis-server and spread over three primaries, each with the
# module; CHECK on the single node and on each primary in turn, interleaved.
# Prints the module's truth time (truth_ms) and wall times; the shards' total
# truth time against one node's is the figure (target: at most 1.3x).
#
# Usage: scripts/bench-cluster.sh [--users N] [--repeat N]
# Environment: BENCH_PG, libpq key=value without dbname (default
# "host=127.0.0.1 port=5432 user=postgres"); it creates and drops the database
# consistency_bench_cluster. Redis: only servers it starts, on free loopback ports.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case ${1:-} in
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found (--cluster create)"
run_bench_driver cluster "$@"

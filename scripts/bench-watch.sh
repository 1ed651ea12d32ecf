#!/usr/bin/env bash
# What watching a rule costs under a steady write load: an application writing
# true values of random ids (`SET account:<id>:balance`, 5,000 writes/s by
# default) into a redis-server with the module, its `number` rule alternately
# unwatched and watched (`"watch": true`), same server, same load, in one run.
# Prints, per phase, PING p50/p99/max on another connection and, watched, the
# truth queries per second the looks sent against consistency.watch-max-qps.
#
# Usage: scripts/bench-watch.sh [--rate N] [--seconds N] [--rounds N] [--ids N] [--max-qps N]
# Environment: BENCH_PG, libpq key=value without dbname (default
# "host=127.0.0.1 port=5432 user=postgres"); it creates and drops the database
# consistency_bench_watch. Redis: only the server it starts, on a free loopback port.
set -euo pipefail

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
case ${1:-} in
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
run_bench_driver watch "$@"

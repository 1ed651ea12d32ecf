#!/usr/bin/env bash
# The seed 000 story, end to end, on throwaway servers:
#   PostgreSQL holds a spend ledger; Redis caches each user's weekly spend in
#   user:{id}:cost_weekly. Three keys drift (user 4 cached at 50.1 while the
#   database says 12.8, a garbage value, a key for a user that does not exist).
#   CONSISTENCY.CHECK finds them; CONSISTENCY.FIX 4 clears user 4's cache.
#
# Starts its own PostgreSQL (temp dir, free port) and redis-server (free port) with
# the release build of the module, and removes everything on exit. Never touches
# the servers on 5432 or 6379.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
LOG_TAG=demo.sh

WORK=""
REDIS_PID=""
REDIS_PORT=""
cleanup() {
    local rc=$?
    stop_redis "$REDIS_PORT" "$REDIS_PID"
    if [ -n "$WORK" ]; then
        stop_throwaway_pg "$WORK/pg"
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ensure_packages
ensure_cargo

heading "1. Building the module (cargo build --release)"
cargo build --release
MODULE="$PWD/target/release/libredis_consistency.so"
[ -f "$MODULE" ] || die "$MODULE was not built"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/rc-demo.XXXXXX")
chmod 755 "$WORK"

heading "2. A throwaway PostgreSQL with the seed 000 schema"
PG_PORT=$(free_port)
start_throwaway_pg "$WORK/pg" "$PG_PORT"
PG_URL="host=127.0.0.1 port=$PG_PORT user=postgres dbname=postgres"
psql_q() { psql -X -q -v ON_ERROR_STOP=1 -d "$PG_URL" "$@"; }

psql_q <<'SQL'
CREATE TABLE users (
    id integer PRIMARY KEY,
    name text NOT NULL,
    deleted_at timestamptz
);
CREATE TABLE message_request (
    id bigserial PRIMARY KEY,
    user_id integer NOT NULL REFERENCES users(id),
    cost_usd numeric(21,15) NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ON message_request (user_id, created_at);

-- 50 users, about 300 requests made in the last few hours (never before this
-- week began), each costing up to $2 with 15 decimals.
SELECT setseed(0.42) \g /dev/null
INSERT INTO users (id, name) SELECT g, 'user' || g FROM generate_series(1, 50) g;
INSERT INTO message_request (user_id, cost_usd, created_at)
SELECT 1 + floor(random() * 50)::int,
       round((random() * 2)::numeric, 15),
       GREATEST(now() - random() * interval '4 hours', date_trunc('week', now()))
FROM generate_series(1, 300);

-- User 4 spent exactly $12.80 this week, as in the seed's report.
DELETE FROM message_request WHERE user_id = 4;
INSERT INTO message_request (user_id, cost_usd) VALUES (4, 5.0), (4, 4.3), (4, 3.5);
SQL
psql_q -c "SELECT count(*) AS users, (SELECT count(*) FROM message_request) AS requests,
                  (SELECT sum(cost_usd) FROM message_request WHERE user_id = 4) AS user_4_spent
           FROM users"

heading "3. The rules file"
RULES="$WORK/rules.json"
cat >"$RULES" <<'JSON'
{ "rules": [
  { "name": "cost_weekly", "kind": "number", "key": "user:{id}:cost_weekly",
    "truth": "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('week', now()) WHERE u.deleted_at IS NULL GROUP BY u.id",
    "threshold": 5.0, "fix": "delete" }
]}
JSON
cat "$RULES"

heading "4. A throwaway redis-server with the module"
mkdir -p "$WORK/redis"
write_redis_conf "$WORK/redis/redis.conf" "$(free_port)" "$WORK/redis" "$MODULE" \
    pg-url "$PG_URL" \
    rules-file "$RULES"
start_redis_with_module "$WORK/redis/redis.conf"
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
rcli_show() { redis-cli -3 --no-raw -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }
rcli INFO modules | grep '^module:' || true

heading "5. Filling the cache with the truth (what the application does)"
psql -X -At -d "$PG_URL" -c "
    SELECT 'SET user:' || u.id || ':cost_weekly ' || COALESCE(SUM(m.cost_usd), 0)
    FROM users u LEFT JOIN message_request m
      ON m.user_id = u.id AND m.created_at >= date_trunc('week', now())
    WHERE u.deleted_at IS NULL GROUP BY u.id ORDER BY u.id" | rcli >/dev/null
echo "DBSIZE: $(rcli DBSIZE)"
echo "user:4:cost_weekly = $(rcli GET user:4:cost_weekly)"

heading "6. Injecting drift"
echo "SET user:4:cost_weekly 50.1     # the seed's user 4: cache says \$50.10, database \$12.80"
rcli SET user:4:cost_weekly 50.1 >/dev/null
echo "SET user:7:cost_weekly abc      # a value that is not a number"
rcli SET user:7:cost_weekly abc >/dev/null
echo "SET user:999:cost_weekly 3.5    # a key for a user the database does not have"
rcli SET user:999:cost_weekly 3.5 >/dev/null

FAILED=0
run_show() {
    local out
    echo "> redis-cli $*"
    out=$(rcli_show "$@" 2>&1) || true
    printf '%s\n' "$out"
    case $out in
        ERR* | "(error)"*) FAILED=1 ;;
    esac
}

heading "7. CONSISTENCY.CHECK"
run_show CONSISTENCY.CHECK

if rcli COMMAND INFO CONSISTENCY.FIX 2>/dev/null | grep -qi 'consistency.fix'; then
    heading "8. CONSISTENCY.FIX 4 (clear user 4's cache, as fix-user-cache.sh 4 did)"
    run_show CONSISTENCY.FIX 4
    echo "user:4:cost_weekly now: '$(rcli GET user:4:cost_weekly)' (the application reloads it from the database)"

    heading "9. CONSISTENCY.CHECK again"
    run_show CONSISTENCY.CHECK
else
    heading "8. CONSISTENCY.FIX is not in this build yet; skipping the repair"
fi

heading "Done"
if [ "$FAILED" -ne 0 ]; then
    echo "A command answered with an error (see above). redis.log tail:"
    tail -n 20 "$WORK/redis/redis.log" || true
    exit 1
fi
echo "Everything above ran on throwaway servers, which are being removed now."

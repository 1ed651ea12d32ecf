#!/usr/bin/env bash
# The seed 000 check loop (check-redis-consistency.sh), for the users given:
# per user one psql for the truth (all three sums in one query), one redis-cli
# for the cached values (both totals and the window, in one call) and one awk
# to compare them (the seed compares with bc). Run by consistency-bench on a
# sample of users; the full loop is extrapolated from it.
#
# Usage: seed_loop.sh PG_CONNINFO REDIS_PORT WINDOW_START_MS THRESHOLD ID...
# Prints one line per finding: <status> <rule> <id>
set -u
pg=$1 port=$2 ws_ms=$3 threshold=$4
shift 4
for id in "$@"; do
    truth=$(psql -X -At -d "$pg" -c "SELECT
            COALESCE(SUM(m.cost_usd) FILTER (WHERE m.created_at >= date_trunc('week', now())), 0),
            COALESCE(SUM(m.cost_usd) FILTER (WHERE m.created_at >= date_trunc('month', now())), 0),
            COALESCE(SUM(m.cost_usd) FILTER (WHERE m.created_at >= to_timestamp($ws_ms / 1000.0)), 0)
        FROM users u LEFT JOIN message_request m ON m.user_id = u.id
        WHERE u.id = $id AND u.deleted_at IS NULL GROUP BY u.id")
    cached=$(printf 'GET user:%s:cost_weekly\nGET user:%s:cost_monthly\nZRANGEBYSCORE user:%s:cost_5h_rolling %s +inf\n' \
        "$id" "$id" "$id" "$ws_ms" | redis-cli -h 127.0.0.1 -p "$port")
    awk -v id="$id" -v truth="$truth" -v th="$threshold" '
        NR == 1 { w = $0; next }
        NR == 2 { m = $0; next }
        $0 != "" { n = split($0, parts, ":"); h += parts[n]; hn++ }
        END {
            if (truth == "") {
                if (w != "") print "orphan cost_weekly " id
                if (m != "") print "orphan cost_monthly " id
                if (hn > 0) print "orphan cost_5h " id
                exit
            }
            split(truth, t, "|")
            d = w - t[1]; if (w != "" && (d > th || -d > th)) print "drift cost_weekly " id
            d = m - t[2]; if (m != "" && (d > th || -d > th)) print "drift cost_monthly " id
            d = h - t[3]; if (hn > 0 && (d > th || -d > th)) print "drift cost_5h " id
        }' <<<"$cached"
done

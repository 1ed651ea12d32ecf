-- consistency.lua: export `INFO consistency` through redis_exporter.
--
-- redis_exporter skips INFO fields it does not know, and a plain INFO does not
-- include module sections, so the module's counters need this collect script:
--
--   prometheus-redis-exporter \
--       --redis.addr redis://127.0.0.1:6379 \
--       --script /path/to/scripts/redis_exporter/consistency.lua
--
-- redis_exporter EVALs the file with no keys on every scrape and reads the reply
-- as alternating names and values (like HGETALL); each value must parse as a
-- number, and each pair becomes one gauge:
--
--   redis_script_values{key="consistency_checks_total"} 1
--   redis_script_values{key="consistency_drifted_total"} 3
--   ...
--
-- Names are the INFO field names as `INFO consistency` prints them (with the
-- module's `consistency_` prefix): consistency_rules_loaded,
-- consistency_checks_total, consistency_keys_checked_total,
-- consistency_drifted_total, consistency_drifted_<status>, consistency_fixes_total,
-- consistency_purged_keys_total, consistency_pg_errors_total,
-- consistency_pg_query_ms_last, consistency_pg_query_ms_max,
-- consistency_lane_truth_queued, consistency_lane_keyspace_queued,
-- consistency_last_check_age_sec (-1 before the first check),
-- consistency_last_check_drifted.
--
-- KEYS: none. ARGV: none. Read-only (only INFO).
-- Returns: a flat array {name1, value1, name2, value2, ...} of strings. Fields
-- whose value is not a plain number are left out, so a future text field cannot
-- make redis_exporter reject the whole result. Without the module loaded the
-- section is empty and so is the reply (redis_exporter then exports nothing from
-- the script; alert on `absent(redis_script_values{key="consistency_rules_loaded"})`).
--
-- Try it by hand:
--   redis-cli --eval scripts/redis_exporter/consistency.lua

local info = redis.call('INFO', 'consistency')
local result = {}
for line in string.gmatch(info, '[^\r\n]+') do
    if string.sub(line, 1, 1) ~= '#' then
        local name, value = string.match(line, '^([^:]+):(.*)$')
        if name ~= nil and string.match(value, '^[%d%.eE+-]+$') and tonumber(value) ~= nil then
            table.insert(result, name)
            table.insert(result, value)
        end
    end
end
return result

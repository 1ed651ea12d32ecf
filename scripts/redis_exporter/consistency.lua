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
-- consistency_last_check_drifted, consistency_pg_up, consistency_runs_failed_total,
-- consistency_watch_queries_total.
--
-- Per rule, INFO prints one dict field
--   consistency_rule_cost_weekly:checked=5,drifted=1,last_run_age_sec=30,...
-- and this script returns each of its keys as `consistency_rule_<key>:<rule>`:
--
--   redis_script_values{key="consistency_rule_drifted:cost_weekly"} 1
--
-- Prometheus's metric_relabel_configs (docs/OPERATIONS.md) then split that into
-- key="consistency_rule_drifted" and rule="cost_weekly". Keys are [a-z0-9_] and
-- INFO turns a ':' in a rule name into '_', so the last ':' is the separator.
--
-- KEYS: none. ARGV: none. Read-only (only INFO).
-- Returns: a flat array {name1, value1, name2, value2, ...} of strings. Fields
-- whose value is not a plain number are left out, so a future text field cannot
-- make redis_exporter reject the whole result; a watched rule's `nines` of `inf`
-- (nothing inconsistent) is exported as +Inf, which Prometheus stores as such. Without the module loaded the
-- section is empty and so is the reply (redis_exporter then exports nothing from
-- the script; docs/OPERATIONS.md has the alert for a Redis without the module).
--
-- Try it by hand:
--   redis-cli --eval scripts/redis_exporter/consistency.lua

local info = redis.call('INFO', 'consistency')
local result = {}
local function is_number(value)
    return string.match(value, '^[%d%.eE+-]+$') ~= nil and tonumber(value) ~= nil
end
for line in string.gmatch(info, '[^\r\n]+') do
    if string.sub(line, 1, 1) ~= '#' then
        local name, value = string.match(line, '^([^:]+):(.*)$')
        local rule = name and string.match(name, '^consistency_rule_(.+)$')
        if rule ~= nil and string.find(value, '=', 1, true) then
            for key, v in string.gmatch(value, '([%w_]+)=([^,]*)') do
                if v == 'inf' then
                    v = '+Inf'
                end
                if is_number(v) or v == '+Inf' then
                    table.insert(result, 'consistency_rule_' .. key .. ':' .. rule)
                    table.insert(result, v)
                end
            end
        elseif name ~= nil and is_number(value) then
            table.insert(result, name)
            table.insert(result, value)
        end
    end
end
return result

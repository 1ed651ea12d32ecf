-- drifted_ids.lua: which of these ids have any finding?
--
-- KEYS: none.
-- ARGV: the ids to check (at most consistency.sync-max-keys; none -> empty reply).
--
-- Runs  CONSISTENCY.CHECK ID <a> ID <b> ... LIMIT <n> FORMAT json
-- (LIMIT large enough that no entry is left out) over every rule, and returns
-- an array of the ids that have at least one entry (drift, invalid, orphan,
-- missing, no_ttl, bad_ttl or stale, in any rule), each once, in ARGV order. A clean set of ids
-- returns an empty array.
--
-- Read-only. Errors are raised unchanged (too many ids, PostgreSQL down, ...).
-- In Redis Cluster the ids' keys must live on the node that runs the script.
--
-- Example:
--   redis-cli --eval scripts/lua/drifted_ids.lua , 1 2 3 4 5
--   1) "4"

if #ARGV == 0 then
    return {}
end

local args = { 'CONSISTENCY.CHECK' }
for i = 1, #ARGV do
    table.insert(args, 'ID')
    table.insert(args, ARGV[i])
end
-- Every id can have one entry per rule and status (and per field of a json
-- rule, per key of a template with several placeholders); LIMIT only trims
-- the report, so a generous bound costs nothing.
table.insert(args, 'LIMIT')
table.insert(args, tostring(#ARGV * 1000))
table.insert(args, 'FORMAT')
table.insert(args, 'json')

local report = cjson.decode(redis.call(unpack(args)))

local found = {}
for _, entry in ipairs(report['entries']) do
    found[entry['id']] = true
end

local result = {}
local seen = {}
for i = 1, #ARGV do
    local id = ARGV[i]
    if found[id] and not seen[id] then
        seen[id] = true
        table.insert(result, id)
    end
end
return result

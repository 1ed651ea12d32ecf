-- check_and_fix.lua: check one id and, only if something drifted, fix it.
--
-- KEYS: none.
-- ARGV[1]: the id to check (required; any bytes, sent as `ID <id>`, so an id
--          that reads like a keyword such as "all" is safe).
-- ARGV[2]: THRESHOLD override (optional; empty or absent = each rule's own).
--
-- Runs  CONSISTENCY.CHECK ID <id> [THRESHOLD <t>] FORMAT json
-- and, when its `drifted` is above 0,
--       CONSISTENCY.FIX ID <id> FORMAT json
-- (clearing, or per rule rewriting, every fixable rule's key for that id, as
-- `fix-user-cache.sh <id>` does).
--
-- Returns one bulk string, a JSON object:
--   {"check":<the CHECK report>,"fix":<the FIX report, or null when clean>}
-- Both reports are embedded exactly as the module wrote them (as documented in the README),
-- field order and number text included.
--
-- Errors from the module are raised unchanged, e.g. with more ids than
-- consistency.sync-max-keys or with PostgreSQL down.
--
-- Inside a script the module runs synchronously on the main thread with the
-- short consistency.sync-timeout-ms statement timeout: keep it to one id.
-- In Redis Cluster, send it to the node that owns the id's keys.
--
-- Example:
--   redis-cli --eval scripts/lua/check_and_fix.lua , 4 5.0
--   redis-cli EVAL "$(cat scripts/lua/check_and_fix.lua)" 0 4

local id = ARGV[1]
if id == nil or id == '' then
    return redis.error_reply('ERR usage: check_and_fix.lua ARGV[1]=id [ARGV[2]=threshold]')
end

local check_args = { 'CONSISTENCY.CHECK', 'ID', id }
local threshold = ARGV[2]
if threshold ~= nil and threshold ~= '' then
    table.insert(check_args, 'THRESHOLD')
    table.insert(check_args, threshold)
end
table.insert(check_args, 'FORMAT')
table.insert(check_args, 'json')

local check_json = redis.call(unpack(check_args))
local check = cjson.decode(check_json)

local fix_json = 'null'
if tonumber(check['drifted']) > 0 then
    fix_json = redis.call('CONSISTENCY.FIX', 'ID', id, 'FORMAT', 'json')
end

return '{"check":' .. check_json .. ',"fix":' .. fix_json .. '}'

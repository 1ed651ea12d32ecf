-- fix_ids_for_rule.lua: clear (or per the rule, rewrite) one rule's keys for a
-- list of ids.
--
-- KEYS: none.
-- ARGV[1]:   the rule name (as in CONSISTENCY.RULES).
-- ARGV[2..]: the ids (at least one; at most consistency.sync-max-keys).
--
-- Runs  CONSISTENCY.FIX ID <a> ID <b> ... RULE <name> FORMAT json
-- Every id goes through `ID`, so ids that read like keywords are safe.
--
-- Returns the FIX report as one bulk string of JSON, exactly as the module wrote
-- it: {"dry_run":false,"truth":"ok","changed":N,"skipped":N,"entries":[...]}
-- with one entry per id (`action` deleted, rewritten or absent, ...).
--
-- Errors are raised unchanged: an unknown rule, a rule with fix none, more ids
-- than sync-max-keys (`ERR too large for a script or MULTI: ...`).
-- Clearing needs no truth: with PostgreSQL down it still clears, and `truth`
-- says `unavailable: ...`.
-- In Redis Cluster the ids' keys must live on the node that runs the script.
--
-- Example:
--   redis-cli --eval scripts/lua/fix_ids_for_rule.lua , cost_weekly 4 7 9

local rule = ARGV[1]
if rule == nil or rule == '' or #ARGV < 2 then
    return redis.error_reply('ERR usage: fix_ids_for_rule.lua ARGV[1]=rule ARGV[2..]=ids')
end

local args = { 'CONSISTENCY.FIX' }
for i = 2, #ARGV do
    table.insert(args, 'ID')
    table.insert(args, ARGV[i])
end
table.insert(args, 'RULE')
table.insert(args, rule)
table.insert(args, 'FORMAT')
table.insert(args, 'json')

return redis.call(unpack(args))

-- Truth for rule kind `presence`, keys mcp:connection:state:{id} (seed 001).
-- Column 1 only: the ids of enabled MCP endpoints. A state key must exist
-- exactly for these ids: one missing means the connection monitor has not
-- (re)connected it; one left over belongs to a disabled or deleted endpoint.
SELECT id
FROM xiaozhi_mcp_endpoints
WHERE is_enabled

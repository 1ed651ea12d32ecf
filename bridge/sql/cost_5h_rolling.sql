-- Truth for rule kind `window_sum`, keys user:{id}:cost_5h_rolling (seed 000).
-- $1 is the window start (timestamptz), the same instant the module uses to
-- sum the ZSET members, so both sides cut at the same point.
-- Column 1: the user id. Column 2: the user's spend since $1.
-- Every live user is returned, with 0 when there is nothing in the window.
SELECT u.id, COALESCE(SUM(m.cost_usd), 0)
FROM users u
LEFT JOIN message_request m
  ON m.user_id = u.id
 AND m.created_at >= $1
WHERE u.deleted_at IS NULL
GROUP BY u.id

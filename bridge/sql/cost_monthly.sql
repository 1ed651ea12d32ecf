-- Truth for rule kind `number`, keys user:{id}:cost_monthly (seed 000).
-- Column 1: the user id. Column 2: the user's spend since the start of this
-- month, exact numeric(21,15) read as text.
-- Every live user is returned (LEFT JOIN + COALESCE), not only users with
-- requests: an id the truth does not return makes its key an orphan.
-- date_trunc uses the session time zone; see cost_weekly.sql.
SELECT u.id, COALESCE(SUM(m.cost_usd), 0)
FROM users u
LEFT JOIN message_request m
  ON m.user_id = u.id
 AND m.created_at >= date_trunc('month', now())
WHERE u.deleted_at IS NULL
GROUP BY u.id

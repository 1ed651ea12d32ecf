//! The seed 000 shape: users, a spend ledger (`message_request.cost_usd numeric(21,15)`)
//! and per-user spend caches `user:{id}:cost_weekly` in Redis. Also the seed 001
//! table `xiaozhi_mcp_endpoints` for the presence rule.

use super::TestPg;

/// Truth of `user:{id}:cost_weekly`: every live user, 0 when they spent nothing.
pub const WEEKLY_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('week', now()) \
WHERE u.deleted_at IS NULL GROUP BY u.id";

/// Truth of `user:{id}:cost_monthly`.
pub const MONTHLY_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= date_trunc('month', now()) \
WHERE u.deleted_at IS NULL GROUP BY u.id";

/// Truth of the 5-hour window; `$1` is the window start (timestamptz).
pub const WINDOW_TRUTH: &str = "SELECT u.id, COALESCE(SUM(m.cost_usd), 0) FROM users u \
LEFT JOIN message_request m ON m.user_id = u.id AND m.created_at >= $1 \
WHERE u.deleted_at IS NULL GROUP BY u.id";

/// Truth of `mcp:connection:state:{id}` (seed 001).
pub const PRESENCE_TRUTH: &str = "SELECT id FROM xiaozhi_mcp_endpoints WHERE is_enabled";

/// Create the tables (in a fresh database).
pub fn create_schema(pg: &TestPg) {
    pg.exec(
        "CREATE TABLE users (
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
         CREATE INDEX message_request_user_created ON message_request (user_id, created_at);
         CREATE TABLE xiaozhi_mcp_endpoints (
             id text PRIMARY KEY,
             name text,
             is_enabled boolean NOT NULL
         );",
    );
}

/// Users 1..=`users` (name `user<id>`), each with `rows_per_user` ledger rows.
///
/// Costs are deterministic in (`seed`, user, row): numbers in [0, 2) with up to 15
/// decimals, e.g. `0.000123456789012`. Every row is created within the last 4 hours
/// but never before the start of the current week or month, so the weekly, monthly
/// and 5-hour truths all include it. Generated server-side: 100k rows take seconds.
pub fn load(pg: &TestPg, users: usize, rows_per_user: usize, seed: u64) {
    // A numeric LCG-style mix of (seed, user, row); numeric arithmetic never
    // overflows, and the middle digits are taken.
    let seed = seed % 1_000_000_007;
    pg.exec(&format!(
        "INSERT INTO users (id, name)
             SELECT g, 'user' || g FROM generate_series(1, {users}) g
             ON CONFLICT (id) DO NOTHING;
         INSERT INTO message_request (user_id, cost_usd, created_at)
             SELECT u,
                    (mod(floor(h / 1000), 1000000000000000) / 500000000000000)::numeric(21,15),
                    GREATEST(now() - mod(floor(h / 7), 14400000) * interval '1 millisecond',
                             date_trunc('week', now()), date_trunc('month', now()))
             FROM (
                 SELECT u, r,
                        mod((u::numeric * 2654435761 + r::numeric * 40503
                             + {seed}::numeric * 2246822519 + 374761393)
                            * 6364136223846793005 + 1442695040888963407,
                            1000000000000000000000) AS h
                 FROM generate_series(1, {users}) u, generate_series(1, {rows_per_user}) r
             ) s;
         ANALYZE users;
         ANALYZE message_request;"
    ));
}

/// Add one user.
pub fn add_user(pg: &TestPg, id: i64, name: &str) {
    pg.client()
        .execute(
            "INSERT INTO users (id, name) VALUES ($1::int8::int4, $2)",
            &[&id, &name],
        )
        .expect("insert user");
}

/// Soft-delete a user (the truth stops returning them, so their keys become orphans).
pub fn soft_delete_user(pg: &TestPg, id: i64) {
    pg.client()
        .execute(
            "UPDATE users SET deleted_at = now() WHERE id = $1::int8::int4",
            &[&id],
        )
        .expect("soft-delete user");
}

/// Add a ledger row created now; `amount` is numeric text such as `"12.8"`.
pub fn add_cost(pg: &TestPg, user_id: i64, amount: &str) {
    pg.client()
        .execute(
            "INSERT INTO message_request (user_id, cost_usd) VALUES ($1::int8::int4, $2::text::numeric)",
            &[&user_id, &amount],
        )
        .expect("insert cost");
}

/// Add a seed 001 endpoint.
pub fn add_endpoint(pg: &TestPg, id: &str, enabled: bool) {
    pg.client()
        .execute(
            "INSERT INTO xiaozhi_mcp_endpoints (id, name, is_enabled) VALUES ($1, $1, $2)",
            &[&id, &enabled],
        )
        .expect("insert endpoint");
}

/// Run a truth query and return (id, value as PostgreSQL prints it), ordered by id.
/// `$1`, if the query has it, is bound to `window_start` (an SQL timestamptz
/// expression such as `now() - interval '5 hours'`).
pub fn truth(pg: &TestPg, truth_sql: &str, window_start: Option<&str>) -> Vec<(i64, String)> {
    let inner = match window_start {
        Some(ts) => truth_sql.replace("$1", &format!("({ts})")),
        None => truth_sql.to_string(),
    };
    let sql =
        format!("SELECT t.id::bigint, t.value::text FROM ({inner}) t(id, value) ORDER BY t.id");
    pg.client()
        .query(&sql, &[])
        .unwrap_or_else(|e| panic!("truth query failed: {e}\n{sql}"))
        .iter()
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .collect()
}

/// The weekly truth: one (id, SUM text) per live user, ordered by id.
pub fn truth_weekly(pg: &TestPg) -> Vec<(i64, String)> {
    truth(pg, WEEKLY_TRUTH, None)
}

/// The monthly truth.
pub fn truth_monthly(pg: &TestPg) -> Vec<(i64, String)> {
    truth(pg, MONTHLY_TRUTH, None)
}

/// `key_template` with `{id}` replaced by `id`.
pub fn key_for(key_template: &str, id: i64) -> String {
    key_template.replacen("{id}", &id.to_string(), 1)
}

/// SET `key_template(id)` to each value, pipelined in batches of 1000.
pub fn fill_cache(redis: &mut redis::Connection, key_template: &str, rows: &[(i64, String)]) {
    for chunk in rows.chunks(1000) {
        let mut p = redis::pipe();
        for (id, value) in chunk {
            p.cmd("SET")
                .arg(key_for(key_template, *id))
                .arg(value)
                .ignore();
        }
        p.query::<()>(redis).expect("pipelined SET");
    }
}

/// SET `user:<id>:cost_weekly` to the truth for every live user.
pub fn fill_cache_weekly(redis: &mut redis::Connection, pg: &TestPg) {
    fill_cache(redis, "user:{id}:cost_weekly", &truth_weekly(pg));
}

/// SET `user:<id>:cost_monthly` to the truth for every live user.
pub fn fill_cache_monthly(redis: &mut redis::Connection, pg: &TestPg) {
    fill_cache(redis, "user:{id}:cost_monthly", &truth_monthly(pg));
}

/// Fill `user:<id>:cost_5h_rolling` ZSETs the way the seed 000 application does:
/// one member `<ms>:<ledger id>:<amount>` per ledger row, score = epoch ms.
pub fn fill_cache_window(redis: &mut redis::Connection, pg: &TestPg) {
    let rows = pg
        .client()
        .query(
            "SELECT user_id::bigint, id, cost_usd::text,
                    (extract(epoch FROM created_at) * 1000)::bigint
             FROM message_request ORDER BY id",
            &[],
        )
        .expect("read ledger");
    for chunk in rows.chunks(1000) {
        let mut p = redis::pipe();
        for r in chunk {
            let user: i64 = r.get(0);
            let id: i64 = r.get(1);
            let amount: String = r.get(2);
            let ms: i64 = r.get(3);
            p.cmd("ZADD")
                .arg(key_for("user:{id}:cost_5h_rolling", user))
                .arg(ms)
                .arg(format!("{ms}:{id}:{amount}"))
                .ignore();
        }
        p.query::<()>(redis).expect("pipelined ZADD");
    }
}

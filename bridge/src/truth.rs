//! Truth queries: the operator's SQL, wrapped so that its id and value come
//! back as exact text, and optionally restricted to given ids.

mod ids;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use postgres::types::{ToSql, Type};
use postgres::GenericClient;

use crate::error::{classify, BridgeError};
use crate::pool::set_statement_timeout;
use ids::IdKind;

/// Column names the wrapper gives the truth's first two columns. Unusual on
/// purpose: a truth returning extra columns named `id` or `value` must not
/// make the wrapper's references ambiguous.
const ID_COL: &str = "consistency_id__";
const VALUE_COL: &str = "consistency_value__";

/// One row of truth: the id and, for valued rules, the value, both as
/// PostgreSQL prints them (`numeric(21,15)` stays `12.800000000000000`).
#[derive(Clone, Debug, PartialEq)]
pub struct TruthRow {
    /// The first column as text.
    pub id: String,
    /// The second column as text; `None` for SQL NULL, for `IdOnly` and for
    /// `Named` (whose value, if any, is a named column).
    pub value: Option<String>,
    /// `Named` only: every column but `id`, by name, in the query's order.
    pub named: Vec<(Arc<str>, Option<String>)>,
}

/// Which columns of the truth are used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TruthShape {
    /// Only the id (presence rules).
    IdOnly,
    /// The id, then the value.
    IdValue,
    /// Columns matched by name, not position: `id` and every other column
    /// come back, each under its name. The query must return a column of
    /// each `required` name (and `id`), once.
    Named { required: Vec<String> },
}

/// What `prepare` learned about the SQL; the same for every connection.
#[derive(Debug)]
struct Learned {
    kind: IdKind,
    id_type: String,
    all_sql: String,
    ids_sql: String,
    /// `Named`: the columns after `id`, in the order rows carry them.
    names: Vec<Arc<str>>,
}

/// An operator's truth SQL, ready to run in full or for given ids.
///
/// Shareable between threads; the first `prepare` on any connection learns
/// the id column's type for all later calls.
#[derive(Debug)]
pub struct TruthQuery {
    sql: String,
    shape: TruthShape,
    takes_window_start: bool,
    /// The wrapped SQL for positional shapes; `Named` learns it at `prepare`.
    all_sql: String,
    learned: OnceLock<Learned>,
}

impl TruthQuery {
    /// Wraps `sql`. `takes_window_start`: the SQL uses `$1` as a timestamptz
    /// window start. Nothing is checked until `prepare`.
    pub fn new(sql: &str, shape: TruthShape, takes_window_start: bool) -> TruthQuery {
        // Trailing semicolons would end the subquery early; the line breaks
        // around the body keep a trailing `-- comment` from eating the `)`.
        let body = sql.trim_end_matches(|c: char| c == ';' || c.is_whitespace());
        let all_sql = match shape {
            TruthShape::IdOnly => {
                format!("SELECT t.{ID_COL}::text FROM (\n{body}\n) AS t({ID_COL})")
            }
            TruthShape::IdValue => format!(
                "SELECT t.{ID_COL}::text, t.{VALUE_COL}::text \
                 FROM (\n{body}\n) AS t({ID_COL}, {VALUE_COL})"
            ),
            // Built at prepare, once the column names are known.
            TruthShape::Named { .. } => String::new(),
        };
        TruthQuery {
            sql: sql.to_string(),
            shape,
            takes_window_start,
            all_sql,
            learned: OnceLock::new(),
        }
    }

    /// The operator's SQL as given.
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The shape given to `new`.
    pub fn shape(&self) -> &TruthShape {
        &self.shape
    }

    /// Whether the SQL takes the window start as `$1`.
    pub fn takes_window_start(&self) -> bool {
        self.takes_window_start
    }

    /// The id column's type name once `prepare` has run (e.g. "int4").
    pub fn id_type(&self) -> Option<&str> {
        self.learned.get().map(|l| l.id_type.as_str())
    }

    /// `Named`: the columns after `id`, once `prepare` has run.
    pub fn names(&self) -> Option<&[Arc<str>]> {
        self.learned.get().map(|l| l.names.as_slice())
    }

    /// Prepares the SQL once (later calls return at once) and checks its
    /// shape: at least 1 column (`IdOnly`) or 2 (`IdValue`), and no
    /// parameter other than the window start. Learns the id column's type.
    pub fn prepare(&self, client: &mut impl GenericClient) -> Result<(), BridgeError> {
        if self.learned.get().is_some() {
            return Ok(());
        }
        // Declaring $1 as timestamptz makes PostgreSQL coerce it where the
        // SQL compares it, and is the type the window start is bound as.
        let stmt = if self.takes_window_start {
            client.prepare_typed(&self.sql, &[Type::TIMESTAMPTZ])
        } else {
            client.prepare(&self.sql)
        }
        .map_err(|e| classify(&e))?;

        let allowed = usize::from(self.takes_window_start);
        if stmt.params().len() > allowed {
            return Err(BridgeError::BadTruth(if self.takes_window_start {
                format!(
                    "truth uses {} parameters; only $1 (the window start) is given",
                    stmt.params().len()
                )
            } else {
                "truth uses parameters ($1...), but only window rules get one".to_string()
            }));
        }
        let columns = stmt.columns();
        let n = allowed + 1;
        let learned = match &self.shape {
            TruthShape::Named { required } => {
                let names: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                let (id_at, others) = named_columns(&names, required)?;
                let kind = IdKind::of(columns[id_at].type_());
                let mut select = format!("SELECT t.{}::text", quote_ident("id"));
                for &i in &others {
                    select.push_str(&format!(", t.{}::text", quote_ident(names[i])));
                }
                let all_sql = format!("{select} FROM (\n{}\n) AS t", self.body());
                Learned {
                    kind,
                    id_type: columns[id_at].type_().name().to_string(),
                    ids_sql: format!(
                        "{all_sql} WHERE {}",
                        kind.condition(&format!("t.{}", quote_ident("id")), n)
                    ),
                    all_sql,
                    names: others.iter().map(|&i| Arc::from(names[i])).collect(),
                }
            }
            shape => {
                let needed = if *shape == TruthShape::IdOnly { 1 } else { 2 };
                if columns.len() < needed {
                    return Err(BridgeError::BadTruth(format!(
                        "truth returns {} column(s), needs at least {needed} ({})",
                        columns.len(),
                        if needed == 1 { "id" } else { "id, value" }
                    )));
                }
                let kind = IdKind::of(columns[0].type_());
                Learned {
                    kind,
                    id_type: columns[0].type_().name().to_string(),
                    ids_sql: format!(
                        "{} WHERE {}",
                        self.all_sql,
                        kind.condition(&format!("t.{ID_COL}"), n)
                    ),
                    all_sql: self.all_sql.clone(),
                    names: Vec::new(),
                }
            }
        };
        // A concurrent prepare may have won; both learned the same thing.
        let _ = self.learned.set(learned);
        Ok(())
    }

    /// The operator's SQL without trailing semicolons and space.
    fn body(&self) -> &str {
        self.sql
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
    }

    /// Runs the truth in full with the given statement timeout.
    pub fn run_all(
        &self,
        client: &mut impl GenericClient,
        window_start: Option<SystemTime>,
        statement_timeout: Duration,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        set_statement_timeout(client, statement_timeout)?;
        self.prepare(client)?;
        let window = self.window_param(window_start)?;
        let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::new();
        if let Some(ws) = &window {
            params.push((ws, Type::TIMESTAMPTZ));
        }
        let all_sql = &self.learned.get().expect("prepared above").all_sql;
        let rows = client
            .query_typed(all_sql, &params)
            .map_err(|e| with_timeout(classify(&e), statement_timeout))?;
        Ok(self.to_truth_rows(rows))
    }

    /// Runs the truth for just `ids`, returning the rows whose id equals one
    /// of them. Ids are bound as a parameter, never put into the SQL; ids
    /// that cannot exist for the id's type ("abc" for an integer) are dropped.
    /// An empty list returns nothing without querying.
    pub fn run_ids(
        &self,
        client: &mut impl GenericClient,
        ids: &[String],
        window_start: Option<SystemTime>,
        statement_timeout: Duration,
    ) -> Result<Vec<TruthRow>, BridgeError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        set_statement_timeout(client, statement_timeout)?;
        let (sql, ids) = self.ids_query(client, ids)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let window = self.window_param(window_start)?;
        let rows = client
            .query_typed(&sql, &id_params(&window, &ids))
            .map_err(|e| with_timeout(classify(&e), statement_timeout))?;
        Ok(self.to_truth_rows(rows))
    }

    /// The plan PostgreSQL chooses for `run_ids` with these arguments, one
    /// plan line per line: to check that an index on the id is used.
    pub fn explain_ids(
        &self,
        client: &mut impl GenericClient,
        ids: &[String],
        window_start: Option<SystemTime>,
    ) -> Result<String, BridgeError> {
        let (sql, ids) = self.ids_query(client, ids)?;
        let window = self.window_param(window_start)?;
        let rows = client
            .query_typed(&format!("EXPLAIN {sql}"), &id_params(&window, &ids))
            .map_err(|e| classify(&e))?;
        let lines: Result<Vec<String>, _> = rows.iter().map(|r| r.try_get(0)).collect();
        Ok(lines.map_err(|e| classify(&e))?.join("\n"))
    }

    /// The id-restricted SQL and the ids worth sending, after `prepare`.
    fn ids_query(
        &self,
        client: &mut impl GenericClient,
        ids: &[String],
    ) -> Result<(String, Vec<String>), BridgeError> {
        self.prepare(client)?;
        let learned = self
            .learned
            .get()
            .expect("prepare succeeded, so the query is learned");
        Ok((learned.ids_sql.clone(), learned.kind.filter(ids)))
    }

    /// The window start to bind, if the SQL takes one.
    fn window_param(
        &self,
        window_start: Option<SystemTime>,
    ) -> Result<Option<SystemTime>, BridgeError> {
        match (self.takes_window_start, window_start) {
            (true, None) => Err(BridgeError::BadTruth(
                "truth takes a window start ($1) but none was given".to_string(),
            )),
            (true, Some(ws)) => Ok(Some(ws)),
            // A window start for SQL without $1 is simply not needed.
            (false, _) => Ok(None),
        }
    }

    fn to_truth_rows(&self, rows: Vec<postgres::Row>) -> Vec<TruthRow> {
        let names = self.names().unwrap_or_default();
        rows.iter()
            .filter_map(|row| {
                // A NULL id cannot name a key; such rows are skipped.
                let id: String = row.try_get::<_, Option<String>>(0).ok()??;
                let value = match self.shape {
                    TruthShape::IdOnly | TruthShape::Named { .. } => None,
                    TruthShape::IdValue => row.try_get::<_, Option<String>>(1).ok()?,
                };
                let mut named = Vec::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    named.push((Arc::clone(name), row.try_get(i + 1).ok()?));
                }
                Some(TruthRow { id, value, named })
            })
            .collect()
    }
}

/// For `Named`: where `id` is, and the other columns in order. Refuses a
/// query without `id` or a required column, or with a name twice (which
/// column is meant would depend on the order).
fn named_columns(names: &[&str], required: &[String]) -> Result<(usize, Vec<usize>), BridgeError> {
    let listed = || names.join(", ");
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(BridgeError::BadTruth(format!(
                "truth returns column '{name}' twice (columns: {})",
                listed()
            )));
        }
    }
    for name in std::iter::once("id").chain(required.iter().map(String::as_str)) {
        if !names.contains(&name) {
            return Err(BridgeError::BadTruth(format!(
                "truth has no column '{name}' (columns: {}); columns are matched by name",
                listed()
            )));
        }
    }
    let id_at = names
        .iter()
        .position(|n| *n == "id")
        .expect("checked above");
    let others = (0..names.len()).filter(|&i| i != id_at).collect();
    Ok((id_at, others))
}

/// A column name as an SQL identifier: always quoted, quotes doubled, so a
/// name is never read as SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Parameters for the id-restricted query: the window start if any, then
/// the ids.
fn id_params<'a>(
    window: &'a Option<SystemTime>,
    ids: &'a (dyn ToSql + Sync),
) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
    let mut params: Vec<(&(dyn ToSql + Sync), Type)> = Vec::with_capacity(2);
    if let Some(ws) = window {
        params.push((ws, Type::TIMESTAMPTZ));
    }
    params.push((ids, Type::TEXT_ARRAY));
    params
}

/// Adds the limit to a timeout's reason, so the operator sees which setting
/// to raise.
fn with_timeout(err: BridgeError, limit: Duration) -> BridgeError {
    match err {
        BridgeError::Timeout(reason) => {
            BridgeError::Timeout(format!("{reason} ({} ms)", limit.as_millis()))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapping_strips_semicolons_and_survives_comments() {
        let q = TruthQuery::new("SELECT 1, 2 -- note\n;\n ", TruthShape::IdValue, false);
        assert!(
            q.all_sql.contains("SELECT 1, 2 -- note\n)"),
            "{}",
            q.all_sql
        );
        let q = TruthQuery::new("SELECT 1;", TruthShape::IdOnly, false);
        assert!(q.all_sql.contains("(\nSELECT 1\n) AS t("), "{}", q.all_sql);
        assert_eq!(q.sql(), "SELECT 1;");
    }
}

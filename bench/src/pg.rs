//! The benchmarks' own PostgreSQL databases: made fresh for a run, dropped after.

use postgres::{Client, NoTls};

use crate::util::Result;

/// `base` (libpq key=value without dbname) naming database `db`.
pub fn db_url(base: &str, db: &str) -> String {
    format!("{base} dbname={db}")
}

pub fn connect(url: &str) -> Result<Client> {
    Ok(Client::connect(url, NoTls)?)
}

/// Drops `db` if it exists and creates it empty. One statement each: CREATE
/// DATABASE refuses an implicit transaction.
pub fn recreate_db(base: &str, db: &str) -> Result<()> {
    let mut admin = connect(&db_url(base, "postgres"))?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    admin.batch_execute(&format!("CREATE DATABASE {db}"))?;
    Ok(())
}

pub fn drop_db(base: &str, db: &str) -> Result<()> {
    let mut admin = connect(&db_url(base, "postgres"))?;
    admin.batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))?;
    Ok(())
}

//! Versioned migrations of `schema.postgres.sql`, recorded in `jobq_migrations`, applied
//! under an advisory lock so that many processes starting at once migrate one at a time.

use std::sync::OnceLock;

use super::Conn;
use crate::error::{Error, Result};
use crate::store::migrations::{Migration, parse};

/// The whole data model in PostgreSQL's dialect.
pub(crate) const SCHEMA_SQL: &str = include_str!("../../../schema.postgres.sql");

/// The key of the advisory lock held while migrating (`jobqmigr` in ASCII).
const MIGRATION_LOCK: i64 = 0x6a6f_6271_6d69_6772;

fn parsed() -> &'static (&'static str, Vec<Migration>) {
    static PARSED: OnceLock<(&'static str, Vec<Migration>)> = OnceLock::new();
    PARSED.get_or_init(|| parse(SCHEMA_SQL))
}

/// The migrations of `schema.postgres.sql`, in order.
pub(crate) fn migrations() -> &'static [Migration] {
    &parsed().1
}

fn latest() -> i64 {
    migrations().last().map_or(0, |m| m.0)
}

/// The version the database is at (0 for none), read without writing.
fn version_of(conn: &mut Conn) -> Result<i64> {
    // Read from pg_class itself, not through to_regclass: taking an advisory lock does not
    // refresh the backend's catalog caches, which may still say "no such table" from
    // before another process's migration committed.
    let row = conn.query_one(
        "SELECT count(*) FILTER (WHERE c.relname = 'jobq_migrations') > 0,
                count(*) FILTER (WHERE c.relname = 'jobq_jobs') > 0
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relname IN ('jobq_migrations', 'jobq_jobs')",
        &[],
    )?;
    let (has_migrations, has_jobs): (bool, bool) = (row.get(0), row.get(1));
    if !has_migrations {
        return Ok(if has_jobs { -1 } else { 0 });
    }
    Ok(conn
        .query_one("SELECT coalesce(max(version), 0) FROM jobq_migrations", &[])?
        .get(0))
}

/// Brings the database up to the newest version, or refuses a newer one.
pub(crate) fn migrate(conn: &mut Conn, location: &str, now: i64) -> Result<()> {
    let latest = latest();
    let check = |version: i64| match version {
        v if v > latest => Err(Error::SchemaTooNew {
            path: location.into(),
            found: v,
            supported: latest,
        }),
        -1 => Err(Error::NotJobqDatabase {
            path: location.into(),
            reason: "it has a jobq_jobs table but no jobq_migrations".into(),
        }),
        _ => Ok(()),
    };
    let current = version_of(conn)?;
    check(current)?;
    if current == latest {
        return Ok(());
    }
    conn.batch("BEGIN")?;
    let applied = (|| {
        conn.query_one("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        // Another process may have migrated while we waited for the lock: read again.
        let current = version_of(conn)?;
        check(current)?;
        let failed = |version: i64, e: Error| Error::Open {
            path: location.into(),
            reason: format!("migration {version} failed: {e}"),
        };
        conn.batch(parsed().0).map_err(|e| failed(0, e))?;
        for (version, sql) in migrations().iter().filter(|(v, _)| *v > current) {
            conn.batch(sql).map_err(|e| failed(*version, e))?;
            conn.execute(
                "INSERT INTO jobq_migrations (version, applied_at) VALUES ($1, $2)
                 ON CONFLICT (version) DO NOTHING",
                &[version, &now],
            )?;
        }
        Ok(())
    })();
    match applied {
        Ok(()) => conn.batch("COMMIT"),
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            Err(e)
        }
    }
}

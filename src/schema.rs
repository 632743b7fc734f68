//! Versioned migrations of `schema.sql`, keyed on `PRAGMA user_version`.

use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::{Error, Result};

/// The whole data model: a list of `-- migration N` sections.
pub(crate) const SCHEMA_SQL: &str = include_str!("../schema.sql");

/// A migration: the version it brings the database to, and its SQL.
pub(crate) type Migration = (i64, &'static str);

/// The migrations of `schema.sql`, in order.
pub(crate) fn migrations() -> &'static [Migration] {
    static PARSED: OnceLock<Vec<Migration>> = OnceLock::new();
    PARSED.get_or_init(|| parse_migrations(SCHEMA_SQL))
}

/// The schema version this build writes and reads.
pub fn schema_version() -> i64 {
    migrations().last().map_or(0, |m| m.0)
}

fn parse_migrations(sql: &'static str) -> Vec<Migration> {
    let mut out = Vec::new();
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in sql.split_inclusive('\n') {
        if let Some(rest) = line.trim().strip_prefix("-- migration ") {
            if let Ok(version) = rest.trim().parse::<i64>() {
                starts.push((version, offset, offset + line.len()));
            }
        }
        offset += line.len();
    }
    for (i, &(version, _, body_start)) in starts.iter().enumerate() {
        let end = starts.get(i + 1).map_or(sql.len(), |next| next.1);
        out.push((version, &sql[body_start..end]));
    }
    out
}

/// What an opened file holds, found without writing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileState {
    /// An empty database (or one whose foreign tables we were told to live beside).
    Fresh,
    /// A jobq database at this version.
    At(i64),
}

/// Reads what the file is, refusing files that are not SQLite, not jobq, or too new.
/// Writes nothing.
pub(crate) fn inspect(
    conn: &Connection,
    path: &Path,
    allow_foreign_tables: bool,
) -> Result<FileState> {
    let not_jobq = |reason: String| Error::NotJobqDatabase {
        path: path.to_path_buf(),
        reason,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => not_jobq("it is not a SQLite database".into()),
            _ => Error::from(e),
        })?;
    let (objects, has_jobs): (i64, bool) = conn
        .query_row(
            "SELECT count(*), coalesce(sum(type = 'table' AND name = 'jobq_jobs'), 0) > 0
             FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) => not_jobq("it is not a SQLite database".into()),
            _ => Error::from(e),
        })?;
    match (version, has_jobs) {
        (0, false) if objects == 0 || allow_foreign_tables => Ok(FileState::Fresh),
        (0, false) => Err(not_jobq(format!(
            "it holds {objects} other tables, indexes or views and no jobq schema \
             (to add jobq to an application's database, open it with allow_foreign_tables)"
        ))),
        (0, true) => Err(not_jobq(
            "it has jobq tables but no schema version (user_version is 0)".into(),
        )),
        (v, false) => Err(not_jobq(format!(
            "its user_version is {v} but it has no jobq_jobs table"
        ))),
        (v, true) if v > schema_version() => Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found: v,
            supported: schema_version(),
        }),
        (v, true) => Ok(FileState::At(v)),
    }
}

/// Brings the database up to the newest version in one transaction.
pub(crate) fn migrate(conn: &mut Connection, path: &Path, state: FileState) -> Result<()> {
    migrate_with(conn, path, state, migrations())
}

fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    state: FileState,
    steps: &[Migration],
) -> Result<()> {
    let latest = steps.last().map_or(0, |m| m.0);
    let from = match state {
        FileState::Fresh => 0,
        FileState::At(v) => v,
    };
    if from >= latest {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock.
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if current > latest {
        return Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found: current,
            supported: latest,
        });
    }
    for (version, sql) in steps.iter().filter(|(v, _)| *v > current) {
        tx.execute_batch(sql).map_err(|e| Error::Open {
            path: path.to_path_buf(),
            reason: format!("migration {version} failed: {e}"),
        })?;
    }
    tx.pragma_update(None, "user_version", latest)?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        let versions: Vec<i64> = migrations().iter().map(|m| m.0).collect();
        assert!(!versions.is_empty());
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        assert!(migrations().iter().all(|(_, sql)| sql.contains("CREATE")));
    }

    #[test]
    fn a_fresh_file_gets_every_table_index_and_view() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut conn = Connection::open(&path).unwrap();
        let state = inspect(&conn, &path, false).unwrap();
        assert_eq!(state, FileState::Fresh);
        migrate(&mut conn, &path, state).unwrap();
        let names: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE name LIKE 'jobq_%' ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for want in [
            "jobq_jobs",
            "jobq_groups",
            "jobq_owners",
            "jobq_tokens",
            "jobq_jobs_ready",
            "jobq_dead_letter_jobs",
            "jobq_running_jobs_monitor",
            "jobq_queue_stats",
            "jobq_timing_stats",
            "jobq_stage_distribution",
            "jobq_job_summary",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert_eq!(
            inspect(&conn, &path, false).unwrap(),
            FileState::At(schema_version())
        );
    }

    #[test]
    fn an_older_file_is_upgraded_in_one_transaction_and_keeps_its_rows() {
        let steps: [Migration; 3] = [
            (
                1,
                "CREATE TABLE jobq_jobs (id TEXT PRIMARY KEY, kind TEXT NOT NULL);",
            ),
            (
                2,
                "ALTER TABLE jobq_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';",
            ),
            (3, "CREATE INDEX jobq_jobs_queue ON jobq_jobs (queue);"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate_with(&mut conn, &path, FileState::Fresh, &steps[..1]).unwrap();
        conn.execute("INSERT INTO jobq_jobs VALUES ('a', 'email')", [])
            .unwrap();

        let state = inspect(&conn, &path, false);
        assert!(matches!(state, Ok(FileState::At(1))), "{state:?}");
        migrate_with(&mut conn, &path, FileState::At(1), &steps).unwrap();
        let (v, queue): (i64, String) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), queue FROM jobq_jobs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((v, queue.as_str()), (3, "default"));
    }

    #[test]
    fn a_failing_migration_changes_nothing() {
        let steps: [Migration; 2] = [
            (1, "CREATE TABLE jobq_jobs (id TEXT PRIMARY KEY);"),
            (
                2,
                "CREATE TABLE jobq_more (x); CREATE TABLE jobq_jobs (oops);",
            ),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut conn = Connection::open(&path).unwrap();
        migrate_with(&mut conn, &path, FileState::Fresh, &steps[..1]).unwrap();
        let err = migrate_with(&mut conn, &path, FileState::At(1), &steps).unwrap_err();
        assert!(err.to_string().contains("migration 2 failed"), "{err}");
        let (v, more): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version),
                        (SELECT count(*) FROM sqlite_master WHERE name = 'jobq_more')",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((v, more), (1, 0));
    }
}

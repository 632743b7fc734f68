//! Versioned migrations of `schema.sql`, recorded in the table `jobq_migrations`.
//!
//! jobq keeps its schema version in a table of its own, so that `PRAGMA user_version`
//! stays the application's (a file may hold an application's tables beside jobq's). Files
//! from before that table kept the version in `user_version`; opening one moves it.

use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{Connection, ErrorCode, TransactionBehavior};

use crate::error::{Error, Result};
use crate::store::migrations::{Migration, parse};

/// The whole data model: a `-- bookkeeping` section and a list of `-- migration N`
/// sections.
pub(crate) const SCHEMA_SQL: &str = include_str!("../../../schema.sql");

/// The migrations of `schema.sql`, in order.
pub(crate) fn migrations() -> &'static [Migration] {
    static PARSED: OnceLock<(&'static str, Vec<Migration>)> = OnceLock::new();
    &PARSED.get_or_init(|| parse(SCHEMA_SQL)).1
}

/// The `-- bookkeeping` section of `schema.sql`: the table of applied migrations.
fn bookkeeping() -> &'static str {
    static PARSED: OnceLock<&'static str> = OnceLock::new();
    PARSED.get_or_init(|| parse(SCHEMA_SQL).0)
}

/// The schema version this build writes and reads.
pub fn schema_version() -> i64 {
    migrations().last().map_or(0, |m| m.0)
}

/// What an opened file holds, found without writing to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileState {
    /// No jobq schema: an empty database (or one whose foreign tables we were told to live
    /// beside).
    Fresh,
    /// A jobq database from before `jobq_migrations`, at this version (its `user_version`).
    Legacy(i64),
    /// A jobq database at this version.
    At(i64),
}

impl FileState {
    fn version(self) -> i64 {
        match self {
            FileState::Fresh => 0,
            FileState::Legacy(v) | FileState::At(v) => v,
        }
    }
}

/// Reads what the file is, refusing files that are not SQLite, not jobq, or too new.
/// Writes nothing. Everything is read in one transaction, so a file that another process
/// is setting up at this moment is seen either before or after, never half-way.
pub(crate) fn inspect(
    conn: &Connection,
    path: &Path,
    allow_foreign_tables: bool,
) -> Result<FileState> {
    let not_a_database = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => Error::NotJobqDatabase {
            path: path.to_path_buf(),
            reason: "it is not a SQLite database".into(),
        },
        _ => Error::from(e),
    };
    conn.execute_batch("BEGIN DEFERRED")
        .map_err(not_a_database)?;
    let state = state_of(conn, path, allow_foreign_tables, latest());
    let _ = conn.execute_batch("COMMIT");
    state
}

fn latest() -> i64 {
    schema_version()
}

/// The state of the file, read inside the caller's transaction; `supported` is the newest
/// version this build knows.
fn state_of(
    conn: &Connection,
    path: &Path,
    allow_foreign_tables: bool,
    supported: i64,
) -> Result<FileState> {
    let not_jobq = |reason: String| Error::NotJobqDatabase {
        path: path.to_path_buf(),
        reason,
    };
    let sql = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => not_jobq("it is not a SQLite database".into()),
        _ => Error::from(e),
    };
    let (objects, has_jobs, has_migrations): (i64, bool, bool) = conn
        .query_row(
            "SELECT count(*),
                    coalesce(sum(type = 'table' AND name = 'jobq_jobs'), 0) > 0,
                    coalesce(sum(type = 'table' AND name = 'jobq_migrations'), 0) > 0
             FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .map_err(sql)?;
    let too_new = |found: i64| Error::SchemaTooNew {
        path: path.to_path_buf(),
        found,
        supported,
    };
    if has_migrations {
        let version: i64 = conn
            .query_row(
                "SELECT coalesce(max(version), 0) FROM jobq_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        return match version {
            v if v > supported => Err(too_new(v)),
            0 if !has_jobs => Ok(FileState::Fresh),
            0 => Err(not_jobq(
                "it has jobq tables but no migration recorded in jobq_migrations".into(),
            )),
            v => Ok(FileState::At(v)),
        };
    }
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql)?;
    match (has_jobs, user_version) {
        (false, _) if objects == 0 || allow_foreign_tables => Ok(FileState::Fresh),
        (false, _) => Err(not_jobq(format!(
            "it holds {objects} other tables, indexes or views and no jobq schema \
             (to add jobq to an application's database, open it with allow_foreign_tables, \
             or `jobq init --allow-foreign-tables`)"
        ))),
        (true, 0) => Err(not_jobq(
            "it has jobq tables but no schema version (no jobq_migrations, user_version 0)".into(),
        )),
        (true, v) if v > supported => Err(too_new(v)),
        (true, v) => Ok(FileState::Legacy(v)),
    }
}

/// Brings the database up to the newest version in one transaction; `now` stamps the
/// migrations it records.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    state: FileState,
    now: i64,
) -> Result<()> {
    migrate_with(conn, path, state, migrations(), now)
}

fn migrate_with(
    conn: &mut Connection,
    path: &Path,
    state: FileState,
    steps: &[Migration],
    now: i64,
) -> Result<()> {
    let latest = steps.last().map_or(0, |m| m.0);
    if let FileState::At(v) = state {
        if v >= latest {
            return Ok(());
        }
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have migrated while we waited for the write lock: read again,
    // under it.
    let current = state_of(&tx, path, true, latest)?;
    if let FileState::At(v) = current {
        if v >= latest {
            return Ok(());
        }
    }
    let failed = |version: i64, e: rusqlite::Error| Error::Open {
        path: path.to_path_buf(),
        reason: format!("migration {version} failed: {e}"),
    };
    tx.execute_batch(bookkeeping()).map_err(|e| failed(0, e))?;
    for (version, sql) in steps.iter().filter(|(v, _)| *v > current.version()) {
        tx.execute_batch(sql).map_err(|e| failed(*version, e))?;
    }
    {
        let mut record = tx.prepare(
            "INSERT OR IGNORE INTO jobq_migrations (version, applied_at) VALUES (?1, ?2)",
        )?;
        for (version, _) in steps {
            record.execute(rusqlite::params![version, now])?;
        }
    }
    if let FileState::Legacy(_) = current {
        // The version moved to jobq_migrations: user_version is the application's again.
        tx.pragma_update(None, "user_version", 0)?;
    }
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(conn: &Connection) -> (Vec<i64>, i64) {
        let versions = conn
            .prepare("SELECT version FROM jobq_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let user_version = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        (versions, user_version)
    }

    #[test]
    fn migrations_are_numbered_from_one_without_gaps() {
        let versions: Vec<i64> = migrations().iter().map(|m| m.0).collect();
        assert!(!versions.is_empty());
        assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
        assert!(migrations().iter().all(|(_, sql)| !sql.trim().is_empty()));
        assert!(bookkeeping().contains("CREATE TABLE IF NOT EXISTS jobq_migrations"));
        assert!(
            migrations()
                .iter()
                .all(|(_, sql)| !sql.contains("jobq_migrations ("))
        );
    }

    #[test]
    fn a_fresh_file_gets_every_table_index_and_view_and_leaves_user_version_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let mut conn = Connection::open(&path).unwrap();
        let state = inspect(&conn, &path, false).unwrap();
        assert_eq!(state, FileState::Fresh);
        migrate(&mut conn, &path, state, 1).unwrap();
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
            "jobq_migrations",
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
        assert_eq!(
            recorded(&conn),
            ((1..=schema_version()).collect::<Vec<_>>(), 0)
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
        migrate_with(&mut conn, &path, FileState::Fresh, &steps[..1], 10).unwrap();
        conn.execute("INSERT INTO jobq_jobs VALUES ('a', 'email')", [])
            .unwrap();

        let state = state_of(&conn, &path, false, 3);
        assert!(matches!(state, Ok(FileState::At(1))), "{state:?}");
        migrate_with(&mut conn, &path, FileState::At(1), &steps, 20).unwrap();
        let queue: String = conn
            .query_row("SELECT queue FROM jobq_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(queue, "default");
        assert_eq!(recorded(&conn), (vec![1, 2, 3], 0));
        let stamps: Vec<i64> = conn
            .prepare("SELECT applied_at FROM jobq_migrations ORDER BY version")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(stamps, vec![10, 20, 20]);
    }

    #[test]
    fn a_file_versioned_in_user_version_moves_its_version_to_the_table() {
        let steps: [Migration; 2] = [
            (1, "CREATE TABLE jobq_jobs (id TEXT PRIMARY KEY);"),
            (2, "CREATE INDEX jobq_jobs_x ON jobq_jobs (id);"),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("legacy.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE jobq_jobs (id TEXT PRIMARY KEY); INSERT INTO jobq_jobs VALUES ('a');
             PRAGMA user_version = 1;",
        )
        .unwrap();
        let state = state_of(&conn, &path, false, 2).unwrap();
        assert_eq!(state, FileState::Legacy(1));
        migrate_with(&mut conn, &path, state, &steps, 5).unwrap();
        assert_eq!(recorded(&conn), (vec![1, 2], 0));
        assert_eq!(state_of(&conn, &path, false, 2).unwrap(), FileState::At(2));
        // The application may use user_version from now on: jobq no longer reads it.
        conn.pragma_update(None, "user_version", 42).unwrap();
        assert_eq!(state_of(&conn, &path, false, 2).unwrap(), FileState::At(2));
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
        migrate_with(&mut conn, &path, FileState::Fresh, &steps[..1], 1).unwrap();
        let err = migrate_with(&mut conn, &path, FileState::At(1), &steps, 2).unwrap_err();
        assert!(err.to_string().contains("migration 2 failed"), "{err}");
        let more: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'jobq_more'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((recorded(&conn), more), ((vec![1], 0), 0));
    }
}

#[cfg(test)]
mod dependencies_migration {
    use super::*;

    /// Migration 4 builds the jobs table again (for the `blocked` status): a file at
    /// version 3 keeps every row, index and view, and is sound afterwards.
    #[test]
    fn a_file_at_version_3_keeps_its_jobs_through_the_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "foreign_keys", 1).unwrap();
        migrate_with(&mut conn, &path, FileState::Fresh, &migrations()[..3], 10).unwrap();
        conn.execute_batch(
            "INSERT INTO jobq_groups (id, name, created_at) VALUES ('g', 'campaign', 1);
             INSERT INTO jobq_jobs (id_key, id, kind, status, run_after, group_id, idempotency_key,
                                    created_at, updated_at, completed_at, output)
             VALUES (1, 'a', 'render', 'succeeded', 1, 'g', 'k', 1, 2, 2, '{\"ok\":1}'),
                    (2, 'b', 'render', 'queued', 1, NULL, NULL, 1, 1, NULL, NULL);",
        )
        .unwrap();
        migrate_with(&mut conn, &path, FileState::At(3), &migrations()[3..], 20).unwrap();
        let rows: Vec<(String, String, Option<String>, Option<String>)> = conn
            .prepare("SELECT id, status, group_id, output FROM jobq_jobs ORDER BY id_key")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].2.as_deref(), Some("g"));
        assert_eq!(rows[0].3.as_deref(), Some("{\"ok\":1}"));
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let fk: i64 = conn
            .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(fk, 0);
        // The group still owns its job (the cascade), and the views read.
        for view in [
            "jobq_queue_stats",
            "jobq_dead_letter_jobs",
            "jobq_timing_stats",
            "jobq_job_summary",
        ] {
            conn.prepare(&format!("SELECT * FROM {view}"))
                .unwrap()
                .query([])
                .unwrap()
                .next()
                .unwrap();
        }
        conn.execute("DELETE FROM jobq_groups WHERE id = 'g'", [])
            .unwrap();
        let left: i64 = conn
            .query_row("SELECT count(*) FROM jobq_jobs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 1);
        let blocked = conn.execute("UPDATE jobq_jobs SET status = 'blocked' WHERE id = 'b'", []);
        assert!(blocked.is_ok(), "the new status is allowed");
    }
}

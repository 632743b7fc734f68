//! The raw SQLite baseline of `jobq bench`: the same inserts and the same drain written
//! directly against a SQLite file with the same pragmas, so that jobq's figures stand next
//! to the limit of the machine.

use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;

use super::Refused;
use super::bench::per_s;
use crate::Durability;

fn raw_conn(path: &Path, durability: Durability) -> Result<Connection, Refused> {
    let err = |e: rusqlite::Error| Refused(e.to_string());
    let conn = Connection::open(path).map_err(err)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
    )
    .map_err(err)?;
    let sync = if durability == Durability::Full {
        "FULL"
    } else {
        "NORMAL"
    };
    conn.pragma_update(None, "synchronous", sync).map_err(err)?;
    conn.execute_batch(
        "CREATE TABLE jobs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL,
                            run_after INTEGER NOT NULL, locked_by TEXT, output TEXT);
         CREATE INDEX jobs_ready ON jobs (run_after, id) WHERE status = 'queued';",
    )
    .map_err(err)?;
    Ok(conn)
}

/// Inserts `n` rows, `per_txn` to a transaction.
pub(super) fn raw_insert(
    path: &Path,
    durability: Durability,
    n: u64,
    per_txn: u64,
) -> Result<f64, Refused> {
    let conn = raw_conn(path, durability)?;
    let err = |e: rusqlite::Error| Refused(e.to_string());
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        {
            let mut stmt = conn
                .prepare_cached(
                    "INSERT INTO jobs (kind, status, run_after) VALUES ('noop', 'queued', ?1)",
                )
                .map_err(err)?;
            for _ in 0..per_txn.min(n - done) {
                stmt.execute([done as i64]).map_err(err)?;
                done += 1;
            }
        }
        conn.execute_batch("COMMIT").map_err(err)?;
    }
    Ok(per_s(n, started.elapsed()))
}

/// Claims `batch` jobs in one transaction and completes them in another, until none is left.
pub(super) fn raw_drain(
    path: &Path,
    durability: Durability,
    n: u64,
    batch: i64,
) -> Result<f64, Refused> {
    let conn = raw_conn(path, durability)?;
    let err = |e: rusqlite::Error| Refused(e.to_string());
    conn.execute_batch("BEGIN").map_err(err)?;
    for i in 0..n {
        conn.prepare_cached(
            "INSERT INTO jobs (kind, status, run_after) VALUES ('noop', 'queued', ?1)",
        )
        .map_err(err)?
        .execute([i as i64])
        .map_err(err)?;
    }
    conn.execute_batch("COMMIT").map_err(err)?;
    let started = Instant::now();
    let mut done = 0;
    loop {
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        let ids: Vec<i64> = conn
            .prepare_cached(
                "UPDATE jobs SET status = 'running', locked_by = 'w' WHERE id IN (
                     SELECT id FROM jobs WHERE status = 'queued' AND run_after <= ?1
                     ORDER BY run_after, id LIMIT ?2 + 0)
                 RETURNING id",
            )
            .map_err(err)?
            .query_map(rusqlite::params![i64::MAX, batch], |r| r.get(0))
            .map_err(err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(err)?;
        conn.execute_batch("COMMIT").map_err(err)?;
        if ids.is_empty() {
            break;
        }
        conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
        for id in &ids {
            conn.prepare_cached(
                "UPDATE jobs SET status = 'succeeded', output = 'null'
                 WHERE id = ?1 AND status = 'running' AND locked_by = 'w'",
            )
            .map_err(err)?
            .execute([id])
            .map_err(err)?;
        }
        conn.execute_batch("COMMIT").map_err(err)?;
        done += ids.len() as u64;
    }
    Ok(per_s(done, started.elapsed()))
}

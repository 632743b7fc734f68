//! The registry of live workers on SQLite.

use super::Sqlite;
use rusqlite::{Connection, named_params, params};

use crate::error::Result;
use crate::job::Timestamp;
use crate::model::ReadyKind;
use crate::model::WorkerInfo;

const REGISTER: &str = "
    INSERT INTO jobq_workers (id, host, pid, queues, kinds, concurrency, started_at, last_seen,
                              stale_after_ms)
    VALUES (:id, :host, :pid, :queues, :kinds, :concurrency, :started, :started, :stale)
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, queues = excluded.queues,
        kinds = excluded.kinds, concurrency = excluded.concurrency,
        started_at = excluded.started_at, last_seen = excluded.last_seen,
        stale_after_ms = excluded.stale_after_ms";

/// The live workers, with the jobs each runs (a range of the status index per worker).
const LIVE: &str = "
    SELECT w.id, w.host, w.pid, w.queues, w.kinds, w.concurrency, w.started_at, w.last_seen,
           w.stale_after_ms,
           (SELECT count(*) FROM jobq_jobs j
            WHERE j.status NOT IN ('queued', 'succeeded') AND j.status = 'running'
              AND j.locked_by = w.id)
    FROM jobq_workers w
    WHERE w.last_seen + w.stale_after_ms >= :now";

/// Ready jobs due by :due, by queue and kind: the ready index alone.
const READY_KINDS: &str = "
    SELECT queue, kind, count(*), min(run_after) FROM jobq_jobs
    WHERE (status = 'queued' OR status = 'retry' OR status = 'waiting') AND run_after <= :due
    GROUP BY queue, kind";

pub(crate) fn register(conn: &Connection, w: &WorkerInfo) -> Result<()> {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    conn.prepare_cached(REGISTER)?.execute(named_params! {
        ":id": w.id, ":host": w.host, ":pid": w.pid, ":queues": json(&w.queues),
        ":kinds": w.kinds.as_ref().map(json), ":concurrency": w.concurrency,
        ":started": w.started_at.as_millis(), ":stale": w.stale_after_ms,
    })?;
    Ok(())
}

pub(crate) fn seen(conn: &Connection, id: &str, now: i64) -> Result<bool> {
    let n = conn
        .prepare_cached("UPDATE jobq_workers SET last_seen = ?2 WHERE id = ?1")?
        .execute(params![id, now])?;
    Ok(n == 1)
}

pub(crate) fn unregister(conn: &Connection, id: &str) -> Result<()> {
    conn.prepare_cached("DELETE FROM jobq_workers WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

pub(crate) fn live(conn: &Connection, now: i64) -> Result<Vec<WorkerInfo>> {
    let mut stmt = conn.prepare_cached(LIVE)?;
    let rows = stmt.query_map(named_params! {":now": now}, |r| {
        let list = |text: Option<String>| -> Option<Vec<String>> {
            text.and_then(|t| serde_json::from_str(&t).ok())
        };
        Ok(WorkerInfo {
            id: r.get(0)?,
            host: r.get(1)?,
            pid: r.get(2)?,
            queues: list(r.get(3)?).unwrap_or_default(),
            kinds: list(r.get(4)?),
            concurrency: r.get(5)?,
            started_at: Timestamp::from_millis(r.get(6)?),
            last_seen: Timestamp::from_millis(r.get(7)?),
            stale_after_ms: r.get(8)?,
            running: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn expire(conn: &Connection, now: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM jobq_workers WHERE last_seen + stale_after_ms < ?1")?
        .execute([now])?)
}

pub(crate) fn ready_kinds(conn: &Connection, due: i64) -> Result<Vec<ReadyKind>> {
    let mut stmt = conn.prepare_cached(READY_KINDS)?;
    let rows = stmt.query_map(named_params! {":due": due}, |r| {
        Ok(ReadyKind {
            queue: r.get(0)?,
            kind: r.get(1)?,
            jobs: r.get(2)?,
            oldest: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl crate::store::WorkerStore for Sqlite {
    fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        self.write(|tx| register(tx, worker))
    }

    fn worker_seen(&self, id: &str, now: i64) -> Result<bool> {
        self.write(|tx| seen(tx, id, now))
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        self.write(|tx| unregister(tx, id))
    }

    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>> {
        self.read(|conn| live(conn, now))
    }

    fn expire_workers(&self, now: i64) -> Result<usize> {
        self.write(|tx| expire(tx, now))
    }

    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>> {
        self.read(|conn| ready_kinds(conn, due_before))
    }
}

//! The registry of live workers on PostgreSQL.

use super::Conn;
use super::Postgres;
use crate::error::Result;
use crate::job::Timestamp;
use crate::model::ReadyKind;
use crate::model::WorkerInfo;

const REGISTER: &str = "
    INSERT INTO jobq_workers (id, host, pid, queues, kinds, concurrency, started_at, last_seen,
                              stale_after_ms)
    VALUES ($1, $2, $3, $4::text::json, $5::text::json, $6, $7, $7, $8)
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, queues = excluded.queues,
        kinds = excluded.kinds, concurrency = excluded.concurrency,
        started_at = excluded.started_at, last_seen = excluded.last_seen,
        stale_after_ms = excluded.stale_after_ms";

const LIVE: &str = "
    SELECT w.id, w.host, w.pid, w.queues::text, w.kinds::text, w.concurrency, w.started_at,
           w.last_seen, w.stale_after_ms,
           (SELECT count(*) FROM jobq_jobs j WHERE j.status = 'running' AND j.locked_by = w.id)
    FROM jobq_workers w
    WHERE w.last_seen + w.stale_after_ms >= $1";

const READY_KINDS: &str = "
    SELECT queue, kind, count(*), min(run_after) FROM jobq_jobs
    WHERE status IN ('queued', 'retry', 'waiting') AND run_after <= $1
    GROUP BY queue, kind";

pub(crate) fn register(conn: &mut Conn, w: &WorkerInfo) -> Result<()> {
    let json = |v: &Vec<String>| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    conn.execute(
        REGISTER,
        &[
            &w.id,
            &w.host,
            &i64::from(w.pid),
            &json(&w.queues),
            &w.kinds.as_ref().map(json),
            &i32::try_from(w.concurrency).unwrap_or(i32::MAX),
            &w.started_at.as_millis(),
            &w.stale_after_ms,
        ],
    )?;
    Ok(())
}

pub(crate) fn seen(conn: &mut Conn, id: &str, now: i64) -> Result<bool> {
    let n = conn.execute(
        "UPDATE jobq_workers SET last_seen = $2 WHERE id = $1",
        &[&id, &now],
    )?;
    Ok(n == 1)
}

pub(crate) fn unregister(conn: &mut Conn, id: &str) -> Result<()> {
    conn.execute("DELETE FROM jobq_workers WHERE id = $1", &[&id])?;
    Ok(())
}

pub(crate) fn live(conn: &mut Conn, now: i64) -> Result<Vec<WorkerInfo>> {
    let list = |text: Option<String>| -> Option<Vec<String>> {
        text.and_then(|t| serde_json::from_str(&t).ok())
    };
    Ok(conn
        .query(LIVE, &[&now])?
        .iter()
        .map(|r| WorkerInfo {
            id: r.get(0),
            host: r.get(1),
            pid: u32::try_from(r.get::<_, i64>(2)).unwrap_or(0),
            queues: list(r.get(3)).unwrap_or_default(),
            kinds: list(r.get(4)),
            concurrency: u32::try_from(r.get::<_, i32>(5)).unwrap_or(0),
            started_at: Timestamp::from_millis(r.get(6)),
            last_seen: Timestamp::from_millis(r.get(7)),
            stale_after_ms: r.get(8),
            running: r.get(9),
        })
        .collect())
}

pub(crate) fn expire(conn: &mut Conn, now: i64) -> Result<usize> {
    Ok(conn.execute(
        "DELETE FROM jobq_workers WHERE last_seen + stale_after_ms < $1",
        &[&now],
    )? as usize)
}

pub(crate) fn ready_kinds(conn: &mut Conn, due: i64) -> Result<Vec<ReadyKind>> {
    Ok(conn
        .query(READY_KINDS, &[&due])?
        .iter()
        .map(|r| ReadyKind {
            queue: r.get(0),
            kind: r.get(1),
            jobs: r.get(2),
            oldest: r.get(3),
        })
        .collect())
}

impl crate::store::WorkerStore for Postgres {
    fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        self.run(|conn| register(conn, worker))
    }

    fn worker_seen(&self, id: &str, now: i64) -> Result<bool> {
        self.run(|conn| seen(conn, id, now))
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        self.run(|conn| unregister(conn, id))
    }

    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>> {
        self.read(|conn| live(conn, now))
    }

    fn expire_workers(&self, now: i64) -> Result<usize> {
        self.run(|conn| expire(conn, now))
    }

    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>> {
        self.read(|conn| ready_kinds(conn, due_before))
    }
}

//! Flow control on SQLite: the queues' settings, and the claim that reads them. The claim
//! runs in the writer's transaction, so what it counts cannot change before it takes: the
//! limits hold across every process on the file.

use super::Sqlite;
use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, named_params, params};

use crate::error::Result;
use crate::model::{ClaimSpec, QueueControl, QueueCount, QueueWrite, Scope};

const CONTROLS: &str = "
    SELECT name, paused, max_running, max_running_per_key, rate_limit, rate_window_ms
    FROM jobq_queues ORDER BY name";

const CONTROL: &str = "
    SELECT name, paused, max_running, max_running_per_key, rate_limit, rate_window_ms
    FROM jobq_queues WHERE name = ?1";

const UPSERT: &str = "
    INSERT INTO jobq_queues (name, paused, max_running, max_running_per_key, rate_limit,
                             rate_window_ms, updated_at)
    VALUES (:name, :paused, :max_running, :per_key, :rate_limit, :rate_window, :now)
    ON CONFLICT (name) DO UPDATE SET
        paused = excluded.paused, max_running = excluded.max_running,
        max_running_per_key = excluded.max_running_per_key, rate_limit = excluded.rate_limit,
        rate_window_ms = excluded.rate_window_ms, updated_at = excluded.updated_at";

/// Ready jobs by queue and status (the ready index), and blocked and running ones (the
/// status index).
const COUNTS: &str = "
    SELECT queue, status, count(*), coalesce(sum(run_after > :now), 0) FROM jobq_jobs
    WHERE (status = 'queued' OR status = 'retry' OR status = 'waiting') GROUP BY queue, status
    UNION ALL
    SELECT queue, status, count(*), 0 FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status IN ('running', 'blocked')
    GROUP BY queue, status";

const RUNNING: &str = "
    SELECT count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status = 'running' AND queue = ?1";

const RUNNING_BY_KEY: &str = "
    SELECT o.concurrency_key, count(*) FROM jobq_jobs j
    JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE j.status NOT IN ('queued', 'succeeded') AND j.status = 'running' AND j.queue = ?1
      AND o.concurrency_key IS NOT NULL
    GROUP BY o.concurrency_key";

/// A queue's ready jobs in claim order with their concurrency keys, read lazily: the claim
/// stops as soon as it has what it may take.
const KEYED_CANDIDATES: &str = "
    SELECT j.id_key, j.priority, j.run_after, o.concurrency_key
    FROM jobq_jobs j LEFT JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE j.queue = :queue AND (j.status = 'queued' OR j.status = 'retry' OR j.status = 'waiting') AND j.run_after <= :now
      AND (:kinds IS NULL OR j.kind IN (SELECT value FROM json_each(:kinds)))
      AND (:owner IS NULL OR j.owner = :owner)
    ORDER BY j.priority DESC, j.run_after, j.id_key";

const FORGET_CLAIMS: &str = "DELETE FROM jobq_queue_claims WHERE queue = ?1 AND at <= ?2";
const COUNT_CLAIMS: &str = "SELECT count(*) FROM jobq_queue_claims WHERE queue = ?1";
const NOTE_CLAIM: &str = "INSERT INTO jobq_queue_claims (queue, at) VALUES (?1, ?2)";

fn control(r: &Row<'_>) -> rusqlite::Result<QueueControl> {
    let rate: Option<u32> = r.get(4)?;
    let window: Option<i64> = r.get(5)?;
    Ok(QueueControl {
        name: r.get(0)?,
        paused: r.get(1)?,
        max_running: r.get(2)?,
        max_running_per_key: r.get(3)?,
        rate: rate.zip(window),
    })
}

pub(crate) fn controls(conn: &Connection) -> Result<Vec<QueueControl>> {
    let mut stmt = conn.prepare_cached(CONTROLS)?;
    let rows = stmt.query_map([], control)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn write(
    conn: &Connection,
    name: &str,
    w: QueueWrite,
    now: i64,
) -> Result<QueueControl> {
    let mut c: QueueControl = conn
        .prepare_cached(CONTROL)?
        .query_row([name], control)
        .optional()?
        .unwrap_or_else(|| QueueControl {
            name: name.to_string(),
            ..QueueControl::default()
        });
    if let Some(paused) = w.paused {
        c.paused = paused;
    }
    if let Some(v) = w.max_running {
        c.max_running = v;
    }
    if let Some(v) = w.max_running_per_key {
        c.max_running_per_key = v;
    }
    if let Some(v) = w.rate {
        c.rate = v;
    }
    conn.prepare_cached(UPSERT)?.execute(named_params! {
        ":name": c.name, ":paused": c.paused, ":max_running": c.max_running,
        ":per_key": c.max_running_per_key, ":rate_limit": c.rate.map(|r| r.0),
        ":rate_window": c.rate.map(|r| r.1), ":now": now,
    })?;
    Ok(c)
}

pub(crate) fn counts(conn: &Connection, now: i64) -> Result<Vec<QueueCount>> {
    let mut stmt = conn.prepare_cached(COUNTS)?;
    let rows = stmt.query_map(named_params! {":now": now}, |r| {
        let status: String = r.get(1)?;
        Ok((
            r.get(0)?,
            super::rows::status_column(1, &status)?,
            r.get(2)?,
            r.get(3)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A candidate: row key, priority, run_after.
pub(crate) type Candidate = (i64, i32, i64);

/// The candidates a claim may take from the controlled queue `c`, in claim order, at most
/// `limit`: none while paused; no more than the running limit leaves room for, nor the
/// rate's window; and none whose concurrency key is at its limit (jobs of other keys behind
/// them are taken: a backlog under one key starves no other).
pub(crate) fn candidates(
    conn: &Connection,
    c: &QueueControl,
    scope: Scope<'_>,
    spec: &ClaimSpec<'_>,
    now: i64,
) -> Result<Vec<Candidate>> {
    if c.paused {
        return Ok(Vec::new());
    }
    let mut room = spec.limit as i64;
    if let Some(max) = c.max_running {
        let running: i64 = conn
            .prepare_cached(RUNNING)?
            .query_row([&c.name], |r| r.get(0))?;
        room = room.min(i64::from(max) - running);
    }
    if let Some((limit, window)) = c.rate {
        conn.prepare_cached(FORGET_CLAIMS)?
            .execute(params![c.name, now - window])?;
        let recent: i64 = conn
            .prepare_cached(COUNT_CLAIMS)?
            .query_row([&c.name], |r| r.get(0))?;
        room = room.min(i64::from(limit) - recent);
    }
    if room <= 0 {
        return Ok(Vec::new());
    }
    let mut by_key: HashMap<String, i64> = HashMap::new();
    if c.max_running_per_key.is_some() {
        let mut stmt = conn.prepare_cached(RUNNING_BY_KEY)?;
        let rows = stmt.query_map([&c.name], |r| Ok((r.get(0)?, r.get(1)?)))?;
        for row in rows {
            let (key, n) = row?;
            by_key.insert(key, n);
        }
    }
    let per_key = c.max_running_per_key.map(i64::from);
    let mut stmt = conn.prepare_cached(KEYED_CANDIDATES)?;
    let mut rows = stmt.query(named_params! {
        ":queue": c.name, ":now": now, ":kinds": spec.filter.kinds_json(), ":owner": scope,
    })?;
    let mut taken = Vec::new();
    while let Some(r) = rows.next()? {
        let key: Option<String> = r.get(3)?;
        if let (Some(limit), Some(key)) = (per_key, key) {
            let n = by_key.entry(key).or_insert(0);
            if *n >= limit {
                continue;
            }
            *n += 1;
        }
        taken.push((r.get(0)?, r.get(1)?, r.get(2)?));
        if taken.len() as i64 >= room {
            break;
        }
    }
    Ok(taken)
}

/// Counts `n` claims from the rate-limited queue `queue` at `now`.
pub(crate) fn note_claims(conn: &Connection, queue: &str, n: usize, now: i64) -> Result<()> {
    let mut stmt = conn.prepare_cached(NOTE_CLAIM)?;
    for _ in 0..n {
        stmt.execute(params![queue, now])?;
    }
    Ok(())
}

impl crate::store::QueueStore for Sqlite {
    fn queue_controls(&self) -> Result<Vec<QueueControl>> {
        self.read(controls)
    }

    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl> {
        self.write(|tx| {
            tx.forget_controls();
            self::write(tx, name, write, now)
        })
    }

    fn any_controlled(&self) -> bool {
        self.any_controlled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>> {
        self.read(|c| counts(c, now))
    }
}

//! Flow control on PostgreSQL: the queues' settings, and the claim that reads them. The
//! ordinary claim statement leaves a controlled queue alone (its guard reads
//! `jobq_queues.controlled`); this claim locks the queue's row, counts and takes in one
//! transaction, so claims of a controlled queue go one at a time across every host.

use super::Postgres;
use std::collections::HashMap;

use postgres::Row;
use uuid::Uuid;

use super::Conn;
use crate::error::Result;
use crate::job::ClaimedJob;
use crate::model::{ClaimSpec, QueueControl, QueueCount, QueueWrite, Scope};

const CONTROLS: &str = "
    SELECT name, paused, max_running, max_running_per_key, rate_limit, rate_window_ms
    FROM jobq_queues ORDER BY name";

const CONTROLLED: &str = "SELECT name FROM jobq_queues WHERE controlled";

/// The rows of the queues a claim takes from, locked in name order until it commits.
const LOCK: &str = "
    SELECT name, paused, max_running, max_running_per_key, rate_limit, rate_window_ms
    FROM jobq_queues WHERE name = ANY($1) AND controlled ORDER BY name FOR UPDATE";

const UPSERT: &str = "
    INSERT INTO jobq_queues (name, paused, max_running, max_running_per_key, rate_limit,
                             rate_window_ms, updated_at)
    VALUES ($1, coalesce($2, false), $3, $4, $5, $6, $7)
    ON CONFLICT (name) DO UPDATE SET
        paused = coalesce($2, jobq_queues.paused),
        max_running = CASE WHEN $8 THEN $3 ELSE jobq_queues.max_running END,
        max_running_per_key = CASE WHEN $9 THEN $4 ELSE jobq_queues.max_running_per_key END,
        rate_limit = CASE WHEN $10 THEN $5 ELSE jobq_queues.rate_limit END,
        rate_window_ms = CASE WHEN $10 THEN $6 ELSE jobq_queues.rate_window_ms END,
        updated_at = $7
    RETURNING name, paused, max_running, max_running_per_key, rate_limit, rate_window_ms";

const COUNTS: &str = "
    SELECT queue, status, count(*), count(*) FILTER (WHERE run_after > $1) FROM jobq_jobs
    WHERE status IN ('queued', 'retry', 'waiting') GROUP BY queue, status
    UNION ALL
    SELECT queue, status, count(*), 0 FROM jobq_jobs
    WHERE status IN ('running', 'blocked') GROUP BY queue, status";

const RUNNING: &str = "SELECT count(*) FROM jobq_jobs WHERE status = 'running' AND queue = $1";

const RUNNING_BY_KEY: &str = "
    SELECT o.concurrency_key, count(*) FROM jobq_jobs j
    JOIN jobq_job_options o ON o.job_id = j.id
    WHERE j.status = 'running' AND j.queue = $1 AND o.concurrency_key IS NOT NULL
    GROUP BY o.concurrency_key";

/// A page of a queue's ready jobs in claim order with their concurrency keys, after the
/// position ($5 priority, $6 run_after, $7 id) of the last one read (none: from the start).
const PAGE: &str = "
    SELECT j.id, j.priority, j.run_after, o.concurrency_key
    FROM jobq_jobs j LEFT JOIN jobq_job_options o ON o.job_id = j.id
    WHERE j.queue = $1 AND j.status IN ('queued', 'retry', 'waiting') AND j.run_after <= $2
      AND ($3::text[] IS NULL OR j.kind = ANY($3)) AND ($4::text IS NULL OR j.owner = $4)
      AND ($7::uuid IS NULL OR j.priority < $5 OR (j.priority = $5 AND (j.run_after > $6
           OR (j.run_after = $6 AND j.id > $7))))
    ORDER BY j.priority DESC, j.run_after, j.id
    LIMIT 500";

const FORGET_CLAIMS: &str = "DELETE FROM jobq_queue_claims WHERE queue = $1 AND at <= $2";
const COUNT_CLAIMS: &str = "SELECT count(*) FROM jobq_queue_claims WHERE queue = $1";
const NOTE_CLAIMS: &str =
    "INSERT INTO jobq_queue_claims (queue, at) SELECT $1, $2 FROM generate_series(1, $3)";

/// Claims the picked jobs ($1) for the worker $3 at $2.
const CLAIM_IDS: &str = "
    UPDATE jobq_jobs AS j
    SET status = 'running', locked_by = $3, locked_at = $2, heartbeat_at = $2,
        attempts = j.attempts + 1, claims = j.claims + 1, started_at = $2, stage = 'claimed',
        progress = 0, wait_for = NULL, updated_at = $2
    WHERE j.id = ANY($1) AND j.status IN ('queued', 'retry', 'waiting')
    RETURNING j.id, j.queue, j.kind, j.priority, j.attempts, j.max_attempts, j.run_after,
              j.created_at, j.owner, j.group_id, j.input::text, j.claims, j.snoozes";

fn control(r: &Row) -> QueueControl {
    let rate: Option<i32> = r.get(4);
    let window: Option<i64> = r.get(5);
    QueueControl {
        name: r.get(0),
        paused: r.get(1),
        max_running: r.get::<_, Option<i32>>(2).map(|n| n.max(0) as u32),
        max_running_per_key: r.get::<_, Option<i32>>(3).map(|n| n.max(0) as u32),
        rate: rate.map(|n| n.max(0) as u32).zip(window),
    }
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

pub(crate) fn controls(conn: &mut Conn) -> Result<Vec<QueueControl>> {
    Ok(conn.query(CONTROLS, &[])?.iter().map(control).collect())
}

pub(crate) fn controlled(conn: &mut Conn) -> Result<Vec<String>> {
    Ok(conn
        .query(CONTROLLED, &[])?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

pub(crate) fn write(conn: &mut Conn, name: &str, w: QueueWrite, now: i64) -> Result<QueueControl> {
    let max_running = w.max_running.flatten().map(int);
    let per_key = w.max_running_per_key.flatten().map(int);
    let rate = w.rate.flatten();
    let row = conn.query_one(
        UPSERT,
        &[
            &name,
            &w.paused,
            &max_running,
            &per_key,
            &rate.map(|r| int(r.0)),
            &rate.map(|r| r.1),
            &now,
            &w.max_running.is_some(),
            &w.max_running_per_key.is_some(),
            &w.rate.is_some(),
        ],
    )?;
    // Idle workers on every host look again (a resumed queue, a raised limit).
    conn.execute("SELECT pg_notify('jobq', $1)", &[&name])?;
    Ok(control(&row))
}

pub(crate) fn counts(conn: &mut Conn, now: i64) -> Result<Vec<QueueCount>> {
    let mut out = Vec::new();
    for r in conn.query(COUNTS, &[&now])? {
        out.push((r.get(0), r.get::<_, String>(1).parse()?, r.get(2), r.get(3)));
    }
    Ok(out)
}

/// Claims from the controlled queues `queues` (of the claim's filter), in the caller's
/// transaction: locks their rows, then takes what each one's limits allow.
pub(crate) fn claim(
    conn: &mut Conn,
    scope: Scope<'_>,
    spec: &ClaimSpec<'_>,
    queues: &[String],
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let controls: Vec<QueueControl> = conn.query(LOCK, &[&queues])?.iter().map(control).collect();
    let kinds = spec.filter.kind_names();
    let mut picked: Vec<(Uuid, i32, i64)> = Vec::new();
    let mut rated: Vec<&QueueControl> = Vec::new();
    for c in &controls {
        if c.paused {
            continue;
        }
        let mut room = spec.limit as i64;
        if let Some(max) = c.max_running {
            let running: i64 = conn.query_one(RUNNING, &[&c.name])?.get(0);
            room = room.min(i64::from(max) - running);
        }
        if let Some((limit, window)) = c.rate {
            conn.execute(FORGET_CLAIMS, &[&c.name, &(now - window)])?;
            let recent: i64 = conn.query_one(COUNT_CLAIMS, &[&c.name])?.get(0);
            room = room.min(i64::from(limit) - recent);
            rated.push(c);
        }
        if room <= 0 {
            continue;
        }
        let mut by_key: HashMap<String, i64> = HashMap::new();
        if c.max_running_per_key.is_some() {
            for r in conn.query(RUNNING_BY_KEY, &[&c.name])? {
                by_key.insert(r.get(0), r.get(1));
            }
        }
        let per_key = c.max_running_per_key.map(i64::from);
        let mut taken = 0;
        let mut after: (Option<i32>, Option<i64>, Option<Uuid>) = (None, None, None);
        'pages: loop {
            let rows = conn.query(
                PAGE,
                &[&c.name, &now, &kinds, &scope, &after.0, &after.1, &after.2],
            )?;
            let full = rows.len() == 500;
            for r in &rows {
                let (id, priority, run_after): (Uuid, i32, i64) = (r.get(0), r.get(1), r.get(2));
                after = (Some(priority), Some(run_after), Some(id));
                if let (Some(limit), Some(key)) = (per_key, r.get::<_, Option<String>>(3)) {
                    let n = by_key.entry(key).or_insert(0);
                    if *n >= limit {
                        continue;
                    }
                    *n += 1;
                }
                picked.push((id, priority, run_after));
                taken += 1;
                if taken >= room {
                    break 'pages;
                }
            }
            if !full {
                break;
            }
        }
    }
    picked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
    picked.truncate(spec.limit);
    if picked.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = picked.iter().map(|p| p.0).collect();
    let rows = conn.query(CLAIM_IDS, &[&ids, &now, &spec.worker])?;
    let jobs: Vec<ClaimedJob> = rows
        .iter()
        .map(|r| super::jobs::claimed_from(r, 0, spec.worker))
        .collect();
    for c in rated {
        let n = jobs.iter().filter(|j| j.queue == c.name).count() as i32;
        if n > 0 {
            conn.execute(NOTE_CLAIMS, &[&c.name, &now, &n])?;
        }
    }
    Ok(jobs)
}

impl crate::store::QueueStore for Postgres {
    fn queue_controls(&self) -> Result<Vec<QueueControl>> {
        self.snapshot(controls)
    }

    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl> {
        let control = self.run(|conn| self::write(conn, name, write, now))?;
        self.forget_controlled();
        Ok(control)
    }

    fn any_controlled(&self) -> bool {
        !self
            .controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .is_empty()
    }

    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>> {
        self.snapshot(|conn| counts(conn, now))
    }
}

impl Postgres {
    /// The queues under flow control, read again when the last read is a second old. (The
    /// claim statement's own guard keeps a queue that became controlled since out of the
    /// ordinary claim; this only says which queues the controlled claim should look at.)
    pub(super) fn controlled_queues(
        &self,
    ) -> Result<std::sync::Arc<std::collections::HashSet<String>>> {
        {
            let cached = self
                .controlled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some(at), set) = &*cached {
                if at.elapsed() < std::time::Duration::from_secs(1) {
                    return Ok(std::sync::Arc::clone(set));
                }
            }
        }
        let set: std::sync::Arc<std::collections::HashSet<String>> =
            std::sync::Arc::new(self.run(controlled)?.into_iter().collect());
        *self
            .controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Some(std::time::Instant::now()), std::sync::Arc::clone(&set));
        Ok(set)
    }

    pub(super) fn forget_controlled(&self) {
        self.controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0 = None;
    }

    /// After the ordinary claim, the controlled queues of the filter, for the slots left.
    pub(super) fn top_up(
        &self,
        scope: Scope<'_>,
        spec: ClaimSpec<'_>,
        mut claimed: Vec<ClaimedJob>,
        now: i64,
    ) -> Result<Vec<ClaimedJob>> {
        if claimed.len() >= spec.limit {
            return Ok(claimed);
        }
        let controlled = self.controlled_queues()?;
        let queues: Vec<String> = spec
            .filter
            .queue_names()
            .iter()
            .filter(|q| controlled.contains(q.as_str()))
            .cloned()
            .collect();
        if queues.is_empty() {
            return Ok(claimed);
        }
        let rest = ClaimSpec {
            limit: spec.limit - claimed.len(),
            ..spec
        };
        let more = self.transaction(|conn| claim(conn, scope, &rest, &queues, now))?;
        claimed.extend(more);
        Ok(claimed)
    }
}

//! What the queue looks like, on PostgreSQL: the same figures as on SQLite, read from the
//! same partial indexes (index-only where the visibility map allows).

use super::Conn;
use super::Postgres;
use crate::error::Result;
use crate::job::{JobId, Status, Timestamp};
use crate::model::{CostGrouping, CostRow, DeadJob, OverviewRows, RunningJob, StageCount};
use crate::model::{CountQuery, Counts, FinishedJob, HealthQuery, HealthRows, QueueRows, Scope};
use crate::store::postgres::rollups;
use crate::store::rules::saturate;
use crate::store::rules::whole_query;

/// Blocked, running and retrying jobs: the status index.
const COUNT_STATUS_INDEX: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status IN ('blocked', 'running', 'retry', 'waiting')
      AND ($1::text IS NULL OR queue = $1)
    GROUP BY status";
/// Ready jobs, and how many of each ready status wait for their `run_after`: the ready index.
const COUNT_READY: &str = "
    SELECT count(*),
           count(*) FILTER (WHERE status = 'queued' AND run_after > $2),
           count(*) FILTER (WHERE status = 'retry' AND run_after > $2)
    FROM jobq_jobs
    WHERE status IN ('queued', 'retry', 'waiting') AND ($1::text IS NULL OR queue = $1)";
/// Finished jobs: the counts the transactions keep (not millions of rows).
const COUNT_FINISHED: &str = "
    SELECT status, sum(n)::bigint FROM jobq_counts
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND ($1::text IS NULL OR queue = $1)
    GROUP BY status";
/// An owner's or a group's jobs, through its index.
const COUNT_SCOPED: &str = "
    SELECT status, count(*), count(*) FILTER (WHERE run_after > $4) FROM jobq_jobs
    WHERE ($1::text IS NULL OR owner = $1) AND ($2::text IS NULL OR group_id = $2)
      AND ($3::text IS NULL OR queue = $3) AND ($1::text IS NOT NULL OR $2::text IS NOT NULL)
    GROUP BY status";

const OLDEST_READY: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE status IN ('queued', 'retry', 'waiting') AND run_after <= $1 AND ($2::text IS NULL OR owner = $2)";
const STALE_RUNNING: &str = "
    SELECT count(*), count(*) FILTER (WHERE coalesce(heartbeat_at, locked_at) < $1)
    FROM jobq_jobs
    WHERE status = 'running' AND ($2::text IS NULL OR owner = $2)";
/// Blocked jobs that wait for a dependency that failed or was cancelled (and do not run
/// anyway): they would wait for ever.
const BLOCKED_BEHIND_FAILURE: &str = "
    SELECT count(*) FROM jobq_jobs j
    WHERE j.status = 'blocked' AND ($1::text IS NULL OR j.owner = $1)
      AND EXISTS (SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
                  WHERE d.job_id = j.id AND p.status IN ('failed', 'cancelled'))
      AND NOT coalesce((SELECT run_on_dependency_failure FROM jobq_job_options o
                        WHERE o.job_id = j.id), false)";
/// Jobs that finished in the failure window (whole minutes from the one $1 falls in), by
/// status: read from the rollups, whatever the number of jobs.
const FINISHED_SINCE: &str = "
    SELECT metric, sum(n)::bigint FROM jobq_rollups
    WHERE span = 60000 AND at >= $1::bigint - $1::bigint % 60000
      AND metric IN ('succeeded', 'failed') AND ($2::text IS NULL OR owner = $2)
    GROUP BY metric";

const TIMING_ROWS: &str = "
    SELECT status, kind, completed_at - started_at, started_at - run_after
    FROM jobq_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND completed_at >= $1
      AND started_at IS NOT NULL AND ($2::text IS NULL OR queue = $2)
      AND ($3::text IS NULL OR owner = $3)";

const STAGES: &str = "
    SELECT stage, status, count(*) FROM jobq_jobs
    WHERE ($1::text IS NULL OR owner = $1)
    GROUP BY stage, status
    ORDER BY count(*) DESC, stage, status";

const RUNNING: &str = "
    SELECT id, queue, kind, stage, progress, locked_by, attempts, started_at,
           coalesce(heartbeat_at, locked_at),
           (SELECT concurrency_key FROM jobq_job_options o WHERE o.job_id = jobq_jobs.id)
    FROM jobq_jobs
    WHERE status = 'running' AND ($1::text IS NULL OR owner = $1)
    ORDER BY started_at, id";

const DEAD: &str = "
    SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, completed_at
    FROM jobq_jobs
    WHERE status = 'failed' AND completed_at IS NOT NULL AND ($1::text IS NULL OR owner = $1)
    ORDER BY completed_at DESC, id DESC
    LIMIT $2";

/// Sums of costs are `numeric` (exact), read as text.
const COSTS_BY_STATUS: &str = "
    SELECT status, count(*), sum(cost_cents)::text, avg(cost_cents)::float8, NULL::bigint
    FROM jobq_jobs WHERE ($1::text IS NULL OR owner = $1)
    GROUP BY status ORDER BY status";
const COSTS_BY_OWNER: &str = "
    SELECT j.owner, count(*), sum(j.cost_cents)::text, avg(j.cost_cents)::float8, o.budget_cents
    FROM jobq_jobs j LEFT JOIN jobq_owners o ON o.id = j.owner
    WHERE ($1::text IS NULL OR j.owner = $1)
    GROUP BY j.owner, o.budget_cents ORDER BY j.owner";
const COSTS_BY_GROUP: &str = "
    SELECT group_id, count(*), sum(cost_cents)::text, avg(cost_cents)::float8, NULL::bigint
    FROM jobq_jobs WHERE ($1::text IS NULL OR owner = $1)
    GROUP BY group_id ORDER BY group_id";

const READY_BY_QUEUE: &str = "
    SELECT queue, count(*) FILTER (WHERE status <> 'waiting'),
           min(run_after) FILTER (WHERE run_after <= $1)
    FROM jobq_jobs WHERE status IN ('queued', 'retry', 'waiting')
    GROUP BY queue";
const ACTIVE_BY_QUEUE: &str = "
    SELECT queue, status, count(*) FROM jobq_jobs
    WHERE status IN ('running', 'retry')
    GROUP BY queue, status";

pub(crate) fn counts(conn: &mut Conn, query: CountQuery<'_>, now: i64) -> Result<Counts> {
    let mut counts = Counts::default();
    if query.owner.is_some() || query.group.is_some() {
        for r in conn.query(
            COUNT_SCOPED,
            &[&query.owner, &query.group, &query.queue, &now],
        )? {
            let status: Status = r.get::<_, String>(0).parse()?;
            counts.by_status.insert(status, r.get(1));
            if status.is_ready() {
                counts.scheduled.insert(status, r.get(2));
            }
        }
        return Ok(counts);
    }
    for r in conn.query(COUNT_STATUS_INDEX, &[&query.queue])? {
        let status: Status = r.get::<_, String>(0).parse()?;
        counts.by_status.insert(status, r.get(1));
    }
    let ready = conn.query_one(COUNT_READY, &[&query.queue, &now])?;
    let retry = counts.by_status.get(&Status::Retry).copied().unwrap_or(0)
        + counts.by_status.get(&Status::Waiting).copied().unwrap_or(0);
    counts
        .by_status
        .insert(Status::Queued, ready.get::<_, i64>(0) - retry);
    counts.scheduled.insert(Status::Queued, ready.get(1));
    counts.scheduled.insert(Status::Retry, ready.get(2));
    for r in conn.query(COUNT_FINISHED, &[&query.queue])? {
        let status: Status = r.get::<_, String>(0).parse()?;
        counts.by_status.insert(status, r.get(1));
    }
    Ok(counts)
}

pub(crate) fn health(conn: &mut Conn, scope: Scope<'_>, query: HealthQuery) -> Result<HealthRows> {
    let stale = conn.query_one(STALE_RUNNING, &[&query.stale_before, &scope])?;
    let oldest_ready: Option<i64> = conn.query_one(OLDEST_READY, &[&query.now, &scope])?.get(0);
    let blocked_behind_failure: i64 = conn.query_one(BLOCKED_BEHIND_FAILURE, &[&scope])?.get(0);
    let mut rows = HealthRows {
        running: stale.get(0),
        stale: stale.get(1),
        oldest_ready,
        blocked_behind_failure,
        ..HealthRows::default()
    };
    for r in conn.query(FINISHED_SINCE, &[&query.finished_since, &scope])? {
        match r.get::<_, String>(0).as_str() {
            "failed" => rows.finished_failed = r.get(1),
            _ => rows.finished_succeeded = r.get(1),
        }
    }
    Ok(rows)
}

pub(crate) fn durations(
    conn: &mut Conn,
    scope: Scope<'_>,
    since: i64,
    queue: Option<&str>,
    each: &mut dyn FnMut(FinishedJob),
) -> Result<()> {
    for r in conn.query(TIMING_ROWS, &[&since, &queue, &scope])? {
        let status: Status = r.get::<_, String>(0).parse()?;
        each(FinishedJob {
            status,
            kind: r.get(1),
            run_ms: r.get(2),
            wait_ms: r.get(3),
        });
    }
    Ok(())
}

pub(crate) fn stages(conn: &mut Conn, scope: Scope<'_>) -> Result<Vec<StageCount>> {
    conn.query(STAGES, &[&scope])?
        .iter()
        .map(|r| {
            Ok(StageCount {
                stage: r.get(0),
                status: r.get::<_, String>(1).parse()?,
                count: r.get(2),
            })
        })
        .collect()
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn job_id(uuid: uuid::Uuid) -> JobId {
    JobId::from_db(uuid.hyphenated().to_string())
}

pub(crate) fn running(conn: &mut Conn, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>> {
    Ok(conn
        .query(RUNNING, &[&scope])?
        .iter()
        .map(|r| {
            let started: Option<i64> = r.get(7);
            let beat: Option<i64> = r.get(8);
            RunningJob {
                id: job_id(r.get(0)),
                queue: r.get(1),
                kind: r.get(2),
                stage: r.get(3),
                progress: r.get(4),
                worker: r.get(5),
                attempt: r.get::<_, i32>(6) as u32,
                running_seconds: secs(now - started.unwrap_or(now)),
                heartbeat_age_seconds: secs(now - beat.unwrap_or(now)),
                concurrency_key: r.get(9),
            }
        })
        .collect())
}

pub(crate) fn dead_letter(conn: &mut Conn, scope: Scope<'_>, limit: usize) -> Result<Vec<DeadJob>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(conn
        .query(DEAD, &[&scope, &limit])?
        .iter()
        .map(|r| DeadJob {
            id: job_id(r.get(0)),
            queue: r.get(1),
            kind: r.get(2),
            attempts: r.get::<_, i32>(3) as u32,
            max_attempts: r.get::<_, i32>(4) as u32,
            error_code: r.get(5),
            last_error: r.get(6),
            stage: r.get(7),
            failed_at: Timestamp::from_millis(r.get(8)),
        })
        .collect())
}

pub(crate) fn costs(conn: &mut Conn, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>> {
    let sql = match by {
        CostGrouping::Status => COSTS_BY_STATUS,
        CostGrouping::Owner => COSTS_BY_OWNER,
        CostGrouping::Group => COSTS_BY_GROUP,
    };
    let rows = conn.query(sql, &[&scope])?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let total: i128 = r.get::<_, String>(2).parse().unwrap_or(i128::MAX);
        let mut row = CostRow {
            key: r.get(0),
            count: r.get(1),
            total_cost_cents: saturate(total),
            avg_cost_cents: r.get(3),
            budget_cents: None,
            spent_cents: None,
            remaining_cents: None,
        };
        if by == CostGrouping::Owner {
            if let Some(owner) = row.key.clone() {
                let spent = super::tenants::spent_cents(conn, &owner)?;
                let budget: Option<i64> = r.get(4);
                row.spent_cents = Some(saturate(spent));
                row.budget_cents = budget;
                row.remaining_cents = budget.map(|b| saturate(i128::from(b) - spent));
            }
        }
        out.push(row);
    }
    Ok(out)
}

pub(crate) fn queue_rows(conn: &mut Conn, now: i64) -> Result<QueueRows> {
    let ready = conn
        .query(READY_BY_QUEUE, &[&now])?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut active = Vec::new();
    for r in conn.query(ACTIVE_BY_QUEUE, &[])? {
        active.push((r.get(0), r.get::<_, String>(1).parse()?, r.get(2)));
    }
    Ok(QueueRows { ready, active })
}

impl crate::store::StatsStore for Postgres {
    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<OverviewRows> {
        self.snapshot(|conn| {
            let counts = counts(conn, query, health.now)?;
            let whole = match whole_query(scope, query) {
                Some(everything) => self::counts(conn, everything, health.now)?,
                None => counts.clone(),
            };
            let rows = self::health(conn, scope, health)?;
            Ok(OverviewRows {
                counts,
                whole,
                health: rows,
            })
        })
    }

    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts> {
        self.snapshot(|conn| counts(conn, query, now))
    }

    fn durations(
        &self,
        scope: Scope<'_>,
        since: i64,
        queue: Option<&str>,
        each: &mut dyn FnMut(FinishedJob),
    ) -> Result<()> {
        self.read(|conn| durations(conn, scope, since, queue, each))
    }

    fn rollup_rows(
        &self,
        scope: Scope<'_>,
        query: crate::model::RollupQuery<'_>,
    ) -> Result<Vec<crate::model::RollupRow>> {
        self.read(|conn| rollups::rows(conn, scope, query))
    }

    fn fold_rollups(&self, minutes_before: i64, hours_before: i64) -> Result<usize> {
        self.transaction(|conn| rollups::fold(conn, minutes_before, hours_before))
    }

    fn stages(&self, scope: Scope<'_>) -> Result<Vec<StageCount>> {
        self.read(|conn| stages(conn, scope))
    }

    fn running(&self, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>> {
        self.read(|conn| running(conn, scope, now))
    }

    fn dead_letter(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<DeadJob>> {
        self.read(|conn| dead_letter(conn, scope, limit))
    }

    fn costs(&self, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>> {
        self.snapshot(|conn| costs(conn, scope, by))
    }

    fn queue_rows(&self, now: i64) -> Result<QueueRows> {
        self.snapshot(|conn| queue_rows(conn, now))
    }
}

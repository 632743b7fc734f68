//! What the queue looks like, on SQLite: counts read indexes only (waiting jobs from the
//! ready index; running, retrying, failed and cancelled jobs from the status index; finished
//! jobs from the finished index), so that statistics stay interactive with millions of
//! jobs. An owner's or a group's jobs are counted through their index.

use super::Sqlite;
use crate::store::sqlite::rollups;
use rusqlite::{Connection, named_params};

use super::rows;
use super::tenants::spent_cents;
use crate::error::Result;
use crate::job::{JobId, Status, Timestamp};
use crate::model::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};
use crate::model::{
    CountQuery, Counts, FinishedJob, HealthQuery, HealthRows, OverviewRows, QueueRows, Scope,
};
use crate::store::rules::whole_query;
use crate::store::rules::{exact_sum, saturate};

// ---- counts -------------------------------------------------------------------------------

/// Blocked, running and retrying jobs: a covering scan of the status index (its finished
/// entries are skipped by the range of each status).
pub(crate) const COUNT_STATUS_INDEX: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status IN ('blocked', 'running', 'retry', 'waiting')
    GROUP BY status";
pub(crate) const COUNT_STATUS_INDEX_IN_QUEUE: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status IN ('blocked', 'running', 'retry', 'waiting')
      AND queue = :queue
    GROUP BY status";
/// Ready jobs (queued and retrying), and how many of each wait for their `run_after`: a
/// covering scan of the ready index.
pub(crate) const COUNT_READY: &str = "
    SELECT count(*), coalesce(sum(status = 'queued' AND run_after > :now), 0),
           coalesce(sum(status = 'retry' AND run_after > :now), 0)
    FROM jobq_jobs
    WHERE (status = 'queued' OR status = 'retry' OR status = 'waiting') AND (:queue IS NULL OR queue = :queue)";
/// Finished jobs: the counts the transactions keep (not millions of rows).
pub(crate) const COUNT_FINISHED: &str = "
    SELECT status, sum(n) FROM jobq_counts
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND (:queue IS NULL OR queue = :queue)
    GROUP BY status";
/// An owner's or a group's jobs, through its index, with how many wait for their
/// `run_after`.
const COUNT_OWNER: &str = "
    SELECT status, count(*), coalesce(sum(run_after > :now), 0) FROM jobq_jobs
    WHERE owner = :owner AND (:group_id IS NULL OR group_id = :group_id)
      AND (:queue IS NULL OR queue = :queue)
    GROUP BY status";
const COUNT_GROUP: &str = "
    SELECT status, count(*), coalesce(sum(run_after > :now), 0) FROM jobq_jobs
    WHERE group_id = :group_id AND (:owner IS NULL OR owner = :owner)
      AND (:queue IS NULL OR queue = :queue)
    GROUP BY status";

// ---- health -------------------------------------------------------------------------------

/// The oldest ready job whose `run_after` has passed (one scan of the ready index).
pub(crate) const OLDEST_READY: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE (status = 'queued' OR status = 'retry' OR status = 'waiting') AND run_after <= :now
      AND (:owner IS NULL OR owner = :owner)";
/// Running jobs and how many of them have a stale heartbeat.
const STALE_RUNNING: &str = "
    SELECT count(*), coalesce(sum(coalesce(heartbeat_at, locked_at) < :stale_before), 0)
    FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
      AND (:owner IS NULL OR owner = :owner)";
/// Blocked jobs that wait for a dependency that failed or was cancelled (and do not run
/// anyway): they would wait for ever.
const BLOCKED_BEHIND_FAILURE: &str = "
    SELECT count(*) FROM jobq_jobs j
    WHERE j.status NOT IN ('queued', 'succeeded') AND j.status = 'blocked'
      AND (:owner IS NULL OR j.owner = :owner)
      AND EXISTS (SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
                  WHERE d.job_key = j.id_key AND p.status IN ('failed', 'cancelled'))
      AND coalesce((SELECT run_on_dependency_failure FROM jobq_job_options o
                    WHERE o.job_key = j.id_key), 0) = 0";
/// Jobs that finished in the failure window (whole minutes from the one `:since` falls
/// in), by status: read from the rollups, whatever the number of jobs.
pub(crate) const FINISHED_SINCE: &str = "
    SELECT metric, sum(n) FROM jobq_rollups
    WHERE span = 60000 AND at >= :since - :since % 60000
      AND metric IN ('succeeded', 'failed') AND (:owner IS NULL OR owner = :owner)
    GROUP BY metric";

// ---- timing, stages, running, dead, costs -------------------------------------------------

/// Run time and queue wait (in ms) of finished jobs: a range of the finished index, read
/// without touching the table.
pub(crate) const TIMING_ROWS: &str = "
    SELECT status, kind, completed_at - started_at, started_at - run_after
    FROM jobq_jobs
    WHERE status IN ('succeeded', 'failed', 'cancelled') AND completed_at >= :since
      AND started_at IS NOT NULL AND (:queue IS NULL OR queue = :queue)";
/// The same for one owner's jobs.
const TIMING_ROWS_OWNER: &str = "
    SELECT status, kind, completed_at - started_at, started_at - run_after
    FROM jobq_jobs
    WHERE owner = :owner AND completed_at >= :since AND started_at IS NOT NULL
      AND (:queue IS NULL OR queue = :queue)";

const STAGES: &str = "
    SELECT stage, status, count(*) FROM jobq_jobs
    WHERE (:owner IS NULL OR owner = :owner)
    GROUP BY stage, status
    ORDER BY count(*) DESC, stage, status";

pub(crate) const RUNNING: &str = "
    SELECT id, queue, kind, stage, progress, locked_by, attempts, started_at,
           coalesce(heartbeat_at, locked_at),
           (SELECT concurrency_key FROM jobq_job_options o WHERE o.job_key = jobq_jobs.id_key)
    FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
      AND (:owner IS NULL OR owner = :owner)
    ORDER BY started_at, id";

pub(crate) const DEAD: &str = "
    SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, completed_at
    FROM jobq_jobs
    WHERE status = 'failed' AND completed_at IS NOT NULL AND (:owner IS NULL OR owner = :owner)
    ORDER BY completed_at DESC, id DESC
    LIMIT :limit + 0";

/// Costs sum in two exact parts (see [`crate::store::rules::exact_sum`]).
const COSTS_BY_STATUS: &str = "
    SELECT status, count(*), sum(cost_cents >> 20), sum(cost_cents & 1048575), avg(cost_cents)
    FROM jobq_jobs
    WHERE (:owner IS NULL OR owner = :owner)
    GROUP BY status ORDER BY status";
const COSTS_BY_OWNER: &str = "
    SELECT j.owner, count(*), sum(j.cost_cents >> 20), sum(j.cost_cents & 1048575),
           avg(j.cost_cents), o.budget_cents
    FROM jobq_jobs j LEFT JOIN jobq_owners o ON o.id = j.owner
    WHERE (:owner IS NULL OR j.owner = :owner)
    GROUP BY j.owner ORDER BY j.owner";
const COSTS_BY_GROUP: &str = "
    SELECT group_id, count(*), sum(cost_cents >> 20), sum(cost_cents & 1048575), avg(cost_cents)
    FROM jobq_jobs
    WHERE (:owner IS NULL OR owner = :owner)
    GROUP BY group_id ORDER BY group_id";

/// Ready jobs by queue, with the oldest due one.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) const READY_BY_QUEUE: &str = "
    SELECT queue, coalesce(sum(status <> 'waiting'), 0),
           min(CASE WHEN run_after <= :now THEN run_after END)
    FROM jobq_jobs WHERE (status = 'queued' OR status = 'retry' OR status = 'waiting')
    GROUP BY queue";

/// Running and retrying jobs by queue: two ranges of the status index.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) const ACTIVE_BY_QUEUE: &str = "
    SELECT queue, status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status IN ('running', 'retry')
    GROUP BY queue, status";

/// The counts of `query`, as of `now`.
pub(crate) fn counts(conn: &Connection, query: CountQuery<'_>, now: i64) -> Result<Counts> {
    let mut counts = Counts::default();
    let mut add_rows = |stmt: &mut rusqlite::CachedStatement<'_>,
                        params: &[(&str, &dyn rusqlite::ToSql)]|
     -> Result<()> {
        let mut rows = stmt.query(params)?;
        while let Some(r) = rows.next()? {
            let status: Status = r.get::<_, String>(0)?.parse()?;
            *counts.by_status.entry(status).or_default() += r.get::<_, i64>(1)?;
            if status.is_ready() && r.as_ref().column_count() > 2 {
                *counts.scheduled.entry(status).or_default() += r.get::<_, i64>(2)?;
            }
        }
        Ok(())
    };
    if let Some(group) = query.group {
        let mut stmt = conn.prepare_cached(COUNT_GROUP)?;
        add_rows(
            &mut stmt,
            named_params! {":group_id": group, ":owner": query.owner, ":queue": query.queue, ":now": now},
        )?;
    } else if let Some(owner) = query.owner {
        let mut stmt = conn.prepare_cached(COUNT_OWNER)?;
        add_rows(
            &mut stmt,
            named_params! {":owner": owner, ":group_id": None::<String>, ":queue": query.queue, ":now": now},
        )?;
    } else {
        match query.queue {
            Some(queue) => {
                let mut stmt = conn.prepare_cached(COUNT_STATUS_INDEX_IN_QUEUE)?;
                add_rows(&mut stmt, named_params! {":queue": queue})?;
            }
            None => {
                let mut stmt = conn.prepare_cached(COUNT_STATUS_INDEX)?;
                add_rows(&mut stmt, &[])?;
            }
        }
        let mut stmt = conn.prepare_cached(COUNT_FINISHED)?;
        add_rows(&mut stmt, named_params! {":queue": query.queue})?;
        let (ready, queued_ahead, retry_ahead): (i64, i64, i64) = conn
            .prepare_cached(COUNT_READY)?
            .query_row(named_params! {":queue": query.queue, ":now": now}, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?;
        let not_queued = |s| counts.by_status.get(&s).copied().unwrap_or(0);
        let queued = ready - not_queued(Status::Retry) - not_queued(Status::Waiting);
        counts.by_status.insert(Status::Queued, queued);
        counts.scheduled.insert(Status::Queued, queued_ahead);
        counts.scheduled.insert(Status::Retry, retry_ahead);
    }
    Ok(counts)
}

/// The rows of the health checks of `scope`.
pub(crate) fn health(
    conn: &Connection,
    scope: Scope<'_>,
    query: HealthQuery,
) -> Result<HealthRows> {
    let (running, stale): (i64, i64) = conn.prepare_cached(STALE_RUNNING)?.query_row(
        named_params! {":stale_before": query.stale_before, ":owner": scope},
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let oldest_ready: Option<i64> = conn
        .prepare_cached(OLDEST_READY)?
        .query_row(named_params! {":now": query.now, ":owner": scope}, |r| {
            r.get(0)
        })?;
    let blocked_behind_failure: i64 = conn
        .prepare_cached(BLOCKED_BEHIND_FAILURE)?
        .query_row(named_params! {":owner": scope}, |r| r.get(0))?;
    let mut rows = HealthRows {
        running,
        stale,
        oldest_ready,
        blocked_behind_failure,
        ..HealthRows::default()
    };
    let mut stmt = conn.prepare_cached(FINISHED_SINCE)?;
    let mut finished =
        stmt.query(named_params! {":since": query.finished_since, ":owner": scope})?;
    while let Some(r) = finished.next()? {
        match r.get::<_, String>(0)?.as_str() {
            "failed" => rows.finished_failed = r.get(1)?,
            _ => rows.finished_succeeded = r.get(1)?,
        }
    }
    Ok(rows)
}

/// Every finished job since `since`: status, kind, run time and queue wait.
pub(crate) fn durations(
    conn: &Connection,
    scope: Scope<'_>,
    since: i64,
    queue: Option<&str>,
    each: &mut dyn FnMut(FinishedJob),
) -> Result<()> {
    let mut stmt = match scope {
        Some(_) => conn.prepare_cached(TIMING_ROWS_OWNER)?,
        None => conn.prepare_cached(TIMING_ROWS)?,
    };
    let mut rows = match scope {
        Some(owner) => {
            stmt.query(named_params! {":owner": owner, ":since": since, ":queue": queue})?
        }
        None => stmt.query(named_params! {":since": since, ":queue": queue})?,
    };
    while let Some(r) = rows.next()? {
        let status =
            rows::status_column(0, r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?)?;
        each(FinishedJob {
            status,
            kind: r.get(1)?,
            run_ms: r.get(2)?,
            wait_ms: r.get(3)?,
        });
    }
    Ok(())
}

pub(crate) fn stages(conn: &Connection, scope: Scope<'_>) -> Result<Vec<StageCount>> {
    let mut stmt = conn.prepare_cached(STAGES)?;
    let rows = stmt.query_map(named_params! {":owner": scope}, |r| {
        let status: String = r.get(1)?;
        Ok(StageCount {
            stage: r.get(0)?,
            status: rows::status_column(1, &status)?,
            count: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub(crate) fn running(conn: &Connection, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>> {
    let mut stmt = conn.prepare_cached(RUNNING)?;
    let rows = stmt.query_map(named_params! {":owner": scope}, |r| {
        let started: Option<i64> = r.get(7)?;
        let beat: Option<i64> = r.get(8)?;
        Ok(RunningJob {
            id: JobId::from_db(r.get(0)?),
            queue: r.get(1)?,
            kind: r.get(2)?,
            stage: r.get(3)?,
            progress: r.get(4)?,
            worker: r.get(5)?,
            attempt: r.get(6)?,
            running_seconds: secs(now - started.unwrap_or(now)),
            heartbeat_age_seconds: secs(now - beat.unwrap_or(now)),
            concurrency_key: r.get(9)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn dead_letter(
    conn: &Connection,
    scope: Scope<'_>,
    limit: usize,
) -> Result<Vec<DeadJob>> {
    let mut stmt = conn.prepare_cached(DEAD)?;
    let rows = stmt.query_map(
        named_params! {":owner": scope, ":limit": limit as i64},
        |r| {
            Ok(DeadJob {
                id: JobId::from_db(r.get(0)?),
                queue: r.get(1)?,
                kind: r.get(2)?,
                attempts: r.get(3)?,
                max_attempts: r.get(4)?,
                error_code: r.get(5)?,
                last_error: r.get(6)?,
                stage: r.get(7)?,
                failed_at: Timestamp::from_millis(r.get(8)?),
            })
        },
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn costs(conn: &Connection, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>> {
    let sql = match by {
        CostGrouping::Status => COSTS_BY_STATUS,
        CostGrouping::Owner => COSTS_BY_OWNER,
        CostGrouping::Group => COSTS_BY_GROUP,
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(named_params! {":owner": scope})?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let key: Option<String> = r.get(0)?;
        let mut row = CostRow {
            count: r.get(1)?,
            total_cost_cents: saturate(exact_sum(r.get(2)?, r.get(3)?)),
            avg_cost_cents: r.get(4)?,
            budget_cents: None,
            spent_cents: None,
            remaining_cents: None,
            key,
        };
        if by == CostGrouping::Owner {
            if let Some(owner) = row.key.as_deref() {
                let spent = spent_cents(conn, owner)?;
                let budget: Option<i64> = r.get(5)?;
                row.spent_cents = Some(saturate(spent));
                row.budget_cents = budget;
                row.remaining_cents = budget.map(|b| saturate(i128::from(b) - spent));
            }
        }
        out.push(row);
    }
    Ok(out)
}

#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn queue_rows(conn: &Connection, now: i64) -> Result<QueueRows> {
    let mut stmt = conn.prepare_cached(READY_BY_QUEUE)?;
    let ready = stmt
        .query_map(named_params! {":now": now}, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut stmt = conn.prepare_cached(ACTIVE_BY_QUEUE)?;
    let active = stmt
        .query_map([], |r| {
            let status: String = r.get(1)?;
            Ok((r.get(0)?, rows::status_column(1, &status)?, r.get(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(QueueRows { ready, active })
}

impl crate::store::StatsStore for Sqlite {
    fn file_problem(&self) -> Option<String> {
        Sqlite::file_problem(self)
    }

    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<OverviewRows> {
        self.read(|conn| {
            let counts = counts(conn, query, health.now)?;
            let whole = match whole_query(scope, query) {
                Some(everything) => self::counts(conn, everything, health.now)?,
                None => counts.clone(),
            };
            let mut rows = self::health(conn, scope, health)?;
            rows.file_problem = self.file_problem();
            Ok(OverviewRows {
                counts,
                whole,
                health: rows,
            })
        })
    }

    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts> {
        self.read(|conn| counts(conn, query, now))
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
        self.write(|tx| rollups::fold(tx, minutes_before, hours_before))
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
        self.read(|conn| costs(conn, scope, by))
    }

    fn queue_rows(&self, now: i64) -> Result<QueueRows> {
        self.read(|conn| queue_rows(conn, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<rusqlite::types::Value> =
            (0..n).map(|_| rusqlite::types::Value::Null).collect();
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .join("\n")
    }

    #[test]
    fn counts_read_covering_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        for (sql, index) in [
            (COUNT_STATUS_INDEX, "COVERING INDEX jobq_jobs_status"),
            (
                COUNT_STATUS_INDEX_IN_QUEUE,
                "COVERING INDEX jobq_jobs_status",
            ),
            (ACTIVE_BY_QUEUE, "COVERING INDEX jobq_jobs_status"),
            (READY_BY_QUEUE, "COVERING INDEX jobq_jobs_ready"),
            (COUNT_READY, "COVERING INDEX jobq_jobs_ready"),
            (OLDEST_READY, "COVERING INDEX jobq_jobs_ready"),
            (COUNT_FINISHED, "jobq_counts"),
            (FINISHED_SINCE, "jobq_rollups"),
            (TIMING_ROWS, "COVERING INDEX jobq_jobs_finished"),
            (DEAD, "jobq_jobs_finished"),
            (RUNNING, "jobq_jobs_status"),
        ] {
            let p = plan(&conn, sql);
            assert!(p.contains(index), "{index} not used by\n{sql}\n{p}");
            assert!(
                !p.contains("SCAN jobq_jobs\n") && !p.ends_with("SCAN jobq_jobs"),
                "full scan:\n{p}"
            );
        }
    }
}

//! What the queue looks like: counts, health, timings, stages, the running monitor, the dead
//! letter and costs. One implementation behind the library calls, the CLI commands and the
//! HTTP routes; the SQL views of `schema.sql` give the same figures to the `sqlite3` shell.
//!
//! Counts read indexes only: waiting jobs from the ready index, running, retrying, failed
//! and cancelled jobs from the status index, finished jobs from the finished index — so a
//! stats call stays interactive with millions of jobs. A handle scoped to an owner (or a
//! filter by owner or group) counts that owner's or group's jobs through their index.

use std::collections::BTreeMap;
use std::time::Duration;

use rusqlite::{Connection, named_params};
use serde::Serialize;

use crate::clock::millis;
use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
use crate::owner::{exact_sum, saturate, spent_cents};
use crate::queue::Queue;

/// Which jobs a statistic covers. Every filter is optional; an owner-scoped handle covers
/// only its owner's jobs whatever the filter says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct StatsFilter {
    queue: Option<String>,
    owner: Option<String>,
    group: Option<String>,
}

impl StatsFilter {
    /// Every job.
    pub fn new() -> StatsFilter {
        StatsFilter::default()
    }

    /// Only the jobs of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only the jobs of this owner.
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Only the jobs of this group.
    pub fn group(mut self, group_id: impl Into<String>) -> Self {
        self.group = Some(group_id.into());
        self
    }
}

/// Jobs by status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Every status, zero included, as stored.
    pub by_status: BTreeMap<Status, i64>,
    /// All jobs.
    pub total: i64,
    /// Of the `queued` and `retry` jobs, those whose `run_after` lies ahead: shown as
    /// *scheduled* (not a stored status).
    pub scheduled: i64,
    /// The counts as jobq shows them: `by_status`, but with the `queued` and `retry` jobs
    /// whose `run_after` lies ahead counted as `scheduled` instead.
    pub shown: BTreeMap<String, i64>,
}

impl Stats {
    /// The count of one status.
    pub fn count(&self, status: Status) -> i64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// The summary the seeds' dashboards show.
    pub fn summary(&self) -> StatsSummary {
        StatsSummary {
            running: self.count(Status::Running),
            pending: self.count(Status::Queued) + self.count(Status::Retry),
            failed: self.count(Status::Failed),
            has_dead_letter: self.count(Status::Failed) > 0,
        }
    }
}

/// The figures at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSummary {
    /// Jobs running now.
    pub running: i64,
    /// Jobs waiting: `queued` plus `retry` (the scheduled ones included: see
    /// [`Stats::scheduled`]).
    pub pending: i64,
    /// Jobs in the dead letter.
    pub failed: i64,
    /// Whether the dead letter holds anything.
    pub has_dead_letter: bool,
}

/// How the queue is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Nothing to look at.
    Healthy,
    /// Something needs a look (see the reasons).
    Degraded,
    /// Work is not getting done (see the reasons).
    Unhealthy,
}

impl Health {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition that made the queue less than healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReason {
    /// Which check: `dead_letter`, `stale_heartbeats`, `queue_wait` or `failure_rate`.
    pub check: &'static str,
    /// How bad.
    pub level: Health,
    /// What was found, in words.
    pub message: String,
}

/// When the health checks call the queue degraded or unhealthy.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct HealthThresholds {
    /// Dead-lettered jobs from which the queue is degraded. Defaults to 1.
    pub dead_letter_degraded: i64,
    /// Dead-lettered jobs from which the queue is unhealthy. Defaults to 1,000.
    pub dead_letter_unhealthy: i64,
    /// A running job whose heartbeat is older than this is stale: degraded, and unhealthy
    /// when every running job is stale (no worker is alive). Defaults to 60 s.
    pub stale_heartbeat_after: Duration,
    /// The oldest ready job waiting longer than this: degraded. Defaults to 5 minutes.
    pub queue_wait_degraded: Duration,
    /// The oldest ready job waiting longer than this: unhealthy. Defaults to 30 minutes.
    pub queue_wait_unhealthy: Duration,
    /// The window over which the failure rate (failed / finished) is computed. Defaults to
    /// 15 minutes.
    pub failure_window: Duration,
    /// Finished jobs the window needs before its failure rate counts. Defaults to 10.
    pub failure_min_jobs: i64,
    /// Failure rate from which the queue is degraded. Defaults to 0.10.
    pub failure_rate_degraded: f64,
    /// Failure rate from which the queue is unhealthy. Defaults to 0.50.
    pub failure_rate_unhealthy: f64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            dead_letter_degraded: 1,
            dead_letter_unhealthy: 1000,
            stale_heartbeat_after: Duration::from_secs(60),
            queue_wait_degraded: Duration::from_secs(300),
            queue_wait_unhealthy: Duration::from_secs(1800),
            failure_window: Duration::from_secs(900),
            failure_min_jobs: 10,
            failure_rate_degraded: 0.10,
            failure_rate_unhealthy: 0.50,
        }
    }
}

/// The document of `jobq stats --json` and `GET /api/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// Jobs by status.
    pub stats: Stats,
    /// The worst level any check reached.
    pub health: Health,
    /// The figures at a glance.
    pub summary: StatsSummary,
    /// Why the health is not `healthy` (empty when it is).
    pub reasons: Vec<HealthReason>,
}

/// Run time and queue wait of finished jobs of one status (and kind), in seconds.
///
/// Percentiles are exact, by nearest rank: the value at rank `ceil(p × n)` of the sorted
/// values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// The status (`succeeded`, `failed` or `cancelled`).
    pub status: Status,
    /// The kind, when timings are broken down by kind.
    pub kind: Option<String>,
    /// Jobs measured.
    pub count: i64,
    /// Mean run time (`completed_at - started_at` of the last attempt).
    pub avg_seconds: f64,
    /// Median run time.
    pub p50_seconds: f64,
    /// 95th percentile run time.
    pub p95_seconds: f64,
    /// Longest run time.
    pub max_seconds: f64,
    /// Mean queue wait (`started_at - run_after`: from when the job became ready — its
    /// enqueue, scheduled time, retry time or release — to its last attempt's start).
    pub wait_avg_seconds: f64,
    /// Median queue wait.
    pub wait_p50_seconds: f64,
    /// 95th percentile queue wait.
    pub wait_p95_seconds: f64,
    /// Longest queue wait.
    pub wait_max_seconds: f64,
}

/// Which finished jobs [`Queue::timing`] measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct TimingFilter {
    since: Option<Duration>,
    by_kind: bool,
    queue: Option<String>,
}

impl TimingFilter {
    /// All finished jobs, by status.
    pub fn new() -> TimingFilter {
        TimingFilter::default()
    }

    /// Only jobs that finished within this long before now.
    pub fn within(mut self, window: Duration) -> Self {
        self.since = Some(window);
        self
    }

    /// One row per status and kind.
    pub fn by_kind(mut self) -> Self {
        self.by_kind = true;
        self
    }

    /// Only the jobs of one queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

/// How many jobs sit at one stage with one status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageCount {
    /// The stage (`None` for jobs that never reported one, e.g. still queued).
    pub stage: Option<String>,
    /// The status.
    pub status: Status,
    /// How many.
    pub count: i64,
}

/// A running job, as the running monitor shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunningJob {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Its stage.
    pub stage: Option<String>,
    /// Its progress, 0 to 1.
    pub progress: f64,
    /// The worker holding it.
    pub worker: Option<String>,
    /// The attempt running.
    pub attempt: u32,
    /// Seconds since the attempt started.
    pub running_seconds: f64,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_seconds: f64,
}

/// A job in the dead letter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadJob {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// Attempts made.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The code of the last failure.
    pub error_code: Option<String>,
    /// The message of the last failure.
    pub last_error: Option<String>,
    /// The stage where it failed.
    pub stage: Option<String>,
    /// When it failed for good.
    pub failed_at: Timestamp,
}

/// How [`Queue::costs`] groups jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CostGrouping {
    /// By status. The default.
    #[default]
    Status,
    /// By owner, with each owner's budget.
    Owner,
    /// By group.
    Group,
}

/// Costs of a set of jobs, in cents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostRow {
    /// The status, owner id or group id (owner and group may be `None`: jobs without one).
    pub key: Option<String>,
    /// Jobs.
    pub count: i64,
    /// Their total cost.
    pub total_cost_cents: i64,
    /// Their average cost.
    pub avg_cost_cents: f64,
    /// The owner's budget (owner grouping).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_cents: Option<i64>,
    /// What the owner has spent against its budget (owner grouping; jobs cancelled before
    /// they started do not count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_cents: Option<i64>,
    /// What is left of the budget (owner grouping, when there is a budget).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining_cents: Option<i64>,
}

// ---- counts -------------------------------------------------------------------------------

/// Running, retrying, failed and cancelled jobs: a covering scan of the status index.
const COUNT_STATUS_INDEX: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') GROUP BY status";
const COUNT_STATUS_INDEX_IN_QUEUE: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND queue = :queue GROUP BY status";
/// Ready jobs (queued and retrying), and how many of each wait for their `run_after`: a
/// covering scan of the ready index.
const COUNT_READY: &str = "
    SELECT count(*), coalesce(sum(status = 'queued' AND run_after > :now), 0),
           coalesce(sum(status = 'retry' AND run_after > :now), 0)
    FROM jobq_jobs
    WHERE status IN ('queued', 'retry') AND (:queue IS NULL OR queue = :queue)";
/// Succeeded jobs: a range of the finished index.
const COUNT_SUCCEEDED: &str = "
    SELECT count(*) FROM jobq_jobs
    WHERE status = 'succeeded' AND completed_at IS NOT NULL AND (:queue IS NULL OR queue = :queue)";
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
const OLDEST_READY: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE status IN ('queued', 'retry') AND run_after <= :now
      AND (:owner IS NULL OR owner = :owner)";
/// Running jobs and how many of them have a stale heartbeat.
const STALE_RUNNING: &str = "
    SELECT count(*), coalesce(sum(coalesce(heartbeat_at, locked_at) < :stale_before), 0)
    FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
      AND (:owner IS NULL OR owner = :owner)";
/// Finished jobs of the failure window, by status.
const FINISHED_SINCE: &str = "
    SELECT status, count(*) FROM jobq_jobs
    WHERE status IN ('succeeded', 'failed') AND completed_at >= :since
      AND (:owner IS NULL OR owner = :owner)
    GROUP BY status";

// ---- timing, stages, running, dead, costs -------------------------------------------------

/// Run time and queue wait (in ms) of finished jobs: a range of the finished index, read
/// without touching the table.
const TIMING_ROWS: &str = "
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

const RUNNING: &str = "
    SELECT id, queue, kind, stage, progress, locked_by, attempts, started_at,
           coalesce(heartbeat_at, locked_at)
    FROM jobq_jobs
    WHERE status NOT IN ('queued', 'succeeded') AND status = 'running'
      AND (:owner IS NULL OR owner = :owner)
    ORDER BY started_at, id";

const DEAD: &str = "
    SELECT id, queue, kind, attempts, max_attempts, error_code, last_error, stage, completed_at
    FROM jobq_jobs
    WHERE status = 'failed' AND completed_at IS NOT NULL AND (:owner IS NULL OR owner = :owner)
    ORDER BY completed_at DESC, id DESC
    LIMIT :limit + 0";

/// Costs sum in two exact parts (see [`crate::owner::exact_sum`]).
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

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

impl Queue {
    /// The owner the statistics are restricted to: the handle's own, else the filter's.
    fn stats_owner<'a>(&'a self, filter_owner: Option<&'a str>) -> Option<&'a str> {
        self.owner().or(filter_owner)
    }

    /// Jobs by status (and in total) among the jobs the filter covers.
    ///
    /// # Errors
    ///
    /// Database errors only.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{NewJob, Queue, Status, StatsFilter};
    ///
    /// let queue = Queue::open(dir.path().join("q.db"))?;
    /// queue.enqueue(NewJob::new("a"))?;
    /// let stats = queue.stats(&StatsFilter::new())?;
    /// assert_eq!((stats.count(Status::Queued), stats.total), (1, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self, filter: &StatsFilter) -> Result<Stats> {
        if let (Some(me), Some(other)) = (self.owner(), filter.owner.as_deref()) {
            if me != other {
                return Ok(stats_from(BTreeMap::new(), &BTreeMap::new()));
            }
        }
        self.store().read(|conn| self.stats_in(conn, filter))
    }

    fn stats_in(&self, conn: &Connection, filter: &StatsFilter) -> Result<Stats> {
        let owner = self.stats_owner(filter.owner.as_deref());
        let now = self.now_ms();
        let mut counts: BTreeMap<Status, i64> = BTreeMap::new();
        let mut scheduled: BTreeMap<Status, i64> = BTreeMap::new();
        let mut add_rows = |stmt: &mut rusqlite::CachedStatement<'_>,
                            params: &[(&str, &dyn rusqlite::ToSql)]|
         -> Result<()> {
            let mut rows = stmt.query(params)?;
            while let Some(r) = rows.next()? {
                let status: Status = r.get::<_, String>(0)?.parse()?;
                *counts.entry(status).or_default() += r.get::<_, i64>(1)?;
                if status.is_ready() && r.as_ref().column_count() > 2 {
                    *scheduled.entry(status).or_default() += r.get::<_, i64>(2)?;
                }
            }
            Ok(())
        };
        if let Some(group) = filter.group.as_deref() {
            let mut stmt = conn.prepare_cached(COUNT_GROUP)?;
            add_rows(
                &mut stmt,
                named_params! {":group_id": group, ":owner": owner, ":queue": filter.queue, ":now": now},
            )?;
        } else if let Some(owner) = owner {
            let mut stmt = conn.prepare_cached(COUNT_OWNER)?;
            add_rows(
                &mut stmt,
                named_params! {":owner": owner, ":group_id": None::<String>, ":queue": filter.queue, ":now": now},
            )?;
        } else {
            match filter.queue.as_deref() {
                Some(queue) => {
                    let mut stmt = conn.prepare_cached(COUNT_STATUS_INDEX_IN_QUEUE)?;
                    add_rows(&mut stmt, named_params! {":queue": queue})?;
                }
                None => {
                    let mut stmt = conn.prepare_cached(COUNT_STATUS_INDEX)?;
                    add_rows(&mut stmt, &[])?;
                }
            }
            let (ready, queued_ahead, retry_ahead): (i64, i64, i64) = conn
                .prepare_cached(COUNT_READY)?
                .query_row(named_params! {":queue": filter.queue, ":now": now}, |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?;
            let retry = counts.get(&Status::Retry).copied().unwrap_or(0);
            counts.insert(Status::Queued, ready - retry);
            scheduled.insert(Status::Queued, queued_ahead);
            scheduled.insert(Status::Retry, retry_ahead);
            let succeeded: i64 = conn
                .prepare_cached(COUNT_SUCCEEDED)?
                .query_row(named_params! {":queue": filter.queue}, |r| r.get(0))?;
            counts.insert(Status::Succeeded, succeeded);
        }
        Ok(stats_from(counts, &scheduled))
    }

    /// The health checks, with the reasons for anything less than healthy: dead-lettered
    /// jobs, running jobs with stale heartbeats, the oldest ready job's wait, and the
    /// failure rate of the recent window.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn health(&self, thresholds: &HealthThresholds) -> Result<(Health, Vec<HealthReason>)> {
        self.store().read(|conn| {
            let stats = self.stats_in(conn, &StatsFilter::new())?;
            self.health_in(conn, &stats, thresholds)
        })
    }

    fn health_in(
        &self,
        conn: &Connection,
        stats: &Stats,
        t: &HealthThresholds,
    ) -> Result<(Health, Vec<HealthReason>)> {
        let now = self.now_ms();
        let owner = self.owner();
        let mut reasons = Vec::new();
        let mut reason = |check, level, message: String| {
            reasons.push(HealthReason {
                check,
                level,
                message,
            })
        };

        let dead = stats.count(Status::Failed);
        if dead >= t.dead_letter_unhealthy.max(1) {
            reason(
                "dead_letter",
                Health::Unhealthy,
                format!("{dead} jobs in the dead letter"),
            );
        } else if dead >= t.dead_letter_degraded.max(1) {
            reason(
                "dead_letter",
                Health::Degraded,
                format!("{dead} job{} in the dead letter", plural(dead)),
            );
        }

        let (running, stale): (i64, i64) = conn.prepare_cached(STALE_RUNNING)?.query_row(
            named_params! {":stale_before": now.saturating_sub(millis(t.stale_heartbeat_after)), ":owner": owner},
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if stale > 0 {
            let level = if stale == running {
                Health::Unhealthy
            } else {
                Health::Degraded
            };
            reason(
                "stale_heartbeats",
                level,
                format!(
                    "{stale} of {running} running job{} without a heartbeat for over {} s",
                    plural(running),
                    t.stale_heartbeat_after.as_secs()
                ),
            );
        }

        let oldest: Option<i64> = conn
            .prepare_cached(OLDEST_READY)?
            .query_row(named_params! {":now": now, ":owner": owner}, |r| r.get(0))?;
        if let Some(oldest) = oldest {
            let waited = Duration::from_millis(now.saturating_sub(oldest).max(0) as u64);
            let level = if waited > t.queue_wait_unhealthy {
                Some(Health::Unhealthy)
            } else if waited > t.queue_wait_degraded {
                Some(Health::Degraded)
            } else {
                None
            };
            if let Some(level) = level {
                reason(
                    "queue_wait",
                    level,
                    format!("the oldest ready job has waited {} s", waited.as_secs()),
                );
            }
        }

        let mut finished = (0i64, 0i64);
        let mut stmt = conn.prepare_cached(FINISHED_SINCE)?;
        let mut rows = stmt.query(
            named_params! {":since": now.saturating_sub(millis(t.failure_window)), ":owner": owner},
        )?;
        while let Some(r) = rows.next()? {
            match r.get::<_, String>(0)?.as_str() {
                "failed" => finished.1 = r.get(1)?,
                _ => finished.0 = r.get(1)?,
            }
        }
        let (succeeded, failed) = finished;
        let total = succeeded + failed;
        if total >= t.failure_min_jobs.max(1) {
            let rate = failed as f64 / total as f64;
            let level = if rate >= t.failure_rate_unhealthy {
                Some(Health::Unhealthy)
            } else if rate >= t.failure_rate_degraded {
                Some(Health::Degraded)
            } else {
                None
            };
            if let Some(level) = level {
                reason(
                    "failure_rate",
                    level,
                    format!(
                        "{:.0}% of the {total} jobs finished in the last {} s failed",
                        rate * 100.0,
                        t.failure_window.as_secs()
                    ),
                );
            }
        }
        let health = reasons
            .iter()
            .map(|r| r.level)
            .max()
            .unwrap_or(Health::Healthy);
        Ok((health, reasons))
    }

    /// Counts, summary and health in one read: the document of `jobq stats --json`.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn overview(
        &self,
        filter: &StatsFilter,
        thresholds: &HealthThresholds,
    ) -> Result<Overview> {
        self.store().read(|conn| {
            let stats = self.stats_in(conn, filter)?;
            let whole = if *filter == StatsFilter::default() {
                stats.clone()
            } else {
                self.stats_in(conn, &StatsFilter::new())?
            };
            let (health, reasons) = self.health_in(conn, &whole, thresholds)?;
            Ok(Overview {
                summary: stats.summary(),
                stats,
                health,
                reasons,
            })
        })
    }

    /// Run times and queue waits of finished jobs, per status (and kind), with exact
    /// percentiles.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn timing(&self, filter: &TimingFilter) -> Result<Vec<Timing>> {
        let since = filter
            .since
            .map_or(i64::MIN, |w| self.now_ms().saturating_sub(millis(w)));
        let groups = self.store().read(|conn| {
            durations(
                conn,
                self.owner(),
                since,
                filter.queue.as_deref(),
                filter.by_kind,
            )
        })?;
        let mut timings: Vec<Timing> = groups
            .into_iter()
            .map(|((status, kind), d)| Timing {
                status,
                kind,
                count: d.run.count as i64,
                avg_seconds: d.run.mean(),
                p50_seconds: d.run.percentile(50),
                p95_seconds: d.run.percentile(95),
                max_seconds: d.run.max(),
                wait_avg_seconds: d.wait.mean(),
                wait_p50_seconds: d.wait.percentile(50),
                wait_p95_seconds: d.wait.percentile(95),
                wait_max_seconds: d.wait.max(),
            })
            .collect();
        // By status name, as the SQL view orders them.
        timings.sort_by(|a, b| (a.status.as_str(), &a.kind).cmp(&(b.status.as_str(), &b.kind)));
        Ok(timings)
    }

    /// How many jobs sit at each stage, per status: where the pipeline spends its time.
    /// Reads every job (a full scan).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn stage_distribution(&self) -> Result<Vec<StageCount>> {
        self.store().read(|conn| {
            let mut stmt = conn.prepare_cached(STAGES)?;
            let rows = stmt.query_map(named_params! {":owner": self.owner()}, |r| {
                let status: String = r.get(1)?;
                Ok(StageCount {
                    stage: r.get(0)?,
                    status: crate::store::sqlite::rows::status_column(1, &status)?,
                    count: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The running jobs, oldest first, with stage, progress, how long they have run and how
    /// old their heartbeat is.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn running_jobs(&self) -> Result<Vec<RunningJob>> {
        let now = self.now_ms();
        self.store().read(|conn| {
            let mut stmt = conn.prepare_cached(RUNNING)?;
            let rows = stmt.query_map(named_params! {":owner": self.owner()}, |r| {
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
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// The dead letter: failed jobs, most recent failure first, at most `limit`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit outside 1–10,000.
    pub fn dead_letter(&self, limit: usize) -> Result<Vec<DeadJob>> {
        if !(1..=10_000).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1–10000"),
            ));
        }
        self.store().read(|conn| {
            let mut stmt = conn.prepare_cached(DEAD)?;
            let rows = stmt.query_map(
                named_params! {":owner": self.owner(), ":limit": limit as i64},
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
        })
    }

    /// Counts and costs per status, owner or group; by owner, with each owner's budget, its
    /// spend against it and what remains. Reads every job of the scope (a full scan).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn costs(&self, by: CostGrouping) -> Result<Vec<CostRow>> {
        self.store().read(|conn| {
            let sql = match by {
                CostGrouping::Status => COSTS_BY_STATUS,
                CostGrouping::Owner => COSTS_BY_OWNER,
                CostGrouping::Group => COSTS_BY_GROUP,
            };
            let mut stmt = conn.prepare_cached(sql)?;
            let mut rows = stmt.query(named_params! {":owner": self.owner()})?;
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
        })
    }
}

/// Every value seen, counted by value: exact percentiles in memory proportional to the
/// number of distinct values (durations in whole milliseconds), with no sort.
#[derive(Debug, Clone, Default)]
pub(crate) struct Distribution {
    pub count: u64,
    pub sum_ms: i128,
    pub values: BTreeMap<i64, u64>,
}

impl Distribution {
    fn add(&mut self, ms: i64) {
        self.count += 1;
        self.sum_ms += i128::from(ms);
        *self.values.entry(ms).or_default() += 1;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms as f64 / self.count as f64 / 1000.0
        }
    }

    pub fn max(&self) -> f64 {
        self.values
            .keys()
            .next_back()
            .map_or(0.0, |ms| *ms as f64 / 1000.0)
    }

    /// The nearest-rank percentile: the value at rank `ceil(p × n / 100)`.
    pub fn percentile(&self, p: u64) -> f64 {
        let rank = (p * self.count).div_ceil(100).max(1);
        let mut seen = 0;
        for (ms, n) in &self.values {
            seen += n;
            if seen >= rank {
                return *ms as f64 / 1000.0;
            }
        }
        0.0
    }

    /// How many values are at most `bound_ms`.
    pub fn at_most(&self, bound_ms: f64) -> u64 {
        self.values
            .range(..=bound_ms.floor() as i64)
            .map(|(_, n)| n)
            .sum()
    }
}

/// Run times and queue waits of one group of finished jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durations {
    pub run: Distribution,
    pub wait: Distribution,
}

/// One pass over the finished jobs since `since`: durations by status (and kind).
pub(crate) fn durations(
    conn: &Connection,
    owner: Option<&str>,
    since: i64,
    queue: Option<&str>,
    by_kind: bool,
) -> Result<BTreeMap<(Status, Option<String>), Durations>> {
    let mut groups: BTreeMap<(Status, Option<String>), Durations> = BTreeMap::new();
    let mut stmt = match owner {
        Some(_) => conn.prepare_cached(TIMING_ROWS_OWNER)?,
        None => conn.prepare_cached(TIMING_ROWS)?,
    };
    let mut rows = match owner {
        Some(owner) => {
            stmt.query(named_params! {":owner": owner, ":since": since, ":queue": queue})?
        }
        None => stmt.query(named_params! {":since": since, ":queue": queue})?,
    };
    while let Some(r) = rows.next()? {
        let status = crate::store::sqlite::rows::status_column(
            0,
            r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?,
        )?;
        let kind = if by_kind {
            Some(r.get::<_, String>(1)?)
        } else {
            None
        };
        let group = groups.entry((status, kind)).or_default();
        group.run.add(r.get(2)?);
        group.wait.add(r.get(3)?);
    }
    Ok(groups)
}

/// The stats of stored counts by status and, of the ready statuses, the scheduled ones.
fn stats_from(mut counts: BTreeMap<Status, i64>, scheduled: &BTreeMap<Status, i64>) -> Stats {
    for status in Status::ALL {
        counts.entry(status).or_insert(0);
    }
    let total = counts.values().sum();
    let ahead = |s: Status| scheduled.get(&s).copied().unwrap_or(0);
    let scheduled_total = ahead(Status::Queued) + ahead(Status::Retry);
    let mut shown: BTreeMap<String, i64> = counts
        .iter()
        .map(|(status, n)| (status.to_string(), n - ahead(*status)))
        .collect();
    shown.insert("scheduled".into(), scheduled_total);
    Stats {
        by_status: counts,
        total,
        scheduled: scheduled_total,
        shown,
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
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
    fn nearest_rank_percentiles_and_bucket_counts() {
        let mut d = Distribution::default();
        for ms in [3000, 1000, 10_000, 2000] {
            d.add(ms);
        }
        // Sorted: 1, 2, 3, 10 s. p50 is rank ceil(2) = 2; p95 is rank ceil(3.8) = 4.
        assert_eq!(
            (d.percentile(50), d.percentile(95), d.max(), d.mean()),
            (2.0, 10.0, 10.0, 4.0)
        );
        assert_eq!((d.percentile(1), d.percentile(100)), (1.0, 10.0));
        assert_eq!(
            (d.at_most(2000.0), d.at_most(2999.9), d.at_most(0.5)),
            (2, 2, 0)
        );
        let mut one = Distribution::default();
        one.add(7);
        assert_eq!((one.percentile(50), one.percentile(95)), (0.007, 0.007));
        assert_eq!(Distribution::default().percentile(50), 0.0);
    }

    #[test]
    fn counts_read_covering_indexes_only() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.store().connect().unwrap();
        for (sql, index) in [
            (COUNT_STATUS_INDEX, "COVERING INDEX jobq_jobs_status"),
            (
                COUNT_STATUS_INDEX_IN_QUEUE,
                "COVERING INDEX jobq_jobs_status",
            ),
            (
                crate::metrics::ACTIVE_BY_QUEUE,
                "COVERING INDEX jobq_jobs_status",
            ),
            (
                crate::metrics::READY_BY_QUEUE,
                "COVERING INDEX jobq_jobs_ready",
            ),
            (COUNT_READY, "COVERING INDEX jobq_jobs_ready"),
            (OLDEST_READY, "COVERING INDEX jobq_jobs_ready"),
            (COUNT_SUCCEEDED, "COVERING INDEX jobq_jobs_finished"),
            (FINISHED_SINCE, "jobq_jobs_finished"),
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

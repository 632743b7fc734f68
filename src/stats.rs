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

use serde::Serialize;

use crate::clock::millis;
use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
use crate::queue::Queue;
use crate::store::{CountQuery, Counts, Engine, HealthQuery, HealthRows};

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
    /// Which check: `dead_letter`, `stale_heartbeats`, `queue_wait`, `failure_rate` or
    /// `unserved` (ready jobs no live worker serves).
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
    /// Ready jobs of a queue and kind that no live worker serves (see
    /// [`Queue::workers`]) make the queue degraded once the oldest has waited this long —
    /// a job enqueued under a mistyped kind, or a queue nobody runs. Defaults to 60 s.
    pub unserved_after: Duration,
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
            unserved_after: Duration::from_secs(60),
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

impl Queue {
    /// The owner the statistics are restricted to: the handle's own, else the filter's.
    fn stats_owner<'a>(&'a self, filter_owner: Option<&'a str>) -> Option<&'a str> {
        self.owner().or(filter_owner)
    }

    /// What the engine counts for `filter`, or `None` when a scoped handle asks for
    /// another owner's jobs (it sees none).
    fn count_query<'a>(&'a self, filter: &'a StatsFilter) -> Option<CountQuery<'a>> {
        if let (Some(me), Some(other)) = (self.owner(), filter.owner.as_deref()) {
            if me != other {
                return None;
            }
        }
        Some(CountQuery {
            owner: self.stats_owner(filter.owner.as_deref()),
            group: filter.group.as_deref(),
            queue: filter.queue.as_deref(),
        })
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
        match self.count_query(filter) {
            None => Ok(stats_from(Counts::default())),
            Some(query) => Ok(stats_from(self.engine().counts(query, self.now_ms())?)),
        }
    }

    /// The health checks, with the reasons for anything less than healthy: dead-lettered
    /// jobs, running jobs with stale heartbeats, the oldest ready job's wait, and the
    /// failure rate of the recent window.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn health(&self, thresholds: &HealthThresholds) -> Result<(Health, Vec<HealthReason>)> {
        let overview = self.overview(&StatsFilter::new(), thresholds)?;
        Ok((overview.health, overview.reasons))
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
        let now = self.now_ms();
        let t = thresholds;
        let health = HealthQuery {
            now,
            stale_before: now.saturating_sub(millis(t.stale_heartbeat_after)),
            finished_since: now.saturating_sub(millis(t.failure_window)),
        };
        let everything = StatsFilter::new();
        let query = self.count_query(filter);
        let (counts, whole, rows) = self.engine().overview(
            self.owner(),
            query.or(self.count_query(&everything)).unwrap_or_default(),
            health,
        )?;
        let stats = match query {
            Some(_) => stats_from(counts),
            None => stats_from(Counts::default()),
        };
        let (mut health, mut reasons) = judge(&stats_from(whole), &rows, t, now);
        if self.owner().is_none() {
            // Workers serve every owner: only an admin's view judges what none serves.
            reasons.extend(self.unserved(t, now)?);
            health = reasons
                .iter()
                .map(|r| r.level)
                .max()
                .unwrap_or(Health::Healthy);
        }
        Ok(Overview {
            summary: stats.summary(),
            stats,
            health,
            reasons,
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
        let groups = durations(
            self.engine(),
            self.owner(),
            since,
            filter.queue.as_deref(),
            filter.by_kind,
        )?;
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
        self.engine().stages(self.owner())
    }

    /// The running jobs, oldest first, with stage, progress, how long they have run and how
    /// old their heartbeat is.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn running_jobs(&self) -> Result<Vec<RunningJob>> {
        self.engine().running(self.owner(), self.now_ms())
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
        self.engine().dead_letter(self.owner(), limit)
    }

    /// Counts and costs per status, owner or group; by owner, with each owner's budget, its
    /// spend against it and what remains. Reads every job of the scope (a full scan).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn costs(&self, by: CostGrouping) -> Result<Vec<CostRow>> {
        self.engine().costs(self.owner(), by)
    }
}

impl Queue {
    /// Ready jobs that have waited `unserved_after` with no live worker serving their queue
    /// and kind.
    fn unserved(&self, t: &HealthThresholds, now: i64) -> Result<Vec<HealthReason>> {
        let ready = self
            .engine()
            .ready_kinds(now.saturating_sub(millis(t.unserved_after)))?;
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        let workers = self.engine().workers(now)?;
        Ok(ready
            .into_iter()
            .filter(|r| !workers.iter().any(|w| w.serves(&r.queue, &r.kind)))
            .map(|r| {
                let waited = Duration::from_millis(now.saturating_sub(r.oldest).max(0) as u64);
                HealthReason {
                    check: "unserved",
                    level: Health::Degraded,
                    message: format!(
                        "{} ready job{} of kind {} in queue {} {} no live worker serving {} (the oldest has waited {} s)",
                        r.jobs,
                        plural(r.jobs),
                        r.kind,
                        r.queue,
                        if r.jobs == 1 { "has" } else { "have" },
                        if r.jobs == 1 { "it" } else { "them" },
                        waited.as_secs()
                    ),
                }
            })
            .collect())
    }
}

/// The health checks over the counts and health rows of one snapshot.
fn judge(
    stats: &Stats,
    rows: &HealthRows,
    t: &HealthThresholds,
    now: i64,
) -> (Health, Vec<HealthReason>) {
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

    let HealthRows { running, stale, .. } = *rows;
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

    if let Some(oldest) = rows.oldest_ready {
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

    let (succeeded, failed) = (rows.finished_succeeded, rows.finished_failed);
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
    (health, reasons)
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
}

/// Run times and queue waits of one group of finished jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durations {
    pub run: Distribution,
    pub wait: Distribution,
}

/// One pass over the finished jobs since `since`: durations by status (and kind).
pub(crate) fn durations(
    engine: &dyn Engine,
    owner: Option<&str>,
    since: i64,
    queue: Option<&str>,
    by_kind: bool,
) -> Result<BTreeMap<(Status, Option<String>), Durations>> {
    let mut groups: BTreeMap<(Status, Option<String>), Durations> = BTreeMap::new();
    engine.durations(owner, since, queue, &mut |(
        status,
        kind,
        run_ms,
        wait_ms,
    )| {
        let kind = by_kind.then_some(kind);
        let group = groups.entry((status, kind)).or_default();
        group.run.add(run_ms);
        group.wait.add(wait_ms);
    })?;
    Ok(groups)
}

/// The stats of stored counts by status and, of the ready statuses, the scheduled ones.
fn stats_from(counts: Counts) -> Stats {
    let Counts {
        by_status: mut counts,
        scheduled,
    } = counts;
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
        let mut one = Distribution::default();
        one.add(7);
        assert_eq!((one.percentile(50), one.percentile(95)), (0.007, 0.007));
        assert_eq!(Distribution::default().percentile(50), 0.0);
    }
}

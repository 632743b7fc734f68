//! The health checks: the dead letter, stale heartbeats, the oldest ready job's wait, the
//! failure rate of a recent window, and ready work no live worker serves.

use std::time::Duration;

use serde::Serialize;

use super::{Stats, StatsFilter};
use crate::clock::millis;
use crate::error::Result;
use crate::job::Status;
use crate::model::HealthRows;
use crate::queue::Queue;

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
    /// Which check: `dead_letter`, `stale_heartbeats`, `queue_wait`, `failure_rate`,
    /// `unserved` (ready jobs no live worker serves), `blocked_behind_failure` (blocked
    /// jobs waiting for a dependency that failed) or `database_file` (the SQLite file was
    /// deleted or replaced under this process).
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
    /// The window over which the failure rate (failed / finished) is computed, read from
    /// the rollups in whole minutes (from the start of the minute the window begins in).
    /// Defaults to 15 minutes.
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

impl Queue {
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

    /// Ready jobs that have waited `unserved_after` with no live worker serving their queue
    /// and kind.
    pub(super) fn unserved(&self, t: &HealthThresholds, now: i64) -> Result<Vec<HealthReason>> {
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
pub(crate) fn judge(
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

    let HealthRows { running, stale, .. } = rows;
    let (running, stale) = (*running, *stale);
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

    if let Some(problem) = &rows.file_problem {
        reason("database_file", Health::Unhealthy, problem.clone());
    }

    let stuck = rows.blocked_behind_failure;
    if stuck > 0 {
        reason(
            "blocked_behind_failure",
            Health::Unhealthy,
            format!(
                "{stuck} job{} {} blocked behind a dependency that failed or was cancelled: {} never run unless that dependency is retried (or {} cancelled)",
                plural(stuck),
                if stuck == 1 { "is" } else { "are" },
                if stuck == 1 { "it will" } else { "they will" },
                if stuck == 1 { "it is" } else { "they are" },
            ),
        );
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

fn plural(n: i64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

//! What the queue looks like: counts, health, timings, stages, the running monitor, the dead
//! letter and costs. One implementation behind the library calls, the CLI commands and the
//! HTTP routes; the SQL views of `schema.sql` give the same figures to the `sqlite3` shell.
//!
//! Counts read indexes only: waiting jobs from the ready index, running, retrying, failed
//! and cancelled jobs from the status index, finished jobs from the finished index — so a
//! stats call stays interactive with millions of jobs. A handle scoped to an owner (or a
//! filter by owner or group) counts that owner's or group's jobs through their index.

mod health;
mod reports;
mod series;
mod timing;

use std::collections::BTreeMap;

use serde::Serialize;

use crate::clock::millis;
use crate::error::Result;
use crate::job::Status;
use crate::model::{CountQuery, Counts, HealthQuery};
use crate::queue::Queue;

pub(crate) use health::judge;
pub use health::{Health, HealthReason, HealthThresholds};
pub use series::{MAX_SERIES_POINTS, Percentiles, Series, SeriesPoint, SeriesQuery};
pub use timing::{Timing, TimingFilter};

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
        let crate::model::OverviewRows {
            counts,
            whole,
            health: rows,
        } = self.engine().overview(
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

//! What the boundary reads for stats, health, timings, metrics and the other views.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::job::{JobId, Status, Timestamp};

/// Which jobs a count covers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountQuery<'a> {
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub queue: Option<&'a str>,
}

/// Jobs by stored status, and of `queued` and `retry` those whose `run_after` lies ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub by_status: BTreeMap<Status, i64>,
    pub scheduled: BTreeMap<Status, i64>,
}

/// What the health checks read, beside the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthRows {
    pub running: i64,
    pub stale: i64,
    pub oldest_ready: Option<i64>,
    pub finished_succeeded: i64,
    pub finished_failed: i64,
    /// Blocked jobs waiting for a dependency that failed or was cancelled.
    pub blocked_behind_failure: i64,
    /// The database file deleted or replaced under this process, in words.
    pub file_problem: Option<String>,
}

/// The cutoffs of the health checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthQuery {
    pub now: i64,
    pub stale_before: i64,
    pub finished_since: i64,
}

/// One finished job's figures for timings.
#[derive(Debug, Clone)]
pub(crate) struct FinishedJob {
    pub status: Status,
    pub kind: String,
    /// Its last run, in milliseconds.
    pub run_ms: i64,
    /// How long it waited in the queue, in milliseconds.
    pub wait_ms: i64,
}

/// What the overview reads in one snapshot: the counts it was asked for, the counts of
/// every job the handle sees (its health covers the whole queue), and the health rows.
#[derive(Debug, Clone)]
pub(crate) struct OverviewRows {
    pub counts: Counts,
    pub whole: Counts,
    pub health: HealthRows,
}

/// Ready and active jobs by queue, for the metrics: (queue, ready, oldest due) and
/// (queue, status, count) of `running` and `retry`.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // read by the metrics, an HTTP route
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueRows {
    pub ready: Vec<(String, i64, Option<i64>)>,
    pub active: Vec<(String, Status, i64)>,
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
    /// Its concurrency key, if it has one (the per-key running limit counts it).
    pub concurrency_key: Option<String>,
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

/// How [`Queue::costs`](crate::Queue::costs) groups jobs.
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

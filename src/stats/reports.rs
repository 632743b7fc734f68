//! The other views of the queue: jobs by stage, the running monitor, the dead letter, and
//! costs.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
use crate::queue::Queue;

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

//! What a claim hands a worker: the job it runs, and the lease that proves it holds it.

use super::{JobId, Timestamp};
use crate::error::{Error, Result};

/// The proof that a worker holds a job: the job, the worker id, and which claim of the job.
///
/// Every report on a running job (complete, fail, heartbeat, progress) names its lease, and
/// is refused with [`Error::LockLost`] when the job is no longer `running` under it: released
/// as stale, cancelled, or claimed again since (even after a manual retry started its
/// attempts again).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The worker that claimed it.
    pub worker: String,
    /// The attempt number the claim started (1 for the first; starts again after a manual
    /// retry).
    pub attempt: u32,
    /// Which claim of the job this is: it counts every claim and never starts again.
    pub claim: u32,
}

/// A job handed to a worker by a claim: what a handler needs, and the lease.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The priority.
    pub priority: i32,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it became claimable.
    pub run_after: Timestamp,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// The owner.
    pub owner: Option<String>,
    /// The group.
    pub group_id: Option<String>,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the job this is (see [`Lease::claim`]).
    pub claim: u32,
    /// How many times it snoozed so far (a snooze spends no attempt; past the queue's
    /// limit, the next one fails the job with `SNOOZE_LIMIT`).
    pub snoozes: u32,
    /// JSON text, valid by the table's CHECK constraint.
    pub(crate) input: String,
}

impl ClaimedJob {
    /// The input as JSON text.
    pub fn input_json(&self) -> &str {
        &self.input
    }

    /// The input deserialized into `T`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] with field `"input"` when it does not fit `T`.
    pub fn input<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.input)
            .map_err(|e| Error::invalid("input", format!("job {}: {e}", self.id)))
    }

    /// The lease to report on this job with.
    pub fn lease(&self) -> Lease {
        Lease {
            job_id: self.id.clone(),
            worker: self.worker.clone(),
            attempt: self.attempt,
            claim: self.claim,
        }
    }
}

impl ClaimedJob {
    /// The job as the claim `claim` of `worker` holds it (for a handler's own process: an
    /// exec command's `jobq step`).
    #[cfg(feature = "cli")]
    pub(crate) fn held(job: &crate::job::Job, worker: &str, claim: u32) -> ClaimedJob {
        ClaimedJob {
            id: job.id.clone(),
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            priority: job.priority,
            attempt: job.attempts,
            max_attempts: job.max_attempts,
            run_after: job.run_after,
            created_at: job.created_at,
            owner: job.owner.clone(),
            group_id: job.group_id.clone(),
            worker: worker.to_string(),
            claim,
            snoozes: job.snoozes,
            input: job.input.to_string(),
        }
    }

    /// What a failure's decision needs of this job.
    pub(crate) fn leased(&self) -> crate::job::LeasedJob {
        crate::job::LeasedJob {
            queue: self.queue.clone(),
            kind: self.kind.clone(),
            max_attempts: self.max_attempts,
            snoozes: self.snoozes,
        }
    }
}

/// What a failure's decision needs to know of the job a lease holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeasedJob {
    pub queue: String,
    pub kind: String,
    pub max_attempts: u32,
    /// How many times it snoozed before this claim.
    pub snoozes: u32,
}

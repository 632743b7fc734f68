//! What a pool reports of the jobs it runs: each outcome as it is recorded, and the
//! summary of them all.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::error::Error;
use crate::job::{JobId, Status, Timestamp};
use crate::model::JobError;
use crate::model::Recorded;

/// What became of one job a pool claimed, once it is recorded in the database (see
/// [`WorkerPoolBuilder::on_outcome`](crate::WorkerPoolBuilder::on_outcome)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Outcome {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: String,
    /// The attempt (1 for the first).
    pub attempt: u32,
    /// Attempts the job is allowed.
    pub max_attempts: u32,
    /// How long its handler ran; `None` for a job given back before its handler started.
    pub ran_for: Option<Duration>,
    /// What was recorded.
    pub recorded: OutcomeKind,
}

/// What was recorded for a job.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OutcomeKind {
    /// The job succeeded.
    Succeeded,
    /// The attempt failed; the job runs again from `retry_at`.
    Retrying {
        /// Why the attempt failed.
        error: JobError,
        /// When the job becomes claimable again.
        retry_at: Timestamp,
    },
    /// The job failed for good (permanently, or on its last attempt): the dead letter.
    Failed {
        /// Why the attempt failed.
        error: JobError,
    },
    /// The job was given back unfinished, without spending its attempt: the pool stopped
    /// before its handler started, or before it finished. It is `queued` again.
    Released,
    /// The handler snoozed the job: `queued` again until `until`, its attempt unspent.
    Snoozed {
        /// When it becomes claimable again.
        until: Timestamp,
    },
    /// The handler parked the job (a sleep, a wait for an event): `waiting` until `until`
    /// at the latest, holding no slot, its attempt unspent.
    Waiting {
        /// When it becomes claimable again at the latest.
        until: Timestamp,
    },
    /// Nothing was recorded: the job was cancelled, released as stale or deleted while the
    /// pool held it. `now` is its status (`None`: deleted).
    Refused {
        /// The job's status now.
        now: Option<Status>,
    },
}

/// How a pool ended, or how far it got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Jobs whose handler ran to an outcome at least once (a job retried within the pool
    /// counts once).
    pub processed: u64,
    /// Attempts that ran to an outcome (success, failure, panic or timeout).
    pub attempts: u64,
    /// Jobs recorded as succeeded.
    pub succeeded: u64,
    /// Jobs recorded as failed for good (the dead letter).
    pub failed: u64,
    /// Attempts that failed and left their job waiting for a retry.
    pub retried: u64,
    /// Outcomes refused because the job was cancelled, released or deleted meanwhile.
    pub lost: u64,
    /// Claimed jobs given back unstarted (or unfinished at the end of the grace period).
    pub released: u64,
    /// Jobs their handler snoozed (back to `queued` for a while, the attempt unspent).
    pub snoozed: u64,
    /// Jobs their handler parked (a sleep, a wait for an event): `waiting`, no slot held.
    pub parked: u64,
}

/// The running tally behind [`Summary`], kept by the completer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    processed: AtomicU64,
    attempts: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    snoozed: AtomicU64,
    parked: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
    /// Jobs whose last attempt here failed and waits for a retry: already counted as
    /// processed, should the pool run them again.
    awaiting_retry: Mutex<HashSet<JobId>>,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Summary {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            processed: get(&self.processed),
            attempts: get(&self.attempts),
            succeeded: get(&self.succeeded),
            failed: get(&self.failed),
            retried: get(&self.retried),
            lost: get(&self.lost),
            released: get(&self.released),
            snoozed: get(&self.snoozed),
            parked: get(&self.parked),
        }
    }

    /// Counts one recorded (or refused) report; `ran` says whether a handler ran.
    pub(crate) fn count(&self, job: &JobId, ran: bool, result: &Result<Recorded, Error>) {
        let add = |c: &AtomicU64| c.fetch_add(1, Ordering::Relaxed);
        let mut awaiting = self
            .awaiting_retry
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if ran {
            add(&self.attempts);
            if !awaiting.remove(job) {
                add(&self.processed);
            }
        }
        match result {
            Ok(r) => match r.status {
                Status::Succeeded => add(&self.succeeded),
                Status::Retry => {
                    add(&self.retried);
                    awaiting.insert(job.clone());
                    0
                }
                Status::Failed => add(&self.failed),
                Status::Queued if r.retry_at.is_some() => add(&self.snoozed),
                Status::Waiting => add(&self.parked),
                _ => add(&self.released),
            },
            Err(_) => add(&self.lost),
        };
    }
}

/// The outcome of one report as the pool tells it: `error` is the handler's, for a failure.
pub(crate) fn outcome_of(
    job_id: &JobId,
    kind: &str,
    attempt: u32,
    max_attempts: u32,
    ran_for: Option<Duration>,
    error: Option<&JobError>,
    result: &Result<Recorded, Error>,
) -> Outcome {
    let error = || {
        error
            .cloned()
            .unwrap_or_else(|| JobError::retryable("the attempt failed"))
    };
    let recorded = match result {
        Ok(r) => match (r.status, r.retry_at) {
            (Status::Succeeded, _) => OutcomeKind::Succeeded,
            (Status::Retry, at) => OutcomeKind::Retrying {
                error: error(),
                retry_at: Timestamp::from_millis(at.unwrap_or_default()),
            },
            (Status::Failed, _) => OutcomeKind::Failed { error: error() },
            (Status::Waiting, at) => OutcomeKind::Waiting {
                until: Timestamp::from_millis(at.unwrap_or_default()),
            },
            (Status::Queued, Some(at)) => OutcomeKind::Snoozed {
                until: Timestamp::from_millis(at),
            },
            _ => OutcomeKind::Released,
        },
        Err(Error::LockLost { status, .. }) => OutcomeKind::Refused { now: Some(*status) },
        Err(_) => OutcomeKind::Refused { now: None },
    };
    Outcome {
        job_id: job_id.clone(),
        kind: kind.to_string(),
        attempt,
        max_attempts,
        ran_for,
        recorded,
    }
}

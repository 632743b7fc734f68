//! What a handler receives: the job, and the ways to report on it while it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use super::durable::Durable;
use crate::error::{Error, Result};
use crate::job::{ClaimedJob, JobId, Lease};
use crate::model::JobError;
use crate::queue::Queue;

/// The job a handler runs, and its line back to the queue.
///
/// Every report (`set_stage`, `set_progress`, `add_cost`, `heartbeat`) is written at once,
/// guarded by the job's lease; it counts as a heartbeat. A report refused because the job
/// was cancelled or released marks the context cancelled. A clone is the same job's context
/// (its cancel flag shared): for a handler that must hold it past the call, as a handler in
/// another language does.
#[derive(Debug, Clone)]
pub struct JobContext {
    job: ClaimedJob,
    lease: Lease,
    queue: Queue,
    cancelled: Arc<AtomicBool>,
    /// Its stored steps and the names this run used (see `durable.rs`).
    pub(super) durable: Arc<Mutex<Durable>>,
}

impl JobContext {
    pub(crate) fn new(job: ClaimedJob, queue: Queue, cancelled: Arc<AtomicBool>) -> JobContext {
        JobContext {
            lease: job.lease(),
            job,
            queue,
            cancelled,
            durable: Arc::default(),
        }
    }

    /// The queue this job's reports go to.
    pub(super) fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.job.id
    }

    /// The outputs of the jobs this job waits for, by their flow refs (by their ids for
    /// those without one): all of them succeeded before it was queued (for a job that runs
    /// anyway after a failure, a failed one's output is `null`). Empty for a job without
    /// dependencies.
    ///
    /// # Errors
    ///
    /// Database errors.
    pub fn dependencies(&self) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
        self.queue.dependency_outputs(&self.job.id)
    }

    /// The output of the one dependency named `name` — its flow ref or its id —
    /// deserialized.
    ///
    /// # Errors
    ///
    /// [`JobError`] (permanent) when no dependency of this job has that ref or id, or its
    /// output does not deserialize into `T`.
    pub fn dependency_output<T: DeserializeOwned>(
        &self,
        name: impl AsRef<str>,
    ) -> std::result::Result<T, JobError> {
        let name = name.as_ref();
        let value = self
            .queue
            .dependency_output(&self.job.id, name)
            .map_err(JobError::from)?
            .ok_or_else(|| {
                JobError::permanent(format!("{name} is not a dependency of this job"))
            })?;
        serde_json::from_value(value).map_err(|e| {
            JobError::permanent(format!("the output of dependency {name} does not fit: {e}"))
        })
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// This attempt's number (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// The job as claimed: queue, priority, owner, group, attempts allowed.
    pub fn job(&self) -> &ClaimedJob {
        &self.job
    }

    /// The lease this attempt holds.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The input deserialized into `T`.
    ///
    /// # Errors
    ///
    /// A permanent [`JobError`] with code `BAD_INPUT` when the input does not fit `T`: no
    /// retry will make it fit.
    pub fn input<T: DeserializeOwned>(&self) -> std::result::Result<T, JobError> {
        serde_json::from_str(self.job.input_json()).map_err(|e| {
            JobError::permanent(format!("input of job {} does not fit: {e}", self.job.id))
                .code("BAD_INPUT")
        })
    }

    /// The input as JSON text.
    pub fn input_json(&self) -> &str {
        self.job.input_json()
    }

    /// Sets the job's stage, e.g. `"transcribing"`.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the job was cancelled or released; [`Error::InvalidInput`]
    /// for an empty stage.
    pub fn set_stage(&self, stage: &str) -> Result<()> {
        self.watch(self.queue.set_stage(&self.lease, stage))
    }

    /// Sets the job's progress, 0.0 to 1.0.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] outside 0–1; [`Error::LockLost`] when the job was cancelled
    /// or released.
    pub fn set_progress(&self, progress: f64) -> Result<()> {
        self.watch(self.queue.set_progress(&self.lease, progress, None))
    }

    /// Sets progress and stage in one write.
    ///
    /// # Errors
    ///
    /// As [`JobContext::set_progress`].
    pub fn set_progress_and_stage(&self, progress: f64, stage: &str) -> Result<()> {
        self.watch(self.queue.set_progress(&self.lease, progress, Some(stage)))
    }

    /// Adds to the job's cost, in cents.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a negative amount; [`Error::LockLost`] when the job was
    /// cancelled or released.
    pub fn add_cost(&self, cents: i64) -> Result<()> {
        self.watch(self.queue.add_cost(&self.lease, cents))
    }

    /// Refreshes the job's heartbeat now (the pool also does so every heartbeat interval).
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the job was cancelled or released.
    pub fn heartbeat(&self) -> Result<()> {
        self.watch(self.queue.heartbeat(&self.lease))
    }

    /// True once the job was cancelled (or taken from this worker, or timed out): a long
    /// handler should check it between steps and return early. Its result will be refused
    /// either way.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    pub(super) fn watch<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(Error::LockLost { .. } | Error::NotFound { .. }) = &result {
            self.cancelled.store(true, Ordering::SeqCst);
        }
        result
    }
}

//! The registry of live workers, and the ready work the health check weighs against it.

use crate::error::Result;
use crate::model::{ReadyKind, WorkerInfo};

/// The registry of live workers, and the ready work the health check weighs against it.
pub(crate) trait WorkerStore {
    /// Registers a worker (or registers it again, as it is now).
    fn register_worker(&self, worker: &WorkerInfo) -> Result<()>;

    /// The worker is alive at `now`; false when it has no row (expired while it was
    /// paused: register it again).
    fn worker_seen(&self, id: &str, now: i64) -> Result<bool>;

    /// The worker stopped cleanly.
    fn unregister_worker(&self, id: &str) -> Result<()>;

    /// The workers seen within their stale timeout at `now`, with the jobs each runs.
    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>>;

    /// Deletes the rows of workers not seen within their stale timeout; how many.
    fn expire_workers(&self, now: i64) -> Result<usize>;

    /// Ready jobs due at `due_before` or earlier, by queue and kind.
    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>>;
}

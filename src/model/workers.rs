//! The registry of live workers, and the ready work they may serve.

use serde::Serialize;

use crate::job::Timestamp;

/// Ready jobs of one queue and kind that have waited since `oldest`: what the health check
/// of unserved work reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyKind {
    pub queue: String,
    pub kind: String,
    pub jobs: i64,
    pub oldest: i64,
}

/// A worker process (one pool) that is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// The worker id it claims as (`host-pid-random` unless the pool was given one).
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// The queues it serves.
    pub queues: Vec<String>,
    /// The kinds it takes, or `None` for any kind.
    pub kinds: Option<Vec<String>>,
    /// How many jobs it runs at once.
    pub concurrency: u32,
    /// When it started.
    pub started_at: Timestamp,
    /// When it last said it was alive.
    pub last_seen: Timestamp,
    /// After how long without a sign of life it counts as dead, in milliseconds.
    #[serde(skip)]
    pub(crate) stale_after_ms: i64,
    /// The jobs it runs now.
    pub running: i64,
}

impl WorkerInfo {
    /// Whether it serves jobs of `queue` and `kind`.
    pub fn serves(&self, queue: &str, kind: &str) -> bool {
        self.queues.iter().any(|q| q == queue)
            && self
                .kinds
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }
}

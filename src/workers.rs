//! The registry of live workers: every worker pool, on every host, registers when it
//! starts, says it is alive at each heartbeat and leaves when it stops; a process that dies
//! drops out once its heartbeat timeout passes. `jobq workers`, `GET /api/workers`, the
//! dashboard and the health check of unserved work read it.

use serde::Serialize;

use crate::error::Result;
use crate::job::Timestamp;
use crate::queue::Queue;

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

impl Queue {
    /// The worker processes that are up, on every host, oldest first: each with its queues,
    /// kinds, start, last sign of life and the jobs it runs now. Admin handles only.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`](crate::Error::Forbidden) on an owner-scoped handle; database
    /// errors.
    pub fn workers(&self) -> Result<Vec<WorkerInfo>> {
        self.require_admin("list workers")?;
        let mut workers = self.engine().workers(self.now_ms())?;
        workers.sort_by(|a, b| (a.started_at, &a.id).cmp(&(b.started_at, &b.id)));
        Ok(workers)
    }
}

/// The host this process runs on.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::from("localhost")
    }
}

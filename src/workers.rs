//! The registry of live workers: every worker pool, on every host, registers when it
//! starts, says it is alive at each heartbeat and leaves when it stops; a process that dies
//! drops out once its heartbeat timeout passes. `jobq workers`, `GET /api/workers`, the
//! dashboard and the health check of unserved work read it.

use crate::model::WorkerInfo;

use crate::error::Result;
use crate::queue::Queue;

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

/// The host this process runs on (`localhost` when it cannot be told).
#[cfg(unix)]
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

/// The host this process runs on (`localhost` when it cannot be told): Windows names it
/// in the environment of every process.
#[cfg(not(unix))]
pub(crate) fn hostname() -> String {
    std::env::var("COMPUTERNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| String::from("localhost"))
}

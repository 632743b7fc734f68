//! Waiting for a job to finish and subscribing to changes of jobs, as events in this
//! process (and polls for other processes' changes).

use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::job::{Job, JobId};

use super::Queue;

impl Queue {
    /// Blocks until the job reaches a terminal status (`succeeded`, `failed` or
    /// `cancelled`) and returns it, or until `timeout` passes.
    ///
    /// Changes made in this process are seen at once; changes made by other processes
    /// are seen within 50 ms.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the job does not exist (or is deleted while waiting);
    /// [`Error::Timeout`] with its status when it is still not finished at the deadline.
    pub fn wait(&self, id: &JobId, timeout: Duration) -> Result<Job> {
        let deadline = Instant::now() + timeout;
        let events = self.subscribe();
        loop {
            let job = self.get(id)?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    job: id.clone(),
                    status: job.status,
                    waited: timeout,
                });
            }
            // An event for this job, or the poll slice passing, sends us back to the file.
            let slice_end = now + (deadline - now).min(Duration::from_millis(50));
            while let Ok(event) = events.recv_deadline(slice_end) {
                if &event.job_id == id {
                    break;
                }
            }
        }
    }
}

//! The claim: take up to N ready jobs for a worker, in claim order, in one transaction.

use super::Queue;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{ClaimedJob, Status};
use crate::model::ClaimFilter;
use crate::model::ClaimSpec;

impl Queue {
    /// Claims up to `limit` ready jobs for `worker`: jobs of the filter's queues (and kinds)
    /// whose status is `queued` or `retry` and whose `run_after` has passed, higher priority
    /// first, then earlier `run_after`, then older id.
    ///
    /// Two claimers (threads, processes or hosts) never take the same job. Each claimed job
    /// becomes `running` with `locked_by = worker`, a fresh lock and heartbeat, one more
    /// attempt, `started_at = now` and stage `claimed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty worker id; [`Error::Busy`] when other processes
    /// hold the write lock past the busy timeout.
    pub fn claim(
        &self,
        worker: &str,
        limit: usize,
        filter: &ClaimFilter,
    ) -> Result<Vec<ClaimedJob>> {
        self.claim_at(worker, limit, filter, self.now_ms())
    }

    /// [`Queue::claim`] as of the clock reading `now`: the dispatcher looks for what comes
    /// due next from the same reading, so that no job falls in between.
    pub(crate) fn claim_at(
        &self,
        worker: &str,
        limit: usize,
        filter: &ClaimFilter,
        now: i64,
    ) -> Result<Vec<ClaimedJob>> {
        if worker.trim().is_empty() || worker.contains('\0') {
            return Err(Error::invalid("worker", "must not be empty or contain NUL"));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let spec = ClaimSpec {
            worker,
            limit,
            filter,
        };
        let jobs = self.engine().claim(self.owner(), spec, now)?;
        // After the events of a recording whose commit made these jobs ready.
        let _order = (!jobs.is_empty())
            .then(|| self.shared.events.in_order())
            .flatten();
        self.after_claim(&jobs, worker, now);
        Ok(jobs)
    }

    /// Logs and announces claimed jobs, once their transaction committed.
    pub(crate) fn after_claim(&self, jobs: &[ClaimedJob], worker: &str, now: i64) {
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, worker, "jobq: claimed");
        }
        self.emit(|| {
            jobs.iter()
                .map(|j| {
                    JobEvent::new(j.id.clone(), EventKind::Claimed, Some(Status::Running), now)
                })
                .collect()
        });
    }
}

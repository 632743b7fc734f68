//! Admin verbs: cancel, manual retry, delete, and the validated `transition`.

use super::Queue;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{JobId, Status};
use crate::model::Change;

impl Queue {
    /// Cancels a job that is `queued`, `retry` or `running`.
    ///
    /// A running job is cancelled at once in the database; its worker learns of it
    /// cooperatively (`JobContext::is_cancelled`, the next heartbeat), and its late result
    /// is refused. Returns the status the job had.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job;
    /// [`Error::InvalidTransition`] for a job that already finished.
    pub fn cancel(&self, id: &JobId) -> Result<Status> {
        self.admin_change(id, Status::Cancelled, "cancel", Change::Cancel, |_| Ok(()))
    }

    /// Puts a `failed` or `cancelled` job back in the queue: `queued`, runnable now, with its
    /// attempts starting again from zero. Its errors history is kept.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job;
    /// [`Error::InvalidTransition`] from any other status.
    pub fn retry(&self, id: &JobId) -> Result<Status> {
        self.retry_with(id, false)
    }

    /// [`Queue::retry`], forgetting the job's stored steps: it runs again from scratch
    /// (`retry --from-scratch`). A plain retry keeps them, so a job that failed at its
    /// fourth step does not repeat the first three.
    ///
    /// # Errors
    ///
    /// As [`Queue::retry`]; its steps stay when it is refused.
    pub fn retry_from_scratch(&self, id: &JobId) -> Result<Status> {
        self.retry_with(id, true)
    }

    fn retry_with(&self, id: &JobId, from_scratch: bool) -> Result<Status> {
        let change = Change::Retry { from_scratch };
        let from = self.admin_change(id, Status::Queued, "retry", change, |from| {
            if !matches!(from, Status::Failed | Status::Cancelled) {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: "retry".into(),
                });
            }
            Ok(())
        })?;
        self.shared.events.wake_dispatchers();
        Ok(from)
    }

    /// Puts every job of the dead letter (the `failed` jobs) back in the queue, as
    /// [`Queue::retry`] does one: `queued`, runnable now, attempts from zero. Only jobs of
    /// `kind` and of `queue`, when given. Returns how many. Works in chunks of 1,000, each
    /// its own transaction, so that writers are never held up for long.
    ///
    /// # Errors
    ///
    /// Database errors only; jobs of chunks already done stay retried.
    pub fn retry_dead(&self, kind: Option<&str>, queue: Option<&str>) -> Result<usize> {
        let now = self.now_ms();
        let mut total = 0;
        loop {
            let ids = self.engine().retry_dead(self.owner(), kind, queue, now)?;
            if ids.is_empty() {
                break;
            }
            total += ids.len();
            self.shared.events.wake_dispatchers();
            self.emit(|| {
                ids.iter()
                    .map(|id| {
                        JobEvent::new(id.clone(), EventKind::Retried, Some(Status::Queued), now)
                    })
                    .collect()
            });
        }
        if total > 0 {
            tracing::info!(jobs = total, kind, queue, "jobq: dead letter retried");
        }
        Ok(total)
    }

    /// Deletes a job that is not running (cancel it first). Returns the status it had.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job;
    /// [`Error::InvalidTransition`] for a running job.
    pub fn delete(&self, id: &JobId) -> Result<Status> {
        let now = self.now_ms();
        let refuse_running = |from: Status| {
            if from == Status::Running {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: "delete (cancel it first)".into(),
                });
            }
            Ok(())
        };
        let from = self
            .engine()
            .change(self.owner(), id, Change::Delete, &refuse_running, now)?;
        tracing::info!(job_id = %id, "jobq: deleted");
        self.emit(|| vec![JobEvent::new(id.clone(), EventKind::Deleted, None, now)]);
        Ok(from)
    }

    /// Moves a job to `to` if the state machine allows it from where it is, without a
    /// worker's lease: the admin's `transition_job_status`. `error` becomes the message of a
    /// move to `failed` or `retry`. Returns the status the job had.
    ///
    /// Moving to `running` marks the job as held by the worker `manual`; moving to `queued`
    /// from `failed` or `cancelled` is the manual [`Queue::retry`].
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job;
    /// [`Error::InvalidTransition`] when the state machine forbids the move (every move out
    /// of `succeeded`, for one).
    pub fn transition(&self, id: &JobId, to: Status, error: Option<&str>) -> Result<Status> {
        let action = format!("move to {to}");
        let message = error.unwrap_or("changed by an admin");
        // Only its handler parks a job, and only its time, its event or a cancel ends the
        // wait (its steps replay when it runs again).
        let parked = |from: Status| {
            if to == Status::Waiting || (from == Status::Waiting && to != Status::Cancelled) {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: action.clone(),
                });
            }
            Ok(())
        };
        let from = self.admin_change(id, to, &action, Change::To(to, message), parked)?;
        if to.is_ready() {
            self.shared.events.wake_dispatchers();
        }
        Ok(from)
    }

    /// Checks the move `from → to` against the state machine and `also`, then applies
    /// `change`, in one transaction. Returns `from`.
    fn admin_change(
        &self,
        id: &JobId,
        to: Status,
        action: &str,
        change: Change<'_>,
        also: impl Fn(Status) -> Result<()>,
    ) -> Result<Status> {
        let now = self.now_ms();
        let allowed = |from: Status| {
            if !from.can_become(to) {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: action.to_string(),
                });
            }
            also(from)
        };
        let from = self
            .engine()
            .change(self.owner(), id, change, &allowed, now)?;
        if to == Status::Cancelled && from == Status::Running {
            self.shared.events.notify_cancelled(id);
        }
        tracing::info!(job_id = %id, from = %from, to = %to, "jobq: {action}");
        let kind = match to {
            Status::Cancelled => EventKind::Cancelled,
            Status::Queued if from == Status::Running => EventKind::Released,
            Status::Queued | Status::Blocked => EventKind::Retried,
            Status::Running => EventKind::Claimed,
            Status::Succeeded => EventKind::Succeeded,
            Status::Failed => EventKind::Failed,
            Status::Retry => EventKind::Retrying,
            Status::Waiting => EventKind::Waiting,
        };
        self.emit(|| vec![JobEvent::new(id.clone(), kind, Some(to), now)]);
        Ok(from)
    }
}

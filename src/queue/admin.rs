//! Admin verbs: cancel, manual retry, delete, and the validated `transition`.

use rusqlite::{Connection, named_params};

use super::{Queue, current_status};
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{JobId, Status};

const CANCEL: &str = "
    UPDATE jobq_jobs SET status = 'cancelled', completed_at = :now, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

/// What a manual retry sets: `queued`, runnable now, attempts from zero, the last run's
/// traces cleared (its errors history is kept).
macro_rules! manual_retry_set {
    () => {
        "UPDATE jobq_jobs
    SET status = 'queued', attempts = 0, run_after = :now, locked_by = NULL, locked_at = NULL,
        heartbeat_at = NULL, stage = NULL, progress = 0, output = NULL, started_at = NULL,
        completed_at = NULL, updated_at = :now"
    };
}

const MANUAL_RETRY: &str = concat!(
    manual_retry_set!(),
    "
    WHERE id_key = :key AND id = :id AND status = :from"
);

/// One chunk of the dead letter back in the queue: failed jobs of a kind and queue (any,
/// when NULL) that failed before the retry began, through the finished index.
const RETRY_DEAD_CHUNK: &str = concat!(
    manual_retry_set!(),
    "
    WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE status = 'failed' AND completed_at <= :now
          AND (:kind IS NULL OR kind = :kind) AND (:queue IS NULL OR queue = :queue)
          AND (:owner IS NULL OR owner = :owner)
        LIMIT 1000)
    RETURNING id"
);

const DELETE: &str = "DELETE FROM jobq_jobs WHERE id_key = :key AND id = :id AND status = :from";

const TO_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'running', attempts = attempts + 1, claims = claims + 1, locked_by = 'manual', locked_at = :now,
        heartbeat_at = :now, started_at = :now, stage = 'claimed', progress = 0, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_SUCCEEDED: &str = "
    UPDATE jobq_jobs
    SET status = 'succeeded', stage = 'succeeded', progress = 1, completed_at = :now,
        updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_FAILED_OR_RETRY: &str = "
    UPDATE jobq_jobs
    SET status = :to, last_error = :message, error_code = 'MANUAL',
        errors = json_insert(errors, '$[#]',
            json_object('attempt', attempts, 'code', 'MANUAL', 'message', :message, 'at', :now)),
        run_after = CASE WHEN :to = 'retry' THEN :now ELSE run_after END,
        completed_at = CASE WHEN :to = 'failed' THEN :now END, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_QUEUED_FROM_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'queued', attempts = max(attempts - 1, 0), run_after = :now, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

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
        self.admin_change(id, Status::Cancelled, "cancel", |tx, from, now| {
            tx.prepare_cached(CANCEL)?
                .execute(named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now})?;
            Ok(())
        })
    }

    /// Puts a `failed` or `cancelled` job back in the queue: `queued`, runnable now, with its
    /// attempts starting again from zero. Its errors history is kept.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job;
    /// [`Error::InvalidTransition`] from any other status.
    pub fn retry(&self, id: &JobId) -> Result<Status> {
        let from = self.admin_change(id, Status::Queued, "retry", |tx, from, now| {
            if !matches!(from, Status::Failed | Status::Cancelled) {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: "retry".into(),
                });
            }
            tx.prepare_cached(MANUAL_RETRY)?
                .execute(named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now})?;
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
            let ids: Vec<JobId> = self.store().write(|tx| {
                let mut stmt = tx.prepare_cached(RETRY_DEAD_CHUNK)?;
                let rows = stmt.query_map(
                    named_params! {":now": now, ":kind": kind, ":queue": queue, ":owner": self.owner()},
                    |r| r.get::<_, String>(0).map(JobId::from_db),
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })?;
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
        let from = self.store().write(|tx| {
            let from = self.status_of(tx, id)?;
            if from == Status::Running {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: "delete (cancel it first)".into(),
                });
            }
            tx.prepare_cached(DELETE)?.execute(
                named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str()},
            )?;
            Ok(from)
        })?;
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
        let from = self.admin_change(id, to, &action, |tx, from, now| {
            let p = named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now};
            match (from, to) {
                (_, Status::Running) => tx.prepare_cached(TO_RUNNING)?.execute(p)?,
                (_, Status::Succeeded) => tx.prepare_cached(TO_SUCCEEDED)?.execute(p)?,
                (_, Status::Cancelled) => tx.prepare_cached(CANCEL)?.execute(p)?,
                (Status::Running, Status::Queued) => {
                    tx.prepare_cached(TO_QUEUED_FROM_RUNNING)?.execute(p)?
                }
                (_, Status::Queued) => tx.prepare_cached(MANUAL_RETRY)?.execute(p)?,
                (_, Status::Failed | Status::Retry) => tx
                    .prepare_cached(TO_FAILED_OR_RETRY)?
                    .execute(named_params! {
                        ":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now,
                        ":to": to.as_str(), ":message": message,
                    })?,
            };
            Ok(())
        })?;
        if to.is_ready() {
            self.shared.events.wake_dispatchers();
        }
        Ok(from)
    }

    /// The status of a job this handle may see, or `NotFound`.
    fn status_of(&self, conn: &Connection, id: &JobId) -> Result<Status> {
        current_status(conn, id, self.owner())?.ok_or_else(|| Error::job_not_found(id))
    }

    /// Checks the move `from → to` against the state machine, then runs `apply` in the
    /// same transaction. Returns `from`.
    fn admin_change(
        &self,
        id: &JobId,
        to: Status,
        action: &str,
        apply: impl FnOnce(&Connection, Status, i64) -> Result<()>,
    ) -> Result<Status> {
        let now = self.now_ms();
        let from = self.store().write(|tx| {
            let from = self.status_of(tx, id)?;
            if !from.can_become(to) {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: action.to_string(),
                });
            }
            apply(tx, from, now)?;
            Ok(from)
        })?;
        if to == Status::Cancelled && from == Status::Running {
            self.shared.events.notify_cancelled(id);
        }
        tracing::info!(job_id = %id, from = %from, to = %to, "jobq: {action}");
        let kind = match to {
            Status::Cancelled => EventKind::Cancelled,
            Status::Queued if from == Status::Running => EventKind::Released,
            Status::Queued => EventKind::Retried,
            Status::Running => EventKind::Claimed,
            Status::Succeeded => EventKind::Succeeded,
            Status::Failed => EventKind::Failed,
            Status::Retry => EventKind::Retrying,
        };
        self.emit(|| vec![JobEvent::new(id.clone(), kind, Some(to), now)]);
        Ok(from)
    }
}

//! What a worker reports on a job it holds. Every statement here is guarded by the lease
//! (status `running`, the same `locked_by`, the same attempt): a report from a worker that
//! lost the job changes nothing and is refused with [`Error::LockLost`].

use std::fmt;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::Serialize;

use super::enqueue::check_cost;
use super::{ClaimFilter, Queue, current_status};
use crate::clock::millis;
use crate::duration::MAX_DURATION;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{ClaimedJob, JobId, Lease, MAX_COST_CENTS, Status};
use crate::store::sqlite::rows::cost_column;

/// Why a job's attempt failed, as a handler (or anyone failing a job) reports it.
///
/// A retryable error puts the job in `retry` with a backoff delay while attempts remain;
/// a permanent one fails it at once (the dead letter).
///
/// Any error converts into a retryable `JobError` (see its `From` impl), so `?` works in
/// handlers.
///
/// # Examples
///
/// ```
/// use jobq::JobError;
/// use std::time::Duration;
///
/// let transient = JobError::retryable("upstream 503").code("UPSTREAM").retry_after(Duration::from_secs(30));
/// let fatal = JobError::permanent("the video file is corrupt").code("BAD_INPUT");
/// assert!(fatal.is_permanent() && !transient.is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    message: String,
    code: Option<String>,
    permanent: bool,
    retry_after: Option<Duration>,
}

/// The `tracing` target of the events about jobs' outcomes (succeeded, retrying, failed,
/// released): a program that reports outcomes itself can turn them off
/// (`jobq::outcome=off`) and keep the rest.
pub(crate) const OUTCOME_TARGET: &str = "jobq::outcome";

/// Longest error message kept, in characters; the rest is cut.
const MAX_MESSAGE_CHARS: usize = 8 * 1024;

impl JobError {
    /// A failure worth retrying (a timeout, a 503): retried with backoff while attempts remain.
    pub fn retryable(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            code: None,
            permanent: false,
            retry_after: None,
        }
    }

    /// A failure that will not go away (bad input): the job fails at once, no retry.
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            permanent: true,
            ..JobError::retryable(message)
        }
    }

    /// A machine-readable code, stored as the job's `error_code`. Defaults to none.
    pub fn code(mut self, code: impl Into<String>) -> JobError {
        self.code = Some(code.into());
        self
    }

    /// Retry after exactly this delay instead of the policy's backoff. Defaults to the
    /// retry policy of the job's kind or queue.
    pub fn retry_after(mut self, delay: Duration) -> JobError {
        self.retry_after = Some(delay);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// True when no retry is wanted.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The delay asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    pub(crate) fn with_default_delay(mut self, delay: impl FnOnce() -> Duration) -> JobError {
        if self.retry_after.is_none() {
            self.retry_after = Some(delay());
        }
        self
    }

    fn stored_message(&self) -> String {
        match self.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}… (cut)", &self.message[..cut]),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Any error a handler meets converts into a retryable `JobError`, so that `?` works on it:
/// every `std::error::Error + Send + Sync`, `Box<dyn Error + Send + Sync>`, anyhow- and
/// eyre-style error types (which convert into that box), and plain `&str` or `String`
/// messages. The message is the error's, followed by its sources.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for JobError {
    fn from(err: E) -> JobError {
        let err: Box<dyn std::error::Error + Send + Sync> = err.into();
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::retryable(message)
    }
}

/// What the completer records for one job.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    /// Succeeded with this output (JSON text) and this cost added.
    Complete { output: String, cost_cents: i64 },
    /// The attempt failed.
    Fail(JobError),
    /// Give the job back unstarted: `queued`, without spending the attempt.
    Release,
}

/// What recording one report did: the job's new status and, for a retry, when it runs
/// again (milliseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub status: Status,
    pub retry_at: Option<i64>,
}

impl Recorded {
    fn new(status: Status) -> Recorded {
        Recorded {
            status,
            retry_at: None,
        }
    }
}

/// The hot path of the completer, bound by position: ?1 id, ?2 worker, ?3 claim,
/// ?4 output, ?5 cost added, ?6 now, ?7 the owner of a scoped handle (else NULL), ?8 the
/// id's row key.
const COMPLETE: &str = "
    UPDATE jobq_jobs
    SET status = 'succeeded', output = ?4, cost_cents = cost_cents + ?5,
        stage = 'succeeded', progress = 1, completed_at = ?6, updated_at = ?6
    WHERE id_key = ?8 AND id = ?1 AND status = 'running' AND locked_by = ?2 AND claims = ?3
      AND (?7 IS NULL OR owner = ?7)";

const LEASED_JOB: &str = "
    SELECT queue, kind, max_attempts FROM jobq_jobs
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

const LEASED_COST: &str = "
    SELECT cost_cents FROM jobq_jobs
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

const FAIL: &str = "
    UPDATE jobq_jobs
    SET status = :status,
        run_after = CASE WHEN :status = 'retry' THEN :retry_at ELSE run_after END,
        last_error = :message, error_code = :code,
        errors = json_insert(errors, '$[#]',
            json_object('attempt', attempts, 'code', :code, 'message', :message, 'at', :now)),
        completed_at = CASE WHEN :status = 'failed' THEN :now END,
        updated_at = :now
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

const RELEASE: &str = "
    UPDATE jobq_jobs
    SET status = 'queued', attempts = attempts - 1, run_after = :now, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

const HEARTBEAT: &str = "
    UPDATE jobq_jobs SET heartbeat_at = :now
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

const HEARTBEAT_MANY: &str = "
    UPDATE jobq_jobs SET heartbeat_at = :now
    WHERE id_key IN (SELECT value FROM json_each(:keys)) AND id IN (SELECT value FROM json_each(:ids))
      AND status = 'running' AND locked_by = :worker
      AND (:owner IS NULL OR owner = :owner)
    RETURNING id";

const REPORT: &str = "
    UPDATE jobq_jobs
    SET progress = coalesce(:progress, progress), stage = coalesce(:stage, stage),
        cost_cents = cost_cents + :cost, heartbeat_at = :now, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = 'running' AND locked_by = :worker AND claims = :claim
      AND (:owner IS NULL OR owner = :owner)";

impl Queue {
    /// Records the success of a job the worker holds, with its output.
    ///
    /// # Errors
    ///
    /// [`Error::LockLost`] when the worker no longer holds the job (released as stale,
    /// cancelled, claimed again) and [`Error::NotFound`] when it is gone; either way nothing
    /// changed.
    pub fn complete(&self, lease: &Lease, output: impl Serialize) -> Result<()> {
        self.complete_with_cost(lease, output, 0)
    }

    /// Records a success as [`Queue::complete`] does, adding `cost_cents` to the job's cost.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`], and [`Error::InvalidInput`] for a cost outside 0 to
    /// [`MAX_COST_CENTS`](crate::MAX_COST_CENTS), or one that would take the job's total
    /// past it (nothing is recorded then: the job is still held).
    pub fn complete_with_cost(
        &self,
        lease: &Lease,
        output: impl Serialize,
        cost_cents: i64,
    ) -> Result<()> {
        let output =
            serde_json::to_string(&output).map_err(|e| Error::invalid("output", e.to_string()))?;
        check_cost("cost_cents", cost_cents)?;
        self.record_one(lease, Report::Complete { output, cost_cents }, None)
            .map(|_| ())
    }

    /// Records a failed attempt. A permanent error, or the last allowed attempt, fails the
    /// job (dead letter); otherwise it goes to `retry` and waits for the error's delay or
    /// the retry policy's backoff. Returns the job's new status.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn fail(&self, lease: &Lease, error: &JobError) -> Result<Status> {
        self.record_one(lease, Report::Fail(error.clone()), None)
    }

    /// Gives a claimed job back without spending its attempt: it becomes `queued` again,
    /// claimable at once. For workers shutting down before they start a job.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn release(&self, lease: &Lease) -> Result<()> {
        self.record_one(lease, Report::Release, None).map(|_| ())
    }

    /// Records one report in its own transaction; `ran_for` as in [`Queue::record_in`].
    pub(crate) fn record_one(
        &self,
        lease: &Lease,
        report: Report,
        ran_for: Option<Duration>,
    ) -> Result<Status> {
        let now = self.now_ms();
        let result = self
            .store()
            .write(|tx| Ok(self.record_in(tx, lease, &report, ran_for, now)))?
            .map(|r| r.status);
        if let Ok(status) = result {
            match status {
                Status::Succeeded => {
                    tracing::debug!(target: OUTCOME_TARGET, job_id = %lease.job_id, attempt = lease.attempt, worker = lease.worker, duration_ms = ran_for.map(|d| d.as_secs_f64() * 1000.0), "jobq: job succeeded")
                }
                Status::Queued => {
                    tracing::debug!(target: OUTCOME_TARGET, job_id = %lease.job_id, attempt = lease.attempt, worker = lease.worker, "jobq: job released unstarted")
                }
                _ => {}
            }
            self.after_record(&[(&lease.job_id, status)], now);
        }
        result
    }

    /// Records many reports, each with how long its handler ran, in one transaction (each
    /// gets its own result: a lost lock refuses that report only; a database failure refuses
    /// them all) and then, in the same transaction, claims up to `refill.1` jobs for worker
    /// `refill.0`: the completer's refill of the slots it just freed. One commit instead of
    /// two, and the pages both touch are written to the WAL once.
    pub(crate) fn record_and_claim(
        &self,
        reports: &[(Lease, Report, Option<Duration>)],
        refill: Option<(&str, usize, &ClaimFilter)>,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        let now = self.now_ms();
        let (results, claimed) = self.store().write(|tx| {
            let mut results = Vec::with_capacity(reports.len());
            for (lease, report, ran_for) in reports {
                match self.record_in(tx, lease, report, *ran_for, now) {
                    Err(e) if !matches!(e, Error::LockLost { .. } | Error::NotFound { .. }) => {
                        return Err(e);
                    }
                    r => results.push(r),
                }
            }
            let claimed = match refill {
                Some((worker, limit, filter)) if limit > 0 => {
                    self.claim_in(tx, worker, limit, filter, now)?
                }
                _ => Vec::new(),
            };
            Ok((results, claimed))
        })?;
        let changed: Vec<(&JobId, Status)> = reports
            .iter()
            .zip(&results)
            .filter_map(|((lease, _, _), r)| r.as_ref().ok().map(|r| (&lease.job_id, r.status)))
            .collect();
        self.after_record(&changed, now);
        if let Some((worker, _, _)) = refill {
            self.after_claim(&claimed, worker, now);
        }
        Ok((results, claimed))
    }

    /// Wakes the dispatchers when a job became ready again, and announces the changes.
    fn after_record(&self, changed: &[(&JobId, Status)], now: i64) {
        if changed.iter().any(|(_, s)| s.is_ready()) {
            self.shared.events.wake_dispatchers();
        }
        self.emit(|| {
            changed
                .iter()
                .map(|(id, status)| {
                    let kind = match status {
                        Status::Succeeded => EventKind::Succeeded,
                        Status::Retry => EventKind::Retrying,
                        Status::Failed => EventKind::Failed,
                        _ => EventKind::Released,
                    };
                    JobEvent::new((*id).clone(), kind, Some(*status), now)
                })
                .collect()
        });
    }

    /// One report inside the caller's transaction. `Ok` is what it recorded. `ran_for`, how
    /// long the handler ran when a pool reports it, goes into the failure events.
    fn record_in(
        &self,
        conn: &Connection,
        lease: &Lease,
        report: &Report,
        ran_for: Option<Duration>,
        now: i64,
    ) -> Result<Recorded> {
        let key = lease.job_id.key();
        let held = named_params! {
            ":id": lease.job_id.as_str(), ":key": key, ":worker": lease.worker, ":claim": lease.claim, ":owner": self.owner(),
        };
        let (changed, status) = match report {
            Report::Complete { output, cost_cents } => {
                self.check_cost_room(conn, lease, *cost_cents)?;
                let n = conn.prepare_cached(COMPLETE)?.execute(rusqlite::params![
                    lease.job_id.as_str(),
                    lease.worker,
                    lease.claim,
                    output,
                    cost_cents,
                    now,
                    self.owner(),
                    key,
                ])?;
                (n, Recorded::new(Status::Succeeded))
            }
            Report::Release => {
                let n = conn.prepare_cached(RELEASE)?.execute(named_params! {
                    ":id": lease.job_id.as_str(), ":key": key, ":worker": lease.worker, ":claim": lease.claim, ":owner": self.owner(),
                    ":now": now,
                })?;
                (n, Recorded::new(Status::Queued))
            }
            Report::Fail(error) => {
                let leased: Option<(String, String, u32)> = conn
                    .prepare_cached(LEASED_JOB)?
                    .query_row(held, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .optional()?;
                match leased {
                    None => (0, Recorded::new(Status::Failed)),
                    Some((queue, kind, max_attempts)) => {
                        let status = if error.permanent || lease.attempt >= max_attempts {
                            Status::Failed
                        } else {
                            Status::Retry
                        };
                        let delay = error
                            .retry_after
                            .unwrap_or_else(|| {
                                self.shared
                                    .retry
                                    .for_job(&queue, &kind)
                                    .delay(lease.attempt)
                            })
                            .min(MAX_DURATION);
                        let retry_at = now.saturating_add(millis(delay));
                        let n = conn.prepare_cached(FAIL)?.execute(named_params! {
                            ":id": lease.job_id.as_str(), ":key": key, ":worker": lease.worker,
                            ":claim": lease.claim, ":owner": self.owner(), ":status": status.as_str(),
                            ":retry_at": retry_at,
                            ":message": error.stored_message(), ":code": error.code, ":now": now,
                        })?;
                        let duration_ms = ran_for.map(|d| d.as_secs_f64() * 1000.0);
                        if status == Status::Retry {
                            tracing::info!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind, attempt = lease.attempt, duration_ms, delay_ms = millis(delay), error = %error, "jobq: attempt failed, will retry");
                        } else {
                            tracing::warn!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind, attempt = lease.attempt, duration_ms, error = %error, "jobq: job failed");
                        }
                        let retry_at = (status == Status::Retry).then_some(retry_at);
                        (n, Recorded { status, retry_at })
                    }
                }
            }
        };
        if changed == 0 {
            return Err(self.lost(conn, lease)?);
        }
        Ok(status)
    }

    /// Refuses adding `cost` to the job `lease` holds when its total would pass
    /// [`MAX_COST_CENTS`](crate::MAX_COST_CENTS).
    fn check_cost_room(&self, conn: &Connection, lease: &Lease, cost: i64) -> Result<()> {
        if cost == 0 {
            return Ok(());
        }
        let current: Option<i64> = conn
            .prepare_cached(LEASED_COST)?
            .query_row(
                named_params! {
                    ":id": lease.job_id.as_str(), ":key": lease.job_id.key(), ":worker": lease.worker,
                    ":claim": lease.claim, ":owner": self.owner(),
                },
                |r| cost_column(r, 0),
            )
            .optional()?;
        match current {
            None => Err(self.lost(conn, lease)?),
            Some(current) if current + cost > MAX_COST_CENTS => Err(Error::invalid(
                "cost_cents",
                format!(
                    "job {}: adding {cost} to its {current} cents would pass the most a job may cost ({MAX_COST_CENTS} cents)",
                    lease.job_id
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// Explains why a guarded statement changed nothing.
    fn lost(&self, conn: &Connection, lease: &Lease) -> Result<Error> {
        Ok(match current_status(conn, &lease.job_id, self.owner())? {
            None => Error::job_not_found(&lease.job_id),
            Some(status) => Error::LockLost {
                job: lease.job_id.clone(),
                worker: lease.worker.clone(),
                attempt: lease.attempt,
                status,
            },
        })
    }

    /// Refreshes the heartbeat of a job the worker holds, so the stale release leaves it be.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn heartbeat(&self, lease: &Lease) -> Result<()> {
        let now = self.now_ms();
        self.store().write(|tx| {
            let n = tx.prepare_cached(HEARTBEAT)?.execute(named_params! {
                ":id": lease.job_id.as_str(), ":key": lease.job_id.key(), ":worker": lease.worker, ":claim": lease.claim, ":owner": self.owner(),
                ":now": now,
            })?;
            if n == 0 {
                return Err(self.lost(tx, lease)?);
            }
            Ok(())
        })
    }

    /// Refreshes the heartbeats of many jobs of one worker in one statement, and returns
    /// the ids it still holds. A job missing from the answer was cancelled or released:
    /// its handler should stop.
    ///
    /// # Errors
    ///
    /// Only database errors.
    pub fn heartbeat_many(&self, worker: &str, ids: &[JobId]) -> Result<Vec<JobId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        let ids_json =
            serde_json::to_string(ids).map_err(|e| Error::invalid("ids", e.to_string()))?;
        let keys: Vec<i64> = ids.iter().map(JobId::key).collect();
        let keys_json =
            serde_json::to_string(&keys).map_err(|e| Error::invalid("ids", e.to_string()))?;
        self.store().write(|tx| {
            let mut stmt = tx.prepare_cached(HEARTBEAT_MANY)?;
            let held = stmt
                .query_map(
                    named_params! {":ids": ids_json, ":keys": keys_json, ":worker": worker, ":now": now, ":owner": self.owner()},
                    |r| r.get::<_, String>(0).map(JobId::from_db),
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(held)
        })
    }

    /// Sets the progress (0.0 to 1.0) of a job the worker holds, and its stage if given.
    /// Counts as a heartbeat.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a progress outside 0–1 (nothing changes), else as
    /// [`Queue::complete`].
    pub fn set_progress(&self, lease: &Lease, progress: f64, stage: Option<&str>) -> Result<()> {
        if !(0.0..=1.0).contains(&progress) {
            return Err(Error::invalid(
                "progress",
                format!("{progress} is outside 0.0–1.0 (job {})", lease.job_id),
            ));
        }
        self.report(lease, Some(progress), stage, 0)
    }

    /// Sets the stage of a job the worker holds (e.g. `"transcribing"`). Counts as a
    /// heartbeat.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty stage, else as [`Queue::complete`].
    pub fn set_stage(&self, lease: &Lease, stage: &str) -> Result<()> {
        self.report(lease, None, Some(stage), 0)
    }

    /// Adds `cents` to the cost of a job the worker holds. Counts as a heartbeat.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an amount outside 0 to
    /// [`MAX_COST_CENTS`](crate::MAX_COST_CENTS), or one that would take the job's total
    /// past it (nothing changes); else as [`Queue::complete`].
    pub fn add_cost(&self, lease: &Lease, cents: i64) -> Result<()> {
        if !(0..=MAX_COST_CENTS).contains(&cents) {
            return Err(Error::invalid(
                "cost_cents",
                format!(
                    "{cents} is outside 0 to {MAX_COST_CENTS} cents (job {})",
                    lease.job_id
                ),
            ));
        }
        self.report(lease, None, None, cents)
    }

    fn report(
        &self,
        lease: &Lease,
        progress: Option<f64>,
        stage: Option<&str>,
        cost: i64,
    ) -> Result<()> {
        if let Some(stage) = stage {
            if stage.trim().is_empty() || stage.chars().count() > 200 {
                return Err(Error::invalid(
                    "stage",
                    format!("must be 1 to 200 characters (job {})", lease.job_id),
                ));
            }
        }
        let now = self.now_ms();
        self.store().write(|tx| {
            self.check_cost_room(tx, lease, cost)?;
            let n = tx.prepare_cached(REPORT)?.execute(named_params! {
                ":id": lease.job_id.as_str(), ":key": lease.job_id.key(), ":worker": lease.worker, ":claim": lease.claim, ":owner": self.owner(),
                ":progress": progress, ":stage": stage, ":cost": cost, ":now": now,
            })?;
            if n == 0 {
                return Err(self.lost(tx, lease)?);
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;

    #[test]
    fn a_deleted_job_refuses_its_own_outcome_and_not_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let gone = queue.enqueue(NewJob::new("k")).unwrap().job_id;
        let kept = queue.enqueue(NewJob::new("k")).unwrap().job_id;
        let claimed = queue.claim("w", 2, &ClaimFilter::default()).unwrap();
        queue.cancel(&gone).unwrap();
        queue.delete(&gone).unwrap();
        let reports: Vec<(Lease, Report, Option<Duration>)> = claimed
            .iter()
            .map(|j| {
                let done = Report::Complete {
                    output: "{}".into(),
                    cost_cents: 0,
                };
                (j.lease(), done, None)
            })
            .collect();
        let (results, _) = queue.record_and_claim(&reports, None).unwrap();
        let by_job: Vec<(&JobId, bool)> = claimed
            .iter()
            .map(|j| &j.id)
            .zip(results.iter().map(|r| r.as_ref().is_ok()))
            .collect();
        assert!(by_job.contains(&(&gone, false)), "{results:?}");
        assert!(by_job.contains(&(&kept, true)), "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(Error::NotFound { .. })))
        );
        assert_eq!(queue.get(&kept).unwrap().status, Status::Succeeded);
    }
}

//! What a worker reports on a job it holds. Every statement here is guarded by the lease
//! (status `running`, the same `locked_by`, the same attempt): a report from a worker that
//! lost the job changes nothing and is refused with [`Error::LockLost`].

use crate::model;
use crate::model::JobError;
use std::time::Duration;

use serde::Serialize;

use super::Queue;
use crate::clock::millis;
use crate::duration::MAX_DURATION;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, JobId, Lease, MAX_COST_CENTS, Status};
use crate::model::check_cost;
use crate::model::{ClaimSpec, Progress, Recorded};

/// The shortest snooze: a shorter one (zero, say) snoozes this long, so that a job that
/// snoozes at once is not taken again at once (and a `--once` run sees it scheduled).
pub const MIN_SNOOZE: Duration = Duration::from_secs(1);

/// How many times a job may snooze unless [`QueueBuilder::max_snoozes`] says otherwise:
/// the next snooze fails it for good with `SNOOZE_LIMIT`.
///
/// [`QueueBuilder::max_snoozes`]: crate::QueueBuilder::max_snoozes
pub const DEFAULT_MAX_SNOOZES: u32 = 1000;

/// The `tracing` target of the events about jobs' outcomes (succeeded, retrying, failed,
/// released): a program that reports outcomes itself can turn them off
/// (`jobq::outcome=off`) and keep the rest.
pub(crate) const OUTCOME_TARGET: &str = "jobq::outcome";

/// What a worker reports for one job it holds.
#[derive(Debug, Clone)]
pub(crate) enum Report {
    /// Succeeded with this output (JSON text) and this cost added.
    Complete { output: String, cost_cents: i64 },
    /// The attempt failed: retried or failed for good, as [`Queue::decide`] says.
    Fail(JobError),
    /// Back to `queued` after this delay (at least [`MIN_SNOOZE`]), without spending the
    /// attempt; counted against the queue's snooze limit.
    Snooze(Duration),
    /// Back to `queued` after this delay, unstarted and uncounted: a pool that will not run
    /// the job again in this run (`run_until_idle`) gives it back for later.
    Defer(Duration),
    /// Give the job back unstarted: `queued`, without spending the attempt.
    Release,
    /// The handler parked the job (a sleep, a wait for an event), without spending the
    /// attempt.
    Wait(crate::model::Park),
}

/// A report on its way to being recorded: the lease, what the failure's decision needs of
/// the job, the report, and how long its handler ran (when it ran).
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub lease: Lease,
    pub job: LeasedJob,
    pub report: Report,
    pub ran_for: Option<Duration>,
}

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
        self.record_one(lease, None, Report::Complete { output, cost_cents }, None)
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
        self.record_one(lease, None, Report::Fail(error.clone()), None)
    }

    /// Sends a job the worker holds back to `queued`, to run again after `delay`, without
    /// spending its attempt: what a handler's [`JobError::snooze`] does.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn snooze(&self, lease: &Lease, delay: Duration) -> Result<()> {
        self.record_one(lease, None, Report::Snooze(delay), None)
            .map(|_| ())
    }

    /// Gives a claimed job back without spending its attempt: it becomes `queued` again,
    /// claimable at once. For workers shutting down before they start a job.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn release(&self, lease: &Lease) -> Result<()> {
        self.record_one(lease, None, Report::Release, None)
            .map(|_| ())
    }

    /// Records one report on its own. `job` is what the failure's decision needs, when the
    /// caller knows it (else it is read first); `ran_for` as in [`Finished`].
    pub(crate) fn record_one(
        &self,
        lease: &Lease,
        job: Option<LeasedJob>,
        report: Report,
        ran_for: Option<Duration>,
    ) -> Result<Status> {
        let job = match (job, &report) {
            (Some(job), _) => job,
            (None, Report::Fail(_) | Report::Snooze(_)) => {
                self.engine().leased(self.owner(), lease)?
            }
            (None, _) => LeasedJob::default(),
        };
        let settled = Finished {
            lease: lease.clone(),
            job,
            report,
            ran_for,
        };
        let (mut results, _) =
            self.record_and_claim(std::slice::from_ref(&settled), None, false)?;
        results
            .pop()
            .unwrap_or_else(|| Err(Error::job_not_found(&lease.job_id)))
            .map(|r| r.status)
    }

    /// Records many reports (each gets its own result: a lost lock refuses that report
    /// only; a database failure refuses them all) and then claims for `refill`: the
    /// completer's refill of the slots it just freed (on SQLite in the same transaction: one
    /// commit instead of two). `again` as in `JobStore::record`: the completer sends a batch
    /// again after an error, not knowing whether its commit happened.
    pub(crate) fn record_and_claim(
        &self,
        settled: &[Finished],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        let now = self.now_ms();
        // A snooze past the limit fails the job for good instead.
        let over: Vec<Option<JobError>> = settled.iter().map(|s| self.past_snoozes(s)).collect();
        let reports: Vec<(&Lease, model::Record<'_>)> = settled
            .iter()
            .zip(&over)
            .map(|(s, over)| {
                let report = match over {
                    Some(error) => model::Record::Fail {
                        error,
                        status: Status::Failed,
                        retry_at: now,
                    },
                    None => self.decide(s, now),
                };
                (&s.lease, report)
            })
            .collect();
        // A claim elsewhere that takes a job this commit makes ready tells it after these
        // events (see `EventBus::in_order`).
        let _order = self.shared.events.in_order();
        let (results, claimed) =
            self.engine()
                .record(self.owner(), &reports, refill, again, now)?;
        for (s, result) in settled.iter().zip(&results) {
            if let Ok(recorded) = result {
                log_outcome(s, recorded, now);
            }
        }
        let changed: Vec<(&JobId, Status)> = settled
            .iter()
            .zip(&results)
            .filter_map(|(s, r)| r.as_ref().ok().map(|r| (&s.lease.job_id, r.status)))
            .collect();
        let snoozed: Vec<&JobId> = settled
            .iter()
            .zip(&over)
            .filter(|(s, over)| matches!(s.report, Report::Snooze(_)) && over.is_none())
            .map(|(s, _)| &s.lease.job_id)
            .collect();
        let readied = results.iter().any(|r| r.as_ref().is_ok_and(|r| r.readied));
        self.after_record(&changed, &snoozed, readied, now);
        if let Some(spec) = refill {
            self.after_claim(&claimed, spec.worker, now);
        }
        Ok((results, claimed))
    }

    /// The error of a snooze the job may not take: it snoozed as many times as the queue
    /// allows ([`QueueBuilder::max_snoozes`](crate::QueueBuilder::max_snoozes)).
    fn past_snoozes(&self, settled: &Finished) -> Option<JobError> {
        let limit = self.shared.max_snoozes;
        (matches!(settled.report, Report::Snooze(_)) && settled.job.snoozes >= limit).then(|| {
            JobError::permanent(format!(
                "the job snoozed {limit} times, the most a job may: a job that snoozes for ever never finishes (QueueBuilder::max_snoozes)"
            ))
            .code("SNOOZE_LIMIT")
        })
    }

    /// What a report records: for a failure, `retry` at the error's delay or the retry
    /// policy's backoff while attempts remain and the error is not permanent, else `failed`.
    fn decide<'a>(&self, settled: &'a Finished, now: i64) -> model::Record<'a> {
        match &settled.report {
            Report::Complete { output, cost_cents } => model::Record::Complete {
                output,
                cost_cents: *cost_cents,
            },
            Report::Release => model::Record::Release,
            Report::Snooze(delay) => model::Record::Snooze {
                run_after: now.saturating_add(millis((*delay).clamp(MIN_SNOOZE, MAX_DURATION))),
                counted: true,
            },
            Report::Defer(delay) => model::Record::Snooze {
                run_after: now.saturating_add(millis((*delay).min(MAX_DURATION))),
                counted: false,
            },
            Report::Wait(park) => model::Record::Wait {
                run_after: park.until,
                event: park.event.as_deref(),
                after_event: park.after_event,
            },
            Report::Fail(error) => {
                let Finished { lease, job, .. } = settled;
                let status = if error.permanent || lease.attempt >= job.max_attempts {
                    Status::Failed
                } else {
                    Status::Retry
                };
                let delay = error
                    .retry_after
                    .unwrap_or_else(|| {
                        self.shared
                            .retry
                            .for_job(&job.queue, &job.kind)
                            .delay(lease.attempt)
                    })
                    .min(MAX_DURATION);
                model::Record::Fail {
                    error,
                    status,
                    retry_at: now.saturating_add(millis(delay)),
                }
            }
        }
    }

    /// Wakes the dispatchers when a job became ready (again, or as a dependent), and
    /// announces the changes.
    fn after_record(
        &self,
        changed: &[(&JobId, Status)],
        snoozed: &[&JobId],
        readied: bool,
        now: i64,
    ) {
        // A parked job comes due later: the dispatchers look again at when to wake up.
        if readied
            || changed
                .iter()
                .any(|(_, s)| s.is_ready() || *s == Status::Waiting)
        {
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
                        Status::Waiting => EventKind::Waiting,
                        _ => EventKind::Released,
                    };
                    let kind = match (kind, snoozed.contains(id)) {
                        (EventKind::Released, true) => EventKind::Snoozed,
                        (kind, _) => kind,
                    };
                    JobEvent::new((*id).clone(), kind, Some(*status), now)
                })
                .collect()
        });
    }

    /// Refreshes the heartbeat of a job the worker holds, so the stale release leaves it be.
    ///
    /// # Errors
    ///
    /// As [`Queue::complete`].
    pub fn heartbeat(&self, lease: &Lease) -> Result<()> {
        self.engine().heartbeat(self.owner(), lease, self.now_ms())
    }

    /// Refreshes the heartbeats of many jobs `worker` holds in one statement, each under its
    /// lease's claim, and returns the leases it still holds. A lease missing from the answer
    /// was cancelled, released or claimed again (by another worker, or by this one after a
    /// manual retry: a new claim is a new lease): its handler should stop.
    ///
    /// # Errors
    ///
    /// Only database errors.
    pub fn heartbeat_many(&self, worker: &str, leases: &[Lease]) -> Result<Vec<Lease>> {
        let held: Vec<(JobId, u32)> = leases.iter().map(|l| (l.job_id.clone(), l.claim)).collect();
        let still = self
            .engine()
            .heartbeat_many(self.owner(), worker, &held, self.now_ms())?;
        Ok(leases
            .iter()
            .filter(|l| {
                still
                    .iter()
                    .any(|(id, claim)| *id == l.job_id && *claim == l.claim)
            })
            .cloned()
            .collect())
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
        cost_cents: i64,
    ) -> Result<()> {
        if let Some(stage) = stage {
            if stage.trim().is_empty() || stage.chars().count() > 200 || stage.contains('\0') {
                return Err(Error::invalid(
                    "stage",
                    format!(
                        "must be 1 to 200 characters, none of them NUL (job {})",
                        lease.job_id
                    ),
                ));
            }
        }
        let update = Progress {
            progress,
            stage,
            cost_cents,
        };
        self.engine()
            .report(self.owner(), lease, update, self.now_ms())
    }
}

/// Traces a recorded outcome, on the outcome target.
fn log_outcome(settled: &Finished, recorded: &Recorded, now: i64) {
    let Finished {
        lease, job, report, ..
    } = settled;
    let duration_ms = settled.ran_for.map(|d| d.as_secs_f64() * 1000.0);
    let (id, kind, attempt) = (&lease.job_id, &job.kind, lease.attempt);
    match (recorded.status, report) {
        (Status::Succeeded, _) => {
            tracing::debug!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, duration_ms, "jobq: job succeeded");
        }
        (Status::Queued, Report::Snooze(delay)) => {
            let delay_ms = millis(*delay);
            tracing::debug!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, delay_ms, "jobq: job snoozed");
        }
        (Status::Waiting, _) => {
            tracing::debug!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, until = recorded.retry_at, "jobq: job parked (waiting)");
        }
        (Status::Queued, _) => {
            tracing::debug!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, "jobq: job released unstarted");
        }
        (Status::Retry, Report::Fail(error)) => {
            let delay_ms = recorded.retry_at.map(|at| at.saturating_sub(now));
            tracing::info!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, duration_ms, delay_ms, error = %error, "jobq: attempt failed, will retry");
        }
        (Status::Failed, Report::Fail(error)) => {
            tracing::warn!(target: OUTCOME_TARGET, job_id = %id, kind, attempt, duration_ms, error = %error, "jobq: job failed");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NewJob;
    use crate::model::ClaimFilter;

    #[test]
    fn a_deleted_job_refuses_its_own_outcome_and_not_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let gone = queue.enqueue(NewJob::new("k")).unwrap().job_id;
        let kept = queue.enqueue(NewJob::new("k")).unwrap().job_id;
        let claimed = queue.claim("w", 2, &ClaimFilter::default()).unwrap();
        queue.cancel(&gone).unwrap();
        queue.delete(&gone).unwrap();
        let reports: Vec<Finished> = claimed
            .iter()
            .map(|j| Finished {
                lease: j.lease(),
                job: j.leased(),
                report: Report::Complete {
                    output: "{}".into(),
                    cost_cents: 0,
                },
                ran_for: None,
            })
            .collect();
        let (results, _) = queue.record_and_claim(&reports, None, false).unwrap();
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

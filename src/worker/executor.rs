//! The handler threads: take a claimed job, run its handler, send the outcome on.
//!
//! Each job goes through the same pipeline: mark it started (its deadline begins) →
//! resolve its handler → perform (a panic becomes a `PANIC` failure) → normalize the result
//! into a report (the kind's retry policy fills in a delay) → settle it with the completer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde_json::Value;

use super::{Handler, JobContext, Pool, Registered};
use crate::model::JobError;
use crate::queue::Report;
use crate::retry::RetryPolicy;

pub(super) fn run(pool: &Arc<Pool>, abandoned: &Arc<AtomicBool>) {
    while let Ok(job) = pool.channels.job_rx.recv() {
        let lease = job.lease();
        if pool.is_stopping() {
            // Shutting down: give back what has not started, without spending its attempt.
            pool.settle(&lease, Report::Release, None);
            continue;
        }
        let Some(Registered {
            handler,
            timeout,
            retry,
        }) = pool.handler_for(&job.kind)
        else {
            let error = JobError::permanent(format!(
                "no handler for kind {:?} in worker {}",
                job.kind, pool.worker_id
            ))
            .code("NO_HANDLER");
            pool.settle(&lease, Report::Fail(error), None);
            continue;
        };
        let started = Instant::now();
        let Some(cancelled) =
            pool.mark_started(&lease, started, timeout.map(|t| started + t), abandoned)
        else {
            continue;
        };
        if cancelled.load(Ordering::SeqCst) {
            // Cancelled while it waited: nothing to run; the release is refused and counted.
            pool.settle(&lease, Report::Release, None);
            continue;
        }
        let attempt = job.attempt;
        let ctx = JobContext::new(job, pool.queue.clone(), cancelled);
        let result = perform(&*handler, &ctx);
        if abandoned.load(Ordering::SeqCst) {
            // Timed out (or outlived the shutdown grace): the job was settled without us and
            // a new thread has our slot. Our late result is dropped.
            return;
        }
        let report = report_of(result, retry, attempt);
        pool.settle(&lease, report, Some(started.elapsed()));
    }
}

/// What to record for a handler's result: the output, or the error with the kind's retry
/// policy, if it has one, filling in the delay.
pub(super) fn report_of(
    result: Result<Value, JobError>,
    retry: Option<RetryPolicy>,
    attempt: u32,
) -> Report {
    match result {
        Ok(output) => Report::Complete {
            output: output.to_string(),
            cost_cents: 0,
        },
        Err(JobError {
            park: Some(park), ..
        }) => Report::Wait(*park),
        Err(error) if error.snoozed_for().is_some() => {
            Report::Snooze(error.snoozed_for().unwrap_or_default())
        }
        Err(error) => Report::Fail(match retry {
            Some(policy) => error.with_default_delay(|| policy.delay(attempt)),
            None => error,
        }),
    }
}

/// Runs a handler, turning a panic into a retryable failure with code `PANIC`.
pub(super) fn perform(handler: &dyn Handler, ctx: &JobContext) -> Result<Value, JobError> {
    match catch_unwind(AssertUnwindSafe(|| handler.handle(ctx))) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "the handler panicked".to_string());
            tracing::error!(job_id = %ctx.id(), kind = ctx.kind(), attempt = ctx.attempt(), message, "jobq: handler panicked");
            Err(JobError::retryable(format!("handler panicked: {message}")).code("PANIC"))
        }
    }
}

//! The completer: records every outcome waiting in the channel in one transaction, and in
//! the same transaction claims jobs for the slots those outcomes free.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::Engine;
use super::engine::Finished;
use crate::error::Error;
use crate::job::{ClaimedJob, Lease, Status};
use crate::queue::{OUTCOME_TARGET, Report};

/// The most outcomes recorded in one transaction.
const MAX_BATCH: usize = 1024;

/// How long the completer keeps retrying a batch the database refuses (busy, I/O) before
/// it gives up on it. Jobs of a batch given up come back through the stale release.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub(super) fn run(engine: &Arc<Engine>, outcomes: Receiver<Finished>) {
    let mut batch: Vec<Finished> = Vec::with_capacity(64);
    while let Ok(first) = outcomes.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        record(engine, &mut batch);
    }
}

fn record(engine: &Engine, batch: &mut Vec<Finished>) {
    let mut reports: Vec<(Lease, Report, Option<Duration>)> = Vec::with_capacity(batch.len());
    let mut kinds: Vec<(String, u32)> = Vec::with_capacity(batch.len());
    for f in batch.drain(..) {
        if let Some(ran) = f.ran_for {
            engine.note_run_time(ran);
        }
        reports.push((f.lease, f.report, f.ran_for));
        kinds.push((f.kind, f.max_attempts));
    }
    let guard = engine.claim_lock();
    let want = engine.want(reports.len());
    let refill = (want > 0).then_some((engine.worker_id.as_str(), want, &engine.filter));
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    let outcome = loop {
        match engine.queue.record_and_claim(&reports, refill) {
            Ok(done) => break Some(done),
            Err(e) if started.elapsed() < GIVE_UP_AFTER => {
                tracing::warn!(error = %e, outcomes = reports.len(), "jobq: recording outcomes failed; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            Err(e) => {
                tracing::error!(error = %e, outcomes = reports.len(), "jobq: gave up recording outcomes; the stale release will bring these jobs back");
                break None;
            }
        }
    };
    let (results, claimed): (Option<Vec<_>>, Vec<ClaimedJob>) = match outcome {
        Some((results, claimed)) => (Some(results), claimed),
        None => (None, Vec::new()),
    };
    if want > 0 && results.is_some() {
        engine.note_claim_time(started.elapsed());
    }
    engine.forget(reports.iter().map(|(lease, _, _)| lease));
    engine.dispatch(claimed, want);
    drop(guard);

    let Some(results) = results else { return };
    for ((report, kind), result) in reports.iter().zip(&kinds).zip(&results) {
        let (lease, _, ran_for) = report;
        let kind_name = &kind.0;
        let ms = ran_for.map(|d| d.as_secs_f64() * 1000.0);
        match result {
            Ok(r) if r.status == Status::Succeeded => {
                tracing::debug!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind = kind_name, attempt = lease.attempt, duration_ms = ms, "jobq: job succeeded");
            }
            Ok(r) if r.status == Status::Queued => {
                tracing::debug!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind = kind_name, "jobq: job released unstarted");
            }
            Ok(_) => {}
            Err(Error::LockLost { status, .. }) => {
                tracing::info!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind = kind_name, attempt = lease.attempt, now = %status, "jobq: outcome refused, the job moved on without this worker");
            }
            Err(e) => {
                tracing::info!(target: OUTCOME_TARGET, job_id = %lease.job_id, kind = kind_name, error = %e, "jobq: outcome refused");
            }
        }
        engine.report_outcome(report, kind, result);
    }
}

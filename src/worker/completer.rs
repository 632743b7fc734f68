//! The completer: records every outcome waiting in the channel in one transaction, and in
//! the same transaction claims jobs for the slots those outcomes free. A pool may run several
//! (`WorkerPoolBuilder::completers`), each on its own connection, so that one batch's round
//! trip does not hold up the next: the slots a claim asks for are set aside under the claim
//! lock, the round trip runs without it, and the jobs are handed out under it again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::Pool;
use crate::error::Error;
use crate::job::ClaimedJob;
use crate::model::ClaimSpec;
use crate::queue::Finished;
use crate::queue::OUTCOME_TARGET;

/// The most outcomes recorded in one transaction.
const MAX_BATCH: usize = 1024;

/// How long the completer keeps retrying a batch the database refuses (busy, I/O) before
/// it gives up on it. Jobs of a batch given up come back through the stale release.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);

pub(super) fn run(pool: &Arc<Pool>, outcomes: Receiver<Finished>) {
    let mut batch: Vec<Finished> = Vec::with_capacity(64);
    while let Ok(first) = outcomes.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match outcomes.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        record(pool, &mut batch);
    }
}

fn record(pool: &Pool, batch: &mut Vec<Finished>) {
    for f in batch.iter() {
        if let Some(ran) = f.ran_for {
            pool.claimer.note_run_time(ran);
        }
    }
    let guard = pool.claimer.lock();
    let want = pool.want(batch.len());
    pool.claimer.reserve(want, batch.len());
    drop(guard);
    let refill = (want > 0).then_some(ClaimSpec {
        worker: pool.worker_id.as_str(),
        limit: want,
        filter: &pool.claimer.filter,
    });
    let started = Instant::now();
    let mut pause = Duration::from_millis(10);
    let mut again = false;
    let outcome = loop {
        match pool.queue.record_and_claim(batch, refill, again) {
            Ok(done) => break Some(done),
            Err(e) if started.elapsed() < GIVE_UP_AFTER => {
                tracing::warn!(error = %e, outcomes = batch.len(), "jobq: recording outcomes failed; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(1));
                again = true;
            }
            Err(e) => {
                tracing::error!(error = %e, outcomes = batch.len(), "jobq: gave up recording outcomes; the stale release will bring these jobs back");
                break None;
            }
        }
    };
    let (results, claimed): (Option<Vec<_>>, Vec<ClaimedJob>) = match outcome {
        Some((results, claimed)) => (Some(results), claimed),
        None => (None, Vec::new()),
    };
    if want > 0 && results.is_some() {
        pool.claimer.note_claim_time(started.elapsed());
    }
    // Outcomes that made jobs ready (dependents queued in the same transaction): a refill
    // claimed in the same statement may not have seen them (PostgreSQL's statement
    // snapshot), and its coming back short must not tell the dispatcher that nothing is
    // ready. The wake the outcome sent may have been taken already, by a claim that found
    // no free slot.
    let readied = results
        .iter()
        .flatten()
        .any(|r| r.as_ref().is_ok_and(|r| r.readied));
    let guard = pool.claimer.lock();
    pool.claimer.unreserve(want, batch.len());
    pool.forget(batch.iter().map(|f| &f.lease));
    pool.dispatch(claimed, want);
    if readied {
        pool.claimer.set_maybe_ready(true);
    }
    drop(guard);
    if readied {
        pool.queue.notify();
    }

    if let Some(results) = results {
        for (settled, result) in batch.iter().zip(&results) {
            if let Err(e) = result {
                let (id, kind) = (&settled.lease.job_id, &settled.job.kind);
                match e {
                    Error::LockLost { status, .. } => {
                        tracing::info!(target: OUTCOME_TARGET, job_id = %id, kind, attempt = settled.lease.attempt, now = %status, "jobq: outcome refused, the job moved on without this worker");
                    }
                    e => {
                        tracing::info!(target: OUTCOME_TARGET, job_id = %id, kind, error = %e, "jobq: outcome refused");
                    }
                }
            }
            pool.report_outcome(settled, result);
        }
    }
    batch.clear();
}

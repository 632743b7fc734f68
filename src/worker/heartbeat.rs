//! The heartbeat thread: keeps the locks of running jobs fresh, enforces job timeouts, and
//! tells handlers when their job was cancelled or released by another process (a job
//! cancelled in this process is marked by the cancel itself).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::Pool;
use crate::job::{JobId, Lease};
use crate::model::JobError;
use crate::queue::Report;

/// How often timeouts are checked: the precision of a job timeout.
const TICK: Duration = Duration::from_millis(50);

pub(super) fn run(pool: &Arc<Pool>, interval: Duration, stop: Receiver<()>) {
    let mut next_beat = Instant::now() + interval;
    loop {
        select! {
            recv(stop) -> _ => break,
            default(TICK.min(interval)) => {}
        }
        expire_timeouts(pool);
        if Instant::now() >= next_beat {
            beat(pool);
            pool.seen();
            next_beat = Instant::now() + interval;
        }
    }
}

/// One statement refreshes every job this pool holds; a job missing from the answer was
/// cancelled or released elsewhere, and its handler is told.
fn beat(pool: &Pool) {
    let leases: Vec<Lease> = pool.in_flight.unsettled_leases();
    if leases.is_empty() {
        return;
    }
    match pool.queue.heartbeat_many(&pool.worker_id, &leases) {
        Ok(held) => {
            let held: HashSet<(&JobId, u32)> = held.iter().map(|l| (&l.job_id, l.claim)).collect();
            for lease in leases
                .iter()
                .filter(|l| !held.contains(&(&l.job_id, l.claim)))
            {
                pool.in_flight.cancel_claim(lease);
            }
        }
        Err(e) => tracing::warn!(error = %e, jobs = leases.len(), "jobq: heartbeat failed"),
    }
}

/// Fails the jobs that ran past their timeout with `TIMEOUT`, abandons their threads and
/// starts new handler threads in their place.
fn expire_timeouts(pool: &Arc<Pool>) {
    let now = Instant::now();
    for (lease, ran, slot, cancelled) in pool.in_flight.overdue(now) {
        slot.store(true, Ordering::SeqCst);
        cancelled.store(true, Ordering::SeqCst);
        let error = JobError::retryable(format!(
            "job ran longer than its timeout ({:.1} s); its handler was abandoned",
            ran.as_secs_f64()
        ))
        .code("TIMEOUT");
        tracing::warn!(job_id = %lease.job_id, attempt = lease.attempt, "jobq: job timed out");
        if pool.settle(&lease, Report::Fail(error), Some(ran)) {
            pool.spawn_handler();
        }
    }
}

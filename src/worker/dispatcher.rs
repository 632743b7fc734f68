//! The dispatcher: claims as many jobs as there are free slots, in one transaction, and
//! hands them to the handler threads.
//!
//! It claims at start, again at once after a full batch, and after a wake-up: an enqueue
//! in this process, or a freed slot while work may be ready. (While jobs flow, the
//! completer refills most slots itself, in the transaction that records the outcomes.)
//! After a short batch it waits for the poll interval, then asks the pool whether another
//! connection committed since (SQLite's `PRAGMA data_version`; PostgreSQL's notifications,
//! which also wake it at once), and claims only if something changed or a scheduled job has
//! come due — so an idle pool costs one cheap read per interval.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, select};

use super::Pool;
use crate::store::Changes;

pub(super) struct Wakeups {
    /// New work may be ready: an enqueue, a retry or a release in this process.
    pub work: Receiver<()>,
    /// The completer freed slots.
    pub slots: Receiver<()>,
}

/// What one turn of the claim did.
enum Turn {
    /// Claimed all it asked for: there may be more.
    Full,
    /// Claimed less than it asked for, or could not claim: wait for a wake-up.
    Short,
    /// Nothing to ask for (no free slot, or nothing likely ready).
    Nothing,
}

pub(super) fn run(
    pool: &Arc<Pool>,
    wake: Wakeups,
    mut changes: Box<dyn Changes>,
    poll_interval: Duration,
) {
    let mut seen_version = None;
    let mut next_due: Option<i64> = None;
    loop {
        if pool.is_stopping() {
            break;
        }
        match claim_turn(pool, &mut *changes, &mut seen_version, &mut next_due) {
            Turn::Full => continue,
            Turn::Short | Turn::Nothing => {}
        }
        let in_flight = pool.in_flight();
        if pool.claimer.limit_reached() && in_flight == 0 {
            pool.request_stop();
            break;
        }
        if pool.stop_when_idle && !pool.claimer.maybe_ready() && in_flight == 0 {
            // A retry recorded just before the last slot freed wakes `work` first.
            if wake.work.try_recv().is_ok() {
                pool.claimer.set_maybe_ready(true);
                continue;
            }
            pool.request_stop();
            break;
        }
        let now = pool.queue.now_ms();
        let idle = !pool.claimer.maybe_ready();
        let wait = match next_due {
            Some(due) if idle => {
                poll_interval.min(Duration::from_millis(due.saturating_sub(now).max(0) as u64))
            }
            _ => poll_interval,
        };
        select! {
            recv(wake.work) -> msg => {
                if msg.is_err() {
                    break;
                }
                pool.claimer.set_maybe_ready(true);
            }
            recv(wake.slots) -> _ => {}
            default(wait) => {
                let due = next_due.is_some_and(|d| pool.queue.now_ms() >= d);
                let changed = seen_version.is_none() || changes.version() != seen_version;
                // Under flow control, room comes back without an event (a rate's window
                // slides on): look at every poll.
                let controlled = pool.queue.engine().any_controlled();
                if due || changed || controlled {
                    pool.claimer.set_maybe_ready(true);
                }
            }
        }
    }
}

fn claim_turn(
    pool: &Pool,
    changes: &mut dyn Changes,
    seen_version: &mut Option<i64>,
    next_due: &mut Option<i64>,
) -> Turn {
    let _guard = pool.claimer.lock();
    let want = pool.want(0);
    if want == 0 {
        return Turn::Nothing;
    }
    // Read before the claim: a commit after this read shows up as a change at the next poll.
    let version = changes.version();
    let started = Instant::now();
    // One clock reading for the claim and for the look at what comes due after it: a job
    // due between two readings would be neither claimed nor waited for.
    let now = pool.queue.now_ms();
    match pool
        .queue
        .claim_at(&pool.worker_id, want, &pool.claimer.filter, now)
    {
        Ok(batch) => {
            pool.claimer.note_claim_time(started.elapsed());
            let got = batch.len();
            pool.dispatch(batch, want);
            if got == want {
                return Turn::Full;
            }
            *seen_version = version;
            *next_due = pool
                .queue
                .engine()
                .next_run_after(pool.claimer.filter.queue_names(), now)
                .unwrap_or(None);
            Turn::Short
        }
        Err(e) => {
            tracing::warn!(error = %e, "jobq: claim failed; trying again after the poll interval");
            pool.claimer.set_maybe_ready(false);
            *seen_version = None;
            Turn::Short
        }
    }
}

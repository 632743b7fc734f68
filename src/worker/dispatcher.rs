//! The dispatcher: claims as many jobs as there are free slots, in one transaction, and
//! hands them to the handler threads.
//!
//! It claims again at once after a full batch. After a short batch (nothing more is ready)
//! it waits for a wake-up: an enqueue in this process, a freed slot, or the poll interval.
//! At each poll it reads `PRAGMA data_version`, which changes only when another connection
//! commits, and claims only if the file changed or a scheduled job has come due — so an
//! idle pool costs one cheap read per interval.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, select};
use rusqlite::Connection;

use super::Engine;
use crate::job::ClaimedJob;
use crate::queue::ClaimFilter;

pub(super) struct Wakeups {
    /// New work may be ready: an enqueue, a retry or a release in this process.
    pub work: Receiver<()>,
    /// The completer freed slots.
    pub slots: Receiver<()>,
}

fn data_version(conn: &Connection) -> Option<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0)).ok()
}

pub(super) fn run(
    engine: &Arc<Engine>,
    jobs: Sender<ClaimedJob>,
    wake: Wakeups,
    conn: Connection,
    filter: &ClaimFilter,
    poll_interval: Duration,
) {
    // Whether a claim may find something: after a full batch, a work wake-up, or a change
    // to the file; not after a short batch.
    let mut maybe_ready = true;
    let mut seen_version = None;
    let mut next_due: Option<i64> = None;
    loop {
        if engine.is_stopping() {
            break;
        }
        let in_flight = engine.in_flight.load(Ordering::SeqCst);
        let free = engine.capacity.saturating_sub(in_flight);
        let claimed = engine.claimed_total.load(Ordering::SeqCst);
        let allowed = engine
            .limit
            .map_or(usize::MAX, |l| l.saturating_sub(claimed) as usize);
        let want = free.min(allowed);
        if want > 0 && maybe_ready {
            let version = data_version(&conn);
            match engine.queue.claim(&engine.worker_id, want, filter) {
                Ok(batch) => {
                    let got = batch.len();
                    engine.track_claimed(&batch);
                    for job in batch {
                        // Never blocks: the channel holds `capacity` jobs and in-flight jobs
                        // never exceed it.
                        if jobs.send(job).is_err() {
                            return;
                        }
                    }
                    if got == want {
                        continue;
                    }
                    maybe_ready = false;
                    seen_version = version;
                    next_due = crate::queue::next_run_after(&conn, filter, engine.queue.now_ms())
                        .unwrap_or(None);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "jobq: claim failed; trying again after the poll interval");
                    maybe_ready = false;
                    seen_version = None;
                }
            }
        }
        if engine
            .limit
            .is_some_and(|l| engine.claimed_total.load(Ordering::SeqCst) >= l)
            && engine.in_flight.load(Ordering::SeqCst) == 0
        {
            engine.request_stop();
            break;
        }
        if engine.stop_when_idle && !maybe_ready && engine.in_flight.load(Ordering::SeqCst) == 0 {
            // A retry recorded just before the last slot freed wakes `work` first.
            if wake.work.try_recv().is_ok() {
                maybe_ready = true;
                continue;
            }
            engine.request_stop();
            break;
        }
        let now = engine.queue.now_ms();
        let wait = match next_due {
            Some(due) if !maybe_ready => {
                poll_interval.min(Duration::from_millis(due.saturating_sub(now).max(0) as u64))
            }
            _ => poll_interval,
        };
        select! {
            recv(wake.work) -> msg => {
                if msg.is_err() { break; }
                maybe_ready = true;
            }
            recv(wake.slots) -> _ => {}
            default(wait) => {
                let due = next_due.is_some_and(|d| engine.queue.now_ms() >= d);
                let changed = seen_version.is_none() || data_version(&conn) != seen_version;
                if due || changed {
                    maybe_ready = true;
                }
            }
        }
    }
}

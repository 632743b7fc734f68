//! The claim state the dispatcher and the completer share.
//!
//! Two threads claim: the dispatcher (at start, on a wake-up, at a poll) and the completer
//! (with the outcomes it records, to refill the slots they free). Both decide how many to
//! claim, claim and hand the jobs out under one lock, so the count of jobs in flight never
//! passes the capacity: handlers plus prefetch.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::model::ClaimFilter;

/// How many jobs a pool claims ahead of its free handlers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefetch {
    /// Exactly this many.
    Fixed(usize),
    /// As many as keep the handlers busy while a claim makes its round trip, up to `max`:
    /// about `2 × handlers × claim time / handler run time`, from running averages. Fast
    /// jobs get large batches (and few transactions per job); slow jobs get none, so that
    /// several pools share them fairly. Starts at none, until the first jobs are measured.
    Adaptive { max: usize },
}

pub(crate) struct Claimer {
    /// The queues and kinds claimed.
    pub filter: ClaimFilter,
    concurrency: usize,
    prefetch: Prefetch,
    /// The most jobs the pool claims in all (`--limit`).
    limit: Option<u64>,
    /// Held from deciding how many to claim to handing the claimed jobs out.
    lock: Mutex<()>,
    /// Whether a claim may find something: cleared by a claim that came back short, set by
    /// a wake-up or a change to the database.
    maybe_ready: AtomicBool,
    claimed_total: AtomicU64,
    /// Slots completers' claims will fill beyond the slots their own batches free, while
    /// those claims are on their way to the database without the lock (several completers
    /// record at once): every other claim counts them as taken.
    reserved_slots: AtomicUsize,
    /// Jobs those claims may bring back, counted against the limit.
    reserved_claims: AtomicUsize,
    /// Running averages, in nanoseconds (0 until measured).
    avg_claim_ns: AtomicU64,
    avg_run_ns: AtomicU64,
}

/// Folds a sample into a running average (weight 1/8), 0 meaning "none yet".
fn fold(avg: &AtomicU64, sample: Duration) {
    let sample = sample.as_nanos().min(u128::from(u64::MAX)) as u64;
    let old = avg.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample.max(1)
    } else {
        (old - old / 8 + sample / 8).max(1)
    };
    avg.store(new, Ordering::Relaxed);
}

impl Claimer {
    pub fn new(
        filter: ClaimFilter,
        concurrency: usize,
        prefetch: Prefetch,
        limit: Option<u64>,
    ) -> Claimer {
        Claimer {
            filter,
            concurrency,
            prefetch,
            limit,
            lock: Mutex::new(()),
            maybe_ready: AtomicBool::new(true),
            claimed_total: AtomicU64::new(0),
            reserved_slots: AtomicUsize::new(0),
            reserved_claims: AtomicUsize::new(0),
            avg_claim_ns: AtomicU64::new(0),
            avg_run_ns: AtomicU64::new(0),
        }
    }

    /// Takes the claim lock. Hold it from [`Claimer::want`] to handing the jobs out.
    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// The most jobs in flight at once: the handlers plus the prefetch.
    pub fn capacity(&self) -> usize {
        let prefetch = match self.prefetch {
            Prefetch::Fixed(n) => n,
            Prefetch::Adaptive { max } => {
                let claim = self.avg_claim_ns.load(Ordering::Relaxed);
                let run = self.avg_run_ns.load(Ordering::Relaxed);
                if claim == 0 || run == 0 {
                    // Nothing measured yet: claim nothing ahead. Fast jobs grow the batch
                    // after their first round; slow ones never wait claimed.
                    0
                } else {
                    let ideal = 2.0 * self.concurrency as f64 * claim as f64 / run as f64;
                    (ideal.round() as usize).min(max)
                }
            }
        };
        self.concurrency + prefetch
    }

    /// How many jobs to claim now, with `in_flight` jobs claimed and unrecorded of which
    /// `freeing` are about to be recorded. Zero when stopping or when nothing is likely
    /// ready.
    pub fn want(&self, stopping: bool, in_flight: usize, freeing: usize) -> usize {
        if stopping || !self.maybe_ready() {
            return 0;
        }
        let reserved = self.reserved_slots.load(Ordering::SeqCst);
        let free = self
            .capacity()
            .saturating_sub((in_flight + reserved).saturating_sub(freeing));
        let allowed = self.limit.map_or(usize::MAX, |l| {
            (l.saturating_sub(self.claimed_total.load(Ordering::SeqCst)) as usize)
                .saturating_sub(self.reserved_claims.load(Ordering::SeqCst))
        });
        free.min(allowed)
    }

    /// Sets aside what a claim of `want` jobs, refilling the `freeing` slots of its own
    /// batch, takes while it goes to the database without the lock (decided under the lock,
    /// with [`Claimer::want`]); give it back with [`Claimer::unreserve`] under the lock
    /// again, before handing the claimed jobs out.
    pub fn reserve(&self, want: usize, freeing: usize) {
        self.reserved_slots
            .fetch_add(want.saturating_sub(freeing), Ordering::SeqCst);
        self.reserved_claims.fetch_add(want, Ordering::SeqCst);
    }

    pub fn unreserve(&self, want: usize, freeing: usize) {
        self.reserved_slots
            .fetch_sub(want.saturating_sub(freeing), Ordering::SeqCst);
        self.reserved_claims.fetch_sub(want, Ordering::SeqCst);
    }

    /// `got` of the `wanted` jobs came back: fewer means nothing more is ready for now.
    pub fn claimed(&self, got: usize, wanted: usize) {
        if got < wanted {
            self.maybe_ready.store(false, Ordering::SeqCst);
        }
        self.claimed_total.fetch_add(got as u64, Ordering::SeqCst);
    }

    /// Whether the pool has claimed as many jobs as its limit allows.
    pub fn limit_reached(&self) -> bool {
        self.limit
            .is_some_and(|l| self.claimed_total.load(Ordering::SeqCst) >= l)
    }

    pub fn maybe_ready(&self) -> bool {
        self.maybe_ready.load(Ordering::SeqCst)
    }

    pub fn set_maybe_ready(&self, ready: bool) {
        self.maybe_ready.store(ready, Ordering::SeqCst);
    }

    pub fn note_claim_time(&self, took: Duration) {
        fold(&self.avg_claim_ns, took);
    }

    pub fn note_run_time(&self, took: Duration) {
        fold(&self.avg_run_ns, took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_averages_start_at_the_first_sample_and_move_an_eighth_of_the_way() {
        let avg = AtomicU64::new(0);
        fold(&avg, Duration::from_nanos(800));
        assert_eq!(avg.load(Ordering::Relaxed), 800);
        fold(&avg, Duration::from_nanos(1600));
        assert_eq!(avg.load(Ordering::Relaxed), 900);
    }

    #[test]
    fn the_claim_asks_for_free_slots_within_the_limit_and_stops_when_short() {
        let c = Claimer::new(ClaimFilter::default(), 4, Prefetch::Fixed(2), Some(10));
        assert_eq!(c.capacity(), 6);
        assert_eq!(c.want(false, 0, 0), 6);
        assert_eq!(c.want(false, 5, 2), 3, "slots being freed count as free");
        assert_eq!(c.want(true, 0, 0), 0, "nothing while stopping");
        c.claimed(6, 6);
        assert_eq!(c.want(false, 0, 0), 4, "only 4 left of the limit of 10");
        c.claimed(1, 4);
        assert_eq!(
            c.want(false, 0, 0),
            0,
            "a short claim means nothing more is ready"
        );
        c.set_maybe_ready(true);
        assert_eq!(c.want(false, 0, 0), 3);
        c.reserve(2, 0);
        assert_eq!(c.want(false, 0, 0), 1, "a claim on its way holds its slots");
        c.unreserve(2, 0);
        c.reserve(2, 2);
        assert_eq!(
            c.want(false, 2, 0),
            1,
            "a claim refilling its own freed slots takes no other slot, but counts to the limit"
        );
        c.unreserve(2, 2);
        c.claimed(3, 3);
        assert!(c.limit_reached());
    }
}

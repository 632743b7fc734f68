//! What every thread of a pool shares: the jobs in flight, the slot accounting, the claim.
//!
//! Two threads claim: the dispatcher (at start, on a wake-up, at a poll) and the completer
//! (in the same transaction as the outcomes it records, to refill the slots they free).
//! Both claim under one lock, so the count of jobs in flight never passes the capacity:
//! handlers plus prefetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::handlers::{Handlers, Registered};
use super::outcome::{self, Counters};
use super::{OutcomeCallback, executor, spawn};
use crate::job::{ClaimedJob, JobId, Lease};
use crate::queue::{ClaimFilter, Queue, Report, Settled};
use crate::store::{LeasedJob, Recorded};
use crate::workers::WorkerInfo;

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

/// A job the pool claimed and has not recorded yet.
pub(crate) struct InFlight {
    pub lease: Lease,
    pub job: LeasedJob,
    pub cancelled: Arc<AtomicBool>,
    /// Set when a handler starts it: when, its deadline, and the handler's slot.
    pub started: Option<(Instant, Option<Instant>, Arc<AtomicBool>)>,
    /// The outcome has been sent to the completer (by a handler, a timeout or a release).
    pub settled: bool,
}

/// An outcome on its way to the completer.
pub(crate) type Finished = Settled;

pub(crate) struct Engine {
    pub queue: Queue,
    pub worker_id: String,
    pub filter: ClaimFilter,
    pub concurrency: usize,
    pub prefetch: Prefetch,
    pub handlers: Handlers,
    /// Keyed by job and claim: a job cancelled while its handler still runs, then retried
    /// and claimed again, is two entries.
    pub running: Mutex<HashMap<(JobId, u32), InFlight>>,
    pub claimed_total: AtomicU64,
    pub counters: Counters,
    /// Set once: no more claims, and handlers give back the jobs they have not started.
    pub stopping: AtomicBool,
    /// Whether a claim may find something: cleared by a claim that came back short, set by
    /// a wake-up or a change to the file.
    pub maybe_ready: AtomicBool,
    /// Held while deciding how many to claim and claiming them.
    pub claim_lock: Mutex<()>,
    /// Running averages, in nanoseconds (0 until measured).
    pub avg_claim_ns: AtomicU64,
    pub avg_run_ns: AtomicU64,
    pub job_tx: Mutex<Option<Sender<ClaimedJob>>>,
    pub job_rx: Receiver<ClaimedJob>,
    pub outcome_tx: Mutex<Option<Sender<Finished>>>,
    pub slot_tx: Sender<()>,
    pub handler_threads: Mutex<Vec<JoinHandle<()>>>,
    pub limit: Option<u64>,
    pub stop_when_idle: bool,
    pub stop_helpers: Mutex<Option<Sender<()>>>,
    /// Set by [`StopHandle::stop_now`](super::StopHandle::stop_now): the grace period ends.
    pub hurry: AtomicBool,
    pub on_outcome: Option<OutcomeCallback>,
    /// This pool as the registry of live workers shows it.
    pub registration: WorkerInfo,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

impl Engine {
    /// Puts this pool in the registry of live workers (again, if it was expired).
    pub fn register(&self) {
        let mut me = self.registration.clone();
        me.last_seen = self.queue.now();
        if let Err(e) = self.queue.engine().register_worker(&me) {
            tracing::warn!(error = %e, worker = %self.worker_id, "jobq: cannot register in the list of live workers");
        }
    }

    /// Tells the registry this pool is alive.
    pub fn seen(&self) {
        match self
            .queue
            .engine()
            .worker_seen(&self.worker_id, self.queue.now_ms())
        {
            Ok(true) => {}
            Ok(false) => self.register(),
            Err(e) => {
                tracing::debug!(error = %e, "jobq: cannot tell the registry this worker is alive")
            }
        }
    }

    /// Takes this pool out of the registry (a clean stop).
    pub fn unregister(&self) {
        if let Err(e) = self.queue.engine().unregister_worker(&self.worker_id) {
            tracing::debug!(error = %e, "jobq: cannot leave the list of live workers");
        }
    }

    pub fn running(&self) -> MutexGuard<'_, HashMap<(JobId, u32), InFlight>> {
        lock(&self.running)
    }

    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.queue.shared.events.wake_dispatchers();
    }

    /// Stops, and ends the grace period now.
    pub fn hurry(&self) {
        self.hurry.store(true, Ordering::SeqCst);
        self.request_stop();
    }

    pub fn in_a_hurry(&self) -> bool {
        self.hurry.load(Ordering::SeqCst)
    }

    /// Counts a recorded report and tells the outcome callback, if there is one.
    pub fn report_outcome(&self, settled: &Settled, result: &crate::error::Result<Recorded>) {
        let Settled {
            lease,
            job,
            report,
            ran_for,
        } = settled;
        self.counters
            .count(&lease.job_id, ran_for.is_some(), result);
        if let Some(callback) = &self.on_outcome {
            let error = match report {
                Report::Fail(error) => Some(error),
                _ => None,
            };
            callback(&outcome::outcome_of(
                &lease.job_id,
                &job.kind,
                lease.attempt,
                job.max_attempts,
                *ran_for,
                error,
                result,
            ));
        }
    }

    /// How many jobs are claimed and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.running().len()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
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

    pub fn note_claim_time(&self, took: Duration) {
        fold(&self.avg_claim_ns, took);
    }

    pub fn note_run_time(&self, took: Duration) {
        fold(&self.avg_run_ns, took);
    }

    /// Takes the claim lock. Hold it from [`Engine::want`] to [`Engine::dispatch`].
    pub fn claim_lock(&self) -> MutexGuard<'_, ()> {
        lock(&self.claim_lock)
    }

    /// How many jobs to claim now, with `freeing` more slots about to be freed (the
    /// outcomes being recorded). Zero when stopping or when nothing is likely ready.
    pub fn want(&self, freeing: usize) -> usize {
        if self.is_stopping() || !self.maybe_ready.load(Ordering::SeqCst) {
            return 0;
        }
        let in_flight = self.in_flight().saturating_sub(freeing);
        let free = self.capacity().saturating_sub(in_flight);
        let claimed = self.claimed_total.load(Ordering::SeqCst);
        let allowed = self
            .limit
            .map_or(usize::MAX, |l| l.saturating_sub(claimed) as usize);
        free.min(allowed)
    }

    /// Hands freshly claimed jobs to the handlers, tracking them as in flight first. After
    /// the pool stopped handing out work, they are released instead, unstarted.
    pub fn dispatch(&self, jobs: Vec<ClaimedJob>, wanted: usize) {
        if jobs.len() < wanted {
            self.maybe_ready.store(false, Ordering::SeqCst);
        }
        if jobs.is_empty() {
            return;
        }
        {
            let mut running = self.running();
            for job in &jobs {
                running.insert(
                    (job.id.clone(), job.claim),
                    InFlight {
                        lease: job.lease(),
                        job: job.leased(),
                        cancelled: Arc::new(AtomicBool::new(false)),
                        started: None,
                        settled: false,
                    },
                );
            }
        }
        self.claimed_total
            .fetch_add(jobs.len() as u64, Ordering::SeqCst);
        let tx = lock(&self.job_tx);
        for job in jobs {
            // Never blocks: the channel holds the most jobs that can be in flight.
            let undelivered = match tx.as_ref() {
                Some(tx) => tx.send(job).err().map(|e| e.into_inner()),
                None => Some(job),
            };
            if let Some(job) = undelivered {
                self.settle(&job.lease(), Report::Release, None);
            }
        }
    }

    /// No more jobs for the handlers: they drain the channel and end.
    pub fn close_jobs(&self) {
        lock(&self.job_tx).take();
    }

    /// The handler of a kind, with its timeout (or the default) and retry policy.
    pub fn handler_for(&self, kind: &str) -> Option<Registered> {
        self.handlers.for_kind(kind)
    }

    /// Sends an outcome to the completer, once per claimed job: the first to settle a job
    /// (its handler, its timeout, or a release at shutdown) wins.
    pub fn settle(&self, lease: &Lease, report: Report, ran_for: Option<Duration>) -> bool {
        let job = {
            let mut running = self.running();
            match running.get_mut(&(lease.job_id.clone(), lease.claim)) {
                Some(entry) if !entry.settled => {
                    entry.settled = true;
                    entry.job.clone()
                }
                _ => return false,
            }
        };
        let tx = lock(&self.outcome_tx);
        match tx.as_ref() {
            Some(tx) => tx
                .send(Settled {
                    lease: lease.clone(),
                    job,
                    report,
                    ran_for,
                })
                .is_ok(),
            None => false,
        }
    }

    /// Releases every claimed job whose outcome is not settled: at the end of the grace
    /// period. Their handler threads, if any still run, are abandoned.
    pub fn release_unfinished(&self) {
        let unfinished: Vec<(Lease, Arc<AtomicBool>, Option<Arc<AtomicBool>>)> = self
            .running()
            .values()
            .filter(|e| !e.settled)
            .map(|e| {
                let slot = e.started.as_ref().map(|s| Arc::clone(&s.2));
                (e.lease.clone(), Arc::clone(&e.cancelled), slot)
            })
            .collect();
        for (lease, cancelled, slot) in unfinished {
            if let Some(slot) = slot {
                // Abandon the thread, and tell its handler to stop (a command is killed).
                slot.store(true, Ordering::SeqCst);
                cancelled.store(true, Ordering::SeqCst);
                tracing::warn!(job_id = %lease.job_id, "jobq: handler still running as the pool stops; releasing its job");
            }
            self.settle(&lease, Report::Release, None);
        }
    }

    /// A handler starts a job: its deadline begins. Returns the job's cancel flag, or `None`
    /// when the job was settled meanwhile (released at shutdown).
    pub fn mark_started(
        &self,
        lease: &Lease,
        at: Instant,
        deadline: Option<Instant>,
        slot: &Arc<AtomicBool>,
    ) -> Option<Arc<AtomicBool>> {
        let mut running = self.running();
        let entry = running
            .get_mut(&(lease.job_id.clone(), lease.claim))
            .filter(|e| !e.settled)?;
        entry.started = Some((at, deadline, Arc::clone(slot)));
        Some(Arc::clone(&entry.cancelled))
    }

    /// Tells the handler of a job (if this pool runs it) that the job was cancelled.
    pub fn mark_cancelled(&self, id: &JobId) {
        for ((job, _), entry) in self.running().iter() {
            if job == id {
                entry.cancelled.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Forgets recorded jobs and frees their slots.
    pub fn forget<'a>(&self, leases: impl Iterator<Item = &'a Lease>) {
        {
            let mut running = self.running();
            for lease in leases {
                running.remove(&(lease.job_id.clone(), lease.claim));
            }
        }
        let _ = self.slot_tx.try_send(());
    }

    pub fn close_outcomes(&self) {
        lock(&self.outcome_tx).take();
    }

    pub fn spawn_handler(self: &Arc<Self>) {
        let engine = Arc::clone(self);
        let abandoned = Arc::new(AtomicBool::new(false));
        let handle = spawn("jobq-handler", move || executor::run(&engine, &abandoned));
        lock(&self.handler_threads).push(handle);
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
}

//! What every thread of a pool shares: its settings, the claim state ([`Claimer`]), the
//! jobs in flight ([`InFlightTable`]), the channels between its threads, and its counts.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::claimer::Claimer;
use super::flight::InFlightTable;
use super::handlers::{Handlers, Registered};
use super::outcome::{self, Counters};
use super::{OutcomeCallback, executor, spawn};
use crate::job::{ClaimedJob, JobId, Lease};
use crate::model::Recorded;
use crate::model::WorkerInfo;
use crate::queue::{Finished, Queue, Report};

/// The pool's threads and their channels: jobs to the handlers, outcomes to the completer,
/// freed slots to the dispatcher.
pub(crate) struct Channels {
    pub job_tx: Mutex<Option<Sender<ClaimedJob>>>,
    pub job_rx: Receiver<ClaimedJob>,
    pub outcome_tx: Mutex<Option<Sender<Finished>>>,
    pub slot_tx: Sender<()>,
    pub handler_threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropped to stop the helper threads (heartbeat, maintenance).
    pub stop_helpers: Mutex<Option<Sender<()>>>,
}

pub(crate) struct Pool {
    pub queue: Queue,
    pub worker_id: String,
    pub handlers: Handlers,
    pub stop_when_idle: bool,
    pub on_outcome: Option<OutcomeCallback>,
    /// This pool as the registry of live workers shows it.
    pub registration: WorkerInfo,
    pub claimer: Claimer,
    pub in_flight: InFlightTable,
    pub channels: Channels,
    pub counters: Counters,
    /// Set once: no more claims, and handlers give back the jobs they have not started.
    pub stopping: AtomicBool,
    /// Set by [`StopHandle::stop_now`](super::StopHandle::stop_now): the grace period ends.
    pub hurry: AtomicBool,
    /// With `stop_when_idle`: the jobs this run snoozed. A run takes a snoozed job at most
    /// once: ready again, it is given back for the next run (a job that snoozes at once
    /// would otherwise keep the run going for ever).
    pub snoozed: Mutex<std::collections::HashSet<JobId>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("worker_id", &self.worker_id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
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
    pub fn report_outcome(&self, settled: &Finished, result: &crate::error::Result<Recorded>) {
        let Finished {
            lease,
            job,
            report,
            ran_for,
        } = settled;
        self.counters
            .count(&lease.job_id, ran_for.is_some(), result);
        if self.stop_when_idle && matches!(report, Report::Snooze(_)) && result.is_ok() {
            lock(&self.snoozed).insert(lease.job_id.clone());
        }
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

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// The handler of a kind, with its timeout (or the default) and retry policy.
    pub fn handler_for(&self, kind: &str) -> Option<Registered> {
        self.handlers.for_kind(kind)
    }

    /// How many jobs are claimed and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many jobs to claim now, with `freeing` more slots about to be freed (the
    /// outcomes being recorded). Take [`Claimer::lock`] first.
    pub fn want(&self, freeing: usize) -> usize {
        self.claimer
            .want(self.is_stopping(), self.in_flight(), freeing)
    }

    /// Hands freshly claimed jobs to the handlers, tracking them as in flight first. After
    /// the pool stopped handing out work, they are released instead, unstarted.
    pub fn dispatch(&self, jobs: Vec<ClaimedJob>, wanted: usize) {
        self.claimer.claimed(jobs.len(), wanted);
        if jobs.is_empty() {
            return;
        }
        self.in_flight.add(&jobs);
        let jobs = self.first_takes(jobs);
        let tx = lock(&self.channels.job_tx);
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

    /// Of freshly claimed jobs, those this run may start: all of them, unless the pool
    /// stops when idle and some of them snoozed in this run: those are given back
    /// unstarted, runnable a moment later (for the next run).
    fn first_takes(&self, jobs: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
        if !self.stop_when_idle {
            return jobs;
        }
        let snoozed = lock(&self.snoozed);
        if snoozed.is_empty() {
            return jobs;
        }
        let (again, fresh): (Vec<_>, Vec<_>) =
            jobs.into_iter().partition(|job| snoozed.contains(&job.id));
        drop(snoozed);
        for job in again {
            tracing::debug!(job_id = %job.id, "jobq: the job snoozed in this run; it is left for the next run");
            self.settle(&job.lease(), Report::Defer(crate::queue::MIN_SNOOZE), None);
        }
        fresh
    }

    /// No more jobs for the handlers: they drain the channel and end.
    pub fn close_jobs(&self) {
        lock(&self.channels.job_tx).take();
    }

    /// Sends an outcome to the completer, once per claimed job: the first to settle a job
    /// (its handler, its timeout, or a release at shutdown) wins.
    pub fn settle(&self, lease: &Lease, report: Report, ran_for: Option<Duration>) -> bool {
        let Some(job) = self.in_flight.settle(lease) else {
            return false;
        };
        let tx = lock(&self.channels.outcome_tx);
        match tx.as_ref() {
            Some(tx) => tx
                .send(Finished {
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
        for (lease, cancelled, slot) in self.in_flight.unsettled() {
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
        self.in_flight.start(lease, at, deadline, slot)
    }

    /// Tells the handler of a job (if this pool runs it) that the job was cancelled.
    pub fn mark_cancelled(&self, id: &JobId) {
        self.in_flight.cancel_job(id);
    }

    /// Forgets recorded jobs and frees their slots.
    pub fn forget<'a>(&self, leases: impl Iterator<Item = &'a Lease>) {
        self.in_flight.forget(leases);
        let _ = self.channels.slot_tx.try_send(());
    }

    pub fn close_outcomes(&self) {
        lock(&self.channels.outcome_tx).take();
    }

    pub fn spawn_handler(self: &Arc<Self>) {
        let pool = Arc::clone(self);
        let abandoned = Arc::new(AtomicBool::new(false));
        let handle = spawn("jobq-handler", move || executor::run(&pool, &abandoned));
        lock(&self.channels.handler_threads).push(handle);
    }
}

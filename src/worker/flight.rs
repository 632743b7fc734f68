//! The jobs a pool has claimed and not yet recorded, each with its lease, what a failure's
//! decision needs, its cancel flag, and (once a handler started it) its start, deadline and
//! the handler's slot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::job::LeasedJob;
use crate::job::{ClaimedJob, JobId, Lease};

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

/// A job that ran past its deadline: its lease, how long it ran, its handler's slot (to
/// abandon) and its cancel flag.
pub(crate) type Overdue = (Lease, Duration, Arc<AtomicBool>, Arc<AtomicBool>);

/// Keyed by job and claim: a job cancelled while its handler still runs, then retried and
/// claimed again, is two entries.
#[derive(Default)]
pub(crate) struct InFlightTable(Mutex<HashMap<(JobId, u32), InFlight>>);

impl InFlightTable {
    fn lock(&self) -> MutexGuard<'_, HashMap<(JobId, u32), InFlight>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many jobs are claimed and not yet recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Tracks freshly claimed jobs.
    pub fn add(&self, jobs: &[ClaimedJob]) {
        let mut table = self.lock();
        for job in jobs {
            table.insert(
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

    /// Marks the job of `lease` settled and returns what its report needs, or `None` when
    /// someone settled it first (its handler, its timeout, or a release at shutdown).
    pub fn settle(&self, lease: &Lease) -> Option<LeasedJob> {
        let mut table = self.lock();
        let entry = table
            .get_mut(&(lease.job_id.clone(), lease.claim))
            .filter(|e| !e.settled)?;
        entry.settled = true;
        Some(entry.job.clone())
    }

    /// A handler starts a job: its deadline begins. Returns the job's cancel flag, or `None`
    /// when the job was settled meanwhile (released at shutdown).
    pub fn start(
        &self,
        lease: &Lease,
        at: Instant,
        deadline: Option<Instant>,
        slot: &Arc<AtomicBool>,
    ) -> Option<Arc<AtomicBool>> {
        let mut table = self.lock();
        let entry = table
            .get_mut(&(lease.job_id.clone(), lease.claim))
            .filter(|e| !e.settled)?;
        entry.started = Some((at, deadline, Arc::clone(slot)));
        Some(Arc::clone(&entry.cancelled))
    }

    /// Tells the handler of every claim of a job that it was cancelled.
    pub fn cancel_job(&self, id: &JobId) {
        for ((job, _), entry) in self.lock().iter() {
            if job == id {
                entry.cancelled.store(true, Ordering::SeqCst);
            }
        }
    }

    /// Tells the handler of one claim of a job that it lost the job.
    pub fn cancel_claim(&self, lease: &Lease) {
        if let Some(entry) = self.lock().get(&(lease.job_id.clone(), lease.claim)) {
            entry.cancelled.store(true, Ordering::SeqCst);
        }
    }

    /// Forgets recorded jobs.
    pub fn forget<'a>(&self, leases: impl Iterator<Item = &'a Lease>) {
        let mut table = self.lock();
        for lease in leases {
            table.remove(&(lease.job_id.clone(), lease.claim));
        }
    }

    /// The leases of the jobs not settled yet (for the heartbeat).
    pub fn unsettled_leases(&self) -> Vec<Lease> {
        self.lock()
            .values()
            .filter(|e| !e.settled)
            .map(|e| e.lease.clone())
            .collect()
    }

    /// The unsettled jobs whose handler ran past its deadline at `now`.
    pub fn overdue(&self, now: Instant) -> Vec<Overdue> {
        self.lock()
            .values()
            .filter(|e| !e.settled)
            .filter_map(|e| {
                let (started, deadline, slot) = e.started.as_ref()?;
                deadline.filter(|d| *d <= now).map(|_| {
                    (
                        e.lease.clone(),
                        now - *started,
                        Arc::clone(slot),
                        Arc::clone(&e.cancelled),
                    )
                })
            })
            .collect()
    }

    /// The unsettled jobs: lease, cancel flag, and the handler's slot if one started it.
    pub fn unsettled(&self) -> Vec<(Lease, Arc<AtomicBool>, Option<Arc<AtomicBool>>)> {
        self.lock()
            .values()
            .filter(|e| !e.settled)
            .map(|e| {
                let slot = e.started.as_ref().map(|s| Arc::clone(&s.2));
                (e.lease.clone(), Arc::clone(&e.cancelled), slot)
            })
            .collect()
    }
}

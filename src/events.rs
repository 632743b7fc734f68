//! Job events for subscribers in this process, and wake-ups for idle dispatchers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::job::{JobId, Status, Timestamp};

/// What happened to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new job was inserted (not sent for a repeated idempotency key).
    Enqueued,
    /// A worker claimed it.
    Claimed,
    /// It succeeded.
    Succeeded,
    /// An attempt failed and it waits for a retry.
    Retrying,
    /// It failed for good (dead letter).
    Failed,
    /// It was cancelled.
    Cancelled,
    /// A worker gave it back unstarted, or the stale release took it from a dead worker.
    Released,
    /// Its handler snoozed it: `queued` again, to run after a delay, the attempt unspent.
    Snoozed,
    /// An admin put a failed or cancelled job back in the queue.
    Retried,
    /// Its handler parked it (a sleep, a wait for an event): `waiting`, no slot held.
    Waiting,
    /// An event it waited for came: `queued` again.
    Woken,
    /// It was deleted.
    Deleted,
}

/// A change to one job, as seen by [`Queue::subscribe`](crate::Queue::subscribe).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// What happened.
    pub kind: EventKind,
    /// The job's status afterwards (`None` once deleted).
    pub status: Option<Status>,
    /// When, by the queue's clock.
    pub at: Timestamp,
}

impl JobEvent {
    pub(crate) fn new(
        job_id: JobId,
        kind: EventKind,
        status: Option<Status>,
        at_ms: i64,
    ) -> JobEvent {
        JobEvent {
            job_id,
            kind,
            status,
            at: Timestamp::from_millis(at_ms),
        }
    }
}

const SUBSCRIBER_CAPACITY: usize = 10_000;

/// Told, on the cancelling thread and before the cancel returns, of each running job
/// cancelled in this process; `false` means it is gone for good and may be forgotten.
pub(crate) type CancelListener = Box<dyn Fn(&JobId) -> bool + Send + Sync>;

#[derive(Default)]
pub(crate) struct EventBus {
    subscribers: Mutex<Vec<Sender<JobEvent>>>,
    subscriber_count: AtomicUsize,
    dispatchers: Mutex<Vec<Sender<()>>>,
    cancel_listeners: Mutex<Vec<CancelListener>>,
    /// Held by a recording from before its commit to its events, and by a claim for its
    /// events: a claim that takes a job the recording just made ready (a retry with no
    /// backoff) tells it after the recording's own events. Taken only while someone
    /// subscribes.
    order: Mutex<()>,
}

impl EventBus {
    pub(crate) fn subscribe(&self) -> Receiver<JobEvent> {
        let (tx, rx) = crossbeam_channel::bounded(SUBSCRIBER_CAPACITY);
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.push(tx);
        self.subscriber_count.store(subs.len(), Ordering::Release);
        rx
    }

    /// Sends the events `make` builds to every subscriber; builds nothing when there are none.
    /// While anyone subscribes, the turn of a change whose events must come before those
    /// of any claim that follows its commit: hold it from before the commit until its
    /// events are out.
    pub(crate) fn in_order(&self) -> Option<std::sync::MutexGuard<'_, ()>> {
        (self.subscriber_count.load(Ordering::Acquire) > 0)
            .then(|| self.order.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn emit(&self, make: impl FnOnce() -> Vec<JobEvent>) {
        if self.subscriber_count.load(Ordering::Acquire) == 0 {
            return;
        }
        let events = make();
        let mut subs = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subs.retain(|tx| {
            for event in &events {
                match tx.try_send(event.clone()) {
                    Ok(()) | Err(TrySendError::Full(_)) => {}
                    Err(TrySendError::Disconnected(_)) => return false,
                }
            }
            true
        });
        self.subscriber_count.store(subs.len(), Ordering::Release);
    }

    /// Sends a token on `tx` whenever new work may be ready (use a bounded(1) channel:
    /// tokens coalesce).
    pub(crate) fn register_dispatcher(&self, tx: Sender<()>) {
        self.dispatchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(tx);
    }

    /// Calls `listener` with the id of every running job cancelled in this process, on the
    /// cancelling thread, before the cancel returns (so a pool marks the job cancelled
    /// before anything else can happen to it); dropped once it returns `false`.
    pub(crate) fn register_cancel_listener(&self, listener: CancelListener) {
        self.cancel_listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(listener);
    }

    pub(crate) fn notify_cancelled(&self, id: &JobId) {
        let mut listeners = self
            .cancel_listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        listeners.retain(|listener| listener(id));
    }

    pub(crate) fn wake_dispatchers(&self) {
        let mut dispatchers = self
            .dispatchers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        dispatchers.retain(|tx| !matches!(tx.try_send(()), Err(TrySendError::Disconnected(_))));
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field(
                "subscribers",
                &self.subscriber_count.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

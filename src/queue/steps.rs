//! Durable steps and events: a job's stored steps, and the events that end its waits.
//! What a handler calls ([`JobContext::step`](crate::JobContext::step), `sleep_for`,
//! `wait_for_event`) is in `worker/durable.rs`; it reads and writes through these.

use serde_json::Value;

use super::Queue;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{JobId, Lease, Status};
use crate::model::{Emitted, EventQuery, EventRow, Step, check_text};

/// Longest event name, in characters.
pub const MAX_EVENT_NAME_CHARS: usize = 200;

impl Queue {
    /// Stores an event and wakes, in the same transaction, every job of this handle's owner
    /// waiting for `name` (`queued` at once; each reads `payload` when its wait runs again).
    /// The event stays stored for the event retention, so a job enqueued before it that
    /// waits for it only later still finds it. An admin handle emits events of no owner;
    /// an owner's handle, that owner's.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty name, one longer than 200 characters or one
    /// with a NUL character (nothing is stored); database errors.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// let queue = jobq::Queue::open(dir.path().join("jobs.db")).unwrap();
    /// let emitted = queue.emit_event("proof-approved", serde_json::json!({"by": "ann"})).unwrap();
    /// assert_eq!(emitted.woken, 0);
    /// ```
    pub fn emit_event(&self, name: &str, payload: Value) -> Result<Emitted> {
        check_event_name(name)?;
        let payload = payload.to_string();
        let now = self.now_ms();
        let (emitted, woken) = self
            .engine()
            .emit_event(self.owner(), name, Some(&payload), now)?;
        tracing::info!(
            event = name,
            id = emitted.id,
            woken = emitted.woken,
            "jobq: event emitted"
        );
        if !woken.is_empty() {
            self.shared.events.wake_dispatchers();
            self.emit(|| {
                woken
                    .iter()
                    .map(|id| {
                        JobEvent::new(id.clone(), EventKind::Woken, Some(Status::Queued), now)
                    })
                    .collect()
            });
        }
        Ok(emitted)
    }

    /// The stored steps of a job (its steps, sleeps and waits), in the order they began.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job; database errors.
    pub fn steps(&self, id: &JobId) -> Result<Vec<Step>> {
        self.engine()
            .steps(self.owner(), id)?
            .ok_or_else(|| Error::job_not_found(id))
    }

    /// Deletes the events emitted before `before` (ms); how many. The maintainer does this
    /// with the pool's event retention.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`] on an owner's handle; database errors.
    pub fn prune_events(&self, before: crate::job::Timestamp) -> Result<usize> {
        self.require_admin("prune events")?;
        self.engine().prune_events(before.as_millis())
    }

    /// Stores a step of the job `lease` holds (a heartbeat too, in effect: only its holder
    /// may).
    pub(crate) fn put_step(&self, lease: &Lease, step: &Step) -> Result<()> {
        self.engine().put_step(self.owner(), lease, step)
    }

    /// The first stored event a wait takes.
    pub(crate) fn find_event(&self, query: EventQuery<'_>) -> Result<Option<EventRow>> {
        self.engine().find_event(query)
    }
}

/// Refuses an event name that cannot be stored.
pub(crate) fn check_event_name(name: &str) -> Result<()> {
    check_text("event", name, MAX_EVENT_NAME_CHARS)
}

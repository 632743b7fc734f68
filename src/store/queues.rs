//! Queues' flow control, and their counts.

use crate::error::Result;
use crate::model::{QueueControl, QueueCount, QueueWrite};

/// Queues' flow control, and their counts.
pub(crate) trait QueueStore {
    /// Every queue with a row of flow control.
    fn queue_controls(&self) -> Result<Vec<QueueControl>>;

    /// Changes a queue's flow control (creating its row); returns it as it now is.
    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl>;

    /// Whether some queue is under flow control (as last seen): an idle pool then looks for
    /// work at every poll, since room can come back without an event (a rate's window).
    fn any_controlled(&self) -> bool {
        false
    }

    /// Jobs by queue in the statuses a queue listing shows (blocked, queued, running,
    /// retry), with the scheduled ones of `queued` and `retry`.
    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>>;
}

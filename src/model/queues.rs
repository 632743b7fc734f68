//! Queues' flow control, as stored, and their counts.

use crate::job::Status;

/// A queue's flow control, as stored: what the claim reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueControl {
    pub name: String,
    pub paused: bool,
    pub max_running: Option<u32>,
    pub max_running_per_key: Option<u32>,
    /// At most this many claims per this many milliseconds.
    pub rate: Option<(u32, i64)>,
}

impl QueueControl {
    /// Whether a claim must take it into account.
    pub(crate) fn is_controlled(&self) -> bool {
        self.paused
            || self.max_running.is_some()
            || self.max_running_per_key.is_some()
            || self.rate.is_some()
    }
}

/// A change to a queue's flow control: `Some(None)` clears a limit, `None` leaves it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueWrite {
    pub paused: Option<bool>,
    pub max_running: Option<Option<u32>>,
    pub max_running_per_key: Option<Option<u32>>,
    pub rate: Option<Option<(u32, i64)>>,
}

/// Jobs of one queue in one status (of the statuses a queue listing shows), and how many
/// of them wait for a `run_after` ahead.
pub(crate) type QueueCount = (String, Status, i64, i64);

//! Where a job stands: its stored status and the moves between them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a job stands. Statuses are always written in lowercase.
///
/// ```text
///  blocked ──last dependency succeeded──▶ queued   (a dependency failed ──▶ cancelled)
///  queued ──claim──▶ running ──complete──▶ succeeded
///    ▲  │              │  │
///    │  │              │  └──fail, attempts left──▶ retry ──run_after passes, claim──▶ running
///    │  │              └─────fail, none left / permanent error──▶ failed  (the dead letter)
///    │  └──cancel──▶ cancelled ◀──cancel── retry / running (cooperative)
///    └──────manual retry (from failed or cancelled; attempts start again)
///
///  running ──sleep / wait for an event──▶ waiting ──its time, claim──▶ running
///                                           │  └──the event──▶ queued
///                                           └──cancel──▶ cancelled
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its dependencies: `queued` in the transaction that records the last of
    /// them as succeeded; cancelled (error code `DEPENDENCY_FAILED`) when one fails or is
    /// cancelled, unless it runs anyway. Left otherwise only by a cancel.
    Blocked,
    /// Waiting for its `run_after` and a worker. Left by a claim (to `running`) or a cancel.
    Queued,
    /// Claimed by a worker, which holds its lock. Left by the worker's completion or
    /// failure, by a cancel, or by the stale release when the worker stops heartbeating.
    Running,
    /// Failed an attempt and waits for its backoff to pass; then claimed like `queued`.
    Retry,
    /// Done. Terminal.
    Succeeded,
    /// Failed with no attempts left, or permanently: the dead letter. Terminal; a manual
    /// retry puts it back in the queue.
    Failed,
    /// Cancelled by an admin. Terminal; a manual retry puts it back in the queue.
    Cancelled,
    /// Parked by its handler: sleeping until its `run_after`, or waiting for an event
    /// (`waiting_for`) until then at the latest. It holds no worker slot and spent no
    /// attempt. Claimed like `queued` once its time comes; `queued` at once when its
    /// event is emitted. Left otherwise only by a cancel.
    Waiting,
}

impl Status {
    /// Every status, in the order of the state machine.
    pub const ALL: [Status; 8] = [
        Status::Blocked,
        Status::Queued,
        Status::Running,
        Status::Retry,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
        Status::Waiting,
    ];

    /// The lowercase name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Blocked => "blocked",
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Retry => "retry",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Waiting => "waiting",
        }
    }

    /// True for `succeeded`, `failed` and `cancelled`: no transition leaves them but the
    /// explicit manual retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// True for the statuses a claim takes jobs from (`queued` and `retry`).
    pub fn is_ready(self) -> bool {
        matches!(self, Status::Queued | Status::Retry)
    }

    /// Whether the state machine allows moving from `self` to `to`.
    ///
    /// `blocked → queued` is made by the dependencies alone, never asked for.
    /// `running → queued` is the release of a job that was claimed but not run (a worker
    /// shutting down); `failed | cancelled → queued` is the manual retry.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Blocked, Cancelled)
                | (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Retry)
                | (Running, Cancelled)
                | (Running, Queued)
                | (Running, Waiting)
                | (Retry, Running)
                | (Retry, Cancelled)
                | (Waiting, Running)
                | (Waiting, Queued)
                | (Waiting, Cancelled)
                | (Failed, Queued)
                | (Cancelled, Queued)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;

    /// Parses a status name, ignoring case (`"FAILED"` is `failed`).
    fn from_str(s: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!(
                        "unknown status {s:?} (expected one of blocked, queued, running, retry, succeeded, failed, cancelled, waiting)"
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_refuse_everything_but_manual_retry() {
        for from in Status::ALL {
            for to in Status::ALL {
                let allowed = from.can_become(to);
                if from == Status::Succeeded {
                    assert!(!allowed, "succeeded -> {to} must be refused");
                }
                if from.is_terminal() && allowed {
                    assert_eq!(to, Status::Queued, "{from} -> {to} only by manual retry");
                }
            }
        }
    }

    #[test]
    fn transition_table_matches_the_design() {
        use Status::*;
        let allowed: Vec<(Status, Status)> = Status::ALL
            .into_iter()
            .flat_map(|f| Status::ALL.into_iter().map(move |t| (f, t)))
            .filter(|(f, t)| f.can_become(*t))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Blocked, Cancelled),
                (Queued, Running),
                (Queued, Cancelled),
                (Running, Queued),
                (Running, Retry),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Cancelled),
                (Running, Waiting),
                (Retry, Running),
                (Retry, Cancelled),
                (Failed, Queued),
                (Cancelled, Queued),
                (Waiting, Queued),
                (Waiting, Running),
                (Waiting, Cancelled),
            ]
        );
    }

    #[test]
    fn status_parses_any_case_and_refuses_unknown_names() {
        assert_eq!("FAILED".parse::<Status>().unwrap(), Status::Failed);
        assert_eq!("retry".parse::<Status>().unwrap(), Status::Retry);
        let err = "pending".parse::<Status>().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "status",
                    ..
                }
            ),
            "{err}"
        );
    }
}

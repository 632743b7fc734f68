//! Maintenance duties: releasing the jobs of dead workers, and pruning finished jobs.

use std::time::Duration;

use crate::clock::millis;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::Status;
use crate::model::StaleCutoffs;
use crate::queue::Queue;

/// When a running job counts as abandoned by its worker.
///
/// # Examples
///
/// ```
/// use jobq::StaleTimeouts;
/// use std::time::Duration;
///
/// let t = StaleTimeouts::default().heartbeat_timeout(Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct StaleTimeouts {
    heartbeat_timeout: Option<Duration>,
    lock_timeout: Option<Duration>,
}

impl Default for StaleTimeouts {
    /// A heartbeat older than 60 s; no lock timeout.
    fn default() -> Self {
        StaleTimeouts {
            heartbeat_timeout: Some(Duration::from_secs(60)),
            lock_timeout: None,
        }
    }
}

impl StaleTimeouts {
    /// Neither timeout: set at least one.
    pub fn none() -> StaleTimeouts {
        StaleTimeouts {
            heartbeat_timeout: None,
            lock_timeout: None,
        }
    }

    /// Released when its last heartbeat (or its claim, if it never beat) is older than
    /// this: the worker died or hangs. Defaults to 60 s.
    pub fn heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = Some(timeout);
        self
    }

    /// Released when it was claimed longer ago than this, heartbeat or not: a limit on how
    /// long any attempt may hold a job. Defaults to none.
    pub fn lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = Some(timeout);
        self
    }

    /// The heartbeat timeout, if set.
    pub fn heartbeat(&self) -> Option<Duration> {
        self.heartbeat_timeout
    }
}

/// How long the rollups keep their detail: minutes (default 48 hours) before they fold
/// into hours, and hours (default 90 days) before they fold into the all-time rows. Folding
/// never loses a count: totals stay exact, only the resolution of old times coarsens.
///
/// # Examples
///
/// ```
/// use jobq::RollupRetention;
/// use std::time::Duration;
///
/// let r = RollupRetention::default().minutes(Duration::from_secs(6 * 3600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct RollupRetention {
    minutes: Duration,
    hours: Duration,
}

impl Default for RollupRetention {
    fn default() -> Self {
        RollupRetention {
            minutes: Duration::from_secs(48 * 3600),
            hours: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

impl RollupRetention {
    /// How long minute rows are kept before they fold into hours.
    pub fn minutes(mut self, keep: Duration) -> Self {
        self.minutes = keep;
        self
    }

    /// How long hour rows are kept before they fold into the all-time rows.
    pub fn hours(mut self, keep: Duration) -> Self {
        self.hours = keep;
        self
    }
}

impl Queue {
    /// Folds the rollups' minutes older than `retention`'s into hours and its old hours
    /// into the all-time rows (the worker's maintainer does this every interval). Returns
    /// how many rows were folded. Whole hours fold: a minute folds once its hour has passed
    /// the retention.
    ///
    /// # Errors
    ///
    /// The engine's errors.
    pub fn fold_rollups(&self, retention: &RollupRetention) -> Result<usize> {
        let now = self.now_ms();
        let hour = crate::model::HOUR_MS;
        let minutes_before = now.saturating_sub(millis(retention.minutes));
        let hours_before = now.saturating_sub(millis(retention.hours));
        self.engine().fold_rollups(
            minutes_before - minutes_before.rem_euclid(hour),
            hours_before - hours_before.rem_euclid(hour),
        )
    }

    /// Releases running jobs whose worker stopped heartbeating (or held the lock too long):
    /// each goes to `retry`, claimable at once, with error code `HEARTBEAT_TIMEOUT` or
    /// `LOCK_TIMEOUT` and stage `released_stale` — or to `failed` when it has no attempts
    /// left. Returns how many were released.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when neither timeout is set.
    pub fn release_stale(&self, timeouts: &StaleTimeouts) -> Result<usize> {
        if timeouts.heartbeat_timeout.is_none() && timeouts.lock_timeout.is_none() {
            return Err(Error::invalid(
                "timeouts",
                "set a heartbeat timeout, a lock timeout, or both",
            ));
        }
        let now = self.now_ms();
        let cutoff = |t: Option<Duration>| t.map_or(i64::MIN, |t| now.saturating_sub(millis(t)));
        let cutoffs = StaleCutoffs {
            heartbeat_before: cutoff(timeouts.heartbeat_timeout),
            lock_before: cutoff(timeouts.lock_timeout),
        };
        let released = self.engine().release_stale(self.owner(), cutoffs, now)?;
        for r in &released {
            tracing::warn!(job_id = %r.id, worker = r.worker.as_deref().unwrap_or("?"), code = r.code, to = %r.status, "jobq: released stale job");
        }
        if released.iter().any(|r| r.status == Status::Retry) {
            self.shared.events.wake_dispatchers();
        }
        self.emit(|| {
            released
                .iter()
                .map(|r| {
                    let kind = if r.status == Status::Failed {
                        EventKind::Failed
                    } else {
                        EventKind::Released
                    };
                    JobEvent::new(r.id.clone(), kind, Some(r.status), now)
                })
                .collect()
        });
        Ok(released.len())
    }

    /// Deletes jobs that finished (with one of `statuses`) longer than `older_than` ago, in
    /// chunks so that writers are never held up for long. Returns how many were deleted.
    /// An empty `statuses` means every terminal status.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when a status is not terminal (`queued`, `running`, `retry`
    /// jobs are never pruned).
    pub fn prune(&self, older_than: Duration, statuses: &[Status]) -> Result<usize> {
        let statuses: Vec<Status> = if statuses.is_empty() {
            vec![Status::Succeeded, Status::Failed, Status::Cancelled]
        } else {
            statuses.to_vec()
        };
        if let Some(s) = statuses.iter().find(|s| !s.is_terminal()) {
            return Err(Error::invalid(
                "status",
                format!(
                    "{s} jobs are not finished and are never pruned (use succeeded, failed or cancelled)"
                ),
            ));
        }
        let cutoff = self.now_ms().saturating_sub(millis(older_than));
        let mut total = 0;
        loop {
            let n = self.engine().prune(self.owner(), &statuses, cutoff)?;
            total += n;
            if n == 0 {
                break;
            }
        }
        if total > 0 {
            tracing::info!(jobs = total, "jobq: pruned finished jobs");
        }
        Ok(total)
    }
}

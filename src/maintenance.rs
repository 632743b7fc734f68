//! Maintenance duties: releasing the jobs of dead workers, and pruning finished jobs.

use std::time::Duration;

use rusqlite::named_params;

use crate::clock::millis;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{JobId, Status};
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

/// Releases running jobs whose heartbeat or lock is too old: to `retry` (claimable at once)
/// or, with no attempts left, to `failed`. The code says which timeout passed.
const RELEASE_STALE: &str = "
    UPDATE jobq_jobs
    SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'retry' END,
        error_code = CASE WHEN coalesce(heartbeat_at, locked_at) < :heartbeat_cutoff
                          THEN 'HEARTBEAT_TIMEOUT' ELSE 'LOCK_TIMEOUT' END,
        last_error = CASE WHEN coalesce(heartbeat_at, locked_at) < :heartbeat_cutoff
                          THEN 'worker timed out: no heartbeat from ' || coalesce(locked_by, '?')
                               || ' for ' || ((:now - coalesce(heartbeat_at, locked_at)) / 1000) || ' s'
                          ELSE 'worker timed out: ' || coalesce(locked_by, '?') || ' held the lock for '
                               || ((:now - locked_at) / 1000) || ' s' END,
        errors = json_insert(errors, '$[#]', json_object(
            'attempt', attempts,
            'code', CASE WHEN coalesce(heartbeat_at, locked_at) < :heartbeat_cutoff
                         THEN 'HEARTBEAT_TIMEOUT' ELSE 'LOCK_TIMEOUT' END,
            'message', 'worker ' || coalesce(locked_by, '?') || ' timed out',
            'at', :now)),
        stage = 'released_stale', run_after = :now, updated_at = :now,
        completed_at = CASE WHEN attempts >= max_attempts THEN :now END
    WHERE status = 'running'
      AND (coalesce(heartbeat_at, locked_at) < :heartbeat_cutoff OR locked_at < :lock_cutoff)
      AND (:owner IS NULL OR owner = :owner)
    RETURNING id, status, error_code, locked_by";

/// One chunk of finished jobs to prune, oldest first by completion.
const PRUNE_CHUNK: &str = "
    DELETE FROM jobq_jobs WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE status IN (SELECT value FROM json_each(:statuses)) AND completed_at < :cutoff
          AND (:owner IS NULL OR owner = :owner)
        LIMIT 2000)";

impl Queue {
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
        let released: Vec<(JobId, Status, String, Option<String>)> = self.store().write(|tx| {
            let mut stmt = tx.prepare_cached(RELEASE_STALE)?;
            let rows = stmt.query_map(
                named_params! {
                    ":now": now,
                    ":heartbeat_cutoff": cutoff(timeouts.heartbeat_timeout),
                    ":lock_cutoff": cutoff(timeouts.lock_timeout),
                    ":owner": self.owner(),
                },
                |r| {
                    let status: String = r.get(1)?;
                    Ok((
                        JobId::from_db(r.get(0)?),
                        crate::store::sqlite::rows::status_column(1, &status)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                },
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        for (id, status, code, worker) in &released {
            tracing::warn!(job_id = %id, worker = worker.as_deref().unwrap_or("?"), code, to = %status, "jobq: released stale job");
        }
        if released.iter().any(|r| r.1 == Status::Retry) {
            self.shared.events.wake_dispatchers();
        }
        self.emit(|| {
            released
                .iter()
                .map(|(id, status, _, _)| {
                    let kind = if *status == Status::Failed {
                        EventKind::Failed
                    } else {
                        EventKind::Released
                    };
                    JobEvent::new(id.clone(), kind, Some(*status), now)
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
        let statuses_json = serde_json::to_string(&statuses)
            .map_err(|e| Error::invalid("status", e.to_string()))?;
        let cutoff = self.now_ms().saturating_sub(millis(older_than));
        let mut total = 0;
        loop {
            let n = self.store().write(|tx| {
                Ok(tx.prepare_cached(PRUNE_CHUNK)?.execute(named_params! {
                    ":cutoff": cutoff, ":statuses": statuses_json, ":owner": self.owner(),
                })?)
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_seeks_the_finished_index() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.store().connect().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_CHUNK}"))
            .unwrap()
            .query_map(
                named_params! {":cutoff": 1, ":statuses": "[\"failed\"]", ":owner": None::<String>},
                |r| r.get(3),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let plan = plan.join("\n");
        assert!(
            plan.contains("jobq_jobs_finished (status=? AND completed_at<?)"),
            "{plan}"
        );
    }
}

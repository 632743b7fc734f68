//! Maintenance: stale releases and pruning on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::{Connection, named_params};

use crate::error::{Error, Result};
use crate::job::{JobId, Status};
use crate::model::{Released, Scope, StaleCutoffs};
use crate::store::rules::PRUNE_CHUNK_ROWS;
use crate::store::sqlite::deps::{self, Settled};
use crate::store::sqlite::rows;

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
    RETURNING id, status, error_code, locked_by, dependents";

/// One chunk of finished jobs past the cutoff, except those a job that has not finished
/// waits for (it reads their output when it runs).
pub(super) const PRUNE_CHUNK: &str = "
    DELETE FROM jobq_jobs WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE status IN (SELECT value FROM json_each(:statuses)) AND completed_at < :cutoff
          AND (:owner IS NULL OR owner = :owner)
          AND (dependents = 0 OR NOT EXISTS (
              SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs w ON w.id_key = d.job_key
              WHERE d.dep_key = jobq_jobs.id_key
                AND w.status IN ('blocked', 'queued', 'running', 'retry')))
        LIMIT :chunk)";

pub(super) fn release_stale(
    conn: &Connection,
    scope: Scope<'_>,
    cutoffs: StaleCutoffs,
    now: i64,
) -> Result<Vec<Released>> {
    let mut stmt = conn.prepare_cached(RELEASE_STALE)?;
    let released: Vec<(Released, i64)> = stmt
        .query_map(
            named_params! {
                ":now": now,
                ":heartbeat_cutoff": cutoffs.heartbeat_before,
                ":lock_cutoff": cutoffs.lock_before,
                ":owner": scope,
            },
            |r| {
                let status: String = r.get(1)?;
                Ok((
                    Released {
                        id: JobId::from_db(r.get(0)?),
                        status: rows::status_column(1, &status)?,
                        code: r.get(2)?,
                        worker: r.get(3)?,
                    },
                    r.get(4)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<_>>()?;
    // A job that ran out of attempts ends: the jobs waiting for it settle.
    for (job, _) in released
        .iter()
        .filter(|(j, dependents)| *dependents > 0 && j.status == Status::Failed)
    {
        deps::settle(conn, &job.id, Settled::Ended(Status::Failed), now)?;
    }
    Ok(released.into_iter().map(|(job, _)| job).collect())
}

pub(super) fn prune(
    conn: &Connection,
    scope: Scope<'_>,
    statuses: &[Status],
    cutoff: i64,
) -> Result<usize> {
    let statuses =
        serde_json::to_string(statuses).map_err(|e| Error::invalid("status", e.to_string()))?;
    Ok(conn
        .prepare_cached(PRUNE_CHUNK)?
        .execute(named_params! {":cutoff": cutoff, ":statuses": statuses, ":owner": scope, ":chunk": PRUNE_CHUNK_ROWS})?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue;

    #[test]
    fn pruning_seeks_the_finished_index() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
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

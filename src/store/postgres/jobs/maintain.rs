//! Maintenance: stale releases and pruning on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use crate::error::Result;
use crate::job::Status;
use crate::model::{Released, Scope, StaleCutoffs};
use crate::store::postgres::Conn;
use crate::store::postgres::ids::job_id;
use crate::store::rules::PRUNE_CHUNK_ROWS;

/// Releases running jobs whose heartbeat or lock is too old: to `retry` (claimable at once)
/// or, with no attempts left, to `failed`. The code says which timeout passed.
const RELEASE_STALE: &str = "
    UPDATE jobq_jobs
    SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'retry' END,
        error_code = CASE WHEN coalesce(heartbeat_at, locked_at) < $2
                          THEN 'HEARTBEAT_TIMEOUT' ELSE 'LOCK_TIMEOUT' END,
        last_error = CASE WHEN coalesce(heartbeat_at, locked_at) < $2
                          THEN 'worker timed out: no heartbeat from ' || coalesce(locked_by, '?')
                               || ' for ' || (($1 - coalesce(heartbeat_at, locked_at)) / 1000) || ' s'
                          ELSE 'worker timed out: ' || coalesce(locked_by, '?') || ' held the lock for '
                               || (($1 - locked_at) / 1000) || ' s' END,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempts,
            'code', CASE WHEN coalesce(heartbeat_at, locked_at) < $2
                         THEN 'HEARTBEAT_TIMEOUT' ELSE 'LOCK_TIMEOUT' END,
            'message', 'worker ' || coalesce(locked_by, '?') || ' timed out',
            'at', $1)),
        stage = 'released_stale', run_after = $1, updated_at = $1,
        completed_at = CASE WHEN attempts >= max_attempts THEN $1 END
    WHERE status = 'running'
      AND (coalesce(heartbeat_at, locked_at) < $2 OR locked_at < $3)
      AND ($4::text IS NULL OR owner = $4)
    RETURNING id, status, error_code, locked_by";

/// One chunk of finished jobs past the cutoff, except those a job that has not finished
/// waits for (it reads their output when it runs).
const PRUNE_CHUNK: &str = "
    DELETE FROM jobq_jobs WHERE id IN (
        SELECT j.id FROM jobq_jobs j
        WHERE j.status = ANY($1) AND j.completed_at < $2 AND ($3::text IS NULL OR j.owner = $3)
          AND (j.dependents = 0 OR NOT EXISTS (
              SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs w ON w.id = d.job_id
              WHERE d.dep_id = j.id AND w.status IN ('blocked', 'queued', 'running', 'retry')))
        LIMIT $4)";

pub(super) fn release_stale(
    conn: &mut Conn,
    scope: Scope<'_>,
    cutoffs: StaleCutoffs,
    now: i64,
) -> Result<Vec<Released>> {
    let rows = conn.query(
        RELEASE_STALE,
        &[
            &now,
            &cutoffs.heartbeat_before,
            &cutoffs.lock_before,
            &scope,
        ],
    )?;
    rows.iter()
        .map(|r| {
            Ok(Released {
                id: job_id(r.get(0)),
                status: r.get::<_, String>(1).parse()?,
                code: r.get(2),
                worker: r.get(3),
            })
        })
        .collect()
}

pub(super) fn prune(
    conn: &mut Conn,
    scope: Scope<'_>,
    statuses: &[Status],
    cutoff: i64,
) -> Result<usize> {
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    Ok(conn.execute(
        PRUNE_CHUNK,
        &[&statuses, &cutoff, &scope, &PRUNE_CHUNK_ROWS],
    )? as usize)
}

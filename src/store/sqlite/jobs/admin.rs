//! Admins' changes on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, named_params, params};

use crate::error::{Error, Result};
use crate::job::{JobId, Status};
use crate::model::{Change, Scope};
use crate::store::rules::delete_refused;
use crate::store::sqlite::deps::{self, Settled};

const CANCEL: &str = "
    UPDATE jobq_jobs SET status = 'cancelled', completed_at = :now, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

/// What a manual retry sets: `queued` (`blocked` while a dependency has not settled: the
/// count of them is taken again), runnable now, attempts from zero, the last run's
/// traces cleared (its errors history is kept).
macro_rules! manual_retry_set {
    () => {
        concat!(
            "UPDATE jobq_jobs
    SET status = CASE WHEN ",
            waiting_recount!(),
            " > 0 THEN 'blocked' ELSE 'queued' END,
        attempts = 0, run_after = :now, locked_by = NULL, locked_at = NULL,
        heartbeat_at = NULL, stage = NULL, progress = 0, output = NULL, started_at = NULL,
        completed_at = NULL, updated_at = :now"
        )
    };
}

/// Of the job being updated, the dependencies that have not settled (for a job that runs
/// anyway, a dependency that ended in failure has).
macro_rules! waiting_recount {
    () => {
        "(SELECT count(*) FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
          WHERE d.job_key = jobq_jobs.id_key AND p.status <> 'succeeded'
            AND (coalesce((SELECT run_on_dependency_failure FROM jobq_job_options
                           WHERE job_key = jobq_jobs.id_key), 0) = 0
                 OR (p.status <> 'failed' AND p.status <> 'cancelled')))"
    };
}

const MANUAL_RETRY: &str = concat!(
    manual_retry_set!(),
    "
    WHERE id_key = :key AND id = :id AND status = :from"
);

/// One chunk of the dead letter back in the queue: failed jobs of a kind and queue (any,
/// when NULL) that failed before the retry began, through the finished index.
pub(super) const RETRY_DEAD_CHUNK: &str = concat!(
    manual_retry_set!(),
    "
    WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE status = 'failed' AND completed_at <= :now
          AND (:kind IS NULL OR kind = :kind) AND (:queue IS NULL OR queue = :queue)
          AND (:owner IS NULL OR owner = :owner)
        LIMIT 1000)
    RETURNING id, dependents"
);

pub(super) const DELETE: &str =
    "DELETE FROM jobq_jobs WHERE id_key = :key AND id = :id AND status = :from";

const TO_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'running', attempts = attempts + 1, claims = claims + 1, locked_by = 'manual', locked_at = :now,
        heartbeat_at = :now, started_at = :now, stage = 'claimed', progress = 0, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_SUCCEEDED: &str = "
    UPDATE jobq_jobs
    SET status = 'succeeded', stage = 'succeeded', progress = 1, completed_at = :now,
        updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_FAILED_OR_RETRY: &str = "
    UPDATE jobq_jobs
    SET status = :to, last_error = :message, error_code = 'MANUAL',
        errors = json_insert(errors, '$[#]',
            json_object('attempt', attempts, 'code', 'MANUAL', 'message', :message, 'at', :now)),
        run_after = CASE WHEN :to = 'retry' THEN :now ELSE run_after END,
        completed_at = CASE WHEN :to = 'failed' THEN :now END, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

const TO_QUEUED_FROM_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'queued', attempts = max(attempts - 1, 0), run_after = :now, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = :now
    WHERE id_key = :key AND id = :id AND status = :from";

/// The status of a job this scope may see, if there is one.
pub(crate) fn status_of(conn: &Connection, scope: Scope<'_>, id: &JobId) -> Result<Option<Status>> {
    let status: Option<String> = conn
        .prepare_cached(
            "SELECT status FROM jobq_jobs WHERE id_key = ?3 AND id = ?1 AND (?2 IS NULL OR owner = ?2)",
        )?
        .query_row(params![id.as_str(), scope, id.key()], |r| r.get(0))
        .optional()?;
    status.map(|s| s.parse()).transpose()
}

pub(super) fn change(
    conn: &Connection,
    scope: Scope<'_>,
    id: &JobId,
    change: Change<'_>,
    allowed: &dyn Fn(Status) -> Result<()>,
    now: i64,
) -> Result<Status> {
    let (from, dependents) =
        status_and_dependents(conn, scope, id)?.ok_or_else(|| Error::job_not_found(id))?;
    allowed(from)?;
    let retried = match change {
        Change::Retry { .. } => true,
        Change::To(Status::Queued, _) => from != Status::Running,
        _ => false,
    };
    if retried {
        if let Some((dependency, status)) = deps::failed_dependency(conn, id)? {
            return Err(crate::store::rules::retry_refused(
                id,
                from,
                &dependency,
                status,
            ));
        }
    }
    let settled = match change {
        Change::Cancel | Change::To(Status::Cancelled, _) => {
            Some(Settled::Ended(Status::Cancelled))
        }
        Change::To(Status::Failed, _) => Some(Settled::Ended(Status::Failed)),
        Change::To(Status::Succeeded, _) => Some(Settled::Succeeded),
        Change::Retry { .. } => Some(Settled::Retried),
        Change::To(Status::Queued, _) if from != Status::Running => Some(Settled::Retried),
        _ => None,
    }
    .filter(|_| dependents > 0);
    let applied = apply_change(conn, id, from, change, now)?;
    if retried {
        // A job that waits for others counts them again.
        conn.prepare_cached(deps::RECOUNT)?.execute([id.key()])?;
    }
    if let Some(how) = settled {
        deps::settle(conn, id, how, now)?;
    }
    Ok(applied)
}

/// The status of a job this scope may see, and how many jobs were enqueued to wait for it.
fn status_and_dependents(
    conn: &Connection,
    scope: Scope<'_>,
    id: &JobId,
) -> Result<Option<(Status, i64)>> {
    let row: Option<(String, i64)> = conn
        .prepare_cached(
            "SELECT status, dependents FROM jobq_jobs
             WHERE id_key = ?3 AND id = ?1 AND (?2 IS NULL OR owner = ?2)",
        )?
        .query_row(params![id.as_str(), scope, id.key()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    row.map(|(status, n)| Ok((status.parse()?, n))).transpose()
}

/// Applies an admin's change checked against `from`.
fn apply_change(
    conn: &Connection,
    id: &JobId,
    from: Status,
    change: Change<'_>,
    now: i64,
) -> Result<Status> {
    let p =
        named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now};
    let sql = match change {
        Change::Cancel | Change::To(Status::Cancelled, _) => CANCEL,
        Change::Retry { from_scratch } => {
            if from_scratch {
                conn.prepare_cached("DELETE FROM jobq_steps WHERE job_key = ?1")?
                    .execute([id.key()])?;
            }
            MANUAL_RETRY
        }
        Change::Delete => {
            if let Some(waiting) = deps::waiting_dependent(conn, id)? {
                return Err(delete_refused(id, from, &waiting));
            }
            conn.prepare_cached(DELETE)?.execute(
                named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str()},
            )?;
            return Ok(from);
        }
        Change::To(Status::Running, _) => TO_RUNNING,
        Change::To(Status::Succeeded, _) => TO_SUCCEEDED,
        Change::To(Status::Queued, _) if from == Status::Running => TO_QUEUED_FROM_RUNNING,
        // Never to `waiting`: only a handler parks its job (refused above the engine).
        Change::To(Status::Waiting, _) => {
            return Err(Error::invalid("status", "only its handler parks a job"));
        }
        // Never to `blocked`: no transition asks for it.
        Change::To(Status::Queued | Status::Blocked, _) => MANUAL_RETRY,
        Change::To(to @ (Status::Failed | Status::Retry), message) => {
            conn.prepare_cached(TO_FAILED_OR_RETRY)?
                .execute(named_params! {
                    ":id": id.as_str(), ":key": id.key(), ":from": from.as_str(), ":now": now,
                    ":to": to.as_str(), ":message": message,
                })?;
            return Ok(from);
        }
    };
    conn.prepare_cached(sql)?.execute(p)?;
    Ok(from)
}

pub(super) fn retry_dead(
    conn: &Connection,
    scope: Scope<'_>,
    kind: Option<&str>,
    queue: Option<&str>,
    now: i64,
) -> Result<Vec<JobId>> {
    let mut stmt = conn.prepare_cached(RETRY_DEAD_CHUNK)?;
    let rows: Vec<(JobId, i64)> = stmt
        .query_map(
            named_params! {":now": now, ":kind": kind, ":queue": queue, ":owner": scope},
            |r| Ok((JobId::from_db(r.get(0)?), r.get(1)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    for (id, dependents) in &rows {
        conn.prepare_cached(deps::RECOUNT)?.execute([id.key()])?;
        if *dependents > 0 {
            deps::settle(conn, id, Settled::Retried, now)?;
        }
    }
    Ok(rows.into_iter().map(|(id, _)| id).collect())
}

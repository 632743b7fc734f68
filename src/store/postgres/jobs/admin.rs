//! Admins' changes on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::{JobId, Status};
use crate::model::{Change, Scope};
use crate::store::postgres::Conn;
use crate::store::postgres::deps;
use crate::store::postgres::ids::{job_id, uuid_of};
use crate::store::rules::delete_refused;

/// The job's status, its row locked until commit.
const STATUS_FOR_UPDATE: &str =
    "SELECT status FROM jobq_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE";

const CANCEL: &str = "
    UPDATE jobq_jobs SET status = 'cancelled', completed_at = $1, updated_at = $1
    WHERE id = $2";

/// What a manual retry sets: `queued` (`blocked` while a dependency has not settled),
/// runnable now ($1), attempts from zero, the last
/// run's traces cleared (its errors history is kept).
macro_rules! manual_retry_set {
    () => {
        "UPDATE jobq_jobs
    SET status = CASE WHEN jobq_waiting(id) > 0 THEN 'blocked' ELSE 'queued' END,
        attempts = 0, run_after = $1,
        locked_by = NULL, locked_at = NULL, heartbeat_at = NULL, stage = NULL, progress = 0,
        output = NULL, started_at = NULL, completed_at = NULL, updated_at = $1"
    };
}

const MANUAL_RETRY: &str = concat!(manual_retry_set!(), " WHERE id = $2");

/// One chunk of the dead letter back in the queue: failed jobs of a kind and queue (any,
/// when NULL) that failed before the retry began.
const RETRY_DEAD_CHUNK: &str = concat!(
    manual_retry_set!(),
    "
    WHERE id IN (
        SELECT id FROM jobq_jobs
        WHERE status = 'failed' AND completed_at <= $1
          AND ($2::text IS NULL OR kind = $2) AND ($3::text IS NULL OR queue = $3)
          AND ($4::text IS NULL OR owner = $4)
        LIMIT 1000
        FOR UPDATE SKIP LOCKED)
    RETURNING id"
);

pub(super) const DELETE: &str = "DELETE FROM jobq_jobs WHERE id = $1";

// The statements below take $1 now and $2 the job.

const TO_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'running', attempts = attempts + 1, claims = claims + 1, locked_by = 'manual',
        locked_at = $1, heartbeat_at = $1, started_at = $1, stage = 'claimed', progress = 0,
        updated_at = $1
    WHERE id = $2";

const TO_SUCCEEDED: &str = "
    UPDATE jobq_jobs
    SET status = 'succeeded', stage = 'succeeded', progress = 1, completed_at = $1, updated_at = $1
    WHERE id = $2";

const TO_FAILED_OR_RETRY: &str = "
    UPDATE jobq_jobs
    SET status = $3::text, last_error = $4::text, error_code = 'MANUAL',
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempts, 'code', 'MANUAL', 'message', $4::text, 'at', $1::bigint)),
        run_after = CASE WHEN $3::text = 'retry' THEN $1 ELSE run_after END,
        completed_at = CASE WHEN $3::text = 'failed' THEN $1 END, updated_at = $1
    WHERE id = $2";

const TO_QUEUED_FROM_RUNNING: &str = "
    UPDATE jobq_jobs
    SET status = 'queued', attempts = greatest(attempts - 1, 0), run_after = $1, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = $1
    WHERE id = $2";

/// An admin's change in the caller's transaction: the row locked, its status checked by
/// `allowed`, then changed.
pub(super) fn change(
    conn: &mut Conn,
    scope: Scope<'_>,
    id: &JobId,
    change: Change<'_>,
    allowed: &dyn Fn(Status) -> Result<()>,
    now: i64,
) -> Result<Status> {
    let uuid = uuid_of(id)?;
    let row = conn
        .query_opt(STATUS_FOR_UPDATE, &[&uuid, &scope])?
        .ok_or_else(|| Error::job_not_found(id))?;
    let from: Status = row.get::<_, String>(0).parse()?;
    allowed(from)?;
    let sql = match change {
        Change::Cancel | Change::To(Status::Cancelled, _) => CANCEL,
        Change::Retry { .. } => MANUAL_RETRY,
        Change::Delete => {
            if let Some(waiting) = deps::waiting_dependent(conn, uuid)? {
                return Err(delete_refused(id, from, &waiting));
            }
            conn.execute(DELETE, &[&uuid])?;
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
            conn.execute(TO_FAILED_OR_RETRY, &[&now, &uuid, &to.as_str(), &message])?;
            return Ok(from);
        }
    };
    if sql == MANUAL_RETRY {
        if let Some((dependency, status)) = deps::failed_dependency(conn, uuid)? {
            return Err(crate::store::rules::retry_refused(
                id,
                from,
                &dependency,
                status,
            ));
        }
    }
    if let Change::Retry { from_scratch: true } = change {
        conn.execute("DELETE FROM jobq_steps WHERE job_id = $1", &[&uuid])?;
    }
    conn.execute(sql, &[&now, &uuid])?;
    if sql == MANUAL_RETRY {
        // A job that waits for others counts them again.
        conn.execute(RECOUNT, &[&vec![uuid]])?;
    }
    Ok(from)
}

/// The count of what each job ($1) waits for, taken again.
const RECOUNT: &str =
    "UPDATE jobq_job_options SET waiting_on = jobq_waiting(job_id) WHERE job_id = ANY($1)";

pub(super) fn retry_dead(
    conn: &mut Conn,
    scope: Scope<'_>,
    kind: Option<&str>,
    queue: Option<&str>,
    now: i64,
) -> Result<Vec<JobId>> {
    let rows = conn.query(RETRY_DEAD_CHUNK, &[&now, &kind, &queue, &scope])?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.get(0)).collect();
    conn.execute(RECOUNT, &[&ids])?;
    Ok(ids.into_iter().map(job_id).collect())
}

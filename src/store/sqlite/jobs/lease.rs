//! What a worker reports under its lease on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, named_params, params};

use super::admin::status_of;
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{JobId, Lease, MAX_COST_CENTS, Status};
use crate::model::{Progress, Record, Recorded, Scope, Step};
use crate::store::rules::cost_too_high;
use crate::store::sqlite::deps::{self, Settled};
use crate::store::sqlite::rows;

/// The lease guard, written once: the job (?1 its row key, ?2 its id) is `running`, held by
/// the worker ?3 under the claim ?4, and visible to the owner ?5 (NULL: any). Every
/// statement a worker's report runs uses it and binds these five first.
macro_rules! held {
    () => {
        "id_key = ?1 AND id = ?2 AND status = 'running' AND locked_by = ?3 AND claims = ?4
      AND (?5 IS NULL OR owner = ?5)"
    };
}

/// The lease guard's parameters, in their order.
fn lease_params<'a>(lease: &'a Lease, scope: Scope<'a>) -> [ToSqlOutput<'a>; 5] {
    [
        ToSqlOutput::Owned(Value::Integer(lease.job_id.key())),
        ToSqlOutput::Borrowed(ValueRef::Text(lease.job_id.as_str().as_bytes())),
        ToSqlOutput::Borrowed(ValueRef::Text(lease.worker.as_bytes())),
        ToSqlOutput::Owned(Value::Integer(i64::from(lease.claim))),
        scope.map_or(ToSqlOutput::Owned(Value::Null), |o| {
            ToSqlOutput::Borrowed(ValueRef::Text(o.as_bytes()))
        }),
    ]
}

/// Binds the lease guard's parameters and then `rest` (from ?6 on), and executes.
fn execute_held(
    conn: &Connection,
    sql: &str,
    lease: &Lease,
    scope: Scope<'_>,
    rest: &[&dyn rusqlite::ToSql],
) -> Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    for (i, value) in lease_params(lease, scope).into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)?;
    }
    for (i, value) in rest.iter().enumerate() {
        stmt.raw_bind_parameter(i + 6, value)?;
    }
    Ok(stmt.raw_execute()?)
}

/// The hot path of the completer: ?6 output, ?7 cost added, ?8 now.
macro_rules! complete {
    () => {
        "UPDATE jobq_jobs
    SET status = 'succeeded', output = ?6, cost_cents = cost_cents + ?7,
        stage = 'succeeded', progress = 1, completed_at = ?8, updated_at = ?8
    WHERE "
    };
}

/// A job others wait for misses it (`dependents = 0`) and goes through
/// [`COMPLETE_WAITED_ON`], which settles them: the hot path reads nothing more.
const COMPLETE: &str = concat!(complete!(), held!(), " AND dependents = 0");

/// The same for a job others wait for, whose dependents are then settled.
const COMPLETE_WAITED_ON: &str = concat!(complete!(), held!(), " AND dependents > 0");

/// ?6 the new status (`retry` or `failed`), ?7 when a retry runs, ?8 the message, ?9 the
/// code, ?10 now.
macro_rules! fail {
    () => {
        "UPDATE jobq_jobs
    SET status = ?6,
        run_after = CASE WHEN ?6 = 'retry' THEN ?7 ELSE run_after END,
        stage = CASE WHEN stage = 'claimed' THEN ?6 ELSE stage END,
        last_error = ?8, error_code = ?9,
        errors = json_insert(errors, '$[#]', json_patch(
            json_object('attempt', attempts, 'code', ?9, 'message', ?8, 'at', ?10),
            CASE WHEN ?11 IS NULL THEN '{}' ELSE json_object('detail', ?11) END)),
        completed_at = CASE WHEN ?6 = 'failed' THEN ?10 END,
        updated_at = ?10
    WHERE "
    };
}

/// As [`COMPLETE`]: a job others wait for goes through [`FAIL_WAITED_ON`].
const FAIL: &str = concat!(fail!(), held!(), " AND dependents = 0");

const FAIL_WAITED_ON: &str = concat!(fail!(), held!(), " AND dependents > 0");

/// A release (?6 now) or a snooze (?6 later): back to `queued`, the attempt unspent. ?7 now;
/// ?8 added to the snoozes (1 for a snooze, 0 for a release).
const RELEASE: &str = concat!(
    "UPDATE jobq_jobs
    SET status = 'queued', attempts = attempts - 1, run_after = ?6, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = ?7,
        snoozes = snoozes + ?8
    WHERE ",
    held!()
);

/// A job parks itself (a sleep, a wait for an event): `waiting` until ?6, waiting for the
/// event ?7 (NULL: a sleep), the attempt unspent. ?8 now.
const WAIT: &str = concat!(
    "UPDATE jobq_jobs
    SET status = 'waiting', attempts = attempts - 1, run_after = ?6, wait_for = ?7,
        heartbeat_at = NULL, started_at = NULL, updated_at = ?8
    WHERE ",
    held!()
);

/// A job that parked to wait for an event already stored (emitted between its look and its
/// park) is `queued` at once: ?1 its row key, ?2 its id, ?3 now, ?4 the event id its wait
/// takes events after.
const WAKE_IF_EMITTED: &str = "
    UPDATE jobq_jobs SET status = 'queued', wait_for = NULL, run_after = ?3, updated_at = ?3
    WHERE id_key = ?1 AND id = ?2 AND status = 'waiting'
      AND EXISTS (SELECT 1 FROM jobq_events e
                  WHERE e.owner = coalesce(jobq_jobs.owner, '') AND e.name = jobq_jobs.wait_for
                    AND e.id > ?4 AND e.created_at >= jobq_jobs.created_at)";

/// A step of the job held: ?6 name, ?7 kind, ?8 output, ?9 event, ?10 event id, ?11 wake
/// time, ?12 start, ?13 end, ?14 position.
const PUT_STEP: &str = concat!(
    "INSERT INTO jobq_steps (job_key, name, kind, output, event, event_id, wake_at, started_at,
                            ended_at, position)
    SELECT id_key, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 FROM jobq_jobs WHERE ",
    held!(),
    "
    ON CONFLICT (job_key, name) DO UPDATE SET
        kind = excluded.kind, output = excluded.output, event = excluded.event,
        event_id = excluded.event_id, wake_at = excluded.wake_at,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        position = excluded.position"
);

/// ?6 now.
const HEARTBEAT: &str = concat!("UPDATE jobq_jobs SET heartbeat_at = ?6 WHERE ", held!());

/// ?6 progress (NULL: unchanged), ?7 stage (NULL: unchanged), ?8 cost added, ?9 now.
const REPORT: &str = concat!(
    "UPDATE jobq_jobs
    SET progress = coalesce(?6, progress), stage = coalesce(?7, stage),
        cost_cents = cost_cents + ?8, heartbeat_at = ?9, updated_at = ?9
    WHERE ",
    held!()
);

const LEASED_JOB: &str = concat!(
    "SELECT queue, kind, max_attempts, cost_cents, snoozes FROM jobq_jobs WHERE ",
    held!()
);

/// Every job one worker holds, each under its own claim, in one statement: `:held` is a
/// JSON array of `[key, id, claim]`.
const HEARTBEAT_MANY: &str = "
    WITH held(key, id, claim) AS (
        SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(:held))
    UPDATE jobq_jobs SET heartbeat_at = :now
    FROM held
    WHERE jobq_jobs.id_key = held.key AND jobq_jobs.id = held.id
      AND jobq_jobs.claims = held.claim AND jobq_jobs.status = 'running'
      AND jobq_jobs.locked_by = :worker
      AND (:owner IS NULL OR jobq_jobs.owner = :owner)
    RETURNING jobq_jobs.id, jobq_jobs.claims";

/// Records one report inside the caller's transaction; `again` as in `JobStore::record`.
pub(super) fn record(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    report: Record<'_>,
    again: bool,
    now: i64,
) -> Result<Recorded> {
    match record_once(conn, scope, lease, report, now) {
        Err(Error::LockLost { status, .. })
            if again && status == Recorded::of(&report).status && still_ours(conn, lease)? =>
        {
            Ok(Recorded::of(&report))
        }
        other => other,
    }
}

/// Whether the job's last claim is still `lease`'s (whatever its status).
fn still_ours(conn: &Connection, lease: &Lease) -> Result<bool> {
    let row: Option<(Option<String>, u32)> = conn
        .prepare_cached("SELECT locked_by, claims FROM jobq_jobs WHERE id_key = ?1 AND id = ?2")?
        .query_row(params![lease.job_id.key(), lease.job_id.as_str()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.is_some_and(|(by, claims)| {
        by.as_deref() == Some(lease.worker.as_str()) && claims == lease.claim
    }))
}

fn record_once(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    report: Record<'_>,
    now: i64,
) -> Result<Recorded> {
    // A job that others wait for settles them in this transaction.
    let mut readied = false;
    let (changed, recorded) = match report {
        Record::Complete { output, cost_cents } => {
            check_cost_room(conn, scope, lease, cost_cents)?;
            let values: [&dyn rusqlite::ToSql; 3] = [&output, &cost_cents, &now];
            let mut n = execute_held(conn, COMPLETE, lease, scope, &values)?;
            if n == 0 {
                n = execute_held(conn, COMPLETE_WAITED_ON, lease, scope, &values)?;
                if n > 0 {
                    readied = deps::settle(conn, &lease.job_id, Settled::Succeeded, now)?;
                }
            }
            (n, Recorded::new(Status::Succeeded))
        }
        Record::Release => {
            let n = execute_held(conn, RELEASE, lease, scope, &[&now, &now, &0])?;
            (n, Recorded::new(Status::Queued))
        }
        Record::Snooze { run_after, counted } => {
            let n = execute_held(
                conn,
                RELEASE,
                lease,
                scope,
                &[&run_after, &now, &i64::from(counted)],
            )?;
            (n, Recorded::of(&report))
        }
        Record::Wait {
            run_after,
            event,
            after_event,
        } => {
            let n = execute_held(conn, WAIT, lease, scope, &[&run_after, &event, &now])?;
            let mut recorded = Recorded::of(&report);
            if n > 0 && event.is_some() {
                let woke = conn.prepare_cached(WAKE_IF_EMITTED)?.execute(params![
                    lease.job_id.key(),
                    lease.job_id.as_str(),
                    now,
                    after_event
                ])?;
                if woke > 0 {
                    recorded = Recorded::new(Status::Queued);
                }
            }
            (n, recorded)
        }
        Record::Fail {
            error,
            status,
            retry_at,
        } => {
            let values: [&dyn rusqlite::ToSql; 6] = [
                &status.as_str(),
                &retry_at,
                &error.stored_message(),
                &error.stored_code(),
                &now,
                &error.stored_detail(),
            ];
            let mut n = execute_held(conn, FAIL, lease, scope, &values)?;
            if n == 0 {
                n = execute_held(conn, FAIL_WAITED_ON, lease, scope, &values)?;
                if n > 0 && status == Status::Failed {
                    readied = deps::settle(conn, &lease.job_id, Settled::Ended(status), now)?;
                }
            }
            let retry_at = (status == Status::Retry).then_some(retry_at);
            (
                n,
                Recorded {
                    status,
                    retry_at,
                    readied: false,
                },
            )
        }
    };
    if changed == 0 {
        return Err(lost(conn, scope, lease)?);
    }
    Ok(recorded.readying(readied))
}

/// What a failure's decision needs of the job `lease` holds.
pub(super) fn leased(conn: &Connection, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
    let mut stmt = conn.prepare_cached(LEASED_JOB)?;
    for (i, value) in lease_params(lease, scope).into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)?;
    }
    let mut rows = stmt.raw_query();
    match rows.next()? {
        Some(r) => Ok(LeasedJob {
            queue: r.get(0)?,
            kind: r.get(1)?,
            max_attempts: r.get(2)?,
            snoozes: r.get(4)?,
        }),
        None => {
            drop(rows);
            Err(lost(conn, scope, lease)?)
        }
    }
}

/// Refuses adding `cost` to the job `lease` holds when its total would pass
/// [`MAX_COST_CENTS`].
fn check_cost_room(conn: &Connection, scope: Scope<'_>, lease: &Lease, cost: i64) -> Result<()> {
    if cost == 0 {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(LEASED_JOB)?;
    for (i, value) in lease_params(lease, scope).into_iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, value)?;
    }
    let current = {
        let mut rows = stmt.raw_query();
        match rows.next()? {
            Some(r) => Some(rows::cost_column(r, 3)?),
            None => None,
        }
    };
    match current {
        None => Err(lost(conn, scope, lease)?),
        Some(current) if current + cost > MAX_COST_CENTS => {
            Err(cost_too_high(&lease.job_id, current, cost))
        }
        Some(_) => Ok(()),
    }
}

/// Explains why a guarded statement changed nothing: the job is gone (or another owner's),
/// or it is no longer held under this lease.
fn lost(conn: &Connection, scope: Scope<'_>, lease: &Lease) -> Result<Error> {
    Ok(match status_of(conn, scope, &lease.job_id)? {
        None => Error::job_not_found(&lease.job_id),
        Some(status) => Error::LockLost {
            job: lease.job_id.clone(),
            worker: lease.worker.clone(),
            attempt: lease.attempt,
            status,
        },
    })
}

/// Stores a step of the job `lease` holds.
pub(crate) fn put_step(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    step: &Step,
) -> Result<()> {
    let values: [&dyn rusqlite::ToSql; 9] = [
        &step.name,
        &step.kind.as_str(),
        &step.output,
        &step.event,
        &step.event_id,
        &step.wake_at,
        &step.started_at,
        &step.ended_at,
        &step.position,
    ];
    if execute_held(conn, PUT_STEP, lease, scope, &values)? == 0 {
        return Err(lost(conn, scope, lease)?);
    }
    Ok(())
}

pub(super) fn heartbeat(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    now: i64,
) -> Result<()> {
    if execute_held(conn, HEARTBEAT, lease, scope, &[&now])? == 0 {
        return Err(lost(conn, scope, lease)?);
    }
    Ok(())
}

pub(super) fn heartbeat_many(
    conn: &Connection,
    scope: Scope<'_>,
    worker: &str,
    held: &[(JobId, u32)],
    now: i64,
) -> Result<Vec<(JobId, u32)>> {
    let held: Vec<(i64, &str, u32)> = held
        .iter()
        .map(|(id, claim)| (id.key(), id.as_str(), *claim))
        .collect();
    let held = serde_json::to_string(&held).map_err(|e| Error::invalid("ids", e.to_string()))?;
    let mut stmt = conn.prepare_cached(HEARTBEAT_MANY)?;
    let rows = stmt.query_map(
        named_params! {":held": held, ":worker": worker, ":now": now, ":owner": scope},
        |r| Ok((JobId::from_db(r.get::<_, String>(0)?), r.get::<_, u32>(1)?)),
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(super) fn report(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    update: Progress<'_>,
    now: i64,
) -> Result<()> {
    check_cost_room(conn, scope, lease, update.cost_cents)?;
    let n = execute_held(
        conn,
        REPORT,
        lease,
        scope,
        &[&update.progress, &update.stage, &update.cost_cents, &now],
    )?;
    if n == 0 {
        return Err(lost(conn, scope, lease)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How many temporary tables a statement's program opens.
    fn ephemeral_tables(conn: &Connection, sql: &str) -> usize {
        let mut stmt = conn.prepare(&format!("EXPLAIN {sql}")).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<Value> = (0..n).map(|_| Value::Null).collect();
        stmt.query_map(rusqlite::params_from_iter(params), |r| {
            r.get::<_, String>(1)
        })
        .unwrap()
        .filter(|op| op.as_ref().is_ok_and(|op| op == "OpenEphemeral"))
        .count()
    }

    /// The reports on the hot path change a job's status, so SQLite checks the conditions
    /// of the partial indexes on the old and new rows: written as IN lists of three values,
    /// each check built a temporary table (the drain cost 46% more instructions).
    #[test]
    fn the_reports_on_the_hot_path_build_no_temporary_table() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        for sql in [COMPLETE, FAIL, RELEASE, WAIT, HEARTBEAT] {
            assert_eq!(ephemeral_tables(&conn, sql), 0, "{sql}");
        }
    }
}

//! What a worker reports under its lease on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{JobId, Lease, MAX_COST_CENTS, Status};
use crate::model::{Progress, Record, Recorded, Scope, Step};
use crate::store::postgres::Conn;
use crate::store::postgres::ids::{int, job_id, uuid_of};
use crate::store::rules::cost_too_high;

/// The lease guard, written once: the job ($1) is `running`, held by the worker $2 under
/// the claim $3, and visible to the owner $4 (NULL: any). Every statement a worker's report
/// runs binds these four first.
macro_rules! held {
    () => {
        "id = $1 AND status = 'running' AND locked_by = $2 AND claims = $3
      AND ($4::text IS NULL OR owner = $4)"
    };
}

/// Every success of a batch in one statement: arrays of ids, workers, claims, outputs and
/// costs added, each row under its own lease; a cost that would pass the bound is not
/// applied (and explained afterwards).
const COMPLETE_MANY: &str = "
    UPDATE jobq_jobs AS j
    SET status = 'succeeded', output = r.output::json, cost_cents = j.cost_cents + r.cost,
        stage = 'succeeded', progress = 1, completed_at = $6, updated_at = $6
    FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::bigint[])
         AS r(id, worker, claim, output, cost)
    WHERE j.id = r.id AND j.status = 'running' AND j.locked_by = r.worker AND j.claims = r.claim
      AND ($7::text IS NULL OR j.owner = $7) AND j.cost_cents + r.cost <= 1000000000000
    RETURNING j.id, j.dependents > 0";

/// $5 the new status (`retry` or `failed`), $6 when a retry runs, $7 the message, $8 the
/// code, $9 now.
const FAIL: &str = concat!(
    "UPDATE jobq_jobs
    SET status = $5::text,
        run_after = CASE WHEN $5::text = 'retry' THEN $6 ELSE run_after END,
        stage = CASE WHEN stage = 'claimed' THEN $5::text ELSE stage END,
        last_error = $7::text, error_code = $8::text,
        errors = errors || jsonb_build_array(jsonb_build_object(
            'attempt', attempts, 'code', $8::text, 'message', $7::text, 'at', $9::bigint)
            || CASE WHEN $10::text IS NULL THEN '{}'::jsonb
                    ELSE jsonb_build_object('detail', $10::text) END),
        completed_at = CASE WHEN $5::text = 'failed' THEN $9 END,
        updated_at = $9
    WHERE ",
    held!(),
    " RETURNING dependents > 0"
);

/// A job parks itself (a sleep, a wait for an event): `waiting` until $5, waiting for the
/// event $6 (NULL: a sleep), the attempt unspent. $7 now.
const WAIT: &str = concat!(
    "UPDATE jobq_jobs
    SET status = 'waiting', attempts = attempts - 1, run_after = $5, wait_for = $6::text,
        heartbeat_at = NULL, started_at = NULL, updated_at = $7
    WHERE ",
    held!()
);

/// A job that parked to wait for an event already stored (emitted between its look and its
/// park) is `queued` at once: $1 the job, $2 now, $3 the event id its wait takes events
/// after.
const WAKE_IF_EMITTED: &str = "
    UPDATE jobq_jobs SET status = 'queued', wait_for = NULL, run_after = $2, updated_at = $2
    WHERE id = $1 AND status = 'waiting'
      AND EXISTS (SELECT 1 FROM jobq_events e
                  WHERE e.owner = coalesce(jobq_jobs.owner, '') AND e.name = jobq_jobs.wait_for
                    AND e.id > $3 AND e.created_at >= jobq_jobs.created_at)";

/// Waits and emits of one event name take turns: a wait that looked for the event and
/// parks, and an emit that stores it and wakes the parked, each in one transaction under
/// this lock, so that neither misses the other.
pub(crate) const EVENT_LOCK: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))";

/// A step of the job held: $5 name, $6 kind, $7 output, $8 event, $9 event id, $10 wake
/// time, $11 start, $12 end, $13 position.
const PUT_STEP: &str = concat!(
    "INSERT INTO jobq_steps (job_id, name, kind, output, event, event_id, wake_at, started_at,
                            ended_at, position)
    SELECT id, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM jobq_jobs WHERE ",
    held!(),
    "
    ON CONFLICT (job_id, name) DO UPDATE SET
        kind = excluded.kind, output = excluded.output, event = excluded.event,
        event_id = excluded.event_id, wake_at = excluded.wake_at,
        started_at = excluded.started_at, ended_at = excluded.ended_at,
        position = excluded.position"
);

/// A release ($5 now) or a snooze ($5 later): back to `queued`, the attempt unspent. $6 now;
/// $7 added to the snoozes (1 for a snooze, 0 for a release).
const RELEASE: &str = concat!(
    "UPDATE jobq_jobs
    SET status = 'queued', attempts = attempts - 1, run_after = $5, stage = NULL,
        progress = 0, heartbeat_at = NULL, started_at = NULL, updated_at = $6,
        snoozes = snoozes + $7
    WHERE ",
    held!()
);

/// $5 now.
const HEARTBEAT: &str = concat!("UPDATE jobq_jobs SET heartbeat_at = $5 WHERE ", held!());

/// $5 progress (NULL: unchanged), $6 stage (NULL: unchanged), $7 cost added, $8 now.
const REPORT: &str = concat!(
    "UPDATE jobq_jobs
    SET progress = coalesce($5, progress), stage = coalesce($6, stage),
        cost_cents = cost_cents + $7, heartbeat_at = $8, updated_at = $8
    WHERE ",
    held!(),
    " AND cost_cents + $7 <= 1000000000000"
);

const LEASED_JOB: &str = concat!(
    "SELECT queue, kind, max_attempts, snoozes FROM jobq_jobs WHERE ",
    held!()
);

/// Every job one worker holds, each under its own claim.
const HEARTBEAT_MANY: &str = "
    UPDATE jobq_jobs AS j SET heartbeat_at = $1
    FROM unnest($2::uuid[], $3::int[]) AS h(id, claim)
    WHERE j.id = h.id AND j.claims = h.claim AND j.status = 'running' AND j.locked_by = $4
      AND ($5::text IS NULL OR j.owner = $5)
    RETURNING j.id, j.claims";

/// What became of a job a lease was about: its status, its worker and claim, its cost.
const LEASE_STATE: &str = "
    SELECT status, locked_by, claims, cost_cents FROM jobq_jobs
    WHERE id = $1 AND ($2::text IS NULL OR owner = $2)";

/// Records reports: the successes in one statement, the rest one by one, each in
/// autocommit (each report stands alone: a lost lease refuses that report only).
pub(super) fn record(
    conn: &mut Conn,
    scope: Scope<'_>,
    reports: &[(&Lease, Record<'_>)],
    again: bool,
    now: i64,
) -> Result<Vec<Result<Recorded>>> {
    let mut results: Vec<Option<Result<Recorded>>> = (0..reports.len()).map(|_| None).collect();
    let completes: Vec<(usize, &Lease, &str, i64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, (lease, report))| match report {
            Record::Complete { output, cost_cents } => Some((i, *lease, *output, *cost_cents)),
            _ => None,
        })
        .collect();
    if !completes.is_empty() {
        let mut ids = Vec::with_capacity(completes.len());
        for (_, lease, _, _) in &completes {
            ids.push(uuid_of(&lease.job_id)?);
        }
        let workers: Vec<&str> = completes.iter().map(|c| c.1.worker.as_str()).collect();
        let claims: Vec<i32> = completes.iter().map(|c| int(c.1.claim)).collect();
        let outputs: Vec<&str> = completes.iter().map(|c| c.2).collect();
        let costs: Vec<i64> = completes.iter().map(|c| c.3).collect();
        let done: std::collections::HashMap<Uuid, bool> = conn
            .query(
                COMPLETE_MANY,
                &[&ids, &workers, &claims, &outputs, &costs, &now, &scope],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        for ((i, lease, _, cost), id) in completes.iter().zip(&ids) {
            results[*i] = Some(if let Some(readied) = done.get(id) {
                Ok(Recorded::new(Status::Succeeded).readying(*readied))
            } else {
                explain(
                    conn,
                    scope,
                    lease,
                    again.then_some(Recorded::new(Status::Succeeded)),
                    *cost,
                )
            });
        }
    }
    for (i, (lease, report)) in reports.iter().enumerate() {
        let sql: &'static str = match report {
            Record::Complete { .. } => continue,
            Record::Release | Record::Snooze { .. } => RELEASE,
            Record::Fail { .. } => FAIL,
            Record::Wait { .. } => {
                results[i] = Some(park(conn, scope, lease, report, again, now));
                continue;
            }
        };
        let id = uuid_of(&lease.job_id)?;
        let held: [&(dyn postgres::types::ToSql + Sync); 4] =
            [&id, &lease.worker, &claim_of(lease), &scope];
        let mut readied = false;
        let n = match report {
            Record::Release => conn.execute(
                sql,
                &[held[0], held[1], held[2], held[3], &now, &now, &0i32],
            )?,
            Record::Snooze { run_after, counted } => conn.execute(
                sql,
                &[
                    held[0],
                    held[1],
                    held[2],
                    held[3],
                    run_after,
                    &now,
                    &i32::from(*counted),
                ],
            )?,
            Record::Fail {
                error,
                status,
                retry_at,
            } => match conn.query_opt(
                sql,
                &[
                    held[0],
                    held[1],
                    held[2],
                    held[3],
                    &status.as_str(),
                    retry_at,
                    &error.stored_message(),
                    &error.stored_code(),
                    &now,
                    &error.stored_detail(),
                ],
            )? {
                Some(row) => {
                    readied = row.get(0);
                    1
                }
                None => 0,
            },
            Record::Complete { .. } | Record::Wait { .. } => 0,
        };
        results[i] = Some(if n == 1 {
            Ok(Recorded::of(report).readying(readied))
        } else {
            explain(conn, scope, lease, again.then_some(Recorded::of(report)), 0)
        });
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::invalid("report", "not recorded"))))
        .collect())
}

/// Parks the job `lease` holds (`report` is a [`Record::Wait`]), in a transaction of its own
/// (see [`EVENT_LOCK`]).
fn park(
    conn: &mut Conn,
    scope: Scope<'_>,
    lease: &Lease,
    report: &Record<'_>,
    again: bool,
    now: i64,
) -> Result<Recorded> {
    let Record::Wait {
        run_after,
        event,
        after_event,
    } = *report
    else {
        return Err(Error::invalid("report", "not a wait"));
    };
    let id = uuid_of(&lease.job_id)?;
    conn.batch("BEGIN")?;
    let parked = (|| -> Result<(u64, u64)> {
        if let Some(name) = event {
            conn.execute(EVENT_LOCK, &[&name])?;
        }
        let params: [&(dyn postgres::types::ToSql + Sync); 7] = [
            &id,
            &lease.worker,
            &claim_of(lease),
            &scope,
            &run_after,
            &event,
            &now,
        ];
        let n = conn.execute(WAIT, &params)?;
        let woke = if n == 1 && event.is_some() {
            conn.execute(WAKE_IF_EMITTED, &[&id, &now, &after_event])?
        } else {
            0
        };
        Ok((n, woke))
    })();
    let (n, woke) = match parked {
        Ok(done) => {
            conn.batch("COMMIT")?;
            done
        }
        Err(e) => {
            let _ = conn.batch("ROLLBACK");
            return Err(e);
        }
    };
    match (n, woke) {
        (1, 0) => Ok(Recorded::of(report)),
        (1, _) => Ok(Recorded::new(Status::Queued)),
        _ => explain(conn, scope, lease, again.then_some(Recorded::of(report)), 0),
    }
}

/// Stores a step of the job `lease` holds.
pub(crate) fn put_step(
    conn: &mut Conn,
    scope: Scope<'_>,
    lease: &Lease,
    step: &Step,
) -> Result<()> {
    let id = uuid_of(&lease.job_id)?;
    let n = conn.execute(
        PUT_STEP,
        &[
            &id,
            &lease.worker,
            &claim_of(lease),
            &scope,
            &step.name,
            &step.kind.as_str(),
            &step.output,
            &step.event,
            &step.event_id,
            &step.wake_at,
            &step.started_at,
            &step.ended_at,
            &i32::try_from(step.position).unwrap_or(i32::MAX),
        ],
    )?;
    if n == 1 {
        return Ok(());
    }
    explain(conn, scope, lease, None, 0).map(|_| ())
}

pub(super) fn claim_of(lease: &Lease) -> i32 {
    int(lease.claim)
}

/// Why a guarded statement changed nothing. A report sent again (`intended` given) whose
/// earlier commit's answer was cut off (the connection died before it came) finds the job
/// already as it would have left it, under its own lease: that is its result, recorded once.
pub(super) fn explain(
    conn: &mut Conn,
    scope: Scope<'_>,
    lease: &Lease,
    intended: Option<Recorded>,
    cost: i64,
) -> Result<Recorded> {
    let id = uuid_of(&lease.job_id)?;
    let Some(row) = conn.query_opt(LEASE_STATE, &[&id, &scope])? else {
        return Err(Error::job_not_found(&lease.job_id));
    };
    let status: Status = row.get::<_, String>(0).parse()?;
    let locked_by: Option<String> = row.get(1);
    let claims = row.get::<_, i32>(2) as u32;
    let current: i64 = row.get(3);
    let ours = locked_by.as_deref() == Some(lease.worker.as_str()) && claims == lease.claim;
    if ours && status == Status::Running && current.saturating_add(cost) > MAX_COST_CENTS {
        return Err(cost_too_high(&lease.job_id, current, cost));
    }
    if let Some(intended) = intended.filter(|i| ours && i.status == status) {
        return Ok(intended);
    }
    Err(Error::LockLost {
        job: lease.job_id.clone(),
        worker: lease.worker.clone(),
        attempt: lease.attempt,
        status,
    })
}

pub(super) fn leased(conn: &mut Conn, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
    let id = uuid_of(&lease.job_id)?;
    match conn.query_opt(LEASED_JOB, &[&id, &lease.worker, &claim_of(lease), &scope])? {
        Some(r) => Ok(LeasedJob {
            queue: r.get(0),
            kind: r.get(1),
            max_attempts: r.get::<_, i32>(2) as u32,
            snoozes: r.get::<_, i32>(3).max(0) as u32,
        }),
        None => explain(conn, scope, lease, None, 0).map(|_| LeasedJob::default()),
    }
}

pub(super) fn heartbeat(conn: &mut Conn, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
    let id = uuid_of(&lease.job_id)?;
    if conn.execute(
        HEARTBEAT,
        &[&id, &lease.worker, &claim_of(lease), &scope, &now],
    )? == 0
    {
        explain(conn, scope, lease, None, 0)?;
    }
    Ok(())
}

pub(super) fn heartbeat_many(
    conn: &mut Conn,
    scope: Scope<'_>,
    worker: &str,
    held: &[(JobId, u32)],
    now: i64,
) -> Result<Vec<(JobId, u32)>> {
    let ids: Vec<Uuid> = held
        .iter()
        .filter_map(|(id, _)| Uuid::parse_str(id.as_str()).ok())
        .collect();
    let claims: Vec<i32> = held
        .iter()
        .filter(|(id, _)| Uuid::parse_str(id.as_str()).is_ok())
        .map(|(_, claim)| int(*claim))
        .collect();
    let rows = conn.query(HEARTBEAT_MANY, &[&now, &ids, &claims, &worker, &scope])?;
    Ok(rows
        .iter()
        .map(|r| (job_id(r.get(0)), r.get::<_, i32>(1) as u32))
        .collect())
}

pub(super) fn report(
    conn: &mut Conn,
    scope: Scope<'_>,
    lease: &Lease,
    update: Progress<'_>,
    now: i64,
) -> Result<()> {
    let id = uuid_of(&lease.job_id)?;
    let n = conn.execute(
        REPORT,
        &[
            &id,
            &lease.worker,
            &claim_of(lease),
            &scope,
            &update.progress,
            &update.stage,
            &update.cost_cents,
            &now,
        ],
    )?;
    if n == 0 {
        explain(conn, scope, lease, None, update.cost_cents)?;
    }
    Ok(())
}

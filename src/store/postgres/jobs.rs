//! Jobs on PostgreSQL: inserts, the claim, what workers report under their lease, admins'
//! changes, maintenance, and reads. Each function runs on the connection it is given, in
//! the caller's transaction or in autocommit, as its engine operation says.

use super::Postgres;
use super::tenants;
use crate::model::FlowInsert;
use crate::model::GroupRow;
use std::sync::Mutex;

use postgres::Row;
use uuid::Uuid;

use super::deps;
use super::{Conn, Sql};
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, MAX_COST_CENTS, Status, Timestamp};
use crate::model::{
    Change, ClaimSpec, ListQuery, NewRow, Progress, Recorded, Released, Report, Scope,
    StaleCutoffs, Waits,
};
use crate::store::rules::saturate;
use crate::store::rules::{at_index, costs_by_owner, key_holds};

// ---- ids ----------------------------------------------------------------------------------

/// The last row key this process handed out: ids from one process increase, and never run
/// behind its clock. (Ids from several hosts interleave by their clocks.)
static LAST_KEY: Mutex<Option<i64>> = Mutex::new(None);

/// `n` new job ids for jobs enqueued at `now`.
pub(crate) fn new_ids(now: i64, n: usize) -> Vec<Uuid> {
    let mut last = LAST_KEY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ids = crate::job::ids_after(*last, now, n);
    if let Some(id) = ids.last() {
        *last = Some(crate::job::key_of(id));
    }
    ids.iter()
        .map(|id| Uuid::parse_str(id).unwrap_or_else(|_| Uuid::now_v7()))
        .collect()
}

/// The UUID of a job id; an id that is not one names no job.
pub(crate) fn uuid_of(id: &JobId) -> Result<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| Error::job_not_found(id))
}

pub(crate) fn job_id(uuid: Uuid) -> JobId {
    JobId::from_db(uuid.hyphenated().to_string())
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

// ---- inserts --------------------------------------------------------------------------

/// One job; `ON CONFLICT` on the idempotency index makes two racing inserts of one key
/// yield one job (the second waits for the first to commit, then inserts nothing).
const INSERT: &str = "
    INSERT INTO jobq_jobs (id, queue, kind, priority, max_attempts, run_after, input,
                           idempotency_key, cost_cents, owner, group_id, external_id,
                           created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8, $9, $10, $11, $12, $13, $13)
    ON CONFLICT (coalesce(owner, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING id";

/// A job with dependencies or a uniqueness window: its status may be `blocked` (or
/// `cancelled`, by a dependency that failed), and it gets a row of options ($18 on).
const INSERT_FULL: &str = "
    WITH job AS (
        INSERT INTO jobq_jobs (id, queue, kind, priority, max_attempts, run_after, input,
                               idempotency_key, cost_cents, owner, group_id, external_id,
                               created_at, updated_at, status, error_code, last_error, completed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8, $9, $10, $11, $12, $13, $13, $14,
                $15, $16, $17)
        ON CONFLICT (coalesce(owner, ''), idempotency_key) WHERE idempotency_key IS NOT NULL
        DO NOTHING
        RETURNING id),
    options AS (
        INSERT INTO jobq_job_options (job_id, waiting_on, run_on_dependency_failure,
                                      unique_until, unique_while_active, concurrency_key,
                                      flow_ref)
        SELECT id, $18, $19, $20, $21, $22, $23 FROM job)
    SELECT id FROM job";

/// The key's window has passed: the job gives it up, for the new job to take.
const RETIRE_KEY: &str =
    "UPDATE jobq_jobs SET idempotency_key = NULL WHERE id = $1 AND idempotency_key = $2";

/// Many jobs without a key or a group, in one statement.
const INSERT_MANY: &str = "
    INSERT INTO jobq_jobs (id, queue, kind, priority, max_attempts, run_after, input,
                           cost_cents, owner, external_id, created_at, updated_at)
    SELECT id, queue, kind, priority, max_attempts, run_after, input::json, cost, owner,
           external_id, $10, $10
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[],
                $7::text[], $8::bigint[], $9::text[], $11::text[])
         AS j(id, queue, kind, priority, max_attempts, run_after, input, cost, owner, external_id)";

const FIND_BY_KEY: &str = "
    SELECT j.id, j.status, j.group_id, o.unique_until, coalesce(o.unique_while_active, false)
    FROM jobq_jobs j LEFT JOIN jobq_job_options o ON o.job_id = j.id
    WHERE coalesce(j.owner, '') = coalesce($1::text, '') AND j.idempotency_key = $2";

const GROUP_OWNER: &str = "SELECT owner FROM jobq_groups WHERE id = $1";

/// The owner's budget, locking the owner's row until commit: enqueues of one owner with a
/// budget check it one at a time, so two of them cannot both pass it.
const OWNER_BUDGET: &str = "SELECT budget_cents FROM jobq_owners WHERE id = $1 FOR UPDATE";

/// Inserts checked jobs with the given ids, in the caller's transaction.
pub(crate) fn insert_jobs(
    conn: &mut Conn,
    scope: Scope<'_>,
    jobs: Vec<NewRow>,
    ids: Vec<Uuid>,
    now: i64,
) -> Result<Vec<Enqueued>> {
    if jobs.len() == 1 {
        return match jobs.into_iter().zip(ids).next() {
            Some((job, id)) => Ok(vec![insert(conn, scope, job, id, now, &[])?]),
            None => Ok(Vec::new()),
        };
    }
    let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
    let (plain, special): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .zip(ids)
        .enumerate()
        .partition(|(_, (job, _))| job.is_plain());
    for (owner, cost) in costs_by_owner(plain.iter().map(|(_, (job, _))| job)) {
        check_budget(conn, owner, cost)?;
    }
    if !plain.is_empty() {
        let column = |f: &dyn Fn(&NewRow) -> String| -> Vec<String> {
            plain.iter().map(|(_, (job, _))| f(job)).collect()
        };
        let ids: Vec<Uuid> = plain.iter().map(|(_, (_, id))| *id).collect();
        let queues = column(&|j| j.queue.clone());
        let kinds = column(&|j| j.kind.clone());
        let inputs = column(&|j| j.input.clone());
        let priorities: Vec<i32> = plain.iter().map(|(_, (j, _))| j.priority).collect();
        let attempts: Vec<i32> = plain
            .iter()
            .map(|(_, (j, _))| int(j.max_attempts))
            .collect();
        let run_after: Vec<i64> = plain.iter().map(|(_, (j, _))| j.run_after).collect();
        let costs: Vec<i64> = plain.iter().map(|(_, (j, _))| j.cost_cents).collect();
        let owners: Vec<Option<&str>> =
            plain.iter().map(|(_, (j, _))| j.owner.as_deref()).collect();
        let external: Vec<Option<&str>> = plain
            .iter()
            .map(|(_, (j, _))| j.external_id.as_deref())
            .collect();
        conn.execute(
            INSERT_MANY,
            &[
                &ids,
                &queues,
                &kinds,
                &priorities,
                &attempts,
                &run_after,
                &inputs,
                &costs,
                &owners,
                &now,
                &external,
            ],
        )?;
        for (i, (_, id)) in &plain {
            out[*i] = Some(Enqueued {
                job_id: job_id(*id),
                status: Status::Queued,
                already_existed: false,
                group_id: None,
            });
        }
    }
    for (i, (job, id)) in special {
        out[i] = Some(insert(conn, scope, job, id, now, &out).map_err(|e| at_index(i, e))?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Inserts jobs one by one on any client (an application's own transaction, for a flow),
/// each after the jobs of the batch it waits for.
pub(crate) fn insert_all(
    conn: &mut dyn Sql,
    scope: Scope<'_>,
    jobs: Vec<NewRow>,
    ids: Vec<Uuid>,
    now: i64,
) -> Result<Vec<Enqueued>> {
    let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
    for (i, (job, id)) in jobs.into_iter().zip(ids).enumerate() {
        let done = insert(conn, scope, job, id, now, &out).map_err(|e| at_index(i, e))?;
        out[i] = Some(done);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The job holding `key` for `owner`, while its window holds; a job whose window has
/// passed gives the key up (for the insert that follows).
fn existing(
    conn: &mut dyn Sql,
    owner: Option<&str>,
    key: &str,
    now: i64,
) -> Result<Option<Enqueued>> {
    let Some(row) = conn.query_opt(FIND_BY_KEY, &[&owner, &key])? else {
        return Ok(None);
    };
    let status: Status = row.get::<_, String>(1).parse()?;
    if !key_holds(row.get(3), row.get(4), status, now) {
        let id: Uuid = row.get(0);
        conn.query_all(RETIRE_KEY, &[&id, &key])?;
        return Ok(None);
    }
    Ok(Some(Enqueued {
        job_id: job_id(row.get(0)),
        status,
        already_existed: true,
        group_id: row.get(2),
    }))
}

/// Inserts one job: the existing job for a repeated idempotency key (while its window
/// holds), the group's owner for a job of a group, the owner's budget checked, its
/// dependencies (`earlier`: the jobs of the batch inserted before it) checked and linked.
pub(crate) fn insert(
    conn: &mut dyn Sql,
    scope: Scope<'_>,
    mut job: NewRow,
    id: Uuid,
    now: i64,
    earlier: &[Option<Enqueued>],
) -> Result<Enqueued> {
    if let Some(key) = &job.key {
        if let Some(found) = existing(conn, job.owner.as_deref(), key, now)? {
            return Ok(found);
        }
    }
    if let Some(group) = &job.group_id {
        let not_found = || Error::NotFound {
            what: "group",
            id: group.clone(),
        };
        let row = conn
            .query_opt(GROUP_OWNER, &[group])?
            .ok_or_else(not_found)?;
        let group_owner: Option<String> = row.get(0);
        if scope.is_some() && group_owner.as_deref() != scope {
            return Err(not_found());
        }
        if job.owner.is_none() {
            job.owner = group_owner;
        }
    }
    if let Some(owner) = &job.owner {
        check_budget(conn, owner, i128::from(job.cost_cents))?;
    }
    let plain = !job.has_options();
    let waits = if plain {
        Waits::default()
    } else {
        deps::resolve(
            conn,
            scope,
            &job.after,
            earlier,
            job.run_on_dependency_failure,
        )?
    };
    let status = waits.status();
    let max_attempts = int(job.max_attempts);
    // The columns of the plain insert; a job with options adds its own after them.
    let base: [&(dyn postgres::types::ToSql + Sync); 13] = [
        &id,
        &job.queue,
        &job.kind,
        &job.priority,
        &max_attempts,
        &job.run_after,
        &job.input,
        &job.key,
        &job.cost_cents,
        &job.owner,
        &job.group_id,
        &job.external_id,
        &now,
    ];
    let inserted = if plain {
        conn.query_opt(INSERT, &base)?
    } else {
        let message = waits.failure_message();
        let code = message.as_ref().map(|_| "DEPENDENCY_FAILED");
        let completed = (status == Status::Cancelled).then_some(now);
        let waiting = i32::try_from(waits.waiting).unwrap_or(i32::MAX);
        let (until, while_active) = job.unique.columns();
        let status = status.as_str();
        let options: [&(dyn postgres::types::ToSql + Sync); 10] = [
            &status,
            &code,
            &message,
            &completed,
            &waiting,
            &job.run_on_dependency_failure,
            &until,
            &while_active,
            &job.concurrency_key,
            &job.flow_ref,
        ];
        conn.query_opt(INSERT_FULL, &[&base[..], &options[..]].concat())?
    };
    if inserted.is_none() {
        // Another transaction inserted the key first, and committed.
        if let Some(key) = &job.key {
            if let Some(found) = existing(conn, job.owner.as_deref(), key, now)? {
                return Ok(found);
            }
        }
        return Err(Error::Busy {
            timeout: std::time::Duration::ZERO,
            context: "an enqueue of the same idempotency key was rolled back meanwhile".into(),
        });
    }
    if !waits.jobs.is_empty() {
        deps::link(conn, id, &waits)?;
    }
    Ok(Enqueued {
        job_id: job_id(id),
        status,
        already_existed: false,
        group_id: job.group_id,
    })
}

/// Refuses `cost_cents` more for `owner` when it would pass the owner's budget.
fn check_budget(conn: &mut dyn Sql, owner: &str, cost_cents: i128) -> Result<()> {
    let Some(row) = conn.query_opt(OWNER_BUDGET, &[&owner])? else {
        return Ok(());
    };
    let Some(budget) = row.get::<_, Option<i64>>(0) else {
        return Ok(());
    };
    let spent = super::tenants::spent_cents(conn, owner)?;
    if spent + cost_cents > i128::from(budget) {
        return Err(Error::BudgetExceeded {
            owner: owner.to_string(),
            budget_cents: budget,
            spent_cents: saturate(spent),
            requested_cents: saturate(cost_cents),
        });
    }
    Ok(())
}

// ---- the claim --------------------------------------------------------------------------

/// What a claim sets on each job it takes, and what it returns of it.
macro_rules! claim_update {
    () => {
        "
    UPDATE jobq_jobs AS j
    SET status = 'running', locked_by = $6, locked_at = $2, heartbeat_at = $2,
        attempts = j.attempts + 1, claims = j.claims + 1, started_at = $2, stage = 'claimed',
        progress = 0, updated_at = $2
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.kind, j.priority, j.attempts, j.max_attempts, j.run_after,
              j.created_at, j.owner, j.group_id, j.input::text, j.claims, j.snoozes"
    };
}

/// The ready jobs one queue ($1) hands out: the ready index in claim order, skipping rows
/// other claimers hold locked, up to $5 rows; none from a queue under flow control (the
/// claim of `queues.rs` takes those).
///
/// `SKIP LOCKED` is for speed alone, not for correctness, and no test can tell it missing
/// from the jobs' outcomes: without it a second claimer waits for the first one's commit
/// and then finds the row no longer `queued` or `retry` (READ COMMITTED re-checks an
/// updated row against the statement's conditions), so no job is claimed twice either
/// way; it is the claimers queueing up behind each other's rows that it spares (what
/// `jobq bench` and the contention tests measure).
macro_rules! picked_from_one_queue {
    () => {
        "
    picked AS (
        SELECT id FROM jobq_jobs
        WHERE queue = $1 AND status IN ('queued', 'retry') AND run_after <= $2
          AND ($3::text[] IS NULL OR kind = ANY($3)) AND ($4::text IS NULL OR owner = $4)
          AND NOT EXISTS (SELECT 1 FROM jobq_queues c WHERE c.name = $1 AND c.controlled)
        ORDER BY priority DESC, run_after, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED)"
    };
}

/// The same over several queues ($1, an array): each queue's best $5 in claim order
/// (locked as they are read), then the best $5 of all of them.
macro_rules! picked_from_queues {
    () => {
        "
    candidates AS (
        SELECT c.id, c.priority, c.run_after
        FROM unnest($1::text[]) AS q(name),
        LATERAL (
            SELECT id, priority, run_after FROM jobq_jobs
            WHERE queue = q.name AND status IN ('queued', 'retry') AND run_after <= $2
              AND ($3::text[] IS NULL OR kind = ANY($3)) AND ($4::text IS NULL OR owner = $4)
              AND NOT EXISTS (SELECT 1 FROM jobq_queues c WHERE c.name = q.name AND c.controlled)
            ORDER BY priority DESC, run_after, id
            LIMIT $5
            FOR UPDATE SKIP LOCKED) AS c),
    picked AS (
        SELECT id FROM candidates ORDER BY priority DESC, run_after, id LIMIT $5)"
    };
}

const CLAIM_ONE_QUEUE: &str = concat!("WITH", picked_from_one_queue!(), claim_update!());

const CLAIM_QUEUES: &str = concat!("WITH", picked_from_queues!(), claim_update!());

/// Successes ($7 ids, $8 workers, $9 claims, $10 outputs, $11 costs added, each under its
/// own lease) and the refill of the slots they free, in one statement: one round trip and
/// one commit where two would do. The successes come back tagged `done`, the claims
/// `claimed`.
macro_rules! complete_and_claim {
    ($picked:expr) => {
        concat!(
            "
    WITH done AS (
        UPDATE jobq_jobs AS j
        SET status = 'succeeded', output = r.output::json, cost_cents = j.cost_cents + r.cost,
            stage = 'succeeded', progress = 1, completed_at = $2, updated_at = $2
        FROM unnest($7::uuid[], $8::text[], $9::int[], $10::text[], $11::bigint[])
             AS r(id, worker, claim, output, cost)
        WHERE j.id = r.id AND j.status = 'running' AND j.locked_by = r.worker
          AND j.claims = r.claim AND ($4::text IS NULL OR j.owner = $4)
          AND j.cost_cents + r.cost <= 1000000000000
        RETURNING j.id, j.dependents),",
            $picked,
            ",
    claimed AS (",
            claim_update!(),
            ")
    SELECT 'done', id, NULL, NULL, dependents, NULL::int, NULL::int, NULL::bigint, NULL::bigint,
           NULL, NULL, NULL, NULL::int, NULL::int
    FROM done
    UNION ALL
    SELECT 'claimed', * FROM claimed"
        )
    };
}

const COMPLETE_AND_CLAIM_ONE_QUEUE: &str = complete_and_claim!(picked_from_one_queue!());

const COMPLETE_AND_CLAIM_QUEUES: &str = complete_and_claim!(picked_from_queues!());

pub(crate) fn claim(
    conn: &mut Conn,
    scope: Scope<'_>,
    spec: ClaimSpec<'_>,
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kind_names();
    let rows = match filter.queue_names() {
        [queue] => conn.query(
            CLAIM_ONE_QUEUE,
            &[queue, &now, &kinds, &scope, &limit, &worker],
        )?,
        queues => conn.query(
            CLAIM_QUEUES,
            &[&queues, &now, &kinds, &scope, &limit, &worker],
        )?,
    };
    Ok(in_claim_order(
        rows.iter().map(|r| claimed(r, worker)).collect(),
    ))
}

/// RETURNING gives rows in no promised order: claim order.
fn in_claim_order(mut jobs: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_after.cmp(&b.run_after))
            .then_with(|| a.id.cmp(&b.id))
    });
    jobs
}

/// Each report's result, and the jobs claimed after them.
pub(crate) type RecordedAndClaimed = (Vec<Result<Recorded>>, Vec<ClaimedJob>);

/// Successes only, and a refill: both in one statement (see `complete_and_claim!`).
/// `None` when the reports are not all successes (then the caller goes the long way).
pub(crate) fn complete_and_claim(
    conn: &mut Conn,
    scope: Scope<'_>,
    reports: &[(&Lease, Report<'_>)],
    spec: ClaimSpec<'_>,
    again: bool,
    now: i64,
) -> Result<Option<RecordedAndClaimed>> {
    let mut completes = Vec::with_capacity(reports.len());
    for (lease, report) in reports {
        match report {
            Report::Complete { output, cost_cents } => {
                completes.push((*lease, uuid_of(&lease.job_id)?, *output, *cost_cents));
            }
            _ => return Ok(None),
        }
    }
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kind_names();
    let ids: Vec<Uuid> = completes.iter().map(|c| c.1).collect();
    let workers: Vec<&str> = completes.iter().map(|c| c.0.worker.as_str()).collect();
    let claims: Vec<i32> = completes.iter().map(|c| claim_of(c.0)).collect();
    let outputs: Vec<&str> = completes.iter().map(|c| c.2).collect();
    let costs: Vec<i64> = completes.iter().map(|c| c.3).collect();
    let rows = match filter.queue_names() {
        [queue] => conn.query(
            COMPLETE_AND_CLAIM_ONE_QUEUE,
            &[
                queue, &now, &kinds, &scope, &limit, &worker, &ids, &workers, &claims, &outputs,
                &costs,
            ],
        )?,
        queues => conn.query(
            COMPLETE_AND_CLAIM_QUEUES,
            &[
                &queues, &now, &kinds, &scope, &limit, &worker, &ids, &workers, &claims, &outputs,
                &costs,
            ],
        )?,
    };
    let mut done = std::collections::HashMap::new();
    let mut jobs = Vec::new();
    for r in &rows {
        if r.get::<_, &str>(0) == "done" {
            done.insert(r.get::<_, Uuid>(1), r.get::<_, i32>(4) > 0);
        } else {
            jobs.push(claimed_from(r, 1, worker));
        }
    }
    let mut results = Vec::with_capacity(completes.len());
    for (lease, id, _, cost) in &completes {
        results.push(if let Some(readied) = done.get(id) {
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
    Ok(Some((results, in_claim_order(jobs))))
}

fn claimed(r: &Row, worker: &str) -> ClaimedJob {
    claimed_from(r, 0, worker)
}

/// A claimed job from the columns of `claim_update!`'s RETURNING, from column `at` on.
pub(crate) fn claimed_from(r: &Row, at: usize, worker: &str) -> ClaimedJob {
    ClaimedJob {
        id: job_id(r.get(at)),
        queue: r.get(at + 1),
        kind: r.get(at + 2),
        priority: r.get(at + 3),
        attempt: r.get::<_, i32>(at + 4) as u32,
        max_attempts: r.get::<_, i32>(at + 5) as u32,
        run_after: Timestamp::from_millis(r.get(at + 6)),
        created_at: Timestamp::from_millis(r.get(at + 7)),
        owner: r.get(at + 8),
        group_id: r.get(at + 9),
        worker: worker.to_string(),
        input: r.get(at + 10),
        claim: r.get::<_, i32>(at + 11) as u32,
        snoozes: r.get::<_, i32>(at + 12).max(0) as u32,
    }
}

const NEXT_RUN_AFTER: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE queue = ANY($1) AND status IN ('queued', 'retry') AND run_after > $2";

pub(crate) fn next_run_after(conn: &mut Conn, queues: &[String], now: i64) -> Result<Option<i64>> {
    Ok(conn.query_one(NEXT_RUN_AFTER, &[&queues, &now])?.get(0))
}

// ---- under a lease ------------------------------------------------------------------------

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
pub(crate) fn record(
    conn: &mut Conn,
    scope: Scope<'_>,
    reports: &[(&Lease, Report<'_>)],
    again: bool,
    now: i64,
) -> Result<Vec<Result<Recorded>>> {
    let mut results: Vec<Option<Result<Recorded>>> = (0..reports.len()).map(|_| None).collect();
    let completes: Vec<(usize, &Lease, &str, i64)> = reports
        .iter()
        .enumerate()
        .filter_map(|(i, (lease, report))| match report {
            Report::Complete { output, cost_cents } => Some((i, *lease, *output, *cost_cents)),
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
            Report::Complete { .. } => continue,
            Report::Release | Report::Snooze { .. } => RELEASE,
            Report::Fail { .. } => FAIL,
        };
        let id = uuid_of(&lease.job_id)?;
        let held: [&(dyn postgres::types::ToSql + Sync); 4] =
            [&id, &lease.worker, &claim_of(lease), &scope];
        let mut readied = false;
        let n = match report {
            Report::Release => conn.execute(
                sql,
                &[held[0], held[1], held[2], held[3], &now, &now, &0i32],
            )?,
            Report::Snooze { run_after, counted } => conn.execute(
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
            Report::Fail {
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
            Report::Complete { .. } => 0,
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

fn claim_of(lease: &Lease) -> i32 {
    int(lease.claim)
}

/// Why a guarded statement changed nothing. A report sent again (`intended` given) whose
/// earlier commit's answer was cut off (the connection died before it came) finds the job
/// already as it would have left it, under its own lease: that is its result, recorded once.
fn explain(
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
        return Err(cost_too_high(lease, current, cost));
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

fn cost_too_high(lease: &Lease, current: i64, cost: i64) -> Error {
    Error::invalid(
        "cost_cents",
        format!(
            "job {}: adding {cost} to its {current} cents would pass the most a job may cost ({MAX_COST_CENTS} cents)",
            lease.job_id
        ),
    )
}

pub(crate) fn leased(conn: &mut Conn, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
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

pub(crate) fn heartbeat(conn: &mut Conn, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
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

pub(crate) fn heartbeat_many(
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

pub(crate) fn report(
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

// ---- admins' changes ------------------------------------------------------------------------

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

const DELETE: &str = "DELETE FROM jobq_jobs WHERE id = $1";

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
pub(crate) fn change(
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
        Change::Retry => MANUAL_RETRY,
        Change::Delete => {
            if let Some(waiting) = deps::waiting_dependent(conn, uuid)? {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: format!("delete (job {waiting} waits for it: cancel that first)"),
                });
            }
            conn.execute(DELETE, &[&uuid])?;
            return Ok(from);
        }
        Change::To(Status::Running, _) => TO_RUNNING,
        Change::To(Status::Succeeded, _) => TO_SUCCEEDED,
        Change::To(Status::Queued, _) if from == Status::Running => TO_QUEUED_FROM_RUNNING,
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

pub(crate) fn retry_dead(
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

// ---- maintenance ----------------------------------------------------------------------------

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

/// One chunk of finished jobs to prune.
/// One chunk of finished jobs past the cutoff, except those a job that has not finished
/// waits for (it reads their output when it runs).
const PRUNE_CHUNK: &str = "
    DELETE FROM jobq_jobs WHERE id IN (
        SELECT j.id FROM jobq_jobs j
        WHERE j.status = ANY($1) AND j.completed_at < $2 AND ($3::text IS NULL OR j.owner = $3)
          AND (j.dependents = 0 OR NOT EXISTS (
              SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs w ON w.id = d.job_id
              WHERE d.dep_id = j.id AND w.status IN ('blocked', 'queued', 'running', 'retry')))
        LIMIT 2000)";

pub(crate) fn release_stale(
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

pub(crate) fn prune(
    conn: &mut Conn,
    scope: Scope<'_>,
    statuses: &[Status],
    cutoff: i64,
) -> Result<usize> {
    let statuses: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    Ok(conn.execute(PRUNE_CHUNK, &[&statuses, &cutoff, &scope])? as usize)
}

// ---- reads ----------------------------------------------------------------------------------

/// The columns of a [`Job`], in the order [`job`] reads them.
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input::text, output::text, idempotency_key, \
         last_error, error_code, errors::text, cost_cents, owner, group_id, external_id, \
         created_at, updated_at, started_at, completed_at, snoozes"
    };
}

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
);

/// Newest first, after the cursor $1 (the id of the last job of the previous page).
const LIST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs
    WHERE ($1::uuid IS NULL OR id < $1)
      AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
      AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR group_id = $5)
      AND ($6::text IS NULL OR owner = $6)
      AND ($8::bigint IS NULL OR (status IN ('queued', 'retry') AND run_after > $8))
    ORDER BY id DESC LIMIT $7"
);

/// A search: the ids between two UUIDs (the start of an id), an idempotency key, an
/// external id — each through its own index — with the listing's other filters.
const LIST_SEARCH: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs
    WHERE id IN (SELECT id FROM jobq_jobs WHERE id BETWEEN $9::uuid AND $10::uuid
                 UNION SELECT id FROM jobq_jobs WHERE idempotency_key = $11
                 UNION SELECT id FROM jobq_jobs WHERE external_id = $11)
      AND ($1::uuid IS NULL OR id < $1)
      AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
      AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR group_id = $5)
      AND ($6::text IS NULL OR owner = $6)
      AND ($8::bigint IS NULL OR (status IN ('queued', 'retry') AND run_after > $8))
    ORDER BY id DESC LIMIT $7"
);

pub(crate) fn get(conn: &mut Conn, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
    let Ok(uuid) = Uuid::parse_str(id.as_str()) else {
        return Ok(None);
    };
    conn.query_opt(GET, &[&uuid, &scope])?
        .map(|r| job(&r))
        .transpose()
}

pub(crate) fn list(conn: &mut Conn, query: &ListQuery<'_>) -> Result<Vec<Job>> {
    let before = match &query.before {
        Some(id) => Some(uuid_of(id)?),
        None => None,
    };
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let status = query.status.map(Status::as_str);
    let filters: [&(dyn postgres::types::ToSql + Sync); 8] = [
        &before,
        &status,
        &query.queue,
        &query.kind,
        &query.group_id,
        &query.owner,
        &limit,
        &query.scheduled_after,
    ];
    let rows = match &query.search {
        None => conn.query(LIST, &filters)?,
        Some(search) => {
            let (lo, hi) = search.uuid_range().unzip();
            let lo = lo.and_then(|u| Uuid::parse_str(&u).ok());
            let hi = hi.and_then(|u| Uuid::parse_str(&u).ok());
            let found: [&(dyn postgres::types::ToSql + Sync); 3] = [&lo, &hi, &search.text];
            conn.query(LIST_SEARCH, &[&filters[..], &found[..]].concat())?
        }
    };
    rows.iter().map(job).collect()
}

/// A job from a row of [`job_columns`].
fn job(row: &Row) -> Result<Job> {
    let ts = |i: usize| row.get::<_, Option<i64>>(i).map(Timestamp::from_millis);
    let json = |i: usize| -> Result<Option<serde_json::Value>> {
        match row.get::<_, Option<String>>(i) {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| Error::Corrupt(format!("a JSON column that does not parse: {e}"))),
        }
    };
    Ok(Job {
        id: job_id(row.get(0)),
        queue: row.get(1),
        kind: row.get(2),
        status: row.get::<_, String>(3).parse()?,
        priority: row.get(4),
        attempts: row.get::<_, i32>(5) as u32,
        max_attempts: row.get::<_, i32>(6) as u32,
        run_after: Timestamp::from_millis(row.get(7)),
        locked_by: row.get(8),
        locked_at: ts(9),
        heartbeat_at: ts(10),
        stage: row.get(11),
        progress: row.get(12),
        input: json(13)?.unwrap_or(serde_json::Value::Null),
        output: json(14)?,
        idempotency_key: row.get(15),
        last_error: row.get(16),
        error_code: row.get(17),
        errors: json(18)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| Error::Corrupt(format!("an errors history that does not parse: {e}")))?
            .unwrap_or_default(),
        cost_cents: row.get(19),
        owner: row.get(20),
        group_id: row.get(21),
        external_id: row.get(22),
        created_at: Timestamp::from_millis(row.get(23)),
        updated_at: Timestamp::from_millis(row.get(24)),
        started_at: ts(25),
        completed_at: ts(26),
        snoozes: row.get::<_, i32>(27).max(0) as u32,
        scheduled: false,
        dependencies: None,
        dependents: None,
        concurrency_key: None,
        flow_ref: None,
    })
}

impl crate::store::JobStore for Postgres {
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        let ids = new_ids(now, jobs.len());
        // A job without an owner or a group has no budget or group to check: its insert
        // (after the look for its idempotency key, if any) is the only write.
        // (Nor options: dependencies to lock, a window that could retire an older key.)
        let alone = matches!(jobs.as_slice(),
            [job] if job.owner.is_none() && job.group_id.is_none() && !job.has_options());
        if alone {
            return self.run(|conn| insert_jobs(conn, scope, jobs.clone(), ids.clone(), now));
        }
        self.transaction(|conn| insert_jobs(conn, scope, jobs.clone(), ids.clone(), now))
    }

    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert> {
        let ids = new_ids(now, jobs.len());
        self.transaction(|conn| {
            if let Some(found) = tenants::insert_flow_group(conn, group)? {
                return Ok(found);
            }
            insert_jobs(conn, scope, jobs.clone(), ids.clone(), now).map(FlowInsert::Created)
        })
    }

    fn flow_refs(&self, group: &str) -> Result<Vec<(String, JobId)>> {
        self.snapshot(|conn| tenants::flow_refs(conn, group))
    }

    fn group_edges(&self, group: &str, limit: usize) -> Result<Vec<(JobId, JobId)>> {
        self.snapshot(|conn| deps::group_edges(conn, group, limit))
    }

    fn dependency_outputs(
        &self,
        scope: Scope<'_>,
        id: &JobId,
    ) -> Result<Option<crate::model::Outputs>> {
        self.snapshot(|conn| deps::outputs(conn, scope, id))
    }

    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>> {
        let claimed = self.run(|conn| claim(conn, scope, spec, now))?;
        self.top_up(scope, spec, claimed, now)
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Report<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        // The usual batch, successes and a refill, goes in one statement.
        if let Some(spec) = refill.filter(|s| s.limit > 0) {
            if let Some((results, claimed)) =
                self.run(|conn| complete_and_claim(conn, scope, reports, spec, again, now))?
            {
                let claimed = match self.top_up(scope, spec, claimed, now) {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "jobq: claiming after recording outcomes failed");
                        Vec::new()
                    }
                };
                return Ok((results, claimed));
            }
        }
        let results = self.run(|conn| record(conn, scope, reports, again, now))?;
        let claimed = match refill {
            Some(spec) if spec.limit > 0 => {
                match self
                    .run(|conn| claim(conn, scope, spec, now))
                    .and_then(|claimed| self.top_up(scope, spec, claimed, now))
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        // The outcomes are recorded; the dispatcher claims again at its next turn.
                        tracing::warn!(error = %e, "jobq: claiming after recording outcomes failed");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        Ok((results, claimed))
    }

    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
        self.read(|conn| leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.run(|conn| heartbeat(conn, scope, lease, now))
    }

    fn heartbeat_many(
        &self,
        scope: Scope<'_>,
        worker: &str,
        held: &[(JobId, u32)],
        now: i64,
    ) -> Result<Vec<(JobId, u32)>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.run(|conn| heartbeat_many(conn, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.run(|conn| report(conn, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.transaction(|conn| self::change(conn, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.transaction(|conn| retry_dead(conn, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.run(|conn| release_stale(conn, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.run(|conn| prune(conn, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.snapshot(|conn| match get(conn, scope, id)? {
            Some(job) => Ok(Some(job.with_links(deps::links(conn, id)?))),
            None => Ok(None),
        })
    }

    fn list_jobs(&self, query: &ListQuery<'_>) -> Result<Vec<Job>> {
        self.read(|conn| list(conn, query))
    }

    fn next_run_after(&self, queues: &[String], now: i64) -> Result<Option<i64>> {
        self.read(|conn| next_run_after(conn, queues, now))
    }
}

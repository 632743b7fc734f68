//! Jobs on SQLite: inserts, the claim, what workers report under their lease, admins'
//! changes, maintenance, and reads. Each function runs inside the caller's transaction.

use super::Sqlite;
use super::ids;
use super::tenants;
use crate::model::FlowInsert;
use crate::model::GroupRow;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, named_params, params};

use super::deps::{self, Settled};
use super::rows::{self, job_columns};
use super::tenants::spent_cents;
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{
    ClaimedJob, Enqueued, Job, JobId, Lease, MAX_COST_CENTS, Status, Timestamp, key_of,
};
use crate::model::{
    Change, ClaimSpec, ListQuery, NewRow, Progress, Recorded, Released, Report, Scope, StaleCutoffs,
};
use crate::store::rules::saturate;
use crate::store::rules::{at_index, costs_by_owner, key_holds};

// ---- inserts --------------------------------------------------------------------------

/// The head of every insert of jobs: the single and the batch path fill the same columns.
macro_rules! insert_jobs {
    () => {
        "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, priority, max_attempts, run_after, input,
                           idempotency_key, cost_cents, owner, group_id, external_id,
                           created_at, updated_at)
    VALUES "
    };
}

/// Bound by position (the hot path: no lookups of parameter names), in the order of the
/// column list after the row key, which is ?14.
const INSERT_JOB: &str = concat!(
    insert_jobs!(),
    "(?14, ?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)"
);

/// Rows in one statement of a batch enqueue: enough to amortize opening the table's seven
/// b-trees, few enough to keep the statement small (32 × 13 parameters).
const ROWS_PER_INSERT: usize = 32;

/// One row of the multi-row insert: the jobs of this path have no idempotency key and no
/// group. Its parameters are the values of [`row_values`], in order.
const INSERT_ROW: &str = "(?, ?, ?, ?, 'queued', ?, ?, ?, ?, NULL, ?, ?, NULL, ?, ?, ?)";

/// `INSERT ... VALUES row, row, ...` with [`ROWS_PER_INSERT`] rows, assembled once from
/// constants (no value is ever formatted into it).
fn insert_rows_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let rows = vec![INSERT_ROW; ROWS_PER_INSERT].join(",\n    ");
        [insert_jobs!(), &rows].concat()
    })
}

/// The parameters of one [`INSERT_ROW`].
fn row_values<'a>(job: &'a NewRow, id: &'a str, now: i64) -> [ToSqlOutput<'a>; 13] {
    let text = |s: &'a str| ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()));
    let int = |i: i64| ToSqlOutput::Owned(Value::Integer(i));
    let opt = |s: &'a Option<String>| s.as_deref().map_or(ToSqlOutput::Owned(Value::Null), text);
    [
        int(key_of(id)),
        text(id),
        text(&job.queue),
        text(&job.kind),
        int(i64::from(job.priority)),
        int(i64::from(job.max_attempts)),
        int(job.run_after),
        text(&job.input),
        int(job.cost_cents),
        opt(&job.owner),
        opt(&job.external_id),
        int(now),
        int(now),
    ]
}

const FIND_BY_KEY: &str = "
    SELECT j.id, j.status, j.group_id, o.unique_until, coalesce(o.unique_while_active, 0)
    FROM jobq_jobs j LEFT JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE coalesce(j.owner, '') = coalesce(:owner, '') AND j.idempotency_key = :key";

/// The key's window has passed: the job gives it up, for the new job to take.
const RETIRE_KEY: &str =
    "UPDATE jobq_jobs SET idempotency_key = NULL WHERE id_key = ?1 AND id = ?2";

/// A job with dependencies or a uniqueness window: its status may be `blocked` (or
/// `cancelled`, by a dependency that failed), and it gets a row of options.
const INSERT_FULL: &str = "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, priority, max_attempts, run_after, input,
                           idempotency_key, cost_cents, owner, group_id, external_id,
                           created_at, updated_at, error_code, last_error, completed_at)
    VALUES (:key, :id, :queue, :kind, :status, :priority, :max_attempts, :run_after, :input,
            :ikey, :cost, :owner, :group_id, :external_id, :now, :now, :code, :message, :completed)";

const INSERT_OPTIONS: &str = "
    INSERT INTO jobq_job_options (job_key, waiting_on, run_on_dependency_failure, unique_until,
                                  unique_while_active, concurrency_key, flow_ref)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const GROUP_OWNER: &str = "SELECT owner FROM jobq_groups WHERE id = ?1";

const OWNER_BUDGET: &str = "SELECT budget_cents FROM jobq_owners WHERE id = ?1";

/// The one-row insert (the batch path inserts `ROWS_PER_INSERT` at a time instead).
fn insert_row(conn: &Connection, job: &NewRow, id: &str, now: i64) -> Result<()> {
    conn.prepare_cached(INSERT_JOB)?.execute(params![
        id,
        job.queue,
        job.kind,
        job.priority,
        job.max_attempts,
        job.run_after,
        job.input,
        job.key,
        job.cost_cents,
        job.owner,
        job.group_id,
        job.external_id,
        now,
        key_of(id),
    ])?;
    Ok(())
}

/// Inserts a batch with ids taken in order from `ids`. Jobs without an idempotency key or
/// a group need no lookup: they go in multi-row statements of [`ROWS_PER_INSERT`] rows,
/// which open the table's cursors once per chunk instead of once per job, after one budget
/// check per owner for the whole batch. The others go one by one, and their budget checks
/// see the rows inserted before them.
pub(crate) fn insert_jobs(
    conn: &Connection,
    scope: Scope<'_>,
    jobs: Vec<NewRow>,
    ids: Vec<String>,
    now: i64,
) -> Result<Vec<Enqueued>> {
    if jobs.len() == 1 {
        // The single enqueue: no partition, no copies.
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
    let mut chunks = plain.chunks_exact(ROWS_PER_INSERT);
    let mut stmt = conn.prepare_cached(insert_rows_sql())?;
    for chunk in chunks.by_ref() {
        let mut param = 1;
        for (_, (job, id)) in chunk {
            for value in row_values(job, id, now) {
                stmt.raw_bind_parameter(param, value)?;
                param += 1;
            }
        }
        stmt.raw_execute()?;
    }
    for (_, (job, id)) in chunks.remainder() {
        insert_row(conn, job, id, now)?;
    }
    for (i, (_, id)) in &plain {
        out[*i] = Some(Enqueued {
            job_id: JobId::from_db(id.clone()),
            status: Status::Queued,
            already_existed: false,
            group_id: None,
        });
    }
    for (i, (job, id)) in special {
        out[i] = Some(insert(conn, scope, job, id, now, &out).map_err(|e| at_index(i, e))?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// Inserts a flow's group and jobs in the caller's transaction (a connection of its own:
/// the ids are taken after the largest key in the file).
pub(crate) fn insert_flow(
    conn: &Connection,
    scope: Scope<'_>,
    group: &crate::model::GroupRow,
    jobs: Vec<NewRow>,
    now: i64,
) -> Result<crate::model::FlowInsert> {
    if let Some(found) = super::tenants::existing_flow(conn, group)? {
        return Ok(found);
    }
    super::tenants::insert_group(conn, group)?;
    let ids = super::ids::allocate(conn, now, jobs.len())?;
    insert_jobs(conn, scope, jobs, ids, now).map(crate::model::FlowInsert::Created)
}

/// Inserts one job: the existing job for a repeated idempotency key (while its window
/// holds), the group's owner for a job of a group, the owner's budget checked, its
/// dependencies (`earlier`: the jobs of the batch inserted before it) checked and linked.
pub(crate) fn insert(
    conn: &Connection,
    scope: Scope<'_>,
    mut job: NewRow,
    id: String,
    now: i64,
    earlier: &[Option<Enqueued>],
) -> Result<Enqueued> {
    if let Some(key) = &job.key {
        let existing = conn
            .prepare_cached(FIND_BY_KEY)?
            .query_row(named_params! {":owner": job.owner, ":key": key}, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .optional()?;
        if let Some((found, status, group_id, until, while_active)) = existing {
            let status: Status = status.parse()?;
            if key_holds(until, while_active, status, now) {
                return Ok(Enqueued {
                    job_id: JobId::from_db(found),
                    status,
                    already_existed: true,
                    group_id,
                });
            }
            let found = JobId::from_db(found);
            conn.prepare_cached(RETIRE_KEY)?
                .execute(params![found.key(), found.as_str()])?;
        }
    }
    if let Some(group) = &job.group_id {
        let group_owner: Option<Option<String>> = conn
            .prepare_cached(GROUP_OWNER)?
            .query_row([group], |r| r.get(0))
            .optional()?;
        let not_found = || Error::NotFound {
            what: "group",
            id: group.clone(),
        };
        let group_owner = group_owner.ok_or_else(not_found)?;
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
    if !job.has_options() {
        insert_row(conn, &job, &id, now)?;
        return Ok(Enqueued {
            job_id: JobId::from_db(id),
            status: Status::Queued,
            already_existed: false,
            group_id: job.group_id,
        });
    }
    let waits = deps::resolve(
        conn,
        scope,
        &job.after,
        earlier,
        job.run_on_dependency_failure,
    )?;
    let status = waits.status();
    let message = waits.failure_message();
    let (until, while_active) = job.unique.columns();
    conn.prepare_cached(INSERT_FULL)?.execute(named_params! {
        ":key": key_of(&id), ":id": id, ":queue": job.queue, ":kind": job.kind,
        ":status": status.as_str(), ":priority": job.priority,
        ":max_attempts": job.max_attempts, ":run_after": job.run_after, ":input": job.input,
        ":ikey": job.key, ":cost": job.cost_cents, ":owner": job.owner,
        ":group_id": job.group_id, ":external_id": job.external_id, ":now": now,
        ":code": message.as_ref().map(|_| "DEPENDENCY_FAILED"), ":message": message,
        ":completed": (status == Status::Cancelled).then_some(now),
    })?;
    conn.prepare_cached(INSERT_OPTIONS)?.execute(params![
        key_of(&id),
        waits.waiting,
        job.run_on_dependency_failure,
        until,
        while_active,
        job.concurrency_key,
        job.flow_ref
    ])?;
    let job_id = JobId::from_db(id);
    deps::link(conn, &job_id, &waits)?;
    Ok(Enqueued {
        job_id,
        status,
        already_existed: false,
        group_id: job.group_id,
    })
}

/// Refuses `cost_cents` more for `owner` when it would pass the owner's budget. Sums are
/// exact (`i128`): no amount of jobs or costs wraps around.
fn check_budget(conn: &Connection, owner: &str, cost_cents: i128) -> Result<()> {
    let budget: Option<Option<i64>> = conn
        .prepare_cached(OWNER_BUDGET)?
        .query_row([owner], |r| r.get(0))
        .optional()?;
    let Some(Some(budget)) = budget else {
        return Ok(());
    };
    let spent = spent_cents(conn, owner)?;
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

/// What a claim sets on each job it takes (one definition for both claim statements).
macro_rules! claim_set {
    () => {
        "UPDATE jobq_jobs
    SET status = 'running', locked_by = :worker, locked_at = :now, heartbeat_at = :now,
        attempts = attempts + 1, claims = claims + 1, started_at = :now, stage = 'claimed',
        progress = 0, updated_at = :now"
    };
}

/// What a claim returns of each job.
macro_rules! claim_returning {
    () => {
        "
    RETURNING id, queue, kind, priority, attempts, max_attempts, run_after, created_at, owner,
              group_id, input, claims, snoozes"
    };
}

/// Claims from one queue in a single statement. The subquery walks the partial index
/// `jobq_jobs_ready` in claim order and stops after `:limit` rows.
///
/// `LIMIT :limit + 0`, never `LIMIT :limit`: SQLite's planner reads a bare bound LIMIT, and
/// then rebinding it (every claim) throws the prepared statement away and parses it again.
pub(crate) const CLAIM_ONE_QUEUE: &str = concat!(
    claim_set!(),
    "
    WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after <= :now
          AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
          AND (:owner IS NULL OR owner = :owner)
        ORDER BY priority DESC, run_after, id_key
        LIMIT :limit + 0)",
    claim_returning!()
);

/// The next candidates of one queue, in claim order (for claims over several queues).
pub(crate) const CANDIDATES: &str = "
    SELECT id_key, priority, run_after FROM jobq_jobs
    WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after <= :now
      AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
      AND (:owner IS NULL OR owner = :owner)
    ORDER BY priority DESC, run_after, id_key
    LIMIT :limit + 0";

pub(crate) const CLAIM_IDS: &str = concat!(
    claim_set!(),
    "
    WHERE id_key IN (SELECT value FROM json_each(:keys)) AND +status IN ('queued', 'retry')",
    claim_returning!()
);

pub(crate) fn claim(
    tx: &super::WriteTx<'_, '_>,
    scope: Scope<'_>,
    spec: ClaimSpec<'_>,
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let conn: &Connection = tx;
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    // Queues under flow control (known without a query while no other connection commits)
    // take the controlled way; the others, the ordinary one.
    let controls = tx.controls()?;
    let controlled = !controls.is_empty()
        && filter
            .queue_names()
            .iter()
            .any(|q| controls.contains_key(q.as_str()));
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kinds_json();
    let mut jobs = if let ([queue], false) = (filter.queue_names(), controlled) {
        let mut stmt = conn.prepare_cached(CLAIM_ONE_QUEUE)?;
        let rows = stmt.query_map(
            named_params! {
                ":worker": worker, ":now": now, ":queue": queue,
                ":kinds": kinds, ":owner": scope, ":limit": limit_sql,
            },
            |r| claimed_from_row(r, worker),
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        // Per queue, the index yields its best `limit` candidates in order (a controlled
        // queue, those its limits allow); merge them and take the best `limit` overall.
        let mut candidates: Vec<(i64, i32, i64)> = Vec::new();
        for queue in filter.queue_names() {
            if let Some(control) = controls.get(queue.as_str()) {
                candidates.extend(super::queues::candidates(conn, control, scope, &spec, now)?);
                continue;
            }
            let mut stmt = conn.prepare_cached(CANDIDATES)?;
            let rows = stmt.query_map(
                named_params! {
                    ":queue": queue, ":now": now, ":kinds": kinds,
                    ":owner": scope, ":limit": limit_sql,
                },
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            for row in rows {
                candidates.push(row?);
            }
        }
        candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
        candidates.truncate(limit);
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<i64> = candidates.iter().map(|c| c.0).collect();
        let keys =
            serde_json::to_string(&keys).map_err(|e| Error::invalid("keys", e.to_string()))?;
        let mut stmt = conn.prepare_cached(CLAIM_IDS)?;
        let rows = stmt.query_map(
            named_params! {":worker": worker, ":now": now, ":keys": keys},
            |r| claimed_from_row(r, worker),
        )?;
        let jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // Claims from a rate-limited queue count against its window.
        for (name, control) in controls.iter() {
            if control.rate.is_some() {
                let n = jobs.iter().filter(|j| &j.queue == name).count();
                if n > 0 {
                    super::queues::note_claims(conn, name, n, now)?;
                }
            }
        }
        jobs
    };
    // RETURNING gives rows in no promised order: restore claim order.
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_after.cmp(&b.run_after))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(jobs)
}

fn claimed_from_row(r: &rusqlite::Row<'_>, worker: &str) -> rusqlite::Result<ClaimedJob> {
    Ok(ClaimedJob {
        id: JobId::from_db(r.get(0)?),
        queue: r.get(1)?,
        kind: r.get(2)?,
        priority: r.get(3)?,
        attempt: r.get(4)?,
        max_attempts: r.get(5)?,
        run_after: Timestamp::from_millis(r.get(6)?),
        created_at: Timestamp::from_millis(r.get(7)?),
        owner: r.get(8)?,
        group_id: r.get(9)?,
        worker: worker.to_string(),
        input: r.get(10)?,
        claim: r.get(11)?,
        snoozes: r.get(12)?,
    })
}

/// The earliest future `run_after` among the ready jobs of a queue: when a scheduled job or
/// a retry comes due, for a dispatcher deciding how long to sleep.
const NEXT_RUN_AFTER: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after > :now";

pub(crate) fn next_run_after(
    conn: &Connection,
    queues: &[String],
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(NEXT_RUN_AFTER)?;
    let mut earliest: Option<i64> = None;
    for queue in queues {
        let due: Option<i64> =
            stmt.query_row(named_params! {":queue": queue, ":now": now}, |r| r.get(0))?;
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

// ---- under a lease ------------------------------------------------------------------------

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

/// Records one report inside the caller's transaction; `again` as in `Engine::record`.
pub(crate) fn record(
    conn: &Connection,
    scope: Scope<'_>,
    lease: &Lease,
    report: Report<'_>,
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
    report: Report<'_>,
    now: i64,
) -> Result<Recorded> {
    // A job that others wait for settles them in this transaction.
    let mut readied = false;
    let (changed, recorded) = match report {
        Report::Complete { output, cost_cents } => {
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
        Report::Release => {
            let n = execute_held(conn, RELEASE, lease, scope, &[&now, &now, &0])?;
            (n, Recorded::new(Status::Queued))
        }
        Report::Snooze { run_after, counted } => {
            let n = execute_held(
                conn,
                RELEASE,
                lease,
                scope,
                &[&run_after, &now, &i64::from(counted)],
            )?;
            (n, Recorded::of(&report))
        }
        Report::Fail {
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
pub(crate) fn leased(conn: &Connection, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
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
        Some(current) if current + cost > MAX_COST_CENTS => Err(Error::invalid(
            "cost_cents",
            format!(
                "job {}: adding {cost} to its {current} cents would pass the most a job may cost ({MAX_COST_CENTS} cents)",
                lease.job_id
            ),
        )),
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

pub(crate) fn heartbeat(
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

pub(crate) fn heartbeat_many(
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

pub(crate) fn report(
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

// ---- admins' changes ------------------------------------------------------------------------

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
pub(crate) const RETRY_DEAD_CHUNK: &str = concat!(
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

const DELETE: &str = "DELETE FROM jobq_jobs WHERE id_key = :key AND id = :id AND status = :from";

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

pub(crate) fn change(
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
        Change::Retry => true,
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
        Change::Retry => Some(Settled::Retried),
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
        Change::Retry => MANUAL_RETRY,
        Change::Delete => {
            if let Some(waiting) = deps::waiting_dependent(conn, id)? {
                return Err(Error::InvalidTransition {
                    job: id.clone(),
                    from,
                    action: format!("delete (job {waiting} waits for it: cancel that first)"),
                });
            }
            conn.prepare_cached(DELETE)?.execute(
                named_params! {":id": id.as_str(), ":key": id.key(), ":from": from.as_str()},
            )?;
            return Ok(from);
        }
        Change::To(Status::Running, _) => TO_RUNNING,
        Change::To(Status::Succeeded, _) => TO_SUCCEEDED,
        Change::To(Status::Queued, _) if from == Status::Running => TO_QUEUED_FROM_RUNNING,
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

pub(crate) fn retry_dead(
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

// ---- maintenance ----------------------------------------------------------------------------

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

/// One chunk of finished jobs to prune, oldest first by completion.
/// One chunk of finished jobs past the cutoff, except those a job that has not finished
/// waits for (it reads their output when it runs).
pub(crate) const PRUNE_CHUNK: &str = "
    DELETE FROM jobq_jobs WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE status IN (SELECT value FROM json_each(:statuses)) AND completed_at < :cutoff
          AND (:owner IS NULL OR owner = :owner)
          AND (dependents = 0 OR NOT EXISTS (
              SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs w ON w.id_key = d.job_key
              WHERE d.dep_key = jobq_jobs.id_key
                AND w.status IN ('blocked', 'queued', 'running', 'retry')))
        LIMIT 2000)";

pub(crate) fn release_stale(
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

pub(crate) fn prune(
    conn: &Connection,
    scope: Scope<'_>,
    statuses: &[Status],
    cutoff: i64,
) -> Result<usize> {
    let statuses =
        serde_json::to_string(statuses).map_err(|e| Error::invalid("status", e.to_string()))?;
    Ok(conn
        .prepare_cached(PRUNE_CHUNK)?
        .execute(named_params! {":cutoff": cutoff, ":statuses": statuses, ":owner": scope})?)
}

// ---- reads ----------------------------------------------------------------------------------

/// The newest-first listing, driven by the index of one equality filter, with the other
/// filters checked on each row. `id_key < :after` is always bound (past every key when
/// there is no cursor) so that it seeks in the index rather than scanning the pages before.
macro_rules! list_sql {
    ($driver:literal) => {
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobq_jobs WHERE ",
            $driver,
            " AND id_key < :after
              AND (:status IS NULL OR status = :status) AND (:queue IS NULL OR queue = :queue)
              AND (:kind IS NULL OR kind = :kind) AND (:group_id IS NULL OR group_id = :group_id)
              AND (:owner IS NULL OR owner = :owner)
              AND (:scheduled_after IS NULL
                   OR ((status = 'queued' OR status = 'retry') AND run_after > :scheduled_after))
            ORDER BY id_key DESC LIMIT :limit + 0"
        )
    };
}

pub(crate) const LIST_BY_GROUP: &str = list_sql!("group_id = :group_id");
pub(crate) const LIST_BY_OWNER: &str = list_sql!("owner = :owner");
/// Only for the statuses of the partial index `jobq_jobs_status`; the literal list lets the
/// planner prove the index covers the query.
pub(crate) const LIST_BY_STATUS: &str =
    list_sql!("status = :status AND status NOT IN ('queued', 'succeeded')");
pub(crate) const LIST_ALL: &str = list_sql!("1");
/// A search: the ids in a row key range (the start of an id; :prefix checks its digits past
/// the first 16), an idempotency key, an external id — each through its own index.
pub(crate) const LIST_SEARCH: &str = list_sql!(
    "id_key IN (SELECT id_key FROM jobq_jobs WHERE id_key BETWEEN :lo AND :hi
                UNION SELECT id_key FROM jobq_jobs WHERE idempotency_key = :q
                UNION SELECT id_key FROM jobq_jobs WHERE external_id = :q)
     AND (:lo IS NULL OR idempotency_key = :q OR external_id = :q
          OR replace(id, '-', '') LIKE :prefix || '%')"
);

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs WHERE id_key = :key AND id = :id AND (:owner IS NULL OR owner = :owner)"
);

pub(crate) fn get(conn: &Connection, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(GET)?
        .query_row(
            named_params! {":id": id.as_str(), ":key": id.key(), ":owner": scope},
            rows::job,
        )
        .optional()?)
}

pub(crate) fn list(conn: &Connection, query: &ListQuery<'_>) -> Result<Vec<Job>> {
    let after = query.before.as_ref().map_or(i64::MAX, JobId::key);
    if let Some(search) = &query.search {
        let (lo, hi) = search.key_range().unzip();
        let mut stmt = conn.prepare_cached(LIST_SEARCH)?;
        let rows = stmt.query_map(
            named_params! {
                ":after": after,
                ":status": query.status.map(Status::as_str),
                ":queue": query.queue,
                ":kind": query.kind,
                ":group_id": query.group_id,
                ":owner": query.owner,
                ":scheduled_after": query.scheduled_after,
                ":limit": query.limit as i64,
                ":lo": lo, ":hi": hi, ":q": search.text, ":prefix": search.id_prefix,
            },
            rows::job,
        )?;
        return Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    let sql = if query.group_id.is_some() {
        LIST_BY_GROUP
    } else if query.owner.is_some() {
        LIST_BY_OWNER
    } else if query
        .status
        .is_some_and(|s| !matches!(s, Status::Queued | Status::Succeeded))
    {
        LIST_BY_STATUS
    } else {
        LIST_ALL
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        named_params! {
            ":after": after,
            ":status": query.status.map(Status::as_str),
            ":queue": query.queue,
            ":kind": query.kind,
            ":group_id": query.group_id,
            ":owner": query.owner,
            ":scheduled_after": query.scheduled_after,
            ":limit": query.limit as i64,
        },
        rows::job,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

impl crate::store::JobStore for Sqlite {
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        self.write(|tx| {
            let ids = ids::allocate_in(tx, now, jobs.len())?;
            insert_jobs(tx, scope, jobs, ids, now)
        })
    }

    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert> {
        self.write(|tx| {
            if let Some(found) = tenants::existing_flow(tx, group)? {
                return Ok(found);
            }
            tenants::insert_group(tx, group)?;
            let ids = ids::allocate_in(tx, now, jobs.len())?;
            insert_jobs(tx, scope, jobs, ids, now).map(FlowInsert::Created)
        })
    }

    fn flow_refs(&self, group: &str) -> Result<Vec<(String, JobId)>> {
        self.read(|conn| tenants::flow_refs(conn, group))
    }

    fn group_edges(&self, group: &str, limit: usize) -> Result<Vec<(JobId, JobId)>> {
        self.read(|conn| deps::group_edges(conn, group, limit))
    }

    fn dependency_outputs(
        &self,
        scope: Scope<'_>,
        id: &JobId,
    ) -> Result<Option<crate::model::Outputs>> {
        self.read(|conn| {
            if status_of(conn, scope, id)?.is_none() {
                return Ok(None);
            }
            deps::outputs(conn, id).map(Some)
        })
    }

    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>> {
        self.write(|tx| claim(tx, scope, spec, now))
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Report<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        self.write(|tx| {
            let mut results = Vec::with_capacity(reports.len());
            for (lease, report) in reports {
                match record(tx, scope, lease, *report, again, now) {
                    Err(e) if !matches!(e, Error::LockLost { .. } | Error::NotFound { .. }) => {
                        return Err(e);
                    }
                    r => results.push(r),
                }
            }
            let claimed = match refill {
                Some(spec) if spec.limit > 0 => claim(tx, scope, spec, now)?,
                _ => Vec::new(),
            };
            Ok((results, claimed))
        })
    }

    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
        self.read(|conn| leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.write(|tx| heartbeat(tx, scope, lease, now))
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
        self.write(|tx| heartbeat_many(tx, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.write(|tx| report(tx, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.write(|tx| self::change(tx, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.write(|tx| retry_dead(tx, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.write(|tx| release_stale(tx, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.write(|tx| prune(tx, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.read(|conn| match get(conn, scope, id)? {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClaimFilter, Queue};

    fn plan(conn: &Connection, sql: &str) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut stmt = conn.prepare(&explain).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<rusqlite::types::Value> =
            (0..n).map(|_| rusqlite::types::Value::Null).collect();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn claims_reuse_their_prepared_statements() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        queue
            .enqueue_many((0..50).map(|_| crate::NewJob::new("k").queue("a")))
            .unwrap();
        queue
            .sqlite()
            .unwrap()
            .write(|tx| {
                for limit in [1, 2, 3, 5, 8] {
                    for filter in [ClaimFilter::queues(["a"]), ClaimFilter::queues(["a", "b"])] {
                        let spec = ClaimSpec {
                            worker: "w",
                            limit,
                            filter: &filter,
                        };
                        claim(tx, None, spec, limit as i64).unwrap();
                    }
                }
                for sql in [CLAIM_ONE_QUEUE, CANDIDATES] {
                    let stmt = tx.prepare_cached(sql).unwrap();
                    assert_eq!(
                        stmt.get_status(rusqlite::StatementStatus::RePrepare),
                        0,
                        "re-prepared:\n{sql}"
                    );
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_claim_walks_the_partial_ready_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        for sql in [CLAIM_ONE_QUEUE, CANDIDATES] {
            let p = plan(&conn, sql);
            println!("{p}\n");
            assert!(
                p.contains("USING INDEX jobq_jobs_ready")
                    || p.contains("USING COVERING INDEX jobq_jobs_ready"),
                "{p}"
            );
            assert!(
                !p.contains("TEMP B-TREE FOR ORDER BY"),
                "the claim must not sort:\n{p}"
            );
        }
        let p = plan(&conn, CLAIM_IDS);
        println!("{p}");
        assert!(
            p.contains("SEARCH jobq_jobs USING INTEGER PRIMARY KEY (rowid=?)"),
            "{p}"
        );
    }
}

#[cfg(test)]
mod listing_tests {
    use super::*;
    use crate::Queue;

    #[test]
    fn each_listing_seeks_its_index_and_never_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        for (sql, index) in [
            (LIST_BY_GROUP, "jobq_jobs_group"),
            (LIST_BY_OWNER, "jobq_jobs_owner"),
            (LIST_BY_STATUS, "jobq_jobs_status"),
            (LIST_ALL, "INTEGER PRIMARY KEY"),
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    named_params! {":after": i64::MAX, ":status": "failed", ":queue": None::<String>, ":kind": None::<String>,
                        ":group_id": "g", ":owner": "o", ":limit": 10},
                    |r| r.get(3),
                )
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{index} not used:\n{plan}");
            assert!(
                plan.contains("id_key<?") || plan.contains("rowid<?"),
                "no seek on the cursor:\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}");
        }
    }
}

#[cfg(test)]
mod prune_tests {
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

#[cfg(test)]
mod search_tests {
    use super::*;
    use crate::Queue;

    #[test]
    fn a_search_seeks_the_key_the_external_id_and_the_row_key_and_never_scans() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_SEARCH}"))
            .unwrap()
            .query_map(
                named_params! {":after": i64::MAX, ":lo": 1, ":hi": 2, ":q": "k", ":prefix": "01", ":limit": 10},
                |r| r.get(3),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let plan = plan.join("\n");
        println!("{plan}");
        for index in [
            "jobq_jobs_key",
            "jobq_jobs_external_id",
            "INTEGER PRIMARY KEY",
        ] {
            assert!(plan.contains(index), "{index} not used:\n{plan}");
        }
        assert!(
            !plan
                .lines()
                .any(|l| l.starts_with("SCAN jobq_jobs") && !l.contains("INDEX")),
            "a search scans the table:\n{plan}"
        );
    }
}

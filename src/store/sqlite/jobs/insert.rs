//! Inserts of jobs on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, named_params, params};

use crate::error::Result;
use crate::job::{Enqueued, JobId, Status, key_of};
use crate::model::{NewRow, Scope};
use crate::store::rules::{at_index, key_holds};
use crate::store::rules::{group_owner, split_batch, within_budget};
use crate::store::sqlite::deps;
use crate::store::sqlite::tenants::spent_cents;

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
    let (plain, special) = split_batch(jobs, ids, |owner, cost| check_budget(conn, owner, cost))?;
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
    if let Some(found) = crate::store::sqlite::tenants::existing_flow(conn, group)? {
        return Ok(found);
    }
    crate::store::sqlite::tenants::insert_group(conn, group)?;
    let ids = crate::store::sqlite::ids::allocate(conn, now, jobs.len())?;
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
        let found: Option<Option<String>> = conn
            .prepare_cached(GROUP_OWNER)?
            .query_row([group], |r| r.get(0))
            .optional()?;
        job.owner = group_owner(group, found, scope, job.owner.take())?;
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
    within_budget(owner, budget, spent_cents(conn, owner)?, cost_cents)
}

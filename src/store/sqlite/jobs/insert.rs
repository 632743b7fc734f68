//! Inserts of jobs on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, named_params, params};

use crate::error::Result;
use crate::job::{Enqueued, JobId, Status, key_of};
use crate::model::{NewRow, Scope};
use crate::store::rules::key_holds;
use crate::store::rules::{batch_results, group_owner, split_batch, within_budget};
use crate::store::sqlite::tenants::spent_cents;
use crate::store::sqlite::{deps, rollups, rows};

const FIND_BY_KEY: &str = "
    SELECT j.id, j.status, j.group_id, o.unique_until, coalesce(o.unique_while_active, 0)
    FROM jobq_jobs j LEFT JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE coalesce(j.owner, '') = coalesce(:owner, '') AND j.idempotency_key = :key";

/// The key's window has passed: the job gives it up, for the new job to take.
const RETIRE_KEY: &str =
    "UPDATE jobq_jobs SET idempotency_key = NULL WHERE id_key = ?1 AND id = ?2";

const INSERT_OPTIONS: &str = "
    INSERT INTO jobq_job_options (job_key, waiting_on, run_on_dependency_failure, unique_until,
                                  unique_while_active, concurrency_key, flow_ref)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

const GROUP_OWNER: &str = "SELECT owner FROM jobq_groups WHERE id = ?1";

const OWNER_BUDGET: &str = "SELECT budget_cents FROM jobq_owners WHERE id = ?1";

/// Inserts a batch with ids taken in order from `ids`. Jobs without an idempotency key or
/// a group need no lookup: they go in multi-row statements of [`rows::ROWS_PER_INSERT`] rows,
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
    let (plain, special) = split_batch(jobs, ids, |owner, cost| check_budget(conn, owner, cost))?;
    rows::insert_plain(
        conn,
        plain.iter().map(|(_, (job, id))| (job, id.as_str())),
        now,
    )?;
    batch_results(
        &plain,
        special,
        |id| JobId::from_db(id.clone()),
        |job, id, earlier| insert(conn, scope, job, id, now, earlier),
    )
}

/// Inserts a flow's group and jobs in the caller's transaction (a connection of its own:
/// the ids are taken after the largest key in the file), counted in the rollups here (the
/// writer connection's trigger does not see another connection's inserts).
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
    let created = insert_jobs(conn, scope, jobs, ids, now)?;
    rollups::note_enqueued(conn, &created, now)?;
    Ok(crate::model::FlowInsert::Created(created))
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
        rows::insert_row(conn, &job, &id, now)?;
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
    rows::insert_full(conn, &job, &id, now, status, message.as_deref())?;
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

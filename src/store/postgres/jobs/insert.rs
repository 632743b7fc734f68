//! Inserts of jobs on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use crate::store::postgres::rows;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::{Enqueued, Status};
use crate::model::{NewRow, Scope, Waits};
use crate::store::postgres::deps;
use crate::store::postgres::ids::job_id;
use crate::store::postgres::{Conn, Sql};
use crate::store::rules::key_holds;
use crate::store::rules::{batch_results, group_owner, split_batch, within_budget};

/// The key's window has passed: the job gives it up, for the new job to take.
const RETIRE_KEY: &str =
    "UPDATE jobq_jobs SET idempotency_key = NULL WHERE id = $1 AND idempotency_key = $2";

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
    let (plain, special) = split_batch(jobs, ids, |owner, cost| check_budget(conn, owner, cost))?;
    if !plain.is_empty() {
        let batch: Vec<(&NewRow, Uuid)> = plain.iter().map(|(_, (job, id))| (job, *id)).collect();
        rows::insert_many(conn, &batch, now)?;
    }
    batch_results(
        &plain,
        special,
        |id| job_id(*id),
        |job, id, earlier| insert(conn, scope, job, id, now, earlier),
    )
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
    let each = jobs.into_iter().zip(ids).enumerate().collect();
    batch_results(
        &Vec::new(),
        each,
        |id| job_id(*id),
        |job, id, earlier| insert(conn, scope, job, id, now, earlier),
    )
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
        let found = conn
            .query_opt(GROUP_OWNER, &[group])?
            .map(|row| row.get::<_, Option<String>>(0));
        job.owner = group_owner(group, found, scope, job.owner.take())?;
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
    let full = (!plain).then_some((status, &waits));
    let inserted = rows::insert_one(conn, &job, id, now, full)?;
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
    let spent = crate::store::postgres::tenants::spent_cents(conn, owner)?;
    within_budget(owner, budget, spent, cost_cents)
}

//! Groups, owners and tokens on PostgreSQL.

use super::Postgres;
use super::{Conn, Sql};
use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
use crate::model::Owner;
use crate::model::{FlowInsert, GroupRow, OwnerWrite, Scope};
use crate::store::rules::saturate;

/// What an owner's jobs have cost so far, in cents (every job but those cancelled before
/// they ever started), summed exactly in `numeric` and read as text.
const SPENT: &str = "
    SELECT coalesce(sum(cost_cents), 0)::text FROM jobq_jobs
    WHERE owner = $1 AND (status <> 'cancelled' OR started_at IS NOT NULL)";

pub(crate) fn spent_cents(conn: &mut dyn Sql, owner: &str) -> Result<i128> {
    let text: String = conn.query_one(SPENT, &[&owner])?.get(0);
    Ok(text.parse().unwrap_or(i128::MAX))
}

const GROUP_ROW: &str = "
    SELECT id, owner, name, metadata::text, created_at FROM jobq_groups
    WHERE id = $1 AND ($2::text IS NULL OR owner = $2)";

const GROUP_JOBS: &str = "
    SELECT status, count(*),
           coalesce(sum(CASE WHEN status IN ('succeeded', 'failed', 'cancelled') THEN 1.0
                             WHEN status = 'running' THEN progress ELSE 0.0 END), 0)::float8,
           count(*) FILTER (WHERE attempts > 0)
    FROM jobq_jobs WHERE group_id = $1 GROUP BY status";

const GROUPS: &str = "
    SELECT id FROM jobq_groups WHERE ($1::text IS NULL OR owner = $1) ORDER BY id DESC LIMIT $2";

/// A group; one of a flow with a key the owner used already is not inserted (and the
/// statement returns no row): two racing submits of one key make one flow.
const INSERT_GROUP: &str = "
    INSERT INTO jobq_groups (id, owner, name, metadata, created_at, flow_key)
    VALUES ($1, $2, $3, $4::text::json, $5, $6)
    ON CONFLICT (coalesce(owner, ''), flow_key) WHERE flow_key IS NOT NULL DO NOTHING
    RETURNING id";

/// The group of the owner's flow made with a key, and its jobs by ref.
const FLOW_BY_KEY: &str = "
    SELECT id FROM jobq_groups WHERE coalesce(owner, '') = coalesce($1::text, '') AND flow_key = $2";
const FLOW_JOBS: &str = "
    SELECT o.flow_ref, j.id FROM jobq_jobs j JOIN jobq_job_options o ON o.job_id = j.id
    WHERE j.group_id = $1 AND o.flow_ref IS NOT NULL ORDER BY j.id";

/// Inserts a flow's group, or finds the owner's flow of its key: `Some` when that flow
/// exists (made before, or by a submit that committed first).
pub(crate) fn insert_flow_group(
    conn: &mut dyn super::Sql,
    group: &GroupRow,
) -> Result<Option<FlowInsert>> {
    if let Some(key) = &group.flow_key {
        if let Some(found) = flow_of_key(conn, group.owner.as_deref(), key)? {
            return Ok(Some(found));
        }
    }
    let inserted = conn.query_all(
        INSERT_GROUP,
        &[
            &group.id,
            &group.owner,
            &group.name,
            &group.metadata,
            &group.created_at,
            &group.flow_key,
        ],
    )?;
    match (&group.flow_key, inserted.is_empty()) {
        (Some(key), true) => flow_of_key(conn, group.owner.as_deref(), key),
        _ => Ok(None),
    }
}

fn flow_of_key(
    conn: &mut dyn super::Sql,
    owner: Option<&str>,
    key: &str,
) -> Result<Option<FlowInsert>> {
    let Some(row) = conn.query_opt(FLOW_BY_KEY, &[&owner, &key])? else {
        return Ok(None);
    };
    let group_id: String = row.get(0);
    let jobs = flow_refs(conn, &group_id)?;
    Ok(Some(FlowInsert::Existing { group_id, jobs }))
}

/// The jobs of a group that have a flow ref, with it.
pub(crate) fn flow_refs(conn: &mut dyn super::Sql, group_id: &str) -> Result<Vec<(String, JobId)>> {
    Ok(conn
        .query_all(FLOW_JOBS, &[&group_id])?
        .iter()
        .map(|r| (r.get::<_, String>(0), super::ids::job_id(r.get(1))))
        .collect())
}

pub(crate) fn insert_group(conn: &mut Conn, group: &GroupRow) -> Result<()> {
    conn.execute(
        INSERT_GROUP,
        &[
            &group.id,
            &group.owner,
            &group.name,
            &group.metadata,
            &group.created_at,
            &group.flow_key,
        ],
    )?;
    Ok(())
}

pub(crate) fn group(conn: &mut Conn, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
    let Some(row) = conn.query_opt(GROUP_ROW, &[&id, &scope])? else {
        return Ok(None);
    };
    let mut by_status = Vec::new();
    for r in conn.query(GROUP_JOBS, &[&id])? {
        let status: Status = r.get::<_, String>(0).parse()?;
        by_status.push((status, r.get(1), r.get(2), r.get(3)));
    }
    Ok(Some(GroupRow {
        id: row.get(0),
        owner: row.get(1),
        name: row.get(2),
        metadata: row.get(3),
        created_at: row.get(4),
        by_status,
        flow_key: None,
    }))
}

pub(crate) fn groups(conn: &mut Conn, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let ids: Vec<String> = conn
        .query(GROUPS, &[&scope, &limit])?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(group(conn, scope, &id)?);
    }
    Ok(out)
}

/// In the caller's transaction: the group's row locked, refused while one of its jobs runs.
pub(crate) fn delete_group(conn: &mut Conn, scope: Scope<'_>, id: &str) -> Result<usize> {
    let found = conn.query_opt(
        "SELECT id FROM jobq_groups WHERE id = $1 AND ($2::text IS NULL OR owner = $2) FOR UPDATE",
        &[&id, &scope],
    )?;
    if found.is_none() {
        return Err(Error::NotFound {
            what: "group",
            id: id.to_string(),
        });
    }
    let running = conn.query_opt(
        "SELECT id FROM jobq_jobs WHERE group_id = $1 AND status = 'running' LIMIT 1",
        &[&id],
    )?;
    if let Some(job) = running {
        return Err(Error::InvalidTransition {
            job: JobId::from_db(job.get::<_, uuid::Uuid>(0).hyphenated().to_string()),
            from: Status::Running,
            action: format!("delete its group {id} (cancel the job first)"),
        });
    }
    // A job outside the group that waits for one of its jobs would wait for ever.
    let waiting = conn.query_opt(
        "SELECT w.id, d.id FROM jobq_jobs d
         JOIN jobq_dependencies l ON l.dep_id = d.id
         JOIN jobq_jobs w ON w.id = l.job_id
         WHERE d.group_id = $1 AND d.dependents > 0 AND w.status = 'blocked'
           AND w.group_id IS DISTINCT FROM $1
         LIMIT 1",
        &[&id],
    )?;
    if let Some(row) = waiting {
        let name = |u: uuid::Uuid| u.hyphenated().to_string();
        return Err(Error::InvalidTransition {
            job: JobId::from_db(name(row.get(1))),
            from: Status::Blocked,
            action: format!(
                "delete its group {id} (job {}, outside the group, waits for it: cancel that first)",
                name(row.get(0))
            ),
        });
    }
    let jobs = conn.execute("DELETE FROM jobq_jobs WHERE group_id = $1", &[&id])?;
    conn.execute("DELETE FROM jobq_groups WHERE id = $1", &[&id])?;
    Ok(jobs as usize)
}

pub(crate) fn write_owner(conn: &mut Conn, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
    match write {
        OwnerWrite::Create(budget) => {
            let n = conn.execute(
                "INSERT INTO jobq_owners (id, budget_cents, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO NOTHING",
                &[&id, &budget, &now],
            )?;
            if n == 0 {
                return Err(Error::Duplicate {
                    what: "owner",
                    id: id.to_string(),
                });
            }
        }
        OwnerWrite::SetBudget(budget) => {
            conn.execute(
                "INSERT INTO jobq_owners (id, budget_cents, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET budget_cents = excluded.budget_cents",
                &[&id, &budget, &now],
            )?;
        }
        OwnerWrite::Ensure => {
            conn.execute(
                "INSERT INTO jobq_owners (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                &[&id, &now],
            )?;
        }
    }
    Ok(())
}

pub(crate) fn owner(conn: &mut Conn, id: &str) -> Result<Option<Owner>> {
    let Some(row) = conn.query_opt(
        "SELECT budget_cents, created_at FROM jobq_owners WHERE id = $1",
        &[&id],
    )?
    else {
        return Ok(None);
    };
    Ok(Some(Owner {
        id: id.to_string(),
        budget_cents: row.get(0),
        spent_cents: saturate(spent_cents(conn, id)?),
        created_at: Timestamp::from_millis(row.get(1)),
    }))
}

pub(crate) fn insert_token(
    conn: &mut Conn,
    owner: &str,
    token_id: &str,
    secret_hash: &str,
    now: i64,
) -> Result<()> {
    write_owner(conn, owner, OwnerWrite::Ensure, now)?;
    conn.execute(
        "INSERT INTO jobq_tokens (id, owner_id, secret_hash, created_at) VALUES ($1, $2, $3, $4)",
        &[&token_id, &owner, &secret_hash, &now],
    )?;
    Ok(())
}

pub(crate) fn token(conn: &mut Conn, token_id: &str) -> Result<Option<crate::model::TokenRow>> {
    Ok(conn
        .query_opt(
            "SELECT owner_id, secret_hash FROM jobq_tokens WHERE id = $1",
            &[&token_id],
        )?
        .map(|r| crate::model::TokenRow {
            owner: r.get(0),
            secret_hash: r.get(1),
        }))
}

pub(crate) fn revoke_tokens(conn: &mut Conn, owner: &str) -> Result<usize> {
    Ok(conn.execute("DELETE FROM jobq_tokens WHERE owner_id = $1", &[&owner])? as usize)
}

impl crate::store::TenantStore for Postgres {
    fn insert_group(&self, group: &GroupRow) -> Result<()> {
        self.run(|conn| insert_group(conn, group))
    }

    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
        self.snapshot(|conn| group(conn, scope, id))
    }

    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
        self.snapshot(|conn| groups(conn, scope, limit))
    }

    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize> {
        self.transaction(|conn| delete_group(conn, scope, id))
    }

    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
        self.run(|conn| write_owner(conn, id, write, now))
    }

    fn owner(&self, id: &str) -> Result<Option<Owner>> {
        self.snapshot(|conn| owner(conn, id))
    }

    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()> {
        self.transaction(|conn| insert_token(conn, owner, token_id, secret_hash, now))
    }

    fn token(&self, token_id: &str) -> Result<Option<crate::model::TokenRow>> {
        self.read(|conn| token(conn, token_id))
    }

    fn revoke_tokens(&self, owner: &str) -> Result<usize> {
        self.run(|conn| revoke_tokens(conn, owner))
    }
}

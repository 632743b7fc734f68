//! Groups, owners and tokens on SQLite.

use super::Sqlite;
use rusqlite::{Connection, OptionalExtension, named_params, params};

use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
use crate::model::Owner;
use crate::model::{FlowInsert, GroupRow, OwnerWrite, Scope};
use crate::store::rules::{exact_sum, saturate};

/// What an owner's jobs have cost so far, in cents: every job but those cancelled before
/// they ever started. The one definition behind budgets and cost reports. The sum comes in
/// two exact parts (see [`exact_sum`]).
const SPENT: &str = "
    SELECT coalesce(sum(cost_cents >> 20), 0), coalesce(sum(cost_cents & 1048575), 0)
    FROM jobq_jobs
    WHERE owner = ?1 AND (status <> 'cancelled' OR started_at IS NOT NULL)";

/// What an owner's jobs have cost so far, exactly.
pub(crate) fn spent_cents(conn: &Connection, owner: &str) -> Result<i128> {
    Ok(conn
        .prepare_cached(SPENT)?
        .query_row([owner], |r| Ok(exact_sum(r.get(0)?, r.get(1)?)))?)
}

const GROUP_ROW: &str = "
    SELECT id, owner, name, metadata, created_at FROM jobq_groups
    WHERE id = :id AND (:owner IS NULL OR owner = :owner)";

const GROUP_JOBS: &str = "
    SELECT status, count(*),
           sum(CASE WHEN status IN ('succeeded', 'failed', 'cancelled') THEN 1.0
                    WHEN status = 'running' THEN progress ELSE 0.0 END),
           sum(attempts > 0)
    FROM jobq_jobs WHERE group_id = ?1 GROUP BY status";

pub(crate) fn insert_group(conn: &Connection, group: &GroupRow) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO jobq_groups (id, owner, name, metadata, created_at, flow_key)
         VALUES (:id, :owner, :name, :metadata, :now, :flow_key)",
    )?
    .execute(named_params! {
        ":id": group.id, ":owner": group.owner, ":name": group.name,
        ":metadata": group.metadata, ":now": group.created_at, ":flow_key": group.flow_key,
    })?;
    Ok(())
}

/// The group of the owner's flow made with `key`, if there is one.
const FLOW_BY_KEY: &str = "
    SELECT id FROM jobq_groups WHERE coalesce(owner, '') = coalesce(?1, '') AND flow_key = ?2";

/// Its jobs, by ref.
const FLOW_JOBS: &str = "
    SELECT o.flow_ref, j.id FROM jobq_jobs j JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE j.group_id = ?1 AND o.flow_ref IS NOT NULL ORDER BY j.id_key";

/// The owner's flow made with the key of `group`, if it has a key and there is one.
pub(crate) fn existing_flow(conn: &Connection, group: &GroupRow) -> Result<Option<FlowInsert>> {
    let Some(key) = &group.flow_key else {
        return Ok(None);
    };
    let found: Option<String> = conn
        .prepare_cached(FLOW_BY_KEY)?
        .query_row(params![group.owner, key], |r| r.get(0))
        .optional()?;
    let Some(group_id) = found else {
        return Ok(None);
    };
    let jobs = flow_refs(conn, &group_id)?;
    Ok(Some(FlowInsert::Existing { group_id, jobs }))
}

/// The jobs of a group that have a flow ref, with it.
pub(crate) fn flow_refs(conn: &Connection, group_id: &str) -> Result<Vec<(String, JobId)>> {
    let mut stmt = conn.prepare_cached(FLOW_JOBS)?;
    let jobs = stmt
        .query_map([group_id], |r| {
            Ok((r.get::<_, String>(0)?, JobId::from_db(r.get(1)?)))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(jobs)
}

pub(crate) fn group(conn: &Connection, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
    let row: Option<(String, Option<String>, String, String, i64)> = conn
        .prepare_cached(GROUP_ROW)?
        .query_row(named_params! {":id": id, ":owner": scope}, |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let Some((id, owner, name, metadata, created_at)) = row else {
        return Ok(None);
    };
    let mut by_status = Vec::new();
    let mut stmt = conn.prepare_cached(GROUP_JOBS)?;
    let mut rows = stmt.query([&id])?;
    while let Some(r) = rows.next()? {
        let status: Status = r.get::<_, String>(0)?.parse()?;
        by_status.push((status, r.get(1)?, r.get(2)?, r.get(3)?));
    }
    Ok(Some(GroupRow {
        id,
        owner,
        name,
        metadata,
        created_at,
        by_status,
        flow_key: None,
    }))
}

pub(crate) fn groups(conn: &Connection, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
    let ids: Vec<String> = conn
        .prepare_cached(
            "SELECT id FROM jobq_groups WHERE (?1 IS NULL OR owner = ?1) ORDER BY id DESC LIMIT ?2 + 0",
        )?
        .query_map(params![scope, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        out.extend(group(conn, scope, &id)?);
    }
    Ok(out)
}

pub(crate) fn delete_group(conn: &Connection, scope: Scope<'_>, id: &str) -> Result<usize> {
    let jobs: Option<i64> = conn
        .prepare_cached(
            "SELECT (SELECT count(*) FROM jobq_jobs WHERE group_id = :id)
             FROM jobq_groups WHERE id = :id AND (:owner IS NULL OR owner = :owner)",
        )?
        .query_row(named_params! {":id": id, ":owner": scope}, |r| r.get(0))
        .optional()?;
    let jobs = jobs.ok_or_else(|| Error::NotFound {
        what: "group",
        id: id.to_string(),
    })?;
    let running: Option<String> = conn
        .prepare_cached(
            "SELECT id FROM jobq_jobs WHERE group_id = ?1 AND status = 'running' LIMIT 1",
        )?
        .query_row([id], |r| r.get(0))
        .optional()?;
    if let Some(job) = running {
        return Err(Error::InvalidTransition {
            job: JobId::from_db(job),
            from: Status::Running,
            action: format!("delete its group {id} (cancel the job first)"),
        });
    }
    // A job outside the group that waits for one of its jobs would wait for ever.
    let waiting: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT w.id, d.id FROM jobq_jobs d
             JOIN jobq_dependencies l ON l.dep_key = d.id_key
             JOIN jobq_jobs w ON w.id_key = l.job_key
             WHERE d.group_id = ?1 AND d.dependents > 0 AND w.status = 'blocked'
               AND w.group_id IS NOT ?1
             LIMIT 1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if let Some((waiting, dependency)) = waiting {
        return Err(Error::InvalidTransition {
            job: JobId::from_db(dependency),
            from: Status::Blocked,
            action: format!(
                "delete its group {id} (job {waiting}, outside the group, waits for it: cancel that first)"
            ),
        });
    }
    conn.prepare_cached("DELETE FROM jobq_groups WHERE id = ?1")?
        .execute([id])?;
    Ok(jobs as usize)
}

pub(crate) fn write_owner(conn: &Connection, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
    match write {
        OwnerWrite::Create(budget) => {
            let n = conn
                .prepare_cached(
                    "INSERT INTO jobq_owners (id, budget_cents, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (id) DO NOTHING",
                )?
                .execute(params![id, budget, now])?;
            if n == 0 {
                return Err(Error::Duplicate {
                    what: "owner",
                    id: id.to_string(),
                });
            }
        }
        OwnerWrite::SetBudget(budget) => {
            conn.prepare_cached(
                "INSERT INTO jobq_owners (id, budget_cents, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET budget_cents = excluded.budget_cents",
            )?
            .execute(params![id, budget, now])?;
        }
        OwnerWrite::Ensure => {
            conn.prepare_cached(
                "INSERT INTO jobq_owners (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
            )?
            .execute(params![id, now])?;
        }
    }
    Ok(())
}

pub(crate) fn owner(conn: &Connection, id: &str) -> Result<Option<Owner>> {
    let row: Option<(Option<i64>, i64)> = conn
        .prepare_cached("SELECT budget_cents, created_at FROM jobq_owners WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((budget_cents, created_at)) = row else {
        return Ok(None);
    };
    Ok(Some(Owner {
        id: id.to_string(),
        budget_cents,
        spent_cents: saturate(spent_cents(conn, id)?),
        created_at: Timestamp::from_millis(created_at),
    }))
}

pub(crate) fn insert_token(
    conn: &Connection,
    owner: &str,
    token_id: &str,
    secret_hash: &str,
    now: i64,
) -> Result<()> {
    write_owner(conn, owner, OwnerWrite::Ensure, now)?;
    conn.prepare_cached(
        "INSERT INTO jobq_tokens (id, owner_id, secret_hash, created_at)
         VALUES (:id, :owner, :hash, :now)",
    )?
    .execute(named_params! {":id": token_id, ":owner": owner, ":hash": secret_hash, ":now": now})?;
    Ok(())
}

pub(crate) fn token(conn: &Connection, token_id: &str) -> Result<Option<crate::model::TokenRow>> {
    Ok(conn
        .prepare_cached("SELECT owner_id, secret_hash FROM jobq_tokens WHERE id = ?1")?
        .query_row([token_id], |r| {
            Ok(crate::model::TokenRow {
                owner: r.get(0)?,
                secret_hash: r.get(1)?,
            })
        })
        .optional()?)
}

pub(crate) fn revoke_tokens(conn: &Connection, owner: &str) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM jobq_tokens WHERE owner_id = ?1")?
        .execute([owner])?)
}

impl crate::store::TenantStore for Sqlite {
    fn insert_group(&self, group: &GroupRow) -> Result<()> {
        self.write(|tx| insert_group(tx, group))
    }

    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
        self.read(|conn| group(conn, scope, id))
    }

    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
        self.read(|conn| groups(conn, scope, limit))
    }

    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize> {
        self.write(|tx| delete_group(tx, scope, id))
    }

    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
        self.write(|tx| write_owner(tx, id, write, now))
    }

    fn owner(&self, id: &str) -> Result<Option<Owner>> {
        self.read(|conn| owner(conn, id))
    }

    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()> {
        self.write(|tx| insert_token(tx, owner, token_id, secret_hash, now))
    }

    fn token(&self, token_id: &str) -> Result<Option<crate::model::TokenRow>> {
        self.read(|conn| token(conn, token_id))
    }

    fn revoke_tokens(&self, owner: &str) -> Result<usize> {
        self.write(|tx| revoke_tokens(tx, owner))
    }
}

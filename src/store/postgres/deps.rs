//! Dependencies on PostgreSQL: what a new job waits for, who waits for whom, and what a
//! dependent reads of its dependencies. Settling dependents when a dependency's status
//! changes is done by the triggers of `schema.postgres.sql` (migration 4).

use uuid::Uuid;

use super::Sql;
use super::ids::{job_id, uuid_of};
use crate::error::Result;
use crate::job::{Enqueued, JobId, JobLink, Status};
use crate::model::{DepRef, Scope, Waits};

/// The dependencies, locked in id order until the insert commits: a dependency that
/// finishes meanwhile waits for it, and its trigger then sees the new dependent (one that
/// finished first is read as finished here).
const LOCK_DEPENDENCIES: &str = "
    SELECT id, status, owner FROM jobq_jobs WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE";

const LINK: &str = "
    WITH linked AS (
        INSERT INTO jobq_dependencies (dep_id, job_id)
        SELECT unnest($1::uuid[]), $2
        ON CONFLICT DO NOTHING
        RETURNING dep_id)
    UPDATE jobq_jobs SET dependents = dependents + 1 WHERE id IN (SELECT dep_id FROM linked)";

const DEPENDENCIES: &str = "
    SELECT p.id, p.kind, p.status, o.flow_ref
    FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
    LEFT JOIN jobq_job_options o ON o.job_id = p.id
    WHERE d.job_id = $1 ORDER BY p.id";

const DEPENDENTS: &str = "
    SELECT j.id, j.kind, j.status, o.flow_ref
    FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
    LEFT JOIN jobq_job_options o ON o.job_id = j.id
    WHERE d.dep_id = $1 ORDER BY j.id";

const OUTPUTS: &str = "
    SELECT p.id, o.flow_ref, p.output::text
    FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
    LEFT JOIN jobq_job_options o ON o.job_id = p.id
    WHERE d.job_id = $1 ORDER BY p.id";

const GROUP_EDGES: &str = "
    SELECT j.id, p.id FROM jobq_jobs j
    JOIN jobq_dependencies d ON d.job_id = j.id
    JOIN jobq_jobs p ON p.id = d.dep_id
    WHERE j.group_id = $1 ORDER BY j.id, p.id LIMIT $2";

const VISIBLE: &str = "SELECT 1 FROM jobq_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)";

/// The first dependency of $1 that failed or was cancelled, when $1 does not run anyway.
const FAILED_DEPENDENCY: &str = "
    SELECT p.id, p.status FROM jobq_dependencies d JOIN jobq_jobs p ON p.id = d.dep_id
    WHERE d.job_id = $1 AND p.status IN ('failed', 'cancelled')
      AND NOT coalesce((SELECT run_on_dependency_failure FROM jobq_job_options WHERE job_id = $1), false)
    ORDER BY p.id LIMIT 1";

const WAITING_DEPENDENT: &str = "
    SELECT j.id FROM jobq_dependencies d JOIN jobq_jobs j ON j.id = d.job_id
    WHERE d.dep_id = $1 AND j.status = 'blocked' LIMIT 1";

/// The jobs `after` names, checked (each exists and this scope sees it) and locked, and
/// how the new job stands towards them.
pub(crate) fn resolve(
    conn: &mut dyn Sql,
    scope: Scope<'_>,
    after: &[DepRef],
    earlier: &[Option<Enqueued>],
    run_on_failure: bool,
) -> Result<Waits> {
    let mut ids = Vec::with_capacity(after.len());
    for dep in after {
        let id = match dep {
            DepRef::Job(id) => id.clone(),
            DepRef::Earlier(i) => earlier
                .get(*i)
                .and_then(Option::as_ref)
                .map(|e| e.job_id.clone())
                .ok_or_else(|| {
                    crate::error::Error::invalid("after", "a dependency names a later job")
                })?,
        };
        let uuid = uuid_of(&id).map_err(|_| Waits::missing(&id))?;
        ids.push((id, uuid));
    }
    let uuids: Vec<Uuid> = ids.iter().map(|(_, u)| *u).collect();
    let rows = conn.query_all(LOCK_DEPENDENCIES, &[&uuids])?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let owner: Option<String> = row.get(2);
        if scope.is_none() || owner.as_deref() == scope {
            found.insert(row.get::<_, Uuid>(0), row.get::<_, String>(1));
        }
    }
    let mut waits = Waits::default();
    for (id, uuid) in ids {
        let status: Status = found
            .get(&uuid)
            .ok_or_else(|| Waits::missing(&id))?
            .parse()?;
        waits.add(id, status, run_on_failure);
    }
    Ok(waits)
}

/// Records that the job `job` waits for `waits.jobs`.
pub(crate) fn link(conn: &mut dyn Sql, job: Uuid, waits: &Waits) -> Result<()> {
    let mut deps = Vec::with_capacity(waits.jobs.len());
    for id in &waits.jobs {
        deps.push(uuid_of(id)?);
    }
    conn.query_all(LINK, &[&deps, &job])?;
    Ok(())
}

fn read_links(conn: &mut dyn Sql, sql: &'static str, id: Uuid) -> Result<Vec<JobLink>> {
    let mut out = Vec::new();
    for r in conn.query_all(sql, &[&id])? {
        out.push(JobLink {
            id: job_id(r.get(0)),
            flow_ref: r.get(3),
            kind: r.get(1),
            status: r.get::<_, String>(2).parse()?,
        });
    }
    Ok(out)
}

/// The jobs `id` waits for, those that wait for it, and its concurrency key.
pub(crate) fn links(conn: &mut dyn Sql, id: &JobId) -> Result<crate::job::Links> {
    let uuid = uuid_of(id)?;
    let (concurrency_key, flow_ref) = conn
        .query_opt(
            "SELECT concurrency_key, flow_ref FROM jobq_job_options WHERE job_id = $1",
            &[&uuid],
        )?
        .map(|r| (r.get(0), r.get(1)))
        .unwrap_or_default();
    Ok(crate::job::Links {
        dependencies: read_links(conn, DEPENDENCIES, uuid)?,
        dependents: read_links(conn, DEPENDENTS, uuid)?,
        concurrency_key,
        flow_ref,
    })
}

/// Each dependency of `id` with its output (JSON text); `None` when the scope does not
/// see `id`.
pub(crate) fn outputs(
    conn: &mut dyn Sql,
    scope: Scope<'_>,
    id: &JobId,
) -> Result<Option<crate::model::Outputs>> {
    let Ok(uuid) = uuid_of(id) else {
        return Ok(None);
    };
    if conn.query_opt(VISIBLE, &[&uuid, &scope])?.is_none() {
        return Ok(None);
    }
    Ok(Some(
        conn.query_all(OUTPUTS, &[&uuid])?
            .iter()
            .map(|r| crate::model::Output {
                id: job_id(r.get(0)),
                flow_ref: r.get(1),
                output: r.get(2),
            })
            .collect(),
    ))
}

/// A job that waits for `id` and is still blocked, if any.
pub(crate) fn waiting_dependent(conn: &mut dyn Sql, id: Uuid) -> Result<Option<JobId>> {
    Ok(conn
        .query_opt(WAITING_DEPENDENT, &[&id])?
        .map(|r| job_id(r.get(0))))
}

/// Who waits for whom among the jobs of `group`.
pub(crate) fn group_edges(
    conn: &mut dyn Sql,
    group: &str,
    limit: usize,
) -> Result<Vec<(JobId, JobId)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    Ok(conn
        .query_all(GROUP_EDGES, &[&group, &limit])?
        .iter()
        .map(|r| (job_id(r.get(0)), job_id(r.get(1))))
        .collect())
}

/// The first dependency of `id` that failed or was cancelled, when `id` does not run
/// anyway: a manual retry would leave it blocked for ever.
pub(crate) fn failed_dependency(conn: &mut dyn Sql, id: Uuid) -> Result<Option<(JobId, Status)>> {
    conn.query_opt(FAILED_DEPENDENCY, &[&id])?
        .map(|r| Ok((job_id(r.get(0)), r.get::<_, String>(1).parse()?)))
        .transpose()
}

//! Dependencies on SQLite: what a new job waits for, who waits for whom, and what a
//! dependent reads of its dependencies. Settling dependents when a dependency's status
//! changes is done by the triggers of `schema.sql` (migration 4), in the same statement.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::job::{Enqueued, JobId, JobLink, Status};
use crate::store::{DepRef, Scope, Waits};

const DEPENDENCY: &str = "SELECT status, owner FROM jobq_jobs WHERE id_key = ?1 AND id = ?2";

const LINK: &str = "INSERT OR IGNORE INTO jobq_dependencies (dep_key, job_key) VALUES (?1, ?2)";

const COUNT_DEPENDENT: &str =
    "UPDATE jobq_jobs SET dependents = dependents + 1 WHERE id_key = ?1 AND id = ?2";

const DEPENDENCIES: &str = "
    SELECT p.id, p.kind, p.status FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
    WHERE d.job_key = ?1 ORDER BY p.id_key";

const DEPENDENTS: &str = "
    SELECT j.id, j.kind, j.status FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
    WHERE d.dep_key = ?1 ORDER BY j.id_key";

const OUTPUTS: &str = "
    SELECT p.id, p.output FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
    WHERE d.job_key = ?1 ORDER BY p.id_key";

const GROUP_EDGES: &str = "
    SELECT j.id, p.id FROM jobq_jobs j
    JOIN jobq_dependencies d ON d.job_key = j.id_key
    JOIN jobq_jobs p ON p.id_key = d.dep_key
    WHERE j.group_id = ?1 ORDER BY j.id_key, p.id_key LIMIT ?2";

const WAITING_DEPENDENT: &str = "
    SELECT j.id FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
    WHERE d.dep_key = ?1 AND j.status = 'blocked' LIMIT 1";

/// The jobs `after` names, checked (each exists and this scope sees it), and how the new
/// job stands towards them.
pub(crate) fn resolve(
    conn: &Connection,
    scope: Scope<'_>,
    after: &[DepRef],
    earlier: &[Option<Enqueued>],
    run_on_failure: bool,
) -> Result<Waits> {
    let mut waits = Waits::default();
    for dep in after {
        let id = match dep {
            DepRef::Job(id) => id.clone(),
            DepRef::Earlier(i) => earlier
                .get(*i)
                .and_then(Option::as_ref)
                .map(|e| e.job_id.clone())
                .ok_or_else(|| Error::invalid("after", "a dependency names a later job"))?,
        };
        let row: Option<(String, Option<String>)> = conn
            .prepare_cached(DEPENDENCY)?
            .query_row(params![id.key(), id.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?;
        let status = match row {
            Some((status, owner)) if scope.is_none() || owner.as_deref() == scope => {
                status.parse::<Status>()?
            }
            _ => return Err(Waits::missing(&id)),
        };
        waits.add(id, status, run_on_failure);
    }
    Ok(waits)
}

/// Records that the job `job` waits for `waits.jobs`.
pub(crate) fn link(conn: &Connection, job: &JobId, waits: &Waits) -> Result<()> {
    let mut link = conn.prepare_cached(LINK)?;
    let mut count = conn.prepare_cached(COUNT_DEPENDENT)?;
    for dep in &waits.jobs {
        if link.execute(params![dep.key(), job.key()])? == 1 {
            count.execute(params![dep.key(), dep.as_str()])?;
        }
    }
    Ok(())
}

fn read_links(conn: &Connection, sql: &str, key: i64) -> Result<Vec<JobLink>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([key], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, status) = row?;
        out.push(JobLink {
            id: JobId::from_db(id),
            kind,
            status: status.parse()?,
        });
    }
    Ok(out)
}

/// The jobs `id` waits for, and those that wait for it.
pub(crate) fn links(conn: &Connection, id: &JobId) -> Result<(Vec<JobLink>, Vec<JobLink>)> {
    Ok((
        read_links(conn, DEPENDENCIES, id.key())?,
        read_links(conn, DEPENDENTS, id.key())?,
    ))
}

/// Each dependency of `id` with its output (JSON text; none before it succeeded).
pub(crate) fn outputs(conn: &Connection, id: &JobId) -> Result<Vec<(JobId, Option<String>)>> {
    let mut stmt = conn.prepare_cached(OUTPUTS)?;
    let rows = stmt.query_map([id.key()], |r| {
        Ok((JobId::from_db(r.get(0)?), r.get::<_, Option<String>>(1)?))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A job that waits for `id` and is still blocked, if any.
pub(crate) fn waiting_dependent(conn: &Connection, id: &JobId) -> Result<Option<JobId>> {
    Ok(conn
        .prepare_cached(WAITING_DEPENDENT)?
        .query_row([id.key()], |r| r.get::<_, String>(0))
        .optional()?
        .map(JobId::from_db))
}

/// Who waits for whom among the jobs of `group`.
pub(crate) fn group_edges(
    conn: &Connection,
    group: &str,
    limit: usize,
) -> Result<Vec<(JobId, JobId)>> {
    let mut stmt = conn.prepare_cached(GROUP_EDGES)?;
    let rows = stmt.query_map(params![group, limit as i64], |r| {
        Ok((JobId::from_db(r.get(0)?), JobId::from_db(r.get(1)?)))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

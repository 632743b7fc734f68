//! Dependencies on SQLite: what a new job waits for, who waits for whom, what a dependent
//! reads of its dependencies, and settling dependents in the transaction that changes a
//! dependency's status (PostgreSQL does that by triggers; here a trigger on the jobs table
//! would slow every claim and completion, so the statements that change a status of a
//! job with dependents call [`settle`]).

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};
use crate::job::{Enqueued, JobId, JobLink, Status};
use crate::model::{DepRef, Scope, Waits};

const DEPENDENCY: &str = "SELECT status, owner FROM jobq_jobs WHERE id_key = ?1 AND id = ?2";

const LINK: &str = "INSERT OR IGNORE INTO jobq_dependencies (dep_key, job_key) VALUES (?1, ?2)";

const COUNT_DEPENDENT: &str =
    "UPDATE jobq_jobs SET dependents = dependents + 1 WHERE id_key = ?1 AND id = ?2";

const DEPENDENCIES: &str = "
    SELECT p.id, p.kind, p.status, o.flow_ref
    FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
    LEFT JOIN jobq_job_options o ON o.job_key = p.id_key
    WHERE d.job_key = ?1 ORDER BY p.id_key";

const DEPENDENTS: &str = "
    SELECT j.id, j.kind, j.status, o.flow_ref
    FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
    LEFT JOIN jobq_job_options o ON o.job_key = j.id_key
    WHERE d.dep_key = ?1 ORDER BY j.id_key";

const OUTPUTS: &str = "
    SELECT p.id, o.flow_ref, p.output
    FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
    LEFT JOIN jobq_job_options o ON o.job_key = p.id_key
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
            r.get::<_, Option<String>>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, status, flow_ref) = row?;
        out.push(JobLink {
            id: JobId::from_db(id),
            flow_ref,
            kind,
            status: status.parse()?,
        });
    }
    Ok(out)
}

/// The jobs `id` waits for, those that wait for it, and its concurrency key.
pub(crate) fn links(conn: &Connection, id: &JobId) -> Result<crate::job::Links> {
    let (concurrency_key, flow_ref): (Option<String>, Option<String>) = conn
        .prepare_cached(
            "SELECT concurrency_key, flow_ref FROM jobq_job_options WHERE job_key = ?1",
        )?
        .query_row([id.key()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_default();
    Ok(crate::job::Links {
        dependencies: read_links(conn, DEPENDENCIES, id.key())?,
        dependents: read_links(conn, DEPENDENTS, id.key())?,
        concurrency_key,
        flow_ref,
    })
}

/// Each dependency of `id` with its output (JSON text; none before it succeeded).
pub(crate) fn outputs(conn: &Connection, id: &JobId) -> Result<crate::model::Outputs> {
    let mut stmt = conn.prepare_cached(OUTPUTS)?;
    let rows = stmt.query_map([id.key()], |r| {
        Ok(crate::model::Output {
            id: JobId::from_db(r.get(0)?),
            flow_ref: r.get(1)?,
            output: r.get(2)?,
        })
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

// ---- settling dependents --------------------------------------------------------------------

/// Of the job whose options row is being updated, the dependencies that have not settled
/// (for a job that runs anyway, a dependency that ended in failure has).
macro_rules! unsettled {
    () => {
        "(SELECT count(*) FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
          WHERE d.job_key = jobq_job_options.job_key AND p.status <> 'succeeded'
            AND (jobq_job_options.run_on_dependency_failure = 0
                 OR (p.status <> 'failed' AND p.status <> 'cancelled')))"
    };
}

/// The blocked dependents of ?1 have one dependency less to wait for (with ?3 = 1, only
/// those that run anyway).
const DECREMENT: &str = "
    UPDATE jobq_job_options SET waiting_on = max(waiting_on - 1, 0)
    WHERE (?3 = 0 OR run_on_dependency_failure = 1)
      AND job_key IN (SELECT d.job_key FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
                      WHERE d.dep_key = ?1 AND j.status = 'blocked')";

/// The blocked dependents of ?1 that wait for nothing more are `queued`, runnable from ?2.
const RELEASE_READY: &str = "
    UPDATE jobq_jobs
    SET status = 'queued', run_after = max(run_after, ?2), updated_at = ?2
    WHERE status = 'blocked'
      AND id_key IN (SELECT d.job_key FROM jobq_dependencies d
                     JOIN jobq_job_options o ON o.job_key = d.job_key
                     WHERE d.dep_key = ?1 AND o.waiting_on = 0)";

/// A failure or a cancel of ?1: the blocked dependents that do not run anyway, and theirs,
/// and so on, are cancelled with DEPENDENCY_FAILED. ?2 now, ?3 the message.
const CANCEL_DEPENDENTS: &str = "
    UPDATE jobq_jobs
    SET status = 'cancelled', error_code = 'DEPENDENCY_FAILED', last_error = ?3,
        errors = json_insert(errors, '$[#]', json_object('attempt', attempts,
            'code', 'DEPENDENCY_FAILED', 'message', ?3, 'at', ?2)),
        completed_at = ?2, updated_at = ?2
    WHERE id_key IN (
        WITH RECURSIVE doomed(k) AS (
            SELECT d.job_key FROM jobq_dependencies d
            JOIN jobq_jobs j ON j.id_key = d.job_key
            JOIN jobq_job_options o ON o.job_key = d.job_key
            WHERE d.dep_key = ?1 AND j.status = 'blocked' AND o.run_on_dependency_failure = 0
            UNION
            SELECT d.job_key FROM doomed
            JOIN jobq_dependencies d ON d.dep_key = doomed.k
            JOIN jobq_jobs j ON j.id_key = d.job_key
            JOIN jobq_job_options o ON o.job_key = d.job_key
            WHERE j.status = 'blocked' AND o.run_on_dependency_failure = 0)
        SELECT k FROM doomed)
    RETURNING id, dependents";

/// A manual retry of ?1: the dependents its failure cancelled (and theirs) are `blocked`
/// again — unless another of their dependencies has failed or was cancelled too (they would
/// wait for ever; the retry of that one brings them back). ?2 now.
///
/// `revivable` is every job cancelled by the cascade below ?1; `kept` those of them with a
/// failed dependency outside it, and whatever waits for those within it.
const REVIVE_DEPENDENTS: &str = "
    UPDATE jobq_jobs
    SET status = 'blocked', error_code = NULL, last_error = NULL, completed_at = NULL,
        updated_at = ?2
    WHERE id_key IN (
        WITH RECURSIVE revivable(k) AS (
            SELECT d.job_key FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
            WHERE d.dep_key = ?1 AND j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED'
            UNION
            SELECT d.job_key FROM revivable
            JOIN jobq_dependencies d ON d.dep_key = revivable.k
            JOIN jobq_jobs j ON j.id_key = d.job_key
            WHERE j.status = 'cancelled' AND j.error_code = 'DEPENDENCY_FAILED'),
        kept(k) AS (
            SELECT r.k FROM revivable r
            WHERE EXISTS (SELECT 1 FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
                          WHERE d.job_key = r.k AND p.status IN ('failed', 'cancelled')
                            AND p.id_key NOT IN (SELECT k FROM revivable))
            UNION
            SELECT d.job_key FROM kept JOIN jobq_dependencies d ON d.dep_key = kept.k
            WHERE d.job_key IN (SELECT k FROM revivable))
        SELECT k FROM revivable EXCEPT SELECT k FROM kept)
    RETURNING id, dependents";

/// The first dependency of ?1 that failed or was cancelled, when ?1 does not run anyway.
const FAILED_DEPENDENCY: &str = "
    SELECT p.id, p.status FROM jobq_dependencies d JOIN jobq_jobs p ON p.id_key = d.dep_key
    WHERE d.job_key = ?1 AND p.status IN ('failed', 'cancelled')
      AND coalesce((SELECT run_on_dependency_failure FROM jobq_job_options WHERE job_key = ?1), 0) = 0
    ORDER BY p.id_key LIMIT 1";

/// The first dependency of `id` that failed or was cancelled, when `id` does not run
/// anyway: a manual retry would leave it blocked for ever.
pub(crate) fn failed_dependency(conn: &Connection, id: &JobId) -> Result<Option<(JobId, Status)>> {
    let row: Option<(String, String)> = conn
        .prepare_cached(FAILED_DEPENDENCY)?
        .query_row([id.key()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    row.map(|(dep, status)| Ok((JobId::from_db(dep), status.parse()?)))
        .transpose()
}

/// The count of what the job ?1 waits for, taken again.
pub(crate) const RECOUNT: &str = concat!(
    "UPDATE jobq_job_options SET waiting_on = ",
    unsettled!(),
    " WHERE job_key = ?1"
);

/// The same for the blocked dependents of ?1 that run anyway.
const RECOUNT_RUN_ANYWAY: &str = concat!(
    "UPDATE jobq_job_options SET waiting_on = ",
    unsettled!(),
    " WHERE run_on_dependency_failure = 1
        AND job_key IN (SELECT d.job_key FROM jobq_dependencies d JOIN jobq_jobs j ON j.id_key = d.job_key
                        WHERE d.dep_key = ?1 AND j.status = 'blocked')"
);

/// How a job with dependents changed status, for [`settle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// It succeeded.
    Succeeded,
    /// It failed for good or was cancelled (`status`).
    Ended(Status),
    /// It was retried by hand (from failed or cancelled).
    Retried,
}

/// One dependency less for the blocked dependents of `key` (all, or those that run
/// anyway), and those that wait for nothing more queued. Whether one was.
fn count_down(conn: &Connection, key: i64, run_anyway_only: bool, now: i64) -> Result<bool> {
    conn.prepare_cached(DECREMENT)?
        .execute(params![key, now, i64::from(run_anyway_only)])?;
    Ok(conn
        .prepare_cached(RELEASE_READY)?
        .execute(params![key, now])?
        > 0)
}

/// Settles the dependents of the job `id` (which has dependents) after its status changed
/// as `how`, in the caller's transaction. Returns whether a dependent became ready.
pub(crate) fn settle(conn: &Connection, id: &JobId, how: Settled, now: i64) -> Result<bool> {
    let key = id.key();
    match how {
        Settled::Succeeded => count_down(conn, key, false, now),
        Settled::Ended(status) => {
            let message = format!("dependency {id} {status}");
            let doomed: Vec<(String, i64)> = conn
                .prepare_cached(CANCEL_DEPENDENTS)?
                .query_map(params![key, now, message], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            let mut ready = count_down(conn, key, true, now)?;
            // The jobs just cancelled count as ended for their own dependents that run anyway.
            for (doomed, _) in doomed.iter().filter(|(_, dependents)| *dependents > 0) {
                ready |= count_down(conn, JobId::from_db(doomed.clone()).key(), true, now)?;
            }
            Ok(ready)
        }
        Settled::Retried => {
            let revived: Vec<(String, i64)> = conn
                .prepare_cached(REVIVE_DEPENDENTS)?
                .query_map(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?;
            conn.prepare_cached(RECOUNT_RUN_ANYWAY)?
                .execute(params![key])?;
            for (revived, dependents) in &revived {
                let revived = JobId::from_db(revived.clone()).key();
                conn.prepare_cached(RECOUNT)?.execute(params![revived])?;
                if *dependents > 0 {
                    conn.prepare_cached(RECOUNT_RUN_ANYWAY)?
                        .execute(params![revived])?;
                }
            }
            Ok(false)
        }
    }
}

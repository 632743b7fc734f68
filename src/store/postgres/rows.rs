//! Rows of `jobq_jobs` on PostgreSQL: every column a job is written with (each insert
//! statement and its parameters) and how a row is read back as a [`Job`]. A new column of
//! jobs is added here (and in the schema) only.

use postgres::Row;
use uuid::Uuid;

use super::ids::{int, job_id};
use super::{Conn, Sql};
use crate::error::{Error, Result};
use crate::job::{Job, Status, Timestamp};
use crate::model::{NewRow, Waits};

// ---- writing ---------------------------------------------------------------------------

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

/// Many jobs without a key or a group, in one statement.
const INSERT_MANY: &str = "
    INSERT INTO jobq_jobs (id, queue, kind, priority, max_attempts, run_after, input,
                           cost_cents, owner, external_id, created_at, updated_at)
    SELECT id, queue, kind, priority, max_attempts, run_after, input::json, cost, owner,
           external_id, $10, $10
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::int[], $6::bigint[],
                $7::text[], $8::bigint[], $9::text[], $11::text[])
         AS j(id, queue, kind, priority, max_attempts, run_after, input, cost, owner, external_id)";

/// One job: the plain insert, or with `full` (its status and what it waits for) the insert
/// of a job with options and its row of options. `None`: another transaction holds its
/// idempotency key.
pub(crate) fn insert_one(
    conn: &mut dyn Sql,
    job: &NewRow,
    id: Uuid,
    now: i64,
    full: Option<(Status, &Waits)>,
) -> Result<Option<Row>> {
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
    let Some((status, waits)) = full else {
        return conn.query_opt(INSERT, &base);
    };
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
    conn.query_opt(INSERT_FULL, &[&base[..], &options[..]].concat())
}

/// Jobs without a key, a group or options, in one statement.
pub(crate) fn insert_many(conn: &mut Conn, jobs: &[(&NewRow, Uuid)], now: i64) -> Result<()> {
    let column = |f: &dyn Fn(&NewRow) -> String| -> Vec<String> {
        jobs.iter().map(|(job, _)| f(job)).collect()
    };
    let ids: Vec<Uuid> = jobs.iter().map(|(_, id)| *id).collect();
    let queues = column(&|j| j.queue.clone());
    let kinds = column(&|j| j.kind.clone());
    let inputs = column(&|j| j.input.clone());
    let priorities: Vec<i32> = jobs.iter().map(|(j, _)| j.priority).collect();
    let attempts: Vec<i32> = jobs.iter().map(|(j, _)| int(j.max_attempts)).collect();
    let run_after: Vec<i64> = jobs.iter().map(|(j, _)| j.run_after).collect();
    let costs: Vec<i64> = jobs.iter().map(|(j, _)| j.cost_cents).collect();
    let owners: Vec<Option<&str>> = jobs.iter().map(|(j, _)| j.owner.as_deref()).collect();
    let external: Vec<Option<&str>> = jobs.iter().map(|(j, _)| j.external_id.as_deref()).collect();
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
    Ok(())
}

// ---- reading ---------------------------------------------------------------------------

/// The columns of a [`Job`], in the order [`job`] reads them.
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input::text, output::text, idempotency_key, \
         last_error, error_code, errors::text, cost_cents, owner, group_id, external_id, \
         created_at, updated_at, started_at, completed_at, snoozes, claims, wait_for"
    };
}
pub(crate) use job_columns;

/// A job from a row of [`job_columns`].
pub(crate) fn job(row: &Row) -> Result<Job> {
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
        claims: row.get::<_, i32>(28).max(0) as u32,
        waiting_for: row.get(29),
        scheduled: false,
        dependencies: None,
        dependents: None,
        concurrency_key: None,
        flow_ref: None,
        steps: None,
    })
}

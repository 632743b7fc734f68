//! Rows of `jobq_jobs`: every column a job is written with (each insert statement and its
//! parameters) and how a row is read back as a [`Job`]. A new column of jobs is added here
//! (and in the schema) only.

use rusqlite::types::{ToSqlOutput, Type, Value as SqlValue, ValueRef};
use rusqlite::{Connection, Row, named_params, params};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{Job, JobId, MAX_COST_CENTS, Status, Timestamp, key_of};
use crate::model::NewRow;

// ---- writing ---------------------------------------------------------------------------

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
pub(crate) const ROWS_PER_INSERT: usize = 32;

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
    let int = |i: i64| ToSqlOutput::Owned(SqlValue::Integer(i));
    let opt = |s: &'a Option<String>| {
        s.as_deref()
            .map_or(ToSqlOutput::Owned(SqlValue::Null), text)
    };
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

/// A job with dependencies or a uniqueness window: its status may be `blocked` (or
/// `cancelled`, by a dependency that failed), and it gets a row of options.
const INSERT_FULL: &str = "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, priority, max_attempts, run_after, input,
                           idempotency_key, cost_cents, owner, group_id, external_id,
                           created_at, updated_at, error_code, last_error, completed_at)
    VALUES (:key, :id, :queue, :kind, :status, :priority, :max_attempts, :run_after, :input,
            :ikey, :cost, :owner, :group_id, :external_id, :now, :now, :code, :message, :completed)";

/// The one-row insert (the batch path inserts `ROWS_PER_INSERT` at a time instead).
pub(crate) fn insert_row(conn: &Connection, job: &NewRow, id: &str, now: i64) -> Result<()> {
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

/// The jobs of a batch that need nothing but their row, in multi-row statements of
/// [`ROWS_PER_INSERT`] rows (which open the table's cursors once per chunk instead of once
/// per job), the rest one by one.
pub(crate) fn insert_plain<'a>(
    conn: &Connection,
    jobs: impl Iterator<Item = (&'a NewRow, &'a str)>,
    now: i64,
) -> Result<()> {
    let jobs: Vec<(&NewRow, &str)> = jobs.collect();
    let mut chunks = jobs.chunks_exact(ROWS_PER_INSERT);
    let mut stmt = conn.prepare_cached(insert_rows_sql())?;
    for chunk in chunks.by_ref() {
        let mut param = 1;
        for (job, id) in chunk {
            for value in row_values(job, id, now) {
                stmt.raw_bind_parameter(param, value)?;
                param += 1;
            }
        }
        stmt.raw_execute()?;
    }
    for (job, id) in chunks.remainder() {
        insert_row(conn, job, id, now)?;
    }
    Ok(())
}

/// A job with dependencies or a uniqueness window: its status may be `blocked`, or
/// `cancelled` with the `message` of the dependency that failed.
pub(crate) fn insert_full(
    conn: &Connection,
    job: &NewRow,
    id: &str,
    now: i64,
    status: Status,
    message: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(INSERT_FULL)?.execute(named_params! {
        ":key": key_of(id), ":id": id, ":queue": job.queue, ":kind": job.kind,
        ":status": status.as_str(), ":priority": job.priority,
        ":max_attempts": job.max_attempts, ":run_after": job.run_after, ":input": job.input,
        ":ikey": job.key, ":cost": job.cost_cents, ":owner": job.owner,
        ":group_id": job.group_id, ":external_id": job.external_id, ":now": now,
        ":code": message.map(|_| "DEPENDENCY_FAILED"), ":message": message,
        ":completed": (status == Status::Cancelled).then_some(now),
    })?;
    Ok(())
}

// ---- reading ---------------------------------------------------------------------------

/// The columns of [`Job`], in the order [`job`] reads them (a macro so that statements can
/// be assembled with `concat!` at compile time).
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input, output, idempotency_key, last_error, \
         error_code, errors, cost_cents, owner, group_id, external_id, created_at, updated_at, \
         started_at, completed_at, snoozes, claims, wait_for"
    };
}
pub(crate) use job_columns;

/// A job from a row of [`job_columns`].
pub(crate) fn job(row: &Row<'_>) -> rusqlite::Result<Job> {
    let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(Timestamp::from_millis))
    };
    let json = |i: usize| -> rusqlite::Result<Option<Value>> {
        match row.get::<_, Option<String>>(i)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e))),
        }
    };
    let status: String = row.get(3)?;
    Ok(Job {
        id: JobId::from_db(row.get(0)?),
        queue: row.get(1)?,
        kind: row.get(2)?,
        status: status_column(3, &status)?,
        priority: row.get(4)?,
        attempts: row.get(5)?,
        max_attempts: row.get(6)?,
        run_after: Timestamp::from_millis(row.get(7)?),
        locked_by: row.get(8)?,
        locked_at: ts(9)?,
        heartbeat_at: ts(10)?,
        stage: row.get(11)?,
        progress: row.get(12)?,
        input: json(13)?.unwrap_or(Value::Null),
        output: json(14)?,
        idempotency_key: row.get(15)?,
        last_error: row.get(16)?,
        error_code: row.get(17)?,
        errors: json(18)?
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(18, Type::Text, Box::new(e)))?
            .unwrap_or_default(),
        cost_cents: cost_column(row, 19)?,
        owner: row.get(20)?,
        group_id: row.get(21)?,
        external_id: row.get(22)?,
        created_at: Timestamp::from_millis(row.get(23)?),
        updated_at: Timestamp::from_millis(row.get(24)?),
        started_at: ts(25)?,
        completed_at: ts(26)?,
        snoozes: row.get(27)?,
        claims: row.get(28)?,
        waiting_for: row.get(29)?,
        scheduled: false,
        dependencies: None,
        dependents: None,
        concurrency_key: None,
        flow_ref: None,
        steps: None,
    })
}

/// A cost as stored: an integer. A REAL (what an overflow made of a sum in files from
/// before costs were bounded) reads as the nearest integer in range, so that the row reads.
pub(crate) fn cost_column(row: &Row<'_>, i: usize) -> rusqlite::Result<i64> {
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(n) => n,
        ValueRef::Real(f) => f.clamp(0.0, MAX_COST_CENTS as f64) as i64,
        _ => 0,
    })
}

/// A status column, refused as a conversion failure when it is not a status.
pub(crate) fn status_column(i: usize, text: &str) -> rusqlite::Result<Status> {
    text.parse()
        .map_err(|e: Error| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

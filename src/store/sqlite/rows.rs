//! Rows of `jobq_jobs` read back as jobs.

use rusqlite::Row;
use rusqlite::types::{Type, ValueRef};
use serde_json::Value;

use crate::error::Error;
use crate::job::{Job, JobId, MAX_COST_CENTS, Status, Timestamp};

/// The columns of [`Job`], in the order [`job`] reads them (a macro so that statements can
/// be assembled with `concat!` at compile time).
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input, output, idempotency_key, last_error, \
         error_code, errors, cost_cents, owner, group_id, external_id, created_at, updated_at, \
         started_at, completed_at, snoozes"
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
        scheduled: false,
        dependencies: None,
        dependents: None,
        concurrency_key: None,
        flow_ref: None,
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

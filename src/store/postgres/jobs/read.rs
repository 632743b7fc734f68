//! Reads of jobs on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use postgres::Row;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::{Job, JobId, Status, Timestamp};
use crate::model::{ListQuery, Scope};
use crate::store::postgres::Conn;
use crate::store::postgres::ids::{job_id, uuid_of};

/// The columns of a [`Job`], in the order [`job`] reads them.
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input::text, output::text, idempotency_key, \
         last_error, error_code, errors::text, cost_cents, owner, group_id, external_id, \
         created_at, updated_at, started_at, completed_at, snoozes"
    };
}

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)"
);

/// Newest first, after the cursor $1 (the id of the last job of the previous page).
const LIST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs
    WHERE ($1::uuid IS NULL OR id < $1)
      AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
      AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR group_id = $5)
      AND ($6::text IS NULL OR owner = $6)
      AND ($8::bigint IS NULL OR (status IN ('queued', 'retry') AND run_after > $8))
    ORDER BY id DESC LIMIT $7"
);

/// A search: the ids between two UUIDs (the start of an id), an idempotency key, an
/// external id — each through its own index — with the listing's other filters.
const LIST_SEARCH: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs
    WHERE id IN (SELECT id FROM jobq_jobs WHERE id BETWEEN $9::uuid AND $10::uuid
                 UNION SELECT id FROM jobq_jobs WHERE idempotency_key = $11
                 UNION SELECT id FROM jobq_jobs WHERE external_id = $11)
      AND ($1::uuid IS NULL OR id < $1)
      AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
      AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR group_id = $5)
      AND ($6::text IS NULL OR owner = $6)
      AND ($8::bigint IS NULL OR (status IN ('queued', 'retry') AND run_after > $8))
    ORDER BY id DESC LIMIT $7"
);

pub(super) fn get(conn: &mut Conn, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
    let Ok(uuid) = Uuid::parse_str(id.as_str()) else {
        return Ok(None);
    };
    conn.query_opt(GET, &[&uuid, &scope])?
        .map(|r| job(&r))
        .transpose()
}

pub(super) fn list(conn: &mut Conn, query: &ListQuery<'_>) -> Result<Vec<Job>> {
    let before = match &query.before {
        Some(id) => Some(uuid_of(id)?),
        None => None,
    };
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    let status = query.status.map(Status::as_str);
    let filters: [&(dyn postgres::types::ToSql + Sync); 8] = [
        &before,
        &status,
        &query.queue,
        &query.kind,
        &query.group_id,
        &query.owner,
        &limit,
        &query.scheduled_after,
    ];
    let rows = match &query.search {
        None => conn.query(LIST, &filters)?,
        Some(search) => {
            let (lo, hi) = search.uuid_range().unzip();
            let lo = lo.and_then(|u| Uuid::parse_str(&u).ok());
            let hi = hi.and_then(|u| Uuid::parse_str(&u).ok());
            let found: [&(dyn postgres::types::ToSql + Sync); 3] = [&lo, &hi, &search.text];
            conn.query(LIST_SEARCH, &[&filters[..], &found[..]].concat())?
        }
    };
    rows.iter().map(job).collect()
}

/// A job from a row of [`job_columns`].
pub(super) fn job(row: &Row) -> Result<Job> {
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
        scheduled: false,
        dependencies: None,
        dependents: None,
        concurrency_key: None,
        flow_ref: None,
    })
}

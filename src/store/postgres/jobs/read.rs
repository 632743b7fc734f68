//! Reads of jobs on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use crate::store::postgres::rows::{job, job_columns};
use uuid::Uuid;

use crate::error::Result;
use crate::job::{Job, JobId, Status};
use crate::model::{ListQuery, Scope};
use crate::store::postgres::Conn;
use crate::store::postgres::ids::uuid_of;

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
      AND ($9::uuid IS NULL OR id >= $9) AND ($10::bigint IS NULL OR created_at >= $10)
      AND ($11::bigint IS NULL OR created_at < $11)
    ORDER BY id DESC LIMIT $7"
);

/// A search: the ids between two UUIDs (the start of an id), an idempotency key, an
/// external id — each through its own index — with the listing's other filters.
const LIST_SEARCH: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs
    WHERE id IN (SELECT id FROM jobq_jobs WHERE id BETWEEN $12::uuid AND $13::uuid
                 UNION SELECT id FROM jobq_jobs WHERE idempotency_key = $14
                 UNION SELECT id FROM jobq_jobs WHERE external_id = $14)
      AND ($1::uuid IS NULL OR id < $1)
      AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR queue = $3)
      AND ($4::text IS NULL OR kind = $4) AND ($5::text IS NULL OR group_id = $5)
      AND ($6::text IS NULL OR owner = $6)
      AND ($8::bigint IS NULL OR (status IN ('queued', 'retry') AND run_after > $8))
      AND ($9::uuid IS NULL OR id >= $9) AND ($10::bigint IS NULL OR created_at >= $10)
      AND ($11::bigint IS NULL OR created_at < $11)
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
    let from_id = match query.created_from {
        Some(from) => Some(uuid_of(&JobId::first_at(from))?),
        None => None,
    };
    let filters: [&(dyn postgres::types::ToSql + Sync); 11] = [
        &before,
        &status,
        &query.queue,
        &query.kind,
        &query.group_id,
        &query.owner,
        &limit,
        &query.scheduled_after,
        &from_id,
        &query.created_from,
        &query.created_to,
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

//! Reads of jobs on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::{Connection, OptionalExtension, named_params};

use crate::error::Result;
use crate::job::{Job, JobId, Status};
use crate::model::{ListQuery, Scope};
use crate::store::sqlite::rows::{self, job_columns};

/// The newest-first listing, driven by the index of one equality filter, with the other
/// filters checked on each row. `id_key < :after` is always bound (past every key when
/// there is no cursor) so that it seeks in the index rather than scanning the pages before.
macro_rules! list_sql {
    ($driver:literal) => {
        concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobq_jobs WHERE ",
            $driver,
            " AND id_key < :after
              AND (:status IS NULL OR status = :status) AND (:queue IS NULL OR queue = :queue)
              AND (:kind IS NULL OR kind = :kind) AND (:group_id IS NULL OR group_id = :group_id)
              AND (:owner IS NULL OR owner = :owner)
              AND id_key >= :from_key
              AND (:created_from IS NULL OR created_at >= :created_from)
              AND (:created_to IS NULL OR created_at < :created_to)
              AND (:scheduled_after IS NULL
                   OR ((status = 'queued' OR status = 'retry') AND run_after > :scheduled_after))
            ORDER BY id_key DESC LIMIT :limit + 0"
        )
    };
}

pub(super) const LIST_BY_GROUP: &str = list_sql!("group_id = :group_id");
pub(super) const LIST_BY_OWNER: &str = list_sql!("owner = :owner");
/// Only for the statuses of the partial index `jobq_jobs_status`; the literal list lets the
/// planner prove the index covers the query.
pub(super) const LIST_BY_STATUS: &str =
    list_sql!("status = :status AND status NOT IN ('queued', 'succeeded')");
pub(super) const LIST_ALL: &str = list_sql!("1");
/// A search: the ids in a row key range (the start of an id; :prefix checks its digits past
/// the first 16), an idempotency key, an external id — each through its own index.
pub(super) const LIST_SEARCH: &str = list_sql!(
    "id_key IN (SELECT id_key FROM jobq_jobs WHERE id_key BETWEEN :lo AND :hi
                UNION SELECT id_key FROM jobq_jobs WHERE idempotency_key = :q
                UNION SELECT id_key FROM jobq_jobs WHERE external_id = :q)
     AND (:lo IS NULL OR idempotency_key = :q OR external_id = :q
          OR replace(id, '-', '') LIKE :prefix || '%')"
);

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs WHERE id_key = :key AND id = :id AND (:owner IS NULL OR owner = :owner)"
);

pub(super) fn get(conn: &Connection, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(GET)?
        .query_row(
            named_params! {":id": id.as_str(), ":key": id.key(), ":owner": scope},
            rows::job,
        )
        .optional()?)
}

pub(super) fn list(conn: &Connection, query: &ListQuery<'_>) -> Result<Vec<Job>> {
    let after = query.before.as_ref().map_or(i64::MAX, JobId::key);
    let from_key = query
        .created_from
        .map_or(i64::MIN, |from| JobId::first_at(from).key());
    if let Some(search) = &query.search {
        let (lo, hi) = search.key_range().unzip();
        let mut stmt = conn.prepare_cached(LIST_SEARCH)?;
        let rows = stmt.query_map(
            named_params! {
                ":after": after,
                ":status": query.status.map(Status::as_str),
                ":queue": query.queue,
                ":kind": query.kind,
                ":group_id": query.group_id,
                ":owner": query.owner,
                ":scheduled_after": query.scheduled_after,
                ":from_key": from_key,
                ":created_from": query.created_from,
                ":created_to": query.created_to,
                ":limit": query.limit as i64,
                ":lo": lo, ":hi": hi, ":q": search.text, ":prefix": search.id_prefix,
            },
            rows::job,
        )?;
        return Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?);
    }
    let sql = if query.group_id.is_some() {
        LIST_BY_GROUP
    } else if query.owner.is_some() {
        LIST_BY_OWNER
    } else if query
        .status
        .is_some_and(|s| !matches!(s, Status::Queued | Status::Succeeded))
    {
        LIST_BY_STATUS
    } else {
        LIST_ALL
    };
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(
        named_params! {
            ":after": after,
            ":status": query.status.map(Status::as_str),
            ":queue": query.queue,
            ":kind": query.kind,
            ":group_id": query.group_id,
            ":owner": query.owner,
            ":scheduled_after": query.scheduled_after,
            ":from_key": from_key,
            ":created_from": query.created_from,
            ":created_to": query.created_to,
            ":limit": query.limit as i64,
        },
        rows::job,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Queue;

    #[test]
    fn each_listing_seeks_its_index_and_never_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        for (sql, index) in [
            (LIST_BY_GROUP, "jobq_jobs_group"),
            (LIST_BY_OWNER, "jobq_jobs_owner"),
            (LIST_BY_STATUS, "jobq_jobs_status"),
            (LIST_ALL, "INTEGER PRIMARY KEY"),
        ] {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    named_params! {":after": i64::MAX, ":status": "failed", ":queue": None::<String>, ":kind": None::<String>,
                        ":group_id": "g", ":owner": "o", ":limit": 10},
                    |r| r.get(3),
                )
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains(index), "{index} not used:\n{plan}");
            assert!(
                plan.contains("id_key<?") || plan.contains("rowid<?"),
                "no seek on the cursor:\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "sorts:\n{plan}");
        }
    }

    #[test]
    fn a_search_seeks_the_key_the_external_id_and_the_row_key_and_never_scans() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {LIST_SEARCH}"))
            .unwrap()
            .query_map(
                named_params! {":after": i64::MAX, ":lo": 1, ":hi": 2, ":q": "k", ":prefix": "01", ":limit": 10},
                |r| r.get(3),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        let plan = plan.join("\n");
        println!("{plan}");
        for index in [
            "jobq_jobs_key",
            "jobq_jobs_external_id",
            "INTEGER PRIMARY KEY",
        ] {
            assert!(plan.contains(index), "{index} not used:\n{plan}");
        }
        assert!(
            !plan
                .lines()
                .any(|l| l.starts_with("SCAN jobq_jobs") && !l.contains("INDEX")),
            "a search scans the table:\n{plan}"
        );
    }
}

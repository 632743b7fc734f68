//! Reading jobs: one by id, or a filtered list, newest first, paged by a keyset cursor.

use rusqlite::{OptionalExtension, named_params};
use serde::Serialize;

use super::Queue;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, Status};
use crate::store::sqlite::rows::job_columns;

/// Which jobs [`Queue::list`] returns. Every filter is optional; they combine with AND.
///
/// # Examples
///
/// ```
/// use jobq::{JobFilter, Status};
///
/// let failed_mail = JobFilter::new().status(Status::Failed).queue("mail").limit(20);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct JobFilter {
    status: Option<Status>,
    queue: Option<String>,
    kind: Option<String>,
    group_id: Option<String>,
    owner: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

impl JobFilter {
    /// Every job, 50 to a page.
    pub fn new() -> JobFilter {
        JobFilter::default()
    }

    /// Only jobs with this status.
    pub fn status(mut self, status: Status) -> Self {
        self.status = Some(status);
        self
    }

    /// Only jobs of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only jobs of this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only jobs of this group.
    pub fn group(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Only jobs of this owner (an owner-scoped handle sees only its own anyway).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// At most this many jobs, 1 to 10,000. Defaults to 50.
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// The page after this cursor (the `next` of the previous [`Page`]).
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// The cursor of the next page, or `None` when this is the last one.
    pub next: Option<String>,
}

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
            ORDER BY id_key DESC LIMIT :limit + 0"
        )
    };
}

const LIST_BY_GROUP: &str = list_sql!("group_id = :group_id");
const LIST_BY_OWNER: &str = list_sql!("owner = :owner");
/// Only for the statuses of the partial index `jobq_jobs_status`; the literal list lets the
/// planner prove the index covers the query.
const LIST_BY_STATUS: &str =
    list_sql!("status = :status AND status NOT IN ('queued', 'succeeded')");
const LIST_ALL: &str = list_sql!("1");

const GET: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM jobq_jobs WHERE id_key = :key AND id = :id AND (:owner IS NULL OR owner = :owner)"
);

impl Queue {
    /// The job with this id, with every field and its errors history.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such job, or it belongs to another owner than
    /// the one this handle is scoped to.
    pub fn get(&self, id: &JobId) -> Result<Job> {
        let now = self.now_ms();
        self.store()
            .read(|conn| {
                conn.prepare_cached(GET)?
                    .query_row(
                        named_params! {":id": id.as_str(), ":key": id.key(), ":owner": self.owner()},
                        crate::store::sqlite::rows::job,
                    )
                    .optional()
                    .map_err(Error::from)
            })?
            .map(|job| job.read_at(now))
            .ok_or_else(|| Error::job_not_found(id))
    }

    /// Jobs matching `filter`, newest first, one page at a time.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit outside 1–10,000 or a malformed cursor.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{JobFilter, NewJob, Queue};
    ///
    /// let queue = Queue::open(dir.path().join("q.db"))?;
    /// for _ in 0..5 {
    ///     queue.enqueue(NewJob::new("thumbnail"))?;
    /// }
    /// let first = queue.list(&JobFilter::new().kind("thumbnail").limit(3))?;
    /// assert_eq!(first.jobs.len(), 3);
    /// let rest = queue.list(&JobFilter::new().kind("thumbnail").limit(3).after(first.next.unwrap()))?;
    /// assert_eq!(rest.jobs.len(), 2);
    /// assert!(rest.next.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn list(&self, filter: &JobFilter) -> Result<Page> {
        let limit = filter.limit.unwrap_or(50);
        if !(1..=10_000).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1–10000"),
            ));
        }
        let after = match &filter.after {
            Some(cursor) => JobId::parse(cursor)
                .map_err(|_| {
                    Error::invalid(
                        "after",
                        format!("{cursor:?} is not a cursor from a previous page"),
                    )
                })?
                .key(),
            None => i64::MAX,
        };
        let owner = match (self.owner(), filter.owner.as_deref()) {
            (Some(me), Some(other)) if me != other => {
                return Ok(Page {
                    jobs: Vec::new(),
                    next: None,
                });
            }
            (Some(me), _) => Some(me),
            (None, other) => other,
        };
        let sql = if filter.group_id.is_some() {
            LIST_BY_GROUP
        } else if owner.is_some() {
            LIST_BY_OWNER
        } else if filter
            .status
            .is_some_and(|s| !matches!(s, Status::Queued | Status::Succeeded))
        {
            LIST_BY_STATUS
        } else {
            LIST_ALL
        };
        let now = self.now_ms();
        let mut jobs = self.store().read(|conn| {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map(
                named_params! {
                    ":after": after,
                    ":status": filter.status.map(Status::as_str),
                    ":queue": filter.queue,
                    ":kind": filter.kind,
                    ":group_id": filter.group_id,
                    ":owner": owner,
                    ":limit": (limit + 1) as i64,
                },
                |r| crate::store::sqlite::rows::job(r).map(|job| job.read_at(now)),
            )?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })?;
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id.to_string())
        } else {
            None
        };
        Ok(Page { jobs, next })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_listing_seeks_its_index_and_never_sorts() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.store().connect().unwrap();
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
}

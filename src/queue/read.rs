//! Reading jobs: one by id, or a filtered list, newest first, paged by a keyset cursor.

use serde::Serialize;

use super::Queue;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, Status, Timestamp};
use crate::model::{ListQuery, Search};

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
    scheduled: bool,
    search: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
    group_id: Option<String>,
    owner: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
    created_from: Option<Timestamp>,
    created_to: Option<Timestamp>,
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

    /// Only jobs shown as *scheduled*: `queued` or `retry` with a `run_after` still ahead
    /// (what `status=scheduled` asks for).
    pub fn scheduled(mut self) -> Self {
        self.scheduled = true;
        self
    }

    /// Only jobs that `text` finds: by id or the start of one (at least 4 hex digits,
    /// dashes optional), by idempotency key, or by external id (whole).
    pub fn search(mut self, text: impl Into<String>) -> Self {
        self.search = Some(text.into());
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

    /// Only jobs created at or after `from` and before `to` (either may be left open): what
    /// a range picked on the dashboard's charts lists. A job's id never runs behind its
    /// creation time, so the listing stops at the first id older than `from` rather than
    /// reading every older job.
    pub fn created_between(mut self, from: Option<Timestamp>, to: Option<Timestamp>) -> Self {
        self.created_from = from;
        self.created_to = to;
        self
    }

    /// The page after this cursor (the `next` of the previous [`Page`]).
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.after = Some(cursor.into());
        self
    }

    /// The first page again (no cursor).
    pub(crate) fn first_page(mut self) -> Self {
        self.after = None;
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

impl Queue {
    /// The job with this id, with every field and its errors history.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when there is no such job, or it belongs to another owner than
    /// the one this handle is scoped to.
    pub fn get(&self, id: &JobId) -> Result<Job> {
        // With its dependencies and dependents.
        let now = self.now_ms();
        self.engine()
            .get_job(self.owner(), id)?
            .map(|job| job.read_at(now))
            .ok_or_else(|| Error::job_not_found(id))
    }

    /// The outputs of the jobs `id` waits for, by their flow refs — by their ids for those
    /// without one (or whose ref another of them has too) — `null` for one that has not
    /// succeeded. What a dependent reads of its dependencies; a handler has them from its
    /// context, a command from the file named by `JOBQ_DEPENDENCIES_FILE`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) job.
    pub fn dependency_outputs(
        &self,
        id: &JobId,
    ) -> Result<std::collections::BTreeMap<String, serde_json::Value>> {
        let outputs = self
            .engine()
            .dependency_outputs(self.owner(), id)?
            .ok_or_else(|| Error::job_not_found(id))?;
        let mut shared_refs = std::collections::HashSet::new();
        let mut seen = std::collections::HashSet::new();
        for r in outputs.iter().filter_map(|o| o.flow_ref.as_deref()) {
            if !seen.insert(r) {
                shared_refs.insert(r.to_string());
            }
        }
        let mut out = std::collections::BTreeMap::new();
        for dep in outputs {
            let value = match dep.output {
                Some(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                None => serde_json::Value::Null,
            };
            let name = match dep.flow_ref {
                Some(r) if !shared_refs.contains(&r) => r,
                _ => dep.id.to_string(),
            };
            out.insert(name, value);
        }
        Ok(out)
    }

    /// The output of the dependency of `id` named `name` (its flow ref or its id), or `None`
    /// when no dependency has that name.
    pub(crate) fn dependency_output(
        &self,
        id: &JobId,
        name: &str,
    ) -> Result<Option<serde_json::Value>> {
        let outputs = self
            .engine()
            .dependency_outputs(self.owner(), id)?
            .ok_or_else(|| Error::job_not_found(id))?;
        Ok(outputs
            .into_iter()
            .find(|o| o.flow_ref.as_deref() == Some(name) || o.id.as_str() == name)
            .map(|o| match o.output {
                Some(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
                None => serde_json::Value::Null,
            }))
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
        let before = match &filter.after {
            Some(cursor) => Some(JobId::parse(cursor).map_err(|_| {
                Error::invalid(
                    "after",
                    format!("{cursor:?} is not a cursor from a previous page"),
                )
            })?),
            None => None,
        };
        if let (Some(from), Some(to)) = (filter.created_from, filter.created_to) {
            if from >= to {
                return Err(Error::invalid(
                    "created_to",
                    format!(
                        "{} is not after created_from {}",
                        to.to_rfc3339(),
                        from.to_rfc3339()
                    ),
                ));
            }
        }
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
        let now = self.now_ms();
        let search = match filter.search.as_deref().map(str::trim) {
            Some("") | None => None,
            Some(text) => {
                crate::queue::check_text("search", text, 500)?;
                Some(Search::of(text))
            }
        };
        let query = ListQuery {
            status: filter.status,
            scheduled_after: filter.scheduled.then_some(now),
            search,
            queue: filter.queue.as_deref(),
            kind: filter.kind.as_deref(),
            group_id: filter.group_id.as_deref(),
            owner,
            before,
            created_from: filter.created_from.map(Timestamp::as_millis),
            created_to: filter.created_to.map(Timestamp::as_millis),
            limit: limit + 1,
        };
        let mut jobs: Vec<Job> = self
            .engine()
            .list_jobs(&query)?
            .into_iter()
            .map(|job| job.read_at(now))
            .collect();
        let next = if jobs.len() > limit {
            jobs.truncate(limit);
            jobs.last().map(|j| j.id.to_string())
        } else {
            None
        };
        Ok(Page { jobs, next })
    }
}

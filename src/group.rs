//! Groups: the parent of a set of jobs (a campaign, a project, a batch).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{Status, Timestamp};
use crate::model::GroupRow;
use crate::queue::Queue;

/// A group with what its jobs say about it: counts by status, a stage and a progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Group {
    /// The id.
    pub id: String,
    /// The owner.
    pub owner: Option<String>,
    /// The name.
    pub name: String,
    /// Free-form JSON given at creation.
    pub metadata: Value,
    /// When it was created.
    pub created_at: Timestamp,
    /// Derived from the jobs: `empty`, `not_started`, `in_progress`, `completed`, `failed`
    /// (all finished, some failed) or `cancelled` (all cancelled).
    pub stage: &'static str,
    /// Derived from the jobs, 0 to 100: finished jobs count whole, running jobs by their
    /// progress, waiting jobs as zero.
    pub progress: f64,
    /// Jobs by status (every status present, zero included).
    pub counts: BTreeMap<Status, i64>,
    /// All its jobs.
    pub total: i64,
}

impl Queue {
    /// Creates a group (owned by this handle's owner, if scoped) and returns it.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty name or metadata that is not a JSON object.
    pub fn create_group(&self, name: &str, metadata: Option<Value>) -> Result<Group> {
        self.create_group_for(name, metadata, None)
    }

    /// Creates a group for `owner` (an admin handle only; a scoped handle stamps its own).
    ///
    /// # Errors
    ///
    /// As [`Queue::create_group`], and [`Error::InvalidInput`] when a scoped handle names
    /// another owner.
    pub fn create_group_for(
        &self,
        name: &str,
        metadata: Option<Value>,
        owner: Option<&str>,
    ) -> Result<Group> {
        let now = self.now_ms();
        let row = self.group_row(name, metadata, owner, now)?;
        self.engine().insert_group(&row)?;
        self.get_group(&row.id)
    }

    /// A new group's row, checked: a name of 1 to 500 characters, metadata a JSON object,
    /// the owner this handle may create for.
    pub(crate) fn group_row(
        &self,
        name: &str,
        metadata: Option<Value>,
        owner: Option<&str>,
        now: i64,
    ) -> Result<GroupRow> {
        if name.trim().is_empty() || name.chars().count() > 500 || name.contains('\0') {
            return Err(Error::invalid("name", "must be 1 to 500 characters"));
        }
        let metadata = metadata.unwrap_or_else(|| Value::Object(Default::default()));
        if !metadata.is_object() {
            return Err(Error::invalid("metadata", "must be a JSON object"));
        }
        let owner = match (self.owner(), owner) {
            (Some(me), Some(other)) if me != other => {
                return Err(Error::invalid(
                    "owner",
                    format!("a handle scoped to {me} cannot create for {other}"),
                ));
            }
            (Some(me), _) => Some(me),
            (None, owner) => owner,
        };
        Ok(GroupRow {
            id: crate::job::uuid_v7(now),
            owner: owner.map(str::to_string),
            name: name.to_string(),
            metadata: metadata.to_string(),
            created_at: now,
            flow_key: None,
            by_status: Vec::new(),
        })
    }

    /// A group with its counts, stage and progress.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) group.
    pub fn get_group(&self, id: &str) -> Result<Group> {
        self.engine()
            .group(self.owner(), id)?
            .map(derive)
            .ok_or_else(|| Error::NotFound {
                what: "group",
                id: id.to_string(),
            })
    }

    /// The newest groups (this owner's, if scoped), at most `limit` of them.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a limit outside 1–1000.
    pub fn list_groups(&self, limit: usize) -> Result<Vec<Group>> {
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is outside 1–1000"),
            ));
        }
        Ok(self
            .engine()
            .groups(self.owner(), limit)?
            .into_iter()
            .map(derive)
            .collect())
    }

    /// Deletes a group and, with it, all its jobs. Returns how many jobs went with it. A
    /// group with a running job is refused, as deleting that job is: cancel it first.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) group;
    /// [`Error::InvalidTransition`] naming a running job of the group (nothing is deleted).
    pub fn delete_group(&self, id: &str) -> Result<usize> {
        let jobs = self.engine().delete_group(self.owner(), id)?;
        tracing::info!(group_id = id, jobs, "jobq: group deleted");
        Ok(jobs)
    }
}

/// A group as the library shows it: its stage and progress derived from its jobs' counts.
pub(crate) fn derive(row: GroupRow) -> Group {
    let mut counts: BTreeMap<Status, i64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    let (mut done, mut total, mut started) = (0.0, 0, 0);
    for (status, n, progress, started_n) in &row.by_status {
        counts.insert(*status, *n);
        total += n;
        done += progress;
        started += started_n;
    }
    let terminal: i64 = [Status::Succeeded, Status::Failed, Status::Cancelled]
        .iter()
        .map(|s| counts[s])
        .sum();
    let stage = if total == 0 {
        "empty"
    } else if counts[&Status::Succeeded] == total {
        "completed"
    } else if terminal == total && counts[&Status::Failed] > 0 {
        "failed"
    } else if counts[&Status::Cancelled] == total {
        "cancelled"
    } else if terminal == total {
        "completed"
    } else if started == 0 && terminal == 0 {
        "not_started"
    } else {
        "in_progress"
    };
    let progress = if total == 0 {
        0.0
    } else {
        (done / total as f64 * 1000.0).round() / 10.0
    };
    Group {
        id: row.id,
        owner: row.owner,
        name: row.name,
        metadata: serde_json::from_str(&row.metadata).unwrap_or(Value::Null),
        created_at: Timestamp::from_millis(row.created_at),
        stage,
        progress,
        counts,
        total,
    }
}

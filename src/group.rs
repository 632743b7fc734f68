//! Groups: the parent of a set of jobs (a campaign, a project, a batch).

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, named_params};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::{JobId, Status, Timestamp};
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

const GROUP_ROW: &str = "
    SELECT id, owner, name, metadata, created_at FROM jobq_groups
    WHERE id = :id AND (:owner IS NULL OR owner = :owner)";

const GROUP_JOBS: &str = "
    SELECT status, count(*),
           sum(CASE WHEN status IN ('succeeded', 'failed', 'cancelled') THEN 1.0
                    WHEN status = 'running' THEN progress ELSE 0.0 END),
           sum(attempts > 0)
    FROM jobq_jobs WHERE group_id = ?1 GROUP BY status";

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
        if name.trim().is_empty() || name.chars().count() > 500 {
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
        let now = self.now_ms();
        let id = crate::queue::uuid_v7(now);
        self.store().write(|tx| {
            tx.prepare_cached(
                "INSERT INTO jobq_groups (id, owner, name, metadata, created_at)
                 VALUES (:id, :owner, :name, :metadata, :now)",
            )?
            .execute(named_params! {":id": id, ":owner": owner, ":name": name, ":metadata": metadata.to_string(), ":now": now})?;
            Ok(())
        })?;
        self.get_group(&id)
    }

    /// A group with its counts, stage and progress.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) group.
    pub fn get_group(&self, id: &str) -> Result<Group> {
        self.store()
            .read(|conn| self.group_in(conn, id))?
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
        self.store().read(|conn| {
            let ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT id FROM jobq_groups WHERE (?1 IS NULL OR owner = ?1) ORDER BY id DESC LIMIT ?2 + 0",
                )?
                .query_map(rusqlite::params![self.owner(), limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut groups = Vec::with_capacity(ids.len());
            for id in ids {
                groups.extend(self.group_in(conn, &id)?);
            }
            Ok(groups)
        })
    }

    /// Deletes a group and, with it, all its jobs. Returns how many jobs went with it. A
    /// group with a running job is refused, as deleting that job is: cancel it first.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) group;
    /// [`Error::InvalidTransition`] naming a running job of the group (nothing is deleted).
    pub fn delete_group(&self, id: &str) -> Result<usize> {
        let jobs = self.store().write(|tx| {
            let jobs: Option<i64> = tx
                .prepare_cached(
                    "SELECT (SELECT count(*) FROM jobq_jobs WHERE group_id = :id)
                     FROM jobq_groups WHERE id = :id AND (:owner IS NULL OR owner = :owner)",
                )?
                .query_row(named_params! {":id": id, ":owner": self.owner()}, |r| {
                    r.get(0)
                })
                .optional()?;
            let jobs = jobs.ok_or_else(|| Error::NotFound {
                what: "group",
                id: id.to_string(),
            })?;
            let running: Option<String> = tx
                .prepare_cached(
                    "SELECT id FROM jobq_jobs WHERE group_id = ?1 AND status = 'running' LIMIT 1",
                )?
                .query_row([id], |r| r.get(0))
                .optional()?;
            if let Some(job) = running {
                return Err(Error::InvalidTransition {
                    job: JobId::from_db(job),
                    from: Status::Running,
                    action: format!("delete its group {id} (cancel the job first)"),
                });
            }
            tx.prepare_cached("DELETE FROM jobq_groups WHERE id = ?1")?
                .execute([id])?;
            Ok(jobs as usize)
        })?;
        tracing::info!(group_id = id, jobs, "jobq: group deleted");
        Ok(jobs)
    }

    fn group_in(&self, conn: &Connection, id: &str) -> Result<Option<Group>> {
        let row: Option<(String, Option<String>, String, String, i64)> = conn
            .prepare_cached(GROUP_ROW)?
            .query_row(named_params! {":id": id, ":owner": self.owner()}, |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .optional()?;
        let Some((id, owner, name, metadata, created_at)) = row else {
            return Ok(None);
        };
        let mut counts: BTreeMap<Status, i64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
        let (mut done, mut total, mut started) = (0.0, 0, 0);
        let mut stmt = conn.prepare_cached(GROUP_JOBS)?;
        let mut rows = stmt.query([&id])?;
        while let Some(r) = rows.next()? {
            let status: Status = r.get::<_, String>(0)?.parse()?;
            let n: i64 = r.get(1)?;
            counts.insert(status, n);
            total += n;
            done += r.get::<_, f64>(2)?;
            started += r.get::<_, i64>(3)?;
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
        Ok(Some(Group {
            id,
            owner,
            name,
            metadata: serde_json::from_str(&metadata).unwrap_or(Value::Null),
            created_at: Timestamp::from_millis(created_at),
            stage,
            progress,
            counts,
            total,
        }))
    }
}

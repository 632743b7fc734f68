//! The claim: take up to N ready jobs for a worker, in claim order, in one transaction.

use rusqlite::{Connection, named_params};

use super::Queue;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{ClaimedJob, JobId, Status, Timestamp};

/// Which jobs a worker takes: the queues it serves and, optionally, only some kinds.
///
/// # Examples
///
/// ```
/// use jobq::ClaimFilter;
///
/// let all_of_default = ClaimFilter::default();
/// let mail = ClaimFilter::queues(["mail", "mail-bulk"]).kinds(["send_email"]);
/// ```
#[derive(Debug, Clone)]
pub struct ClaimFilter {
    queues: Vec<String>,
    /// The kinds as a JSON array for `json_each`, or `None` for any kind.
    kinds_json: Option<String>,
}

impl Default for ClaimFilter {
    /// The queue `"default"`, any kind.
    fn default() -> Self {
        ClaimFilter::queues(["default"])
    }
}

impl ClaimFilter {
    /// Jobs of these queues (the queue `"default"` when empty), of any kind.
    pub fn queues<I, S>(queues: I) -> ClaimFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut queues: Vec<String> = queues.into_iter().map(Into::into).collect();
        if queues.is_empty() {
            queues.push("default".into());
        }
        queues.sort();
        queues.dedup();
        ClaimFilter {
            queues,
            kinds_json: None,
        }
    }

    /// Only jobs of these kinds.
    pub fn kinds<I, S>(mut self, kinds: I) -> ClaimFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let kinds: Vec<String> = kinds.into_iter().map(Into::into).collect();
        self.kinds_json = Some(serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into()));
        self
    }

    /// The queues served.
    pub fn queue_names(&self) -> &[String] {
        &self.queues
    }
}

/// Claims from one queue in a single statement. The subquery walks the partial index
/// `jobq_jobs_ready` in claim order and stops after `:limit` rows.
///
/// `LIMIT :limit + 0`, never `LIMIT :limit`: SQLite's planner reads a bare bound LIMIT, and
/// then rebinding it (every claim) throws the prepared statement away and parses it again.
const CLAIM_ONE_QUEUE: &str = "
    UPDATE jobq_jobs
    SET status = 'running', locked_by = :worker, locked_at = :now, heartbeat_at = :now,
        attempts = attempts + 1, claims = claims + 1, started_at = :now, stage = 'claimed', progress = 0,
        updated_at = :now
    WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after <= :now
          AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
          AND (:owner IS NULL OR owner = :owner)
        ORDER BY priority DESC, run_after, id_key
        LIMIT :limit + 0)
    RETURNING id, queue, kind, priority, attempts, max_attempts, run_after, created_at, owner,
              group_id, input, claims";

/// The next candidates of one queue, in claim order (for claims over several queues).
const CANDIDATES: &str = "
    SELECT id_key, priority, run_after FROM jobq_jobs
    WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after <= :now
      AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
      AND (:owner IS NULL OR owner = :owner)
    ORDER BY priority DESC, run_after, id_key
    LIMIT :limit + 0";

const CLAIM_IDS: &str = "
    UPDATE jobq_jobs
    SET status = 'running', locked_by = :worker, locked_at = :now, heartbeat_at = :now,
        attempts = attempts + 1, claims = claims + 1, started_at = :now, stage = 'claimed', progress = 0,
        updated_at = :now
    WHERE id_key IN (SELECT value FROM json_each(:keys)) AND +status IN ('queued', 'retry')
    RETURNING id, queue, kind, priority, attempts, max_attempts, run_after, created_at, owner,
              group_id, input, claims";

impl Queue {
    /// Claims up to `limit` ready jobs for `worker`: jobs of the filter's queues (and kinds)
    /// whose status is `queued` or `retry` and whose `run_after` has passed, higher priority
    /// first, then earlier `run_after`, then older id.
    ///
    /// Runs under `BEGIN IMMEDIATE`, so two claimers (threads or processes) never take the
    /// same job. Each claimed job becomes `running` with `locked_by = worker`, a fresh lock
    /// and heartbeat, one more attempt, `started_at = now` and stage `claimed`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty worker id; [`Error::Busy`] when other processes
    /// hold the write lock past the busy timeout.
    pub fn claim(
        &self,
        worker: &str,
        limit: usize,
        filter: &ClaimFilter,
    ) -> Result<Vec<ClaimedJob>> {
        self.claim_at(worker, limit, filter, self.now_ms())
    }

    /// [`Queue::claim`] as of the clock reading `now`: the dispatcher looks for what comes
    /// due next from the same reading, so that no job falls in between.
    pub(crate) fn claim_at(
        &self,
        worker: &str,
        limit: usize,
        filter: &ClaimFilter,
        now: i64,
    ) -> Result<Vec<ClaimedJob>> {
        if worker.trim().is_empty() {
            return Err(Error::invalid("worker", "must not be empty"));
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let jobs = self
            .store()
            .write(|tx| self.claim_in(tx, worker, limit, filter, now))?;
        self.after_claim(&jobs, worker, now);
        Ok(jobs)
    }

    /// Logs and announces claimed jobs, once their transaction committed.
    pub(crate) fn after_claim(&self, jobs: &[ClaimedJob], worker: &str, now: i64) {
        if jobs.is_empty() {
            return;
        }
        for job in jobs {
            tracing::debug!(job_id = %job.id, kind = %job.kind, attempt = job.attempt, worker, "jobq: claimed");
        }
        self.emit(|| {
            jobs.iter()
                .map(|j| {
                    JobEvent::new(j.id.clone(), EventKind::Claimed, Some(Status::Running), now)
                })
                .collect()
        });
    }

    pub(crate) fn claim_in(
        &self,
        conn: &Connection,
        worker: &str,
        limit: usize,
        filter: &ClaimFilter,
        now: i64,
    ) -> Result<Vec<ClaimedJob>> {
        let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut jobs = if let [queue] = filter.queues.as_slice() {
            let mut stmt = conn.prepare_cached(CLAIM_ONE_QUEUE)?;
            let rows = stmt.query_map(
                named_params! {
                    ":worker": worker, ":now": now, ":queue": queue,
                    ":kinds": filter.kinds_json, ":owner": self.owner(), ":limit": limit_sql,
                },
                |r| claimed_from_row(r, worker),
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        } else {
            // Per queue, the index yields its best `limit` candidates in order; merge them
            // and take the best `limit` overall.
            let mut candidates: Vec<(i64, i32, i64)> = Vec::new();
            let mut stmt = conn.prepare_cached(CANDIDATES)?;
            for queue in &filter.queues {
                let rows = stmt.query_map(
                    named_params! {
                        ":queue": queue, ":now": now, ":kinds": filter.kinds_json,
                        ":owner": self.owner(), ":limit": limit_sql,
                    },
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )?;
                for row in rows {
                    candidates.push(row?);
                }
            }
            candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)).then(a.0.cmp(&b.0)));
            candidates.truncate(limit);
            if candidates.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<i64> = candidates.iter().map(|c| c.0).collect();
            let keys =
                serde_json::to_string(&keys).map_err(|e| Error::invalid("keys", e.to_string()))?;
            let mut stmt = conn.prepare_cached(CLAIM_IDS)?;
            let rows = stmt.query_map(
                named_params! {":worker": worker, ":now": now, ":keys": keys},
                |r| claimed_from_row(r, worker),
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        // RETURNING gives rows in no promised order: restore claim order.
        jobs.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then(a.run_after.cmp(&b.run_after))
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(jobs)
    }
}

/// The earliest future `run_after` among the ready jobs of the filter's queues: when a
/// scheduled job or a retry comes due, for a dispatcher deciding how long to sleep.
const NEXT_RUN_AFTER: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE queue = :queue AND status IN ('queued', 'retry') AND run_after > :now";

pub(crate) fn next_run_after(
    conn: &Connection,
    filter: &ClaimFilter,
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(NEXT_RUN_AFTER)?;
    let mut earliest: Option<i64> = None;
    for queue in &filter.queues {
        let due: Option<i64> =
            stmt.query_row(named_params! {":queue": queue, ":now": now}, |r| r.get(0))?;
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

fn claimed_from_row(r: &rusqlite::Row<'_>, worker: &str) -> rusqlite::Result<ClaimedJob> {
    Ok(ClaimedJob {
        id: JobId::from_db(r.get(0)?),
        queue: r.get(1)?,
        kind: r.get(2)?,
        priority: r.get(3)?,
        attempt: r.get(4)?,
        max_attempts: r.get(5)?,
        run_after: Timestamp::from_millis(r.get(6)?),
        created_at: Timestamp::from_millis(r.get(7)?),
        owner: r.get(8)?,
        group_id: r.get(9)?,
        worker: worker.to_string(),
        input: r.get(10)?,
        claim: r.get(11)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(conn: &Connection, sql: &str) -> String {
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut stmt = conn.prepare(&explain).unwrap();
        let n = stmt.parameter_count();
        let params: Vec<rusqlite::types::Value> =
            (0..n).map(|_| rusqlite::types::Value::Null).collect();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap();
        rows.map(|r| r.unwrap()).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn claims_reuse_their_prepared_statements() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        queue
            .enqueue_many((0..50).map(|_| crate::NewJob::new("k").queue("a")))
            .unwrap();
        let conn = queue.store().connect().unwrap();
        for limit in [1, 2, 3, 5, 8] {
            queue
                .claim_in(&conn, "w", limit, &ClaimFilter::queues(["a"]), limit as i64)
                .unwrap();
            queue
                .claim_in(
                    &conn,
                    "w",
                    limit,
                    &ClaimFilter::queues(["a", "b"]),
                    limit as i64,
                )
                .unwrap();
        }
        for sql in [CLAIM_ONE_QUEUE, CANDIDATES] {
            let stmt = conn.prepare_cached(sql).unwrap();
            assert_eq!(
                stmt.get_status(rusqlite::StatementStatus::RePrepare),
                0,
                "re-prepared:\n{sql}"
            );
        }
    }

    #[test]
    fn the_claim_walks_the_partial_ready_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.store().connect().unwrap();
        for sql in [CLAIM_ONE_QUEUE, CANDIDATES] {
            let p = plan(&conn, sql);
            println!("{p}\n");
            assert!(
                p.contains("USING INDEX jobq_jobs_ready")
                    || p.contains("USING COVERING INDEX jobq_jobs_ready"),
                "{p}"
            );
            assert!(
                !p.contains("TEMP B-TREE FOR ORDER BY"),
                "the claim must not sort:\n{p}"
            );
        }
        let p = plan(&conn, CLAIM_IDS);
        println!("{p}");
        assert!(
            p.contains("SEARCH jobq_jobs USING INTEGER PRIMARY KEY (rowid=?)"),
            "{p}"
        );
    }
}

//! The claim on SQLite.
//! Each function runs inside the caller's transaction.

use rusqlite::{Connection, named_params};

use crate::error::{Error, Result};
use crate::job::{ClaimedJob, JobId, Timestamp};
use crate::model::{ClaimSpec, Scope};

/// What a claim sets on each job it takes (one definition for both claim statements).
macro_rules! claim_set {
    () => {
        "UPDATE jobq_jobs
    SET status = 'running', locked_by = :worker, locked_at = :now, heartbeat_at = :now,
        attempts = attempts + 1, claims = claims + 1, started_at = :now, stage = 'claimed',
        progress = 0, wait_for = NULL, updated_at = :now"
    };
}

/// What a claim returns of each job.
macro_rules! claim_returning {
    () => {
        "
    RETURNING id, queue, kind, priority, attempts, max_attempts, run_after, created_at, owner,
              group_id, input, claims, snoozes"
    };
}

/// Claims from one queue in a single statement. The subquery walks the partial index
/// `jobq_jobs_ready` in claim order and stops after `:limit` rows.
///
/// `LIMIT :limit + 0`, never `LIMIT :limit`: SQLite's planner reads a bare bound LIMIT, and
/// then rebinding it (every claim) throws the prepared statement away and parses it again.
pub(super) const CLAIM_ONE_QUEUE: &str = concat!(
    claim_set!(),
    "
    WHERE id_key IN (
        SELECT id_key FROM jobq_jobs
        WHERE queue = :queue AND (status = 'queued' OR status = 'retry' OR status = 'waiting') AND run_after <= :now
          AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
          AND (:owner IS NULL OR owner = :owner)
        ORDER BY priority DESC, run_after, id_key
        LIMIT :limit + 0)",
    claim_returning!()
);

/// The next candidates of one queue, in claim order (for claims over several queues).
pub(super) const CANDIDATES: &str = "
    SELECT id_key, priority, run_after FROM jobq_jobs
    WHERE queue = :queue AND (status = 'queued' OR status = 'retry' OR status = 'waiting') AND run_after <= :now
      AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
      AND (:owner IS NULL OR owner = :owner)
    ORDER BY priority DESC, run_after, id_key
    LIMIT :limit + 0";

pub(super) const CLAIM_IDS: &str = concat!(
    claim_set!(),
    "
    WHERE id_key IN (SELECT value FROM json_each(:keys)) AND (+status = 'queued' OR +status = 'retry' OR +status = 'waiting')",
    claim_returning!()
);

pub(super) fn claim(
    tx: &crate::store::sqlite::WriteTx<'_, '_>,
    scope: Scope<'_>,
    spec: ClaimSpec<'_>,
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let conn: &Connection = tx;
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    // Queues under flow control (known without a query while no other connection commits)
    // take the controlled way; the others, the ordinary one.
    let controls = tx.controls()?;
    let controlled = !controls.is_empty()
        && filter
            .queue_names()
            .iter()
            .any(|q| controls.contains_key(q.as_str()));
    let limit_sql = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kinds_json();
    let mut jobs = if let ([queue], false) = (filter.queue_names(), controlled) {
        let mut stmt = conn.prepare_cached(CLAIM_ONE_QUEUE)?;
        let rows = stmt.query_map(
            named_params! {
                ":worker": worker, ":now": now, ":queue": queue,
                ":kinds": kinds, ":owner": scope, ":limit": limit_sql,
            },
            |r| claimed_from_row(r, worker),
        )?;
        rows.collect::<rusqlite::Result<Vec<_>>>()?
    } else {
        // Per queue, the index yields its best `limit` candidates in order (a controlled
        // queue, those its limits allow); merge them and take the best `limit` overall.
        let mut candidates: Vec<(i64, i32, i64)> = Vec::new();
        for queue in filter.queue_names() {
            if let Some(control) = controls.get(queue.as_str()) {
                candidates.extend(crate::store::sqlite::queues::candidates(
                    conn, control, scope, &spec, now,
                )?);
                continue;
            }
            let mut stmt = conn.prepare_cached(CANDIDATES)?;
            let rows = stmt.query_map(
                named_params! {
                    ":queue": queue, ":now": now, ":kinds": kinds,
                    ":owner": scope, ":limit": limit_sql,
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
        let jobs = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        // Claims from a rate-limited queue count against its window.
        for (name, control) in controls.iter() {
            if control.rate.is_some() {
                let n = jobs.iter().filter(|j| &j.queue == name).count();
                if n > 0 {
                    crate::store::sqlite::queues::note_claims(conn, name, n, now)?;
                }
            }
        }
        jobs
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
        snoozes: r.get(12)?,
    })
}

/// The earliest future `run_after` among the ready jobs of a queue: when a scheduled job or
/// a retry comes due, for a dispatcher deciding how long to sleep.
const NEXT_RUN_AFTER: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE queue = :queue AND (status = 'queued' OR status = 'retry' OR status = 'waiting') AND run_after > :now";

pub(super) fn next_run_after(
    conn: &Connection,
    queues: &[String],
    now: i64,
) -> Result<Option<i64>> {
    let mut stmt = conn.prepare_cached(NEXT_RUN_AFTER)?;
    let mut earliest: Option<i64> = None;
    for queue in queues {
        let due: Option<i64> =
            stmt.query_row(named_params! {":queue": queue, ":now": now}, |r| r.get(0))?;
        earliest = match (earliest, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClaimFilter, Queue};

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
        queue
            .sqlite()
            .unwrap()
            .write(|tx| {
                for limit in [1, 2, 3, 5, 8] {
                    for filter in [ClaimFilter::queues(["a"]), ClaimFilter::queues(["a", "b"])] {
                        let spec = ClaimSpec {
                            worker: "w",
                            limit,
                            filter: &filter,
                        };
                        claim(tx, None, spec, limit as i64).unwrap();
                    }
                }
                for sql in [CLAIM_ONE_QUEUE, CANDIDATES] {
                    let stmt = tx.prepare_cached(sql).unwrap();
                    assert_eq!(
                        stmt.get_status(rusqlite::StatementStatus::RePrepare),
                        0,
                        "re-prepared:\n{sql}"
                    );
                }
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_claim_walks_the_partial_ready_index_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
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

//! The `size` workload's reads: stats, series and metrics beside millions of finished jobs
//! (the target: under 50 ms each, whatever the number of jobs), and the SQLite fixture they
//! are read from.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Refused;
use crate::{HealthThresholds, Queue, SeriesQuery, StatsFilter};

/// How long each read took: the median of five, in milliseconds.
#[derive(Serialize, Debug, Clone, Copy)]
pub(super) struct Reads {
    pub stats_ms: f64,
    pub series_hour_ms: f64,
    pub series_day_ms: f64,
    pub metrics_ms: f64,
}

fn median(mut f: impl FnMut() -> crate::Result<()>) -> Result<f64, Refused> {
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        f()?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    took.sort_by(f64::total_cmp);
    Ok((took[2] * 10.0).round() / 10.0)
}

/// Times `jobq stats`, the series of the last hour by the minute and of the last day by
/// the hour, and `/metrics` on `queue`.
pub(super) fn reads(queue: &Queue) -> Result<Reads, Refused> {
    let hour = SeriesQuery::new();
    let day = SeriesQuery::new()
        .window(Duration::from_secs(86_400))
        .step(Duration::from_secs(3600));
    Ok(Reads {
        stats_ms: median(|| {
            queue
                .overview(&StatsFilter::new(), &HealthThresholds::default())
                .map(|_| ())
        })?,
        series_hour_ms: median(|| queue.series(&hour).map(|_| ()))?,
        series_day_ms: median(|| queue.series(&day).map(|_| ()))?,
        metrics_ms: median(|| queue.metrics().map(|_| ()))?,
    })
}

/// A SQLite file of `n` finished jobs (99% succeeded, 1% failed) over the last day, three
/// queues and seven kinds, with the counts and rollups jobq keeps, written straight with
/// SQL (a million rows a transaction) for speed.
pub(super) fn sqlite_fixture(path: &Path, n: i64) -> Result<Queue, Refused> {
    let queue = Queue::open(path)?;
    let now = queue.now_ms();
    let conn = rusqlite::Connection::open(path).map_err(|e| Refused(e.to_string()))?;
    let sql = |e: rusqlite::Error| Refused(format!("building the size fixture: {e}"));
    let mut from = 0;
    while from < n {
        let to = (from + 1_000_000).min(n);
        conn.execute(
            "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, attempts, claims,
                                    max_attempts, run_after, locked_by, stage, progress,
                                    output, last_error, error_code, created_at, updated_at,
                                    started_at, completed_at)
             WITH RECURSIVE seq(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?2 - 1),
             jobs AS (SELECT i, ?3 - 86400000 + i * 86400000 / ?4 AS t FROM seq)
             SELECT ((t / 65536) << 32) | ((i % 65536) << 16) | 28672 | (i % 4096),
                    printf('%08x-%04x-7%03x-8000-%012x', t / 65536, i % 65536, i % 4096, i),
                    'q' || (i % 3), 'kind' || (i % 7),
                    CASE WHEN i % 100 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 1, 5, t, 'w',
                    'done', 1, 'null', CASE WHEN i % 100 = 0 THEN 'boom' END,
                    CASE WHEN i % 100 = 0 THEN 'E' END, t, t + 20, t + 10, t + 20
             FROM jobs",
            rusqlite::params![from, to, now, n],
        )
        .map_err(sql)?;
        from = to;
    }
    // What jobq's transactions would have kept (the counts; the rollups' counters and
    // histograms, as `schema.sql` starts them for an older file, with each job's run time).
    conn.execute_batch(
        "DELETE FROM jobq_counts;
         INSERT INTO jobq_counts (owner, queue, status, n)
         SELECT coalesce(owner, ''), queue, status, count(*) FROM jobq_jobs GROUP BY 1, 2, 3;
         DELETE FROM jobq_rollups;
         INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
         SELECT 60000, at - at % 60000, owner, queue, kind, metric, slot, sum(n) FROM (
             SELECT created_at AS at, coalesce(owner, '') AS owner, queue, kind,
                    'enqueued' AS metric, 0 AS slot, 1 AS n FROM jobq_jobs
             UNION ALL
             SELECT started_at, coalesce(owner, ''), queue, kind, 'started', 0, claims
             FROM jobq_jobs WHERE claims > 0
             UNION ALL
             SELECT completed_at, coalesce(owner, ''), queue, kind, status, 0, 1
             FROM jobq_jobs WHERE completed_at IS NOT NULL
             UNION ALL
             SELECT completed_at, coalesce(owner, ''), queue, kind, 'run_ms', 7, 1
             FROM jobq_jobs WHERE completed_at IS NOT NULL)
         GROUP BY 2, 3, 4, 5, 6, 7;
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .map_err(sql)?;
    Ok(queue)
}

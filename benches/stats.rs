//! How long the statistics take on a database of 1,000,000 jobs: 90% succeeded, 5% failed,
//! 1% cancelled, 3% queued, 0.9% waiting for a retry, 0.1% running, over three queues and
//! five kinds, finished within the last day. The target: interactive, under 200 ms.
//!
//! `cargo bench --bench stats` (the fixture is built once, under `target/tmp/bench-fixtures`).

mod common;

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jobq::{CostGrouping, HealthThresholds, JobFilter, Queue, StatsFilter, Status, TimingFilter};

const JOBS: i64 = 1_000_000;

fn fixture() -> Queue {
    let path = common::fixture_path(&format!("stats-{JOBS}"));
    let queue = Queue::open(&path).unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    let existing: i64 = conn
        .query_row("SELECT count(*) FROM jobq_jobs", [], |r| r.get(0))
        .unwrap();
    if existing != JOBS {
        conn.execute_batch("DELETE FROM jobq_jobs").unwrap();
        let now = queue.now().as_millis();
        // Job i was created i * 80 ms before now; terminal ones finished 2 s after a start
        // that followed their creation by (i % 7) s, running for (i % 13) * 100 ms.
        conn.execute(
            "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, attempts, max_attempts, run_after,
                                    locked_by, locked_at, heartbeat_at, stage, progress, cost_cents,
                                    created_at, updated_at, started_at, completed_at)
             WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1),
             jobs AS (
                 SELECT i, ?2 - i * 80 AS created,
                        CASE WHEN i % 1000 < 900 THEN 'succeeded' WHEN i % 1000 < 950 THEN 'failed'
                             WHEN i % 1000 < 960 THEN 'cancelled' WHEN i % 1000 < 990 THEN 'queued'
                             WHEN i % 1000 < 999 THEN 'retry' ELSE 'running' END AS status
                 FROM seq)
             SELECT (((?2 - i * 80) / 65536) << 32) | ((i % 65536) << 16) | 28672 | (i % 4096),
                    printf('%08x-%04x-7%03x-8000-%012x', (?2 - i * 80) / 65536, i % 65536, i % 4096, i),
                    'q' || (i % 3), 'kind' || (i % 5), status,
                    CASE WHEN status IN ('queued') THEN 0 ELSE 1 END, 5, created,
                    CASE WHEN status IN ('queued', 'retry') THEN NULL ELSE 'worker-1' END,
                    CASE WHEN status IN ('queued', 'retry') THEN NULL ELSE created + (i % 7) * 1000 END,
                    CASE WHEN status IN ('queued', 'retry') THEN NULL ELSE created + (i % 7) * 1000 END,
                    CASE WHEN status = 'succeeded' THEN 'succeeded' WHEN status = 'failed' THEN 'render' END,
                    CASE WHEN status = 'succeeded' THEN 1 ELSE 0 END,
                    i % 500, created, created,
                    CASE WHEN status IN ('queued', 'retry', 'cancelled') THEN NULL ELSE created + (i % 7) * 1000 END,
                    CASE WHEN status IN ('succeeded', 'failed') THEN created + (i % 7) * 1000 + (i % 13) * 100
                         WHEN status = 'cancelled' THEN created + 1000 END
             FROM jobs",
            rusqlite::params![JOBS, now],
        )
        .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    queue
}

fn stats(c: &mut Criterion) {
    let queue = fixture();
    let totals = queue.stats(&StatsFilter::new()).unwrap();
    assert_eq!(totals.total, JOBS);
    assert_eq!(totals.count(Status::Succeeded), JOBS * 9 / 10);
    let mut group = c.benchmark_group("stats_1m_jobs");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("stats", |b| {
        b.iter(|| queue.stats(&StatsFilter::new()).unwrap())
    });
    group.bench_function("overview_with_health", |b| {
        b.iter(|| {
            queue
                .overview(&StatsFilter::new(), &HealthThresholds::default())
                .unwrap()
        })
    });
    group.bench_function("stats_one_queue", |b| {
        b.iter(|| queue.stats(&StatsFilter::new().queue("q1")).unwrap())
    });
    group.bench_function("timing_last_hour", |b| {
        b.iter(|| {
            queue
                .timing(&TimingFilter::new().within(Duration::from_secs(3600)))
                .unwrap()
        })
    });
    group.bench_function("timing_all_1m", |b| {
        b.iter(|| queue.timing(&TimingFilter::new()).unwrap())
    });
    // The metrics are an HTTP route's (the `http` feature).
    #[cfg(feature = "http")]
    group.bench_function("metrics", |b| b.iter(|| queue.metrics().unwrap()));
    group.bench_function("running_monitor", |b| {
        b.iter(|| queue.running_jobs().unwrap())
    });
    group.bench_function("dead_letter_50", |b| {
        b.iter(|| queue.dead_letter(50).unwrap())
    });
    group.bench_function("list_failed_page", |b| {
        b.iter(|| {
            queue
                .list(&JobFilter::new().status(Status::Failed).limit(50))
                .unwrap()
        })
    });
    group.bench_function("list_queued_page", |b| {
        b.iter(|| {
            queue
                .list(&JobFilter::new().status(Status::Queued).limit(50))
                .unwrap()
        })
    });
    group.bench_function("costs_by_status_full_scan", |b| {
        b.iter(|| queue.costs(CostGrouping::Status).unwrap())
    });
    group.finish();
}

criterion_group!(benches, stats);
criterion_main!(benches);

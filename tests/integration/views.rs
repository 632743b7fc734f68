//! The SQL views for people with the `sqlite3` shell return correct rows.

use std::time::Duration;

use jobq::{ClaimFilter, JobError, ManualClock, NewJob, Queue, RetryPolicy};
use rusqlite::Connection;
use serde_json::json;

use crate::common::rows;

/// Known jobs: four succeeded runs of 1, 2, 3 and 10 s; two failed runs of 4 and 6 s; one
/// running at 45 % in stage `llm_analysis`; two queued. The clock sits at the real now, so
/// the views' own `now` agrees with it.
fn known() -> (tempfile::TempDir, Queue, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::starting_now();
    // Run everything in the past, so that the running job's ages are small and known.
    clock.set(clock_now(&clock) - 100_000);
    let queue = Queue::builder(dir.path().join("q.db"))
        .clock(clock.clone())
        .retry_policy(RetryPolicy::fixed(Duration::ZERO))
        .open()
        .unwrap();
    for (secs, cost) in [(1, 10), (2, 20), (3, 30), (10, 40)] {
        queue
            .enqueue(
                NewJob::new("scene")
                    .queue("video")
                    .cost_cents(cost)
                    .owner("alice"),
            )
            .unwrap();
        let lease = queue
            .claim("w", 1, &ClaimFilter::queues(["video"]))
            .unwrap()[0]
            .lease();
        clock.advance(Duration::from_secs(secs));
        queue.complete(&lease, json!({})).unwrap();
    }
    for secs in [4, 6] {
        queue
            .enqueue(
                NewJob::new("music")
                    .queue("audio")
                    .max_attempts(1)
                    .cost_cents(5),
            )
            .unwrap();
        let lease = queue
            .claim("w", 1, &ClaimFilter::queues(["audio"]))
            .unwrap()[0]
            .lease();
        queue.set_stage(&lease, "mixing").unwrap();
        clock.advance(Duration::from_secs(secs));
        queue
            .fail(
                &lease,
                &JobError::retryable("model overloaded").code("UPSTREAM_503"),
            )
            .unwrap();
    }
    queue
        .enqueue_many((0..2).map(|_| NewJob::new("scene").queue("video")))
        .unwrap();
    queue.enqueue(NewJob::new("ingest")).unwrap();
    let lease = queue.claim("ingester", 1, &ClaimFilter::default()).unwrap()[0].lease();
    queue
        .set_progress(&lease, 0.45, Some("llm_analysis"))
        .unwrap();
    (dir, queue, clock)
}

fn clock_now(clock: &ManualClock) -> i64 {
    use jobq::Clock;
    clock.now_ms()
}

#[test]
fn the_views_report_the_known_jobs() {
    use rusqlite::types::Value::{Integer, Real, Text};
    let (_dir, queue, _clock) = known();
    let conn = Connection::open(queue.path()).unwrap();

    let timing = rows(
        &conn,
        "SELECT status, count, avg_duration_seconds, p50_seconds, p95_seconds, max_seconds FROM jobq_timing_stats",
    );
    assert_eq!(
        timing,
        vec![
            vec![
                Text("failed".into()),
                Integer(2),
                Real(5.0),
                Real(4.0),
                Real(6.0),
                Real(6.0)
            ],
            vec![
                Text("succeeded".into()),
                Integer(4),
                Real(4.0),
                Real(2.0),
                Real(10.0),
                Real(10.0)
            ],
        ]
    );

    let stats = rows(
        &conn,
        "SELECT queue, queued, running, retry, succeeded, failed, cancelled, total FROM jobq_queue_stats",
    );
    assert_eq!(
        stats,
        vec![
            vec![
                Text("audio".into()),
                Integer(0),
                Integer(0),
                Integer(0),
                Integer(0),
                Integer(2),
                Integer(0),
                Integer(2)
            ],
            vec![
                Text("default".into()),
                Integer(0),
                Integer(1),
                Integer(0),
                Integer(0),
                Integer(0),
                Integer(0),
                Integer(1)
            ],
            vec![
                Text("video".into()),
                Integer(2),
                Integer(0),
                Integer(0),
                Integer(4),
                Integer(0),
                Integer(0),
                Integer(6)
            ],
        ]
    );

    let dead = rows(
        &conn,
        "SELECT kind, attempts, error_code, last_error, stage FROM jobq_dead_letter_jobs",
    );
    assert_eq!(dead.len(), 2);
    for row in &dead {
        assert_eq!(
            row,
            &vec![
                Text("music".into()),
                Integer(1),
                Text("UPSTREAM_503".into()),
                Text("model overloaded".into()),
                Text("mixing".into())
            ]
        );
    }

    let running = rows(
        &conn,
        "SELECT kind, stage, progress, worker, running_seconds, heartbeat_age_seconds FROM jobq_running_jobs_monitor",
    );
    assert_eq!(running.len(), 1);
    assert_eq!(
        &running[0][..4],
        &[
            Text("ingest".into()),
            Text("llm_analysis".into()),
            Real(0.45),
            Text("ingester".into())
        ]
    );
    // The job started 74 s before the real now (100 s back, then 26 s of other runs).
    let Integer(running_s) = running[0][4] else {
        panic!()
    };
    assert!((74..=80).contains(&running_s), "{running_s}");
    let Integer(heartbeat_age) = running[0][5] else {
        panic!()
    };
    assert!((74..=80).contains(&heartbeat_age), "{heartbeat_age}");

    let stages = rows(
        &conn,
        "SELECT stage, status, count FROM jobq_stage_distribution",
    );
    assert_eq!(
        stages,
        vec![
            vec![
                Text("succeeded".into()),
                Text("succeeded".into()),
                Integer(4)
            ],
            vec![
                rusqlite::types::Value::Null,
                Text("queued".into()),
                Integer(2)
            ],
            vec![Text("mixing".into()), Text("failed".into()), Integer(2)],
            vec![
                Text("llm_analysis".into()),
                Text("running".into()),
                Integer(1)
            ],
        ]
    );

    let summary = rows(
        &conn,
        "SELECT owner, status, count, total_cost_cents, avg_cost_cents FROM jobq_job_summary WHERE owner IS NOT NULL",
    );
    assert_eq!(
        summary,
        vec![vec![
            Text("alice".into()),
            Text("succeeded".into()),
            Integer(4),
            Integer(100),
            Real(25.0)
        ]]
    );
}

/// The plan SQLite picks for a query, one step a line.
fn plan(conn: &rusqlite::Connection, sql: &str) -> String {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map([], |r| r.get::<_, String>(3))
        .unwrap()
        .map(|r| r.unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_running_monitor_and_the_dead_letter_read_an_index_not_the_table() {
    let (dir, _queue, _clock) = known();
    let conn = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    for (view, index) in [
        ("jobq_running_jobs_monitor", "jobq_jobs_status"),
        ("jobq_dead_letter_jobs", "jobq_jobs_finished"),
    ] {
        let p = plan(&conn, &format!("SELECT * FROM {view}"));
        assert!(p.contains(index), "{view} does not use {index}:\n{p}");
        assert!(
            !p.lines().any(|l| l.trim() == "SCAN jobq_jobs"),
            "{view} scans the whole table:\n{p}"
        );
    }
    // The dead letter comes newest first straight from the index, without a sort.
    let p = plan(&conn, "SELECT * FROM jobq_dead_letter_jobs");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

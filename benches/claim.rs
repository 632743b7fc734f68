//! How fast a claim takes a batch of ready jobs, by batch size, with 10,000 or 1,000,000
//! ready jobs, and with 1,000,000 finished jobs beside 10,000 ready ones. The design target:
//! a claim as fast with 1M ready jobs as with 10k (within 20%), and unaffected by finished
//! jobs (within 10%), because the claim walks a partial index of ready jobs only.
//!
//! Claimed jobs are put back (untimed) before they run out, so every timed claim sees the
//! stated number of ready jobs. `cargo bench --bench claim`

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jobq::{ClaimFilter, Queue};
use rusqlite::Connection;

struct Fixture {
    name: &'static str,
    queue: Queue,
    conn: Connection,
    claimed_since_reset: i64,
}

/// A database with `ready` queued jobs and `finished` succeeded ones, built once under
/// `target/tmp/bench-fixtures` and reused.
fn fixture(name: &'static str, ready: i64, finished: i64) -> Fixture {
    let path = common::fixture_path(&format!("claim-{name}"));
    let queue = Queue::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    let counts: (i64, i64) = conn
        .query_row(
            "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')),
                    count(*) FILTER (WHERE status = 'succeeded') FROM jobq_jobs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    if counts != (ready, finished) {
        conn.execute_batch("DELETE FROM jobq_jobs").unwrap();
        let now = queue.now().as_millis();
        // Finished jobs first (older ids), then the ready ones.
        conn.execute(
            "INSERT INTO jobq_jobs (id, kind, status, attempts, run_after, locked_by, stage, progress,
                                    created_at, updated_at, started_at, completed_at)
             WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1)
             SELECT printf('00000000-0000-7000-8000-%012x', i), 'noop', 'succeeded', 1, ?2 - 1000,
                    'w', 'succeeded', 1, ?2 - 1000, ?2, ?2 - 900, ?2 - 800
             FROM seq WHERE ?1 > 0",
            rusqlite::params![finished, now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO jobq_jobs (id, kind, run_after, created_at, updated_at)
             WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1)
             SELECT printf('00000001-0000-7000-8000-%012x', i), 'noop', ?2 - 500, ?2 - 500, ?2 - 500
             FROM seq",
            rusqlite::params![ready, now],
        )
        .unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
    }
    let mut f = Fixture {
        name,
        queue,
        conn,
        claimed_since_reset: 0,
    };
    f.reset();
    f
}

impl Fixture {
    /// Puts every claimed job back: `queued`, as it was.
    fn reset(&mut self) {
        self.conn
            .execute(
                "UPDATE jobq_jobs SET status = 'queued', attempts = 0, locked_by = NULL, locked_at = NULL,
                                      heartbeat_at = NULL, started_at = NULL, stage = NULL
                 WHERE status = 'running'",
                [],
            )
            .unwrap();
        self.claimed_since_reset = 0;
    }
}

fn claim(c: &mut Criterion) {
    let mut fixtures = [
        fixture("10k-ready", 10_000, 0),
        fixture("1m-ready", 1_000_000, 0),
        fixture("10k-ready-1m-finished", 10_000, 1_000_000),
    ];
    let filter = ClaimFilter::default();
    let mut group = c.benchmark_group("claim");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for f in &mut fixtures {
        for batch in [1usize, 8, 32, 128] {
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_with_input(BenchmarkId::new(f.name, batch), &batch, |b, &batch| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        // Put claimed jobs back in small steps: all but 1,000 jobs stay ready,
                        // and no reset is large enough to load the WAL during timed claims.
                        if f.claimed_since_reset + batch as i64 > 1_000 {
                            f.reset();
                        }
                        let started = Instant::now();
                        let jobs = f.queue.claim("bench", batch, &filter).unwrap();
                        timed += started.elapsed();
                        assert_eq!(jobs.len(), batch);
                        f.claimed_since_reset += batch as i64;
                    }
                    timed
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, claim);
criterion_main!(benches);

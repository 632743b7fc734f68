//! How fast a claim takes a batch of ready jobs, by batch size, with 10,000 or 1,000,000
//! ready jobs, and with 1,000,000 finished jobs beside 10,000 ready ones. The design target:
//! a claim as fast with 1M ready jobs as with 10k (within 20%), and unaffected by finished
//! jobs (within 10%), because the claim walks a partial index of ready jobs only.
//!
//! Claimed jobs are put back (untimed) before they run out, so every timed claim sees the
//! stated number of ready jobs. After the criterion groups, the fixtures take turns in one
//! loop and the bench prints their claim rates as ratios, the fairest reading of the
//! targets on a shared machine. `cargo bench --bench claim`

mod common;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
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
        // Finished jobs first (older ids), then the ready ones. Each id's first 64 bits are
        // its row key, as jobq makes them.
        conn.execute(
            "INSERT INTO jobq_jobs (id_key, id, kind, status, attempts, run_after, locked_by, stage,
                                    progress, created_at, updated_at, started_at, completed_at)
             WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?1 - 1)
             SELECT (i << 16) | 28672, printf('%08x-%04x-7000-8000-000000000000', i >> 16, i & 65535), 'noop', 'succeeded', 1, ?2 - 1000,
                    'w', 'succeeded', 1, ?2 - 1000, ?2, ?2 - 900, ?2 - 800
             FROM seq WHERE ?1 > 0",
            rusqlite::params![finished, now],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO jobq_jobs (id_key, id, kind, run_after, created_at, updated_at)
             WITH RECURSIVE seq(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM seq WHERE j < ?1 - 1),
             ready(i) AS (SELECT j + 4294967296 FROM seq)
             SELECT (i << 16) | 28672, printf('%08x-%04x-7000-8000-000000000000', i >> 16, i & 65535), 'noop', ?2 - 500, ?2 - 500, ?2 - 500
             FROM ready",
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

fn claim(c: &mut Criterion, fixtures: &mut [Fixture]) {
    let filter = ClaimFilter::default();
    let mut group = c.benchmark_group("claim");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(4));
    for f in fixtures.iter_mut() {
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

/// The scale ratios the design promises, measured fairly on a noisy machine: the three
/// fixtures take turns, 200 claims each (shorter turns measure the cost of switching
/// between databases instead), so that they share whatever the machine is doing; the ratio
/// is of median claim times (a rate ratio, 1.0 = as fast as 10k-ready).
fn paired_ratios(fixtures: &mut [Fixture]) {
    const ROUNDS: usize = 12;
    const CLAIMS: usize = 200;
    let filter = ClaimFilter::default();
    println!(
        "\npaired scale ratios (claim rate relative to 10k-ready; {ROUNDS} rounds, {CLAIMS} claims per fixture per round):"
    );
    for batch in [1usize, 8, 32, 128] {
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); fixtures.len()];
        for round in 0..ROUNDS {
            for k in 0..fixtures.len() {
                let i = (round + k) % fixtures.len();
                let f = &mut fixtures[i];
                for _ in 0..CLAIMS {
                    if f.claimed_since_reset + batch as i64 > 1_000 {
                        f.reset();
                    }
                    let started = Instant::now();
                    let jobs = f.queue.claim("bench", batch, &filter).unwrap();
                    times[i].push(started.elapsed());
                    assert_eq!(jobs.len(), batch);
                    f.claimed_since_reset += batch as i64;
                }
            }
        }
        let medians: Vec<Duration> = times
            .iter_mut()
            .map(|t| {
                t.sort();
                t[t.len() / 2]
            })
            .collect();
        let line: Vec<String> = fixtures
            .iter()
            .zip(&medians)
            .skip(1)
            .map(|(f, m)| {
                format!(
                    "{} {:.2}",
                    f.name,
                    medians[0].as_secs_f64() / m.as_secs_f64()
                )
            })
            .collect();
        println!(
            "  batch {batch:>3}: 10k-ready {:.0} jobs/s; {}",
            batch as f64 / medians[0].as_secs_f64(),
            line.join(", ")
        );
    }
}

fn main() {
    let mut fixtures = [
        fixture("10k-ready", 10_000, 0),
        fixture("1m-ready", 1_000_000, 0),
        fixture("10k-ready-1m-finished", 10_000, 1_000_000),
    ];
    let mut criterion = Criterion::default().configure_from_args();
    claim(&mut criterion, &mut fixtures);
    criterion.final_summary();
    paired_ratios(&mut fixtures);
}

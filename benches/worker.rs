//! End to end: how fast a worker pool drains 20,000 no-op jobs, by handler count and
//! durability, on a file-backed WAL database (a fresh file per iteration).
//!
//! `cargo bench --bench worker`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jobq::{Durability, JobContext, JobError, NewJob, Queue, WorkerPool};
use serde_json::Value;

const JOBS: u64 = 20_000;

fn noop(_: &JobContext) -> Result<Value, JobError> {
    Ok(Value::Null)
}

fn drain_once(durability: Durability, handlers: usize) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::builder(dir.path().join("bench.db"))
        .durability(durability)
        .open()
        .unwrap();
    for chunk in 0..(JOBS / 1000) {
        let _ = chunk;
        queue
            .enqueue_many((0..1000).map(|_| NewJob::new("noop")))
            .unwrap();
    }
    let start = Instant::now();
    let summary = WorkerPool::builder(&queue)
        .concurrency(handlers)
        .handler("noop", noop)
        .run_until_idle()
        .unwrap();
    let elapsed = start.elapsed();
    assert_eq!(summary.succeeded, JOBS);
    elapsed
}

fn drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("drain_20k_noop");
    group.throughput(Throughput::Elements(JOBS));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    for (name, durability) in [("normal", Durability::Normal), ("full", Durability::Full)] {
        for handlers in [1, 2, 4, 8] {
            group.bench_with_input(
                BenchmarkId::new(name, handlers),
                &handlers,
                |b, &handlers| {
                    b.iter_custom(|iters| {
                        (0..iters).map(|_| drain_once(durability, handlers)).sum()
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, drain);
criterion_main!(benches);

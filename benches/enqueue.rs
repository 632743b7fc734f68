//! How fast jobs go in: one `enqueue` call per job, and `enqueue_many` batches of 1,000, on
//! a file-backed WAL database with the full schema, at both durabilities.
//!
//! `cargo bench --bench enqueue`

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use jobq::{Durability, NewJob, Queue};
use serde_json::json;

fn enqueue(c: &mut Criterion) {
    let mut group = c.benchmark_group("enqueue");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (name, durability) in [("normal", Durability::Normal), ("full", Durability::Full)] {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::builder(dir.path().join("enqueue.db"))
            .durability(durability)
            .open()
            .unwrap();
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("one", name), |b| {
            b.iter(|| {
                queue
                    .enqueue(NewJob::new("email").input(json!({"to": "ada@example.com"})))
                    .unwrap()
            })
        });
        group.throughput(Throughput::Elements(1000));
        group.bench_function(BenchmarkId::new("batch_1000", name), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let jobs: Vec<NewJob> = (0..1000)
                        .map(|i| NewJob::new("email").input(json!({"i": i})))
                        .collect();
                    let started = Instant::now();
                    queue.enqueue_many(jobs).unwrap();
                    timed += started.elapsed();
                }
                timed
            })
        });
    }
    group.finish();
}

criterion_group!(benches, enqueue);
criterion_main!(benches);

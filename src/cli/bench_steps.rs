//! The bench's durable-steps workloads: the drain of five-step no-op jobs beside plain
//! no-op jobs, and the wake-up latency of an event.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::Refused;
use super::bench::{Wakeup, drain, per_s, percentiles};
use crate::{JobContext, JobError, NewJob, Queue, Status, WorkerPool};

/// The drain of jobs of five no-op steps beside the drain of plain no-op jobs, same
/// handlers, same run.
#[derive(Serialize)]
pub(crate) struct StepsDrain {
    pub workers: usize,
    pub plain_per_s: f64,
    pub five_steps_per_s: f64,
    pub ratio: f64,
}

fn five_steps(ctx: &JobContext) -> Result<Value, JobError> {
    for name in ["one", "two", "three", "four", "five"] {
        ctx.step(name, || Ok(()))?;
    }
    Ok(Value::Null)
}

/// Drains `n` plain no-op jobs on `plain` and `n` five-step ones on `stepped`.
pub(crate) fn steps_drain(
    plain: &Queue,
    stepped: &Queue,
    n: u64,
    workers: usize,
) -> Result<StepsDrain, Refused> {
    let fill = |queue: &Queue, kind: &str| -> crate::Result<()> {
        let mut left = n;
        while left > 0 {
            let chunk = left.min(1000);
            queue.enqueue_many((0..chunk).map(|_| NewJob::new(kind)))?;
            left -= chunk;
        }
        Ok(())
    };
    fill(plain, "noop")?;
    fill(stepped, "steps")?;
    let plain_per_s = drain(plain, workers, n, None)?;
    let started = Instant::now();
    let summary = WorkerPool::builder(stepped)
        .concurrency(workers)
        .handler("steps", five_steps)
        .run_until_idle()?;
    if summary.succeeded != n {
        return Err(Refused(format!(
            "bench: the five-step drain finished {} of {n} jobs",
            summary.succeeded
        )));
    }
    let five_steps_per_s = per_s(n, started.elapsed());
    Ok(StepsDrain {
        workers,
        plain_per_s,
        five_steps_per_s,
        ratio: (five_steps_per_s / plain_per_s * 100.0).round() / 100.0,
    })
}

/// From the start of `emit_event` to the start of the woken job's run, on an idle pool
/// (poll interval far longer than any wake-up) whose one job waits for that event.
pub(crate) fn event_wakeup(queue: &Queue) -> Result<Wakeup, Refused> {
    let (tx, rx) = crossbeam_channel::unbounded::<Instant>();
    let pool = WorkerPool::builder(queue)
        .concurrency(1)
        .poll_interval(Duration::from_secs(60))
        .handler("await", move |ctx: &JobContext| {
            let name: String = ctx.input()?;
            let got = ctx.wait_for_event(&name, Duration::from_secs(3600))?;
            let _ = tx.send(Instant::now());
            Ok(got.unwrap_or(Value::Null))
        })
        .start()?;
    let mut samples = Vec::new();
    for i in 0..200 {
        let name = format!("event-{i}");
        let id = queue
            .enqueue(NewJob::new("await").input(Value::String(name.clone())))?
            .job_id;
        let parked = Instant::now() + Duration::from_secs(10);
        while queue.get(&id)?.status != Status::Waiting {
            if Instant::now() > parked {
                return Err(Refused("bench: a job took over 10 s to park".into()));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // Let the pool go idle again.
        std::thread::sleep(Duration::from_millis(5));
        let sent = Instant::now();
        queue.emit_event(&name, Value::Null)?;
        let ran = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Refused("bench: an event's wake-up took over 10 s".into()))?;
        samples.push((ran - sent).as_secs_f64() * 1000.0);
    }
    pool.shutdown();
    Ok(percentiles(samples))
}

pub(crate) fn print_steps(s: &StepsDrain) {
    println!(
        "drain, {} handlers, jobs of five durable steps: {:.0}/s against {:.0}/s for plain jobs (ratio {:.2})",
        s.workers, s.five_steps_per_s, s.plain_per_s, s.ratio
    );
}

pub(crate) fn print_event(w: &Wakeup) {
    println!(
        "an event's wake-up, emit to the waiting job's run: p50 {:.3} ms, p99 {:.3} ms ({} samples)",
        w.p50, w.p99, w.samples
    );
}

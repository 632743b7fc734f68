//! `jobq bench`: the standard throughput workloads, each on a fresh temporary file, with
//! the machine's raw SQLite figures measured in the same run by bare rusqlite loops with the
//! same pragmas, so that every figure can be read as a ratio.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::{Durability, JobContext, JobError, NewJob, Queue, WorkerPool};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::Value;

use super::bench_raw::{raw_drain, raw_insert};
use super::output::print_json;
use super::{Done, Refused};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Jobs per workload.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: u64,
    /// Handlers of the multi-handler drain.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// synchronous=NORMAL or FULL, for jobq and the raw loops alike (SQLite).
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal)]
    durability: DurabilityArg,
    /// Run only these workloads (repeatable); all of them but `size` when absent.
    #[arg(long, value_enum)]
    pub only: Vec<Workload>,
    /// Threads recording outcomes in the drains (the pool's default, one, when absent).
    #[arg(long)]
    pub completers: Option<usize>,
    /// Finished jobs the `size` workload reads beside.
    #[arg(long, default_value_t = 10_000_000)]
    pub size_jobs: i64,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Enqueue,
    Drain,
    Wakeup,
    /// Fan-in: from a flow's last dependency finishing to its dependent starting.
    Fanin,
    /// The drain of a queue limited to one running job per key, over 1,000 keys, beside
    /// the same drain without limits.
    Limited,
    Raw,
    /// Jobs of five no-op durable steps beside plain no-op jobs.
    Steps,
    /// From an event's emit to the run of the job waiting for it.
    Event,
    /// Stats, series and metrics beside `--size-jobs` finished jobs (and on PostgreSQL the
    /// drain beside them).
    Size,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DurabilityArg {
    Normal,
    Full,
}

/// The figures of the workloads that did not run are `null`.
#[derive(Serialize)]
struct Figures {
    jobs: u64,
    durability: &'static str,
    enqueue_one_per_s: Option<f64>,
    enqueue_batch_per_s: Option<f64>,
    drain: Vec<Drain>,
    raw_sqlite: Option<Raw>,
    wakeup_ms: Option<Wakeup>,
    fanin_ms: Option<Wakeup>,
    limited: Option<Limited>,
    steps: Option<super::bench_steps::StepsDrain>,
    event_wakeup_ms: Option<Wakeup>,
    ratios: Option<Ratios>,
}

/// The per-key limited drain beside the unlimited one, same jobs, same handlers.
#[derive(Serialize)]
pub(crate) struct Limited {
    pub workers: usize,
    pub keys: u64,
    pub unlimited_per_s: f64,
    pub per_key_1_per_s: f64,
    pub ratio: f64,
}

#[derive(Serialize)]
struct Drain {
    workers: usize,
    jobs_per_s: f64,
}

#[derive(Serialize)]
struct Raw {
    insert_one_per_s: f64,
    insert_batch_per_s: f64,
    drain_one_txn_per_s: f64,
    drain_batch32_per_s: f64,
}

#[derive(Serialize)]
pub(crate) struct Wakeup {
    pub p50: f64,
    pub p99: f64,
    pub samples: usize,
}

/// jobq's figures divided by the raw figure they compare with.
#[derive(Serialize)]
struct Ratios {
    enqueue_one_vs_raw_insert_one: f64,
    enqueue_batch_vs_raw_insert_batch: f64,
    drain_vs_raw_drain_batch32: Vec<f64>,
}

/// Drains the `n` no-op jobs of `queue` with `workers` handlers (and `completers`, if
/// given); their rate.
pub(super) fn drain(
    queue: &Queue,
    workers: usize,
    n: u64,
    completers: Option<usize>,
) -> Result<f64, Refused> {
    let started = Instant::now();
    let mut builder = WorkerPool::builder(queue)
        .concurrency(workers)
        .handler("noop", noop);
    if let Some(c) = completers {
        builder = builder.completers(c);
    }
    let summary = builder.run_until_idle()?;
    let took = started.elapsed();
    if summary.succeeded != n {
        return Err(Refused(format!(
            "bench drain finished {} of {n} jobs",
            summary.succeeded
        )));
    }
    Ok(per_s(n, took))
}

pub(super) fn per_s(n: u64, took: Duration) -> f64 {
    (n as f64 / took.as_secs_f64()).round()
}

fn noop(_: &JobContext) -> Result<Value, JobError> {
    Ok(Value::Null)
}

pub fn run(db: &Path, json: bool, mut args: BenchArgs) -> Done {
    if args.jobs == 0 || args.workers == 0 {
        return Err(Refused(
            "invalid bench: --jobs and --workers must be at least 1".into(),
        ));
    }
    if args.only.is_empty() {
        args.only = vec![
            Workload::Enqueue,
            Workload::Drain,
            Workload::Wakeup,
            Workload::Fanin,
            Workload::Limited,
            Workload::Steps,
            Workload::Event,
            Workload::Raw,
        ];
    }
    if let Some(url) = db.to_str().filter(|d| crate::is_postgres_url(d)) {
        return super::bench_pg::run(url, json, &args);
    }
    if args.only == [Workload::Size] {
        return size(json, &args);
    }
    if args.only.contains(&Workload::Size) {
        return Err(Refused(
            "invalid bench: on SQLite the size workload runs alone (--only size)".into(),
        ));
    }
    let durability = match args.durability {
        DurabilityArg::Normal => Durability::Normal,
        DurabilityArg::Full => Durability::Full,
    };
    let dir =
        tempfile::tempdir().map_err(|e| Refused(format!("cannot make a temporary folder: {e}")))?;
    let n = args.jobs;
    let say = |what: &str| {
        if !json {
            eprintln!("… {what}");
        }
    };
    let open = |name: &str| {
        Queue::builder(dir.path().join(name))
            .durability(durability)
            .open()
    };
    let fill = |queue: &Queue| -> crate::Result<()> {
        let mut left = n;
        while left > 0 {
            let chunk = left.min(1000);
            queue.enqueue_many((0..chunk).map(|_| NewJob::new("noop")))?;
            left -= chunk;
        }
        Ok(())
    };

    let runs = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let (mut enqueue_one, mut enqueue_batch) = (None, None);
    if runs(Workload::Enqueue) {
        say("enqueue, one call per job");
        let queue = open("enqueue-one.db")?;
        let started = Instant::now();
        for _ in 0..n {
            queue.enqueue(NewJob::new("noop"))?;
        }
        enqueue_one = Some(per_s(n, started.elapsed()));
        drop(queue);

        say("enqueue, batches of 1,000");
        let queue = open("enqueue-batch.db")?;
        let started = Instant::now();
        fill(&queue)?;
        enqueue_batch = Some(per_s(n, started.elapsed()));
    }

    let mut drains = Vec::new();
    if runs(Workload::Drain) {
        let mut counts = vec![1, args.workers];
        counts.dedup();
        for workers in counts {
            say(&format!("drain with {workers} handler(s)"));
            let queue = open(&format!("drain-{workers}.db"))?;
            fill(&queue)?;
            drains.push(Drain {
                workers,
                jobs_per_s: drain(&queue, workers, n, args.completers)?,
            });
        }
    }

    let wakeup = if runs(Workload::Wakeup) {
        say("wake-up latency of an idle pool");
        let queue = open("wakeup.db")?;
        Some(wakeup(&queue, &queue, Duration::from_millis(100))?)
    } else {
        None
    };

    let fanin = if runs(Workload::Fanin) {
        say("fan-in latency of an idle pool");
        Some(fanin(&open("fanin.db")?)?)
    } else {
        None
    };

    let limited = if runs(Workload::Limited) {
        say("drain limited to one running job per key over 1,000 keys, and without limits");
        Some(limited_drain(
            &open("unlimited.db")?,
            &open("limited.db")?,
            n,
            args.workers,
        )?)
    } else {
        None
    };

    let steps = if runs(Workload::Steps) {
        say("drain of five-step jobs, and of plain ones");
        Some(super::bench_steps::steps_drain(
            &open("plain.db")?,
            &open("steps.db")?,
            n,
            args.workers,
        )?)
    } else {
        None
    };

    let event_wakeup = if runs(Workload::Event) {
        say("wake-up latency of an event");
        Some(super::bench_steps::event_wakeup(&open("events.db")?)?)
    } else {
        None
    };

    let raw = if runs(Workload::Raw) {
        say("raw SQLite loops with the same pragmas");
        Some(Raw {
            insert_one_per_s: raw_insert(&dir.path().join("raw-insert.db"), durability, n, 1)?,
            insert_batch_per_s: raw_insert(&dir.path().join("raw-batch.db"), durability, n, 1000)?,
            drain_one_txn_per_s: raw_drain(&dir.path().join("raw-drain-1.db"), durability, n, 1)?,
            drain_batch32_per_s: raw_drain(&dir.path().join("raw-drain-32.db"), durability, n, 32)?,
        })
    } else {
        None
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            (a / b * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    let ratios = raw.as_ref().map(|raw| Ratios {
        enqueue_one_vs_raw_insert_one: enqueue_one.map_or(0.0, |e| ratio(e, raw.insert_one_per_s)),
        enqueue_batch_vs_raw_insert_batch: enqueue_batch
            .map_or(0.0, |e| ratio(e, raw.insert_batch_per_s)),
        drain_vs_raw_drain_batch32: drains
            .iter()
            .map(|d| ratio(d.jobs_per_s, raw.drain_batch32_per_s))
            .collect(),
    });
    let report = Figures {
        jobs: n,
        durability: match durability {
            Durability::Full => "full",
            _ => "normal",
        },
        enqueue_one_per_s: enqueue_one,
        enqueue_batch_per_s: enqueue_batch,
        ratios,
        drain: drains,
        raw_sqlite: raw,
        wakeup_ms: wakeup,
        fanin_ms: fanin,
        limited,
        steps,
        event_wakeup_ms: event_wakeup,
    };
    if json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// One row of the table both engines' reports print: a workload, jobq's rate, the raw
/// loop's rate and their ratio (`-` where a figure is missing).
pub(super) struct Row {
    pub label: String,
    pub jobq: Option<f64>,
    pub raw: Option<f64>,
    pub ratio: Option<f64>,
}

/// The two enqueue rows (one per call, batches of 1000) of either engine's table: jobq's
/// rates, the raw loop's, and their ratios, in that order.
pub(super) fn enqueue_rows(
    jobq: [Option<f64>; 2],
    raw: [Option<f64>; 2],
    ratio: [Option<f64>; 2],
) -> Vec<Row> {
    ["enqueue, one per call", "enqueue, batches of 1000"]
        .into_iter()
        .enumerate()
        .map(|(i, label)| Row {
            label: label.into(),
            jobq: jobq[i],
            raw: raw[i],
            ratio: ratio[i],
        })
        .collect()
}

/// The table of [`Row`]s under a header naming the raw baseline.
pub(super) fn print_rows(baseline: &str, rows: &[Row]) {
    let rate = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}/s"));
    let ratio = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}"));
    println!("{:<28}{:>14}{:>16}{:>8}", "", "jobq", baseline, "ratio");
    for row in rows {
        println!(
            "{:<28}{:>14}{:>16}{:>8}",
            row.label,
            rate(row.jobq),
            rate(row.raw),
            ratio(row.ratio)
        );
    }
}

fn print_report(r: &Figures) {
    let raw = r.raw_sqlite.as_ref();
    let ratios = r.ratios.as_ref();
    println!(
        "jobq bench: {} jobs per workload, synchronous={}",
        r.jobs,
        r.durability.to_uppercase()
    );
    println!();
    let mut rows = enqueue_rows(
        [r.enqueue_one_per_s, r.enqueue_batch_per_s],
        [
            raw.map(|x| x.insert_one_per_s),
            raw.map(|x| x.insert_batch_per_s),
        ],
        [
            ratios.map(|x| x.enqueue_one_vs_raw_insert_one),
            ratios.map(|x| x.enqueue_batch_vs_raw_insert_batch),
        ],
    );
    rows.extend(r.drain.iter().enumerate().map(|(i, d)| Row {
        label: format!("drain, {} handler(s)", d.workers),
        jobq: Some(d.jobs_per_s),
        raw: raw.map(|x| x.drain_batch32_per_s),
        ratio: ratios.and_then(|x| x.drain_vs_raw_drain_batch32.get(i).copied()),
    }));
    print_rows("raw SQLite", &rows);
    if let Some(raw) = raw {
        println!(
            "(raw drain: claims and completions 32 to a transaction; one job per transaction: {:.0}/s)",
            raw.drain_one_txn_per_s
        );
    }
    if let Some(w) = &r.wakeup_ms {
        println!(
            "wake-up of an idle pool: p50 {:.3} ms, p99 {:.3} ms ({} samples)",
            w.p50, w.p99, w.samples
        );
    }
    if let Some(l) = &r.limited {
        print_limited(l);
    }
    if let Some(w) = &r.fanin_ms {
        print_fanin(w);
    }
    if let Some(s) = &r.steps {
        super::bench_steps::print_steps(s);
    }
    if let Some(w) = &r.event_wakeup_ms {
        super::bench_steps::print_event(w);
    }
}

pub(crate) fn print_fanin(w: &Wakeup) {
    println!(
        "fan-in, last dependency's handler returning to its dependent's handler starting: p50 {:.3} ms, p99 {:.3} ms ({} samples)",
        w.p50, w.p99, w.samples
    );
}

pub(crate) fn print_limited(l: &Limited) {
    println!(
        "drain, {} handlers, max_running_per_key 1 over {} keys: {:.0}/s against {:.0}/s without limits (ratio {:.2})",
        l.workers, l.keys, l.per_key_1_per_s, l.unlimited_per_s, l.ratio
    );
}

/// Drains `n` jobs spread over 1,000 concurrency keys twice: on `free` without limits,
/// on `limited` with `max_running_per_key 1`.
pub(crate) fn limited_drain(
    free: &Queue,
    limited: &Queue,
    n: u64,
    workers: usize,
) -> Result<Limited, Refused> {
    const KEYS: u64 = 1000;
    let fill = |queue: &Queue| -> crate::Result<()> {
        let mut i = 0;
        while i < n {
            let chunk = (n - i).min(1000);
            queue.enqueue_many(
                (i..i + chunk)
                    .map(|j| NewJob::new("noop").concurrency_key(format!("key-{}", j % KEYS))),
            )?;
            i += chunk;
        }
        Ok(())
    };
    fill(free)?;
    fill(limited)?;
    limited.set_queue_limits(
        "default",
        crate::QueueLimits::new().max_running_per_key(Some(1)),
    )?;
    let unlimited_per_s = drain(free, workers, n, None)?;
    let per_key_1_per_s = drain(limited, workers, n, None)?;
    Ok(Limited {
        workers,
        keys: KEYS,
        unlimited_per_s,
        per_key_1_per_s,
        ratio: (per_key_1_per_s / unlimited_per_s * 100.0).round() / 100.0,
    })
}

/// The p50 and p99 of samples in milliseconds.
pub(crate) fn percentiles(mut samples: Vec<f64>) -> Wakeup {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at =
        |p: f64| samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    Wakeup {
        p50: round(at(0.50)),
        p99: round(at(0.99)),
        samples: samples.len(),
    }
}

/// Fan-in latency: flows of four jobs and one that waits for them, each submitted to an
/// idle pool (poll interval far longer than any wake-up); from the moment the last of the
/// four handlers returns (its success not yet recorded) to the moment the dependent's
/// handler starts: recording the success, queueing the dependent in that transaction,
/// waking the pool and claiming it.
pub(crate) fn fanin(queue: &Queue) -> Result<Wakeup, Refused> {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Instant>();
    let (start_tx, start_rx) = crossbeam_channel::unbounded::<Instant>();
    let pool = WorkerPool::builder(queue)
        .concurrency(4)
        .poll_interval(Duration::from_secs(60))
        .handler("part", move |_: &JobContext| {
            std::thread::sleep(Duration::from_millis(1));
            let _ = done_tx.send(Instant::now());
            Ok(Value::Null)
        })
        .handler("join", move |_: &JobContext| {
            let _ = start_tx.send(Instant::now());
            Ok(Value::Null)
        })
        .start()?;
    let mut samples = Vec::new();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..200 {
        let mut flow = crate::Flow::new("fan-in");
        for p in 0..4 {
            flow = flow.job(format!("part-{p}"), NewJob::new("part"));
        }
        flow = flow.job_after(
            "join",
            NewJob::new("join"),
            ["part-0", "part-1", "part-2", "part-3"],
        );
        queue.submit_flow(flow)?;
        let started = start_rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Refused("bench: a fan-in took over 10 s".into()))?;
        let last = done_rx.try_iter().max().unwrap_or(started);
        samples.push((started - last).as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown();
    Ok(percentiles(samples))
}

/// From the start of an enqueue call on `enqueuer` to the start of its handler, on an idle
/// pool of `pool_side` (the same handle, or another one, as another process would be, which
/// only a notification can wake) whose poll interval is far longer than any wake-up.
pub(crate) fn wakeup(
    pool_side: &Queue,
    enqueuer: &Queue,
    settle: Duration,
) -> Result<Wakeup, Refused> {
    let (tx, rx) = crossbeam_channel::unbounded::<Instant>();
    let pool = WorkerPool::builder(pool_side)
        .concurrency(1)
        .poll_interval(Duration::from_secs(60))
        .handler("ping", move |_: &JobContext| {
            let _ = tx.send(Instant::now());
            Ok(Value::Null)
        })
        .start()?;
    let mut samples = Vec::new();
    std::thread::sleep(settle);
    for _ in 0..200 {
        let sent = Instant::now();
        enqueuer.enqueue(NewJob::new("ping"))?;
        let ran = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| Refused("bench: a wake-up took over 10 s".into()))?;
        samples.push((ran - sent).as_secs_f64() * 1000.0);
        // Let the pool go idle again.
        std::thread::sleep(Duration::from_millis(5));
    }
    pool.shutdown();
    Ok(percentiles(samples))
}

/// `--only size` on SQLite: the reads beside `--size-jobs` finished jobs.
fn size(json: bool, args: &BenchArgs) -> Done {
    if args.size_jobs < 1 {
        return Err(Refused(
            "invalid bench: --size-jobs must be at least 1".into(),
        ));
    }
    let dir =
        tempfile::tempdir().map_err(|e| Refused(format!("cannot make a temporary folder: {e}")))?;
    if !json {
        eprintln!(
            "… {} finished jobs written straight with SQL",
            args.size_jobs
        );
    }
    let started = Instant::now();
    let queue = super::bench_size::sqlite_fixture(&dir.path().join("size.db"), args.size_jobs)?;
    let built = started.elapsed();
    if !json {
        eprintln!("… built in {:.0} s; reading", built.as_secs_f64());
    }
    let reads = super::bench_size::reads(&queue)?;
    if json {
        super::output::print_json(&serde_json::json!({
            "engine": "sqlite",
            "finished_jobs": args.size_jobs,
            "reads": reads,
        }));
    } else {
        println!(
            "jobq bench, size: {} finished jobs on SQLite (median of 5)\n\
             stats (overview with health)   {:>8.1} ms\n\
             series, last hour by minute    {:>8.1} ms\n\
             series, last day by hour       {:>8.1} ms\n\
             /metrics                       {:>8.1} ms",
            args.size_jobs,
            reads.stats_ms,
            reads.series_hour_ms,
            reads.series_day_ms,
            reads.metrics_ms
        );
    }
    Ok(())
}

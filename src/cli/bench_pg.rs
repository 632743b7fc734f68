//! `jobq --db postgres://… bench`: the standard workloads on a PostgreSQL server, each in a
//! scratch schema of the URL's database (dropped afterwards), with the server's raw figures
//! measured in the same run by bare loops (claim 32 with `SKIP LOCKED`, complete the 32 in
//! one statement) so that every figure can be read as a ratio.

use std::time::{Duration, Instant};

use crate::{NewJob, Queue};
use postgres::{Client, NoTls};
use serde::Serialize;

use super::bench::{BenchArgs, Row, Wakeup, Workload, drain, per_s, print_rows, wakeup};
use super::output::print_json;
use super::{Done, Refused};

#[derive(Serialize)]
struct Figures {
    engine: &'static str,
    server: String,
    jobs: u64,
    enqueue_one_per_s: Option<f64>,
    enqueue_batch_per_s: Option<f64>,
    drain: Vec<Drain>,
    raw_postgres: Option<Raw>,
    wakeup_across_handles_ms: Option<Wakeup>,
    fanin_ms: Option<Wakeup>,
    limited: Option<super::bench::Limited>,
    steps: Option<super::bench_steps::StepsDrain>,
    event_wakeup_ms: Option<Wakeup>,
    size: Option<Size>,
    ratios: Option<Ratios>,
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
    /// (workers, jobs/s) of the claim-32/complete-32 loop.
    drain_batch32: Vec<(usize, f64)>,
}

#[derive(Serialize)]
struct Size {
    finished_jobs: i64,
    drain_empty_per_s: f64,
    drain_beside_finished_per_s: f64,
    ratio: f64,
    reads: super::bench_size::Reads,
}

#[derive(Serialize)]
struct Ratios {
    enqueue_one_vs_raw_insert_one: f64,
    enqueue_batch_vs_raw_insert_batch: f64,
    /// Each drain against the raw loop with as many workers.
    drain_vs_raw_drain_batch32: Vec<f64>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        (a / b * 100.0).round() / 100.0
    } else {
        0.0
    }
}

fn pg(e: postgres::Error) -> Refused {
    Refused(format!("bench: {e}"))
}

/// A schema of its own for one workload, dropped with this value.
struct Scratch {
    url: String,
    admin: Client,
    schema: String,
}

impl Scratch {
    fn new(base: &str, name: &str) -> Result<Scratch, Refused> {
        let mut admin = Client::connect(base, NoTls).map_err(pg)?;
        let schema = format!("jobq_bench_{}_{name}", std::process::id());
        run_on(&mut admin, FRESH_SCHEMA, &schema).map_err(pg)?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        Ok(Scratch { url, admin, schema })
    }

    fn queue(&self) -> Result<Queue, Refused> {
        Ok(Queue::open(&self.url)?)
    }

    fn client(&self) -> Result<Client, Refused> {
        Client::connect(&self.url, NoTls).map_err(pg)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = run_on(&mut self.admin, DROP_SCHEMA, &self.schema);
    }
}

const FRESH_SCHEMA: &str = "DROP SCHEMA IF EXISTS %1$I CASCADE; CREATE SCHEMA %1$I";
const DROP_SCHEMA: &str = "DROP SCHEMA IF EXISTS %I CASCADE";

/// Runs `template` with the name `ident` put in by the server (`format`'s `%I` quotes it).
fn run_on(client: &mut Client, template: &str, ident: &str) -> Result<(), postgres::Error> {
    let sql: String = client
        .query_one("SELECT format($1::text, $2::text)", &[&template, &ident])?
        .get(0);
    client.batch_execute(&sql)
}

fn fill(queue: &Queue, n: u64) -> crate::Result<()> {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(1000);
        queue.enqueue_many((0..chunk).map(|_| NewJob::new("noop")))?;
        left -= chunk;
    }
    Ok(())
}

pub fn run(base: &str, json: bool, args: &BenchArgs) -> Done {
    let n = args.jobs;
    let say = |what: &str| {
        if !json {
            eprintln!("… {what}");
        }
    };
    let runs = |w: Workload| args.only.is_empty() || args.only.contains(&w);
    let mut counts = vec![1, args.workers];
    counts.dedup();

    let (mut enqueue_one, mut enqueue_batch) = (None, None);
    if runs(Workload::Enqueue) {
        say("enqueue, one call per job");
        let scratch = Scratch::new(base, "enqueue_one")?;
        let queue = scratch.queue()?;
        let started = Instant::now();
        for _ in 0..n {
            queue.enqueue(NewJob::new("noop"))?;
        }
        enqueue_one = Some(per_s(n, started.elapsed()));
        say("enqueue, batches of 1,000");
        let scratch = Scratch::new(base, "enqueue_batch")?;
        let queue = scratch.queue()?;
        let started = Instant::now();
        fill(&queue, n)?;
        enqueue_batch = Some(per_s(n, started.elapsed()));
    }

    let mut drains = Vec::new();
    if runs(Workload::Drain) {
        for &workers in &counts {
            say(&format!("drain with {workers} handler(s)"));
            let scratch = Scratch::new(base, &format!("drain_{workers}"))?;
            let queue = scratch.queue()?;
            fill(&queue, n)?;
            drains.push(Drain {
                workers,
                jobs_per_s: drain(&queue, workers, n, args.completers)?,
            });
        }
    }

    let wakeup = if runs(Workload::Wakeup) {
        say("wake-up latency of an idle pool, through LISTEN/NOTIFY");
        let scratch = Scratch::new(base, "wakeup")?;
        // Two handles, as two processes: only a notification can wake the pool.
        let (pool_side, enqueuer) = (scratch.queue()?, scratch.queue()?);
        Some(wakeup(&pool_side, &enqueuer, Duration::from_millis(300))?)
    } else {
        None
    };

    let fanin = if runs(Workload::Fanin) {
        say("fan-in latency of an idle pool");
        let scratch = Scratch::new(base, "fanin")?;
        Some(super::bench::fanin(&scratch.queue()?)?)
    } else {
        None
    };

    let limited = if runs(Workload::Limited) {
        say("drain limited to one running job per key over 1,000 keys, and without limits");
        let free = Scratch::new(base, "unlimited")?;
        let limited = Scratch::new(base, "limited")?;
        Some(super::bench::limited_drain(
            &free.queue()?,
            &limited.queue()?,
            n,
            args.workers,
        )?)
    } else {
        None
    };

    let steps = if runs(Workload::Steps) {
        say("drain of five-step jobs, and of plain ones");
        let plain = Scratch::new(base, "plain")?;
        let stepped = Scratch::new(base, "steps")?;
        Some(super::bench_steps::steps_drain(
            &plain.queue()?,
            &stepped.queue()?,
            n,
            args.workers,
        )?)
    } else {
        None
    };

    let event_wakeup = if runs(Workload::Event) {
        say("wake-up latency of an event");
        let scratch = Scratch::new(base, "events")?;
        Some(super::bench_steps::event_wakeup(&scratch.queue()?)?)
    } else {
        None
    };

    let raw = if runs(Workload::Raw) {
        say("raw PostgreSQL loops");
        let scratch = Scratch::new(base, "raw")?;
        let mut drain_batch32 = Vec::new();
        for &workers in &counts {
            drain_batch32.push((workers, raw_drain(&scratch, n, workers)?));
        }
        Some(Raw {
            insert_one_per_s: raw_insert(&scratch, n, 1)?,
            insert_batch_per_s: raw_insert(&scratch, n, 1000)?,
            drain_batch32,
        })
    } else {
        None
    };

    let size = if runs(Workload::Size) {
        say(&format!(
            "drain beside {} finished jobs, and stats, series and metrics at that size",
            args.size_jobs
        ));
        Some(size(base, n, args.workers, args.size_jobs)?)
    } else {
        None
    };

    let ratios = raw.as_ref().map(|raw| Ratios {
        enqueue_one_vs_raw_insert_one: enqueue_one.map_or(0.0, |e| ratio(e, raw.insert_one_per_s)),
        enqueue_batch_vs_raw_insert_batch: enqueue_batch
            .map_or(0.0, |e| ratio(e, raw.insert_batch_per_s)),
        drain_vs_raw_drain_batch32: drains
            .iter()
            .map(|d| {
                let limit = raw
                    .drain_batch32
                    .iter()
                    .find(|(w, _)| *w == d.workers)
                    .map_or(0.0, |r| r.1);
                ratio(d.jobs_per_s, limit)
            })
            .collect(),
    });
    let report = Figures {
        engine: "postgres",
        server: server_version(base),
        jobs: n,
        enqueue_one_per_s: enqueue_one,
        enqueue_batch_per_s: enqueue_batch,
        drain: drains,
        raw_postgres: raw,
        wakeup_across_handles_ms: wakeup,
        fanin_ms: fanin,
        limited,
        steps,
        event_wakeup_ms: event_wakeup,
        size,
        ratios,
    };
    if json {
        print_json(&report);
    } else {
        print_report(&report);
    }
    Ok(())
}

fn server_version(base: &str) -> String {
    Client::connect(base, NoTls)
        .and_then(|mut c| c.query_one("SHOW server_version", &[]))
        .map(|r| r.get(0))
        .unwrap_or_default()
}

fn print_report(r: &Figures) {
    let raw = r.raw_postgres.as_ref();
    let ratios = r.ratios.as_ref();
    println!(
        "jobq bench on PostgreSQL {}: {} jobs per workload",
        r.server, r.jobs
    );
    println!();
    let mut rows = super::bench::enqueue_rows(
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
    rows.extend(r.drain.iter().enumerate().map(|(i, d)| {
        Row {
            label: format!("drain, {} handler(s)", d.workers),
            jobq: Some(d.jobs_per_s),
            raw: raw
                .and_then(|x| x.drain_batch32.iter().find(|(w, _)| *w == d.workers))
                .map(|l| l.1),
            ratio: ratios.and_then(|x| x.drain_vs_raw_drain_batch32.get(i).copied()),
        }
    }));
    print_rows("raw PostgreSQL", &rows);
    if raw.is_some() {
        println!(
            "(raw drain: claim 32 with SKIP LOCKED, complete 32 in one statement, per worker)"
        );
    }
    if let Some(w) = &r.wakeup_across_handles_ms {
        println!(
            "wake-up of an idle pool through LISTEN/NOTIFY: p50 {:.3} ms, p99 {:.3} ms ({} samples)",
            w.p50, w.p99, w.samples
        );
    }
    if let Some(l) = &r.limited {
        super::bench::print_limited(l);
    }
    if let Some(w) = &r.fanin_ms {
        super::bench::print_fanin(w);
    }
    if let Some(s) = &r.steps {
        super::bench_steps::print_steps(s);
    }
    if let Some(w) = &r.event_wakeup_ms {
        super::bench_steps::print_event(w);
    }
    if let Some(s) = &r.size {
        println!(
            "drain beside {} finished jobs: {:.0}/s against {:.0}/s on an empty table (ratio {:.2}); stats {:.1} ms, series of the hour {:.1} ms, of the day {:.1} ms, metrics {:.1} ms",
            s.finished_jobs,
            s.drain_beside_finished_per_s,
            s.drain_empty_per_s,
            s.ratio,
            s.reads.stats_ms,
            s.reads.series_hour_ms,
            s.reads.series_day_ms,
            s.reads.metrics_ms
        );
    }
}

const RAW_TABLE: &str = "
    DROP TABLE IF EXISTS raw_jobs;
    CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, kind text NOT NULL, status text NOT NULL,
                           run_after bigint NOT NULL, locked_by text, output json);
    CREATE INDEX raw_jobs_ready ON raw_jobs (run_after, id) WHERE status = 'queued';";

/// Inserts `n` rows, one statement each or `per` to a statement.
fn raw_insert(scratch: &Scratch, n: u64, per: u64) -> Result<f64, Refused> {
    let mut client = scratch.client()?;
    client.batch_execute(RAW_TABLE).map_err(pg)?;
    let one = client
        .prepare("INSERT INTO raw_jobs (kind, status, run_after) VALUES ('noop', 'queued', $1)")
        .map_err(pg)?;
    let many = client
        .prepare(
            "INSERT INTO raw_jobs (kind, status, run_after)
             SELECT 'noop', 'queued', t FROM unnest($1::bigint[]) AS t",
        )
        .map_err(pg)?;
    let started = Instant::now();
    let mut done = 0;
    while done < n {
        if per == 1 {
            client.execute(&one, &[&(done as i64)]).map_err(pg)?;
            done += 1;
        } else {
            let chunk: Vec<i64> = (done..(done + per).min(n)).map(|i| i as i64).collect();
            client.execute(&many, &[&chunk]).map_err(pg)?;
            done += chunk.len() as u64;
        }
    }
    Ok(per_s(n, started.elapsed()))
}

/// `workers` threads, each on a connection of its own, claiming 32 jobs with `SKIP LOCKED`
/// and completing them in one statement, until none is left.
fn raw_drain(scratch: &Scratch, n: u64, workers: usize) -> Result<f64, Refused> {
    let mut client = scratch.client()?;
    client.batch_execute(RAW_TABLE).map_err(pg)?;
    client
        .execute(
            "INSERT INTO raw_jobs (kind, status, run_after)
             SELECT 'noop', 'queued', g FROM generate_series(1, $1::bigint) AS g",
            &[&(n as i64)],
        )
        .map_err(pg)?;
    client.batch_execute("ANALYZE raw_jobs").map_err(pg)?;
    let started = Instant::now();
    let done: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let url = scratch.url.clone();
                s.spawn(move || -> Result<u64, postgres::Error> {
                    let mut c = Client::connect(&url, NoTls)?;
                    let worker = format!("w{w}");
                    let claim = c.prepare(
                        "UPDATE raw_jobs SET status = 'running', locked_by = $1 WHERE id IN (
                             SELECT id FROM raw_jobs WHERE status = 'queued' AND run_after <= $2
                             ORDER BY run_after, id LIMIT 32 FOR UPDATE SKIP LOCKED)
                         RETURNING id",
                    )?;
                    let complete = c.prepare(
                        "UPDATE raw_jobs SET status = 'succeeded', output = 'null'
                         WHERE id = ANY($1) AND status = 'running' AND locked_by = $2",
                    )?;
                    let mut done = 0;
                    loop {
                        let ids: Vec<i64> = c
                            .query(&claim, &[&worker, &i64::MAX])?
                            .iter()
                            .map(|r| r.get(0))
                            .collect();
                        if ids.is_empty() {
                            return Ok(done);
                        }
                        c.execute(&complete, &[&ids, &worker])?;
                        done += ids.len() as u64;
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_or(Ok(0), |r| r))
            .sum::<Result<u64, postgres::Error>>()
    })
    .map_err(pg)?;
    Ok(per_s(done, started.elapsed()))
}

/// The claim beside a million finished jobs against the claim on an empty table, and the
/// figures of `jobq stats` and `/metrics` at that size.
fn size(base: &str, n: u64, workers: usize, finished: i64) -> Result<Size, Refused> {
    let empty = Scratch::new(base, "size_empty")?;
    let queue = empty.queue()?;
    fill(&queue, n)?;
    empty
        .client()?
        .batch_execute("VACUUM ANALYZE jobq_jobs")
        .map_err(pg)?;
    let drain_empty = drain(&queue, workers, n, None)?;
    drop(queue);

    let big = Scratch::new(base, "size_big")?;
    let queue = big.queue()?;
    let mut client = big.client()?;
    // Finished jobs as a queue leaves them: 99% succeeded, 1% failed, over the last day, a
    // million a statement (the triggers keep the counts and rollups of each).
    let now = queue.now_ms();
    let mut from = 1i64;
    while from <= finished {
        let to = (from + 999_999).min(finished);
        client
            .execute(
                "INSERT INTO jobq_jobs (id, queue, kind, status, attempts, claims, run_after,
                                        locked_by, stage, progress, output, last_error,
                                        error_code, created_at, updated_at, started_at,
                                        completed_at)
                 SELECT ('01900000-0000-7000-8000-' || lpad(to_hex(g), 12, '0'))::uuid,
                        'q' || (g % 3), 'kind' || (g % 7),
                        CASE WHEN g % 100 = 0 THEN 'failed' ELSE 'succeeded' END,
                        1, 1, t, 'w', 'done', 1, 'null',
                        CASE WHEN g % 100 = 0 THEN 'boom' END,
                        CASE WHEN g % 100 = 0 THEN 'E' END, t, t + 20, t + 10, t + 20
                 FROM generate_series($1::bigint, $2::bigint) AS g,
                      LATERAL (SELECT $3::bigint - 86400000 + g * 86400000 / $4::bigint AS t) AS at",
                &[&from, &to, &now, &finished],
            )
            .map_err(pg)?;
        from = to + 1;
    }
    client
        .batch_execute("VACUUM ANALYZE jobq_jobs")
        .map_err(pg)?;
    fill(&queue, n)?;
    let drain_big = drain(&queue, workers, n, None)?;
    let reads = super::bench_size::reads(&queue)?;
    Ok(Size {
        finished_jobs: finished,
        drain_empty_per_s: drain_empty,
        drain_beside_finished_per_s: drain_big,
        ratio: ratio(drain_big, drain_empty),
        reads,
    })
}

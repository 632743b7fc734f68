//! `jobq worker --exec CMD`: a worker pool whose handler runs a shell command per job.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::exec::{ExecEvent, ExecHandler, JsonlHandler};
use crate::{Handler, OutcomeKind, Queue, RetryPolicy, WorkerPool};
use clap::Args;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use super::output::{clean, print_json, say};
use super::{Done, Refused, duration};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The command, run with `sh -c` once per job (or, with `--protocol jsonl`, once per
    /// slot, and kept).
    #[arg(long)]
    exec: String,
    /// How jobs reach the command: `oneshot`, a process per job (input on stdin, exit code
    /// as the outcome), or `jsonl`, a warm process per slot taking jobs and answering as
    /// JSON lines.
    #[arg(long, value_enum, default_value_t = Protocol::Oneshot)]
    protocol: Protocol,
    /// With `--protocol jsonl`: replace a handler process after it ran this many jobs.
    #[arg(long, value_name = "N")]
    max_jobs_per_child: Option<u64>,
    /// Queues to take jobs from (repeatable).
    #[arg(long = "queue", default_value = "default")]
    queues: Vec<String>,
    /// Only jobs of these kinds (repeatable); any kind when absent.
    #[arg(long = "kind")]
    kinds: Vec<String>,
    /// Only this owner's jobs (as a queue scoped to it); every owner's when absent.
    #[arg(long)]
    owner: Option<String>,
    /// Commands running at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Run what is ready, then exit.
    #[arg(long)]
    once: bool,
    /// Exit after this many jobs.
    #[arg(long)]
    limit: Option<u64>,
    /// How often to look for work from other processes.
    #[arg(long, value_parser = duration, default_value = "1s")]
    poll_interval: Duration,
    /// How often running jobs' heartbeats are refreshed.
    #[arg(long, value_parser = duration, default_value = "5s")]
    heartbeat_interval: Duration,
    /// Kill a command (and its process group) running longer than this.
    #[arg(long, value_parser = duration)]
    job_timeout: Option<Duration>,
    /// On SIGINT or SIGTERM, how long running commands may finish before their jobs are
    /// released and the commands killed (a second signal ends it at once).
    #[arg(long, value_parser = duration, default_value = "30s")]
    grace: Duration,
    /// Backoff after the first failed attempt; it doubles with each failure (with full
    /// jitter), up to --retry-max.
    #[arg(long, value_parser = duration, default_value = "5s")]
    retry_base: Duration,
    /// The longest backoff.
    #[arg(long, value_parser = duration, default_value = "1h")]
    retry_max: Duration,
    /// How many times a job may snooze (exit 75); the next snooze fails it for good with
    /// SNOOZE_LIMIT.
    #[arg(long, default_value_t = crate::DEFAULT_MAX_SNOOZES)]
    max_snoozes: u32,
}

/// How jobs reach the command.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// A process per job.
    Oneshot,
    /// A warm process per slot, speaking JSON lines.
    Jsonl,
}

/// The command as a handler, by its protocol.
enum Exec {
    Oneshot(ExecHandler),
    Jsonl(JsonlHandler),
}

impl Handler for Exec {
    fn handle(&self, ctx: &crate::JobContext) -> Result<serde_json::Value, crate::JobError> {
        match self {
            Exec::Oneshot(h) => h.handle(ctx),
            Exec::Jsonl(h) => h.handle(ctx),
        }
    }
}

pub fn run(db: &Path, json: bool, args: WorkerArgs) -> Done {
    if args.max_jobs_per_child.is_some() && args.protocol != Protocol::Jsonl {
        return Err(Refused(
            "--max-jobs-per-child needs --protocol jsonl (a oneshot process runs one job)".into(),
        ));
    }
    if args.concurrency == 0 {
        return Err(Refused("invalid concurrency: must be at least 1".into()));
    }
    if args.job_timeout == Some(Duration::ZERO) {
        return Err(Refused(
            "invalid job timeout: 0s would kill every command at once (leave it out for none)"
                .into(),
        ));
    }
    let queue = Queue::builder(db)
        .retry_policy(RetryPolicy::exponential(args.retry_base, args.retry_max))
        .max_snoozes(args.max_snoozes)
        .open()?;
    let queue = match &args.owner {
        Some(owner) => queue.scoped(owner.clone()),
        None => queue,
    };
    let tell = move |event| {
        if let ExecEvent::Started {
            job,
            kind,
            attempt,
            max_attempts,
        } = event
        {
            if !json {
                say!(
                    "Processing job {job} (attempt {attempt}/{max_attempts}): {}",
                    clean(&kind)
                );
            }
        }
    };
    let handler = match args.protocol {
        Protocol::Oneshot => Exec::Oneshot(
            ExecHandler::new(&args.exec, db)
                .timeout(args.job_timeout)
                .on_event(tell),
        ),
        Protocol::Jsonl => Exec::Jsonl(
            JsonlHandler::new(&args.exec, db)
                .timeout(args.job_timeout)
                .max_jobs_per_child(args.max_jobs_per_child)
                .on_event(tell),
        ),
    };
    let mut builder = WorkerPool::builder(&queue)
        .concurrency(args.concurrency)
        // Claim nothing ahead: `running` in the database means a command runs it.
        .prefetch(0)
        .queues(args.queues.clone())
        .fallback_handler(handler)
        .poll_interval(args.poll_interval)
        .heartbeat_interval(args.heartbeat_interval)
        .shutdown_grace(args.grace)
        .stop_when_idle(args.once)
        // Each outcome is printed once, when the database has it.
        .on_outcome(move |outcome| {
            if !json {
                say!("{}", describe(outcome));
            }
        });
    if !args.kinds.is_empty() {
        builder = builder.kinds(args.kinds.clone());
    }
    if let Some(limit) = args.limit {
        builder = builder.limit(limit);
    }
    let pool = builder.start()?;
    if !json {
        say!("jobq worker starting");
        say!("Worker ID: {}", pool.worker_id());
        say!("Database: {}", queue.location());
        say!("Concurrency: {}", args.concurrency);
        say!("Queues: {}", args.queues.join(", "));
        say!("Worker ready - starting poll loop");
    }
    watch_signals(pool.stop_handle(), args.grace)?;

    let worker_id = pool.worker_id().to_string();
    let summary = pool.wait();
    if json {
        print_json(&serde_json::json!({
            "worker_id": worker_id,
            "processed": summary.processed,
            "succeeded": summary.succeeded,
            "failed": summary.failed,
            "attempts": summary.attempts,
            "retried": summary.retried,
            "released": summary.released,
            "lost": summary.lost,
        }));
    } else {
        say!("Jobs processed: {}", summary.processed);
        say!("Jobs succeeded: {}", summary.succeeded);
        say!("Jobs failed: {}", summary.failed);
        say!("Jobs released: {}", summary.released);
        say!("Jobs snoozed: {}", summary.snoozed);
        say!("Jobs parked: {}", summary.parked);
        say!("Attempts: {}", summary.attempts);
        say!("Attempts retried: {}", summary.retried);
        if summary.lost > 0 {
            say!("Outcomes refused: {}", summary.lost);
        }
        if args.once && summary.processed == 0 {
            say!("{}", nothing_ready_here(&queue, &args.queues, &args.kinds));
        }
    }
    Ok(())
}

/// Why a `--once` run found nothing to do, and where ready jobs are: in a queue it does not
/// serve, of a kind it does not take, paused, or scheduled for later.
fn nothing_ready_here(queue: &Queue, served: &[String], kinds: &[String]) -> String {
    let queues = match queue.queues() {
        Ok(q) => q,
        Err(e) => return format!("No job was ready (the queues could not be read: {e})"),
    };
    let served: Vec<&str> = if served.is_empty() {
        vec!["default"]
    } else {
        served.iter().map(String::as_str).collect()
    };
    let mut lines = vec![format!("No job was ready in {}.", served.join(", "))];
    let elsewhere: Vec<String> = queues
        .iter()
        .filter(|q| q.ready > 0 && !served.contains(&q.name.as_str()))
        .map(|q| format!("{} ({} ready)", clean(&q.name), q.ready))
        .collect();
    if !elsewhere.is_empty() {
        lines.push(format!(
            "Ready in other queues: {} — serve them with --queue NAME.",
            elsewhere.join(", ")
        ));
    }
    for q in queues.iter().filter(|q| served.contains(&q.name.as_str())) {
        if q.paused && q.ready > 0 {
            lines.push(format!(
                "Queue {} is paused with {} ready: jobq queue resume {}.",
                clean(&q.name),
                q.ready,
                clean(&q.name)
            ));
        } else if q.ready > 0 && !kinds.is_empty() {
            lines.push(format!(
                "Queue {} has {} ready of other kinds than {}.",
                clean(&q.name),
                q.ready,
                kinds.join(", ")
            ));
        }
        if q.scheduled > 0 {
            lines.push(format!(
                "Queue {} has {} scheduled for later.",
                clean(&q.name),
                q.scheduled
            ));
        }
        if q.blocked > 0 {
            lines.push(format!(
                "Queue {} has {} waiting for their dependencies.",
                clean(&q.name),
                q.blocked
            ));
        }
    }
    lines.join("\n")
}

/// How long after a first SIGINT or SIGTERM a second one is the same request, delivered
/// twice (GNU timeout, for one, signals the worker and then its whole process group).
const SAME_REQUEST: Duration = Duration::from_secs(1);

/// SIGINT or SIGTERM: stop claiming and let the running commands finish within the grace
/// period. Another signal later (not the echo of the first): end the grace period now —
/// the commands are killed and their jobs released unharmed, without spending an attempt.
fn watch_signals(stop: crate::StopHandle, grace: Duration) -> Result<(), Refused> {
    let mut signals = Signals::new([SIGINT, SIGTERM])
        .map_err(|e| Refused(format!("cannot handle signals: {e}")))?;
    std::thread::spawn(move || {
        let mut first: Option<Instant> = None;
        for _ in signals.forever() {
            match first {
                None => {
                    first = Some(Instant::now());
                    eprintln!(
                        "jobq: stopping: no new jobs; running jobs have {} to finish (signal again to release them now)",
                        crate::format_duration(grace)
                    );
                    stop.stop();
                }
                Some(at) if at.elapsed() < SAME_REQUEST => {}
                Some(_) => {
                    eprintln!("jobq: stopping now: releasing the running jobs");
                    stop.stop_now();
                }
            }
        }
    });
    Ok(())
}

/// One line for a recorded outcome.
fn describe(o: &crate::Outcome) -> String {
    let took = o
        .ran_for
        .map(|d| format!(" in {:.1}s", d.as_secs_f64()))
        .unwrap_or_default();
    let code = |e: &crate::JobError| clean(e.error_code().unwrap_or("ERROR")).into_owned();
    let id = &o.job_id;
    match &o.recorded {
        OutcomeKind::Succeeded => format!("Job {id} succeeded{took}"),
        OutcomeKind::Retrying { error, retry_at } => format!(
            "Job {id} failed ({}){took}: attempt {}/{}, will retry at {retry_at}",
            code(error),
            o.attempt,
            o.max_attempts
        ),
        OutcomeKind::Failed { error } => format!(
            "Job {id} failed for good ({}){took}: attempt {}/{}, now in the dead letter",
            code(error),
            o.attempt,
            o.max_attempts
        ),
        OutcomeKind::Released => {
            format!("Job {id} released unfinished{took}: queued again, attempt not spent")
        }
        OutcomeKind::Snoozed { until } => {
            format!("Job {id} snoozed{took} until {until}: queued again, attempt not spent")
        }
        OutcomeKind::Waiting { until } => {
            format!("Job {id} parked{took}: waiting until {until} at the latest, attempt not spent")
        }
        OutcomeKind::Refused { now: Some(status) } => format!(
            "Job {id} ended{took} but is {status} now (cancelled or released meanwhile): outcome not recorded"
        ),
        OutcomeKind::Refused { now: None } => {
            format!("Job {id} ended{took} but was deleted meanwhile: outcome not recorded")
        }
    }
}

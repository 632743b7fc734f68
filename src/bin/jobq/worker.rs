//! `jobq worker --exec CMD`: a worker pool whose handler runs a shell command per job.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use clap::Args;
use jobq::exec::{ExecEvent, ExecHandler};
use jobq::{Queue, RetryPolicy, WorkerPool};

use crate::output::{print_json, say};
use crate::{Outcome, Refused, duration};

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The command, run with `sh -c` once per job.
    #[arg(long)]
    exec: String,
    /// Queues to take jobs from (repeatable).
    #[arg(long = "queue", default_value = "default")]
    queues: Vec<String>,
    /// Only jobs of these kinds (repeatable); any kind when absent.
    #[arg(long = "kind")]
    kinds: Vec<String>,
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
    /// released and the commands killed.
    #[arg(long, value_parser = duration, default_value = "30s")]
    grace: Duration,
    /// Backoff after the first failed attempt; it doubles with each failure (with full
    /// jitter), up to --retry-max.
    #[arg(long, value_parser = duration, default_value = "5s")]
    retry_base: Duration,
    /// The longest backoff.
    #[arg(long, value_parser = duration, default_value = "1h")]
    retry_max: Duration,
}

pub fn run(db: &Path, json: bool, args: WorkerArgs) -> Outcome {
    if args.concurrency == 0 {
        return Err(Refused("invalid concurrency: must be at least 1".into()));
    }
    let queue = Queue::builder(db)
        .retry_policy(RetryPolicy::exponential(args.retry_base, args.retry_max))
        .open()?;
    let failed_attempts = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&failed_attempts);
    let handler = ExecHandler::new(&args.exec, db)
        .timeout(args.job_timeout)
        .on_event(move |event| match event {
            ExecEvent::Started {
                job,
                kind,
                attempt,
                max_attempts,
            } if !json => {
                say!("Processing job {job} (attempt {attempt}/{max_attempts}): {kind}");
            }
            ExecEvent::Finished { job, took, error } => {
                if error.is_some() {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
                if !json {
                    match error {
                        None => say!("Job {job} succeeded in {:.1}s", took.as_secs_f64()),
                        Some(code) => {
                            say!("Job {job} failed ({code}) in {:.1}s", took.as_secs_f64())
                        }
                    }
                }
            }
            _ => {}
        });
    let mut builder = WorkerPool::builder(&queue)
        .concurrency(args.concurrency)
        // Claim nothing ahead: `running` in the database means a command runs it.
        .prefetch(0)
        .queues(args.queues.clone())
        .fallback_handler(handler)
        .poll_interval(args.poll_interval)
        .heartbeat_interval(args.heartbeat_interval)
        .shutdown_grace(args.grace)
        .stop_when_idle(args.once);
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
        say!("Database: {}", db.display());
        say!("Concurrency: {}", args.concurrency);
        say!("Queues: {}", args.queues.join(", "));
        say!("Worker ready - starting poll loop");
    }

    // SIGINT/SIGTERM: stop claiming and let running commands finish within the grace
    // period; a second signal exits at once (the stale release brings the jobs back).
    let signalled = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&signalled))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&signalled)))
            .map_err(|e| Refused(format!("cannot handle signals: {e}")))?;
    }
    let stop = pool.stop_handle();
    let watcher_flag = Arc::clone(&signalled);
    std::thread::spawn(move || {
        while !watcher_flag.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("jobq: stopping: no new jobs; running jobs have until the grace period ends");
        stop.stop();
    });

    let worker_id = pool.worker_id().to_string();
    let summary = pool.wait();
    let failed = failed_attempts.load(Ordering::SeqCst) as u64;
    if json {
        print_json(&serde_json::json!({
            "worker_id": worker_id,
            "processed": summary.processed,
            "succeeded": summary.succeeded,
            "failed": failed,
            "dead_lettered": summary.failed,
            "retried": summary.retried,
            "released": summary.released,
        }));
    } else {
        say!("Jobs processed: {}", summary.processed);
        say!("Jobs succeeded: {}", summary.succeeded);
        say!("Jobs failed: {failed}");
    }
    Ok(())
}

//! The worker pool: the pool that runs jobs.
//!
//! ```text
//!  dispatcher ──claim batch (BEGIN IMMEDIATE)──▶ jobs channel (bounded) ──▶ N handler threads
//!      ▲  wake: enqueue in this process, a freed slot, or the poll interval                │
//!      │                                                                                  ▼
//!  completer ◀──────────────────────── outcomes channel ◀───────────────────── JobContext
//!   (all waiting outcomes in one transaction)
//!  heartbeat thread: one statement for every running job; job timeouts; cancellations
//!  maintainer: stale release and pruning every maintenance interval
//! ```
//!
//! One file per role: `dispatcher.rs`, `executor.rs` (the handler threads), `completer.rs`,
//! `heartbeat.rs`, `maintainer.rs`, and `context.rs` (what a handler receives).

mod builder;
mod claimer;
mod completer;
mod context;
mod dispatcher;
mod durable;
mod executor;
mod flight;
mod handlers;
mod heartbeat;
mod maintainer;
mod outcome;
mod pool;

use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use builder::OutcomeCallback;
pub use builder::{DEFAULT_EVENT_RETENTION, InlineOutcome, WorkerPoolBuilder};
pub use context::JobContext;
pub use durable::MAX_STEP_NAME_CHARS;
#[cfg(all(feature = "cli", unix))]
pub(crate) use durable::read_journal;
pub use outcome::{Outcome, OutcomeKind, Summary};

pub(crate) use handlers::Registered;
use pool::Pool;

use crate::model::JobError;
use crate::queue::Queue;

/// What runs the jobs of one kind.
///
/// Closures and functions `Fn(&JobContext) -> Result<T, JobError>` are handlers, for any
/// output `T` that serializes (a `serde_json::Value`, a struct of your own, `()`). A
/// handler returns the job's output, or an error saying whether a retry may help; `?`
/// turns any other error (`std::error::Error`, `Box<dyn Error + Send + Sync>`, anyhow-style
/// errors, a `&str`) into a retryable one. It may be called for the same job more than once
/// (at-least-once delivery): make it idempotent.
///
/// # Examples
///
/// ```
/// use jobq::{JobContext, JobError};
///
/// #[derive(serde::Serialize)]
/// struct Thumbnail { url: String, bytes: u64 }
///
/// fn thumbnail(ctx: &JobContext) -> Result<Thumbnail, JobError> {
///     let path: String = ctx.input()?;
///     let bytes = std::fs::metadata(&path)?.len(); // an io::Error: retried
///     Ok(Thumbnail { url: format!("{path}.png"), bytes })
/// }
/// # let dir = tempfile::tempdir()?;
/// # let queue = jobq::Queue::open(dir.path().join("q.db"))?;
/// let pool = jobq::WorkerPool::builder(&queue).handler("thumbnail", thumbnail);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of one job.
    ///
    /// # Errors
    ///
    /// A [`JobError`]: retryable (the job waits for a backoff and runs again while attempts
    /// remain) or permanent (it fails at once).
    fn handle(&self, ctx: &JobContext) -> std::result::Result<Value, JobError>;
}

impl<F, T> Handler for F
where
    F: Fn(&JobContext) -> std::result::Result<T, JobError> + Send + Sync + 'static,
    T: serde::Serialize,
{
    fn handle(&self, ctx: &JobContext) -> std::result::Result<Value, JobError> {
        let output = self(ctx)?;
        serde_json::to_value(output).map_err(|e| {
            JobError::permanent(format!(
                "the output of job {} does not serialize to JSON: {e}",
                ctx.id()
            ))
            .code("BAD_OUTPUT")
        })
    }
}

/// A running pool of workers. Made by [`WorkerPool::builder`].
///
/// Dropping the handle shuts the pool down as [`WorkerPool::shutdown`] does.
pub struct WorkerPool {
    pool: Arc<Pool>,
    grace: Duration,
    /// Fires due schedules; stopped first at shutdown.
    firer: Option<crate::schedule::Firer>,
    dispatcher: Option<JoinHandle<()>>,
    /// The completer threads (empty once the pool finished).
    completers: Vec<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("worker_id", &self.pool.worker_id)
            .field("concurrency", &self.pool.claimer.concurrency())
            .finish_non_exhaustive()
    }
}

/// Asks a pool to stop from another thread (a signal handler's loop, say).
#[derive(Clone, Debug)]
pub struct StopHandle {
    pool: Arc<Pool>,
}

impl StopHandle {
    /// Stops claiming; [`WorkerPool::wait`] then lets the running jobs finish within the
    /// shutdown grace period, and returns.
    pub fn stop(&self) {
        self.pool.request_stop();
    }

    /// Stops claiming and ends the grace period now: running handlers are told to stop
    /// (their context is cancelled; a command is killed) and their jobs are released
    /// without spending the attempt.
    pub fn stop_now(&self) {
        self.pool.hurry();
    }
}

impl WorkerPool {
    /// Settings for a pool running the jobs of `queue`.
    pub fn builder(queue: &Queue) -> WorkerPoolBuilder {
        WorkerPoolBuilder::new(queue)
    }

    /// The worker id this pool claims as (`locked_by`).
    pub fn worker_id(&self) -> &str {
        &self.pool.worker_id
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        self.pool.counters.snapshot()
    }

    /// A handle that stops this pool from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            pool: Arc::clone(&self.pool),
        }
    }

    /// Stops claiming, lets running handlers finish within the grace period (or less, after
    /// [`StopHandle::stop_now`]), releases the rest (claimed but unstarted, or still running
    /// at the deadline) back to `queued` without spending an attempt, and returns the
    /// summary.
    pub fn shutdown(mut self) -> Summary {
        self.pool.request_stop();
        self.finish()
    }

    /// Blocks until the pool stops by itself (its limit reached, or idle with
    /// `stop_when_idle`, or a [`StopHandle`]), then shuts down as [`WorkerPool::shutdown`].
    pub fn wait(mut self) -> Summary {
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        self.finish()
    }

    fn finish(&mut self) -> Summary {
        drop(self.firer.take());
        let pool = &self.pool;
        pool.request_stop();
        if let Some(d) = self.dispatcher.take() {
            let _ = d.join();
        }
        // No more claims: handlers release what is still in the channel (they see the pool
        // stopping), finish what they run until the grace period ends, and end once the
        // channel is empty and closed.
        pool.close_jobs();
        let deadline = Instant::now() + self.grace;
        while pool.in_flight() > 0 && Instant::now() < deadline && !pool.in_a_hurry() {
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.release_unfinished();
        while pool.in_flight() > 0 && Instant::now() < deadline + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Handler threads end once the channel is empty and closed; a thread still in a
        // handler after the grace period is abandoned, not waited for.
        let handlers: Vec<JoinHandle<()>> = std::mem::take(
            &mut *pool
                .channels
                .handler_threads
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for h in handlers {
            let abandoned_deadline = Instant::now() + Duration::from_millis(200);
            while !h.is_finished() && Instant::now() < abandoned_deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        pool.channels
            .stop_helpers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        for h in self.helpers.drain(..) {
            let _ = h.join();
        }
        // Closing the outcomes channel ends the completers once they recorded everything.
        pool.close_outcomes();
        for c in self.completers.drain(..) {
            let _ = c.join();
        }
        pool.unregister();
        let summary = pool.counters.snapshot();
        tracing::info!(worker = %pool.worker_id, ?summary, "jobq: worker pool stopped");
        summary
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if !self.completers.is_empty() {
            self.pool.request_stop();
            self.finish();
        }
    }
}

/// Starts a pool thread that reports to the same `tracing` subscriber as the thread that
/// started it (an application's scoped subscriber sees its pool's events).
pub(crate) fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> JoinHandle<()> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || tracing::dispatcher::with_default(&dispatch, f))
        .expect("the OS refused to start a worker thread")
}

/// `host-pid-random`, as the seeds' workers name themselves.
pub fn default_worker_id() -> String {
    let host = crate::workers::hostname();
    let random = crate::random::random_u64() & 0xff_ffff;
    format!("{host}-{}-{random:06x}", std::process::id())
}

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

mod claimer;
mod completer;
mod context;
mod dispatcher;
mod executor;
mod flight;
mod handlers;
mod heartbeat;
mod maintainer;
mod outcome;
mod pool;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use context::JobContext;
pub use outcome::{Outcome, OutcomeKind, Summary};

use crate::queue::Finished;
use claimer::{Claimer, Prefetch};
use flight::InFlightTable;
use handlers::Handlers;
pub(crate) use handlers::Registered;
use outcome::Counters;
use pool::{Channels, Pool};

use crate::error::{Error, Result};
use crate::job::{ClaimedJob, JobId, Status};
use crate::maintenance::StaleTimeouts;
use crate::model::WorkerInfo;
use crate::model::{ClaimFilter, JobError};
use crate::queue::Queue;
use crate::retry::RetryPolicy;

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

/// The most jobs an adaptive prefetch claims ahead of the free handlers.
const MAX_PREFETCH: usize = 256;

/// Settings of a [`WorkerPool`]. Made by [`WorkerPool::builder`].
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use jobq::{JobError, NewJob, Queue, WorkerPool};
/// use serde_json::json;
///
/// let queue = Queue::open(dir.path().join("q.db"))?;
/// queue.enqueue(NewJob::new("greet").input(json!({"name": "Ada"})))?;
///
/// let summary = WorkerPool::builder(&queue)
///     .concurrency(4)
///     .handler("greet", |ctx: &jobq::JobContext| {
///         #[derive(serde::Deserialize)]
///         struct Input { name: String }
///         let input: Input = ctx.input()?;
///         ctx.set_progress(0.5)?;
///         Ok(json!({"greeting": format!("Hello, {}!", input.name)}))
///     })
///     .run_until_idle()?;
/// assert_eq!(summary.succeeded, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use]
pub struct WorkerPoolBuilder {
    queue: Queue,
    concurrency: usize,
    prefetch: Option<usize>,
    queues: Vec<String>,
    kinds: Option<Vec<String>>,
    handlers: Handlers,
    poll_interval: Duration,
    heartbeat_interval: Duration,
    stale: StaleTimeouts,
    maintenance_interval: Option<Duration>,
    prune_after: Option<Duration>,
    schedule_interval: Option<Duration>,
    grace: Duration,
    worker_id: Option<String>,
    limit: Option<u64>,
    stop_when_idle: bool,
    on_outcome: Option<OutcomeCallback>,
}

/// What [`WorkerPoolBuilder::on_outcome`] calls.
type OutcomeCallback = Arc<dyn Fn(&Outcome) + Send + Sync>;

impl std::fmt::Debug for WorkerPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&String> = self.handlers.by_kind.keys().collect();
        kinds.sort();
        f.debug_struct("WorkerPoolBuilder")
            .field("concurrency", &self.concurrency)
            .field("queues", &self.queues)
            .field("handlers", &kinds)
            .field("fallback", &self.handlers.fallback.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerPoolBuilder {
    /// How many handlers run at once (one thread each). Defaults to 4.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Claims exactly `n` jobs ahead of the free handlers, so that a handler finishing a job
    /// finds the next one waiting. Prefetched jobs are `running` in the database but not
    /// started; on shutdown they are released without spending an attempt. 0 makes
    /// `running` in the database mean "a handler holds it".
    ///
    /// Defaults to adaptive: about `2 × concurrency × claim time / job run time`, measured as
    /// the pool runs, at most 256 — large batches for fast jobs (a few transactions per
    /// thousand jobs), none for slow jobs (which other workers may then take).
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// The queues served. Defaults to `["default"]`.
    pub fn queues<I, S>(mut self, queues: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.queues = queues.into_iter().map(Into::into).collect();
        self
    }

    /// Registers the handler of one kind of job. The pool claims only the kinds it has
    /// handlers for (unless a fallback handler is set).
    pub fn handler(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.handlers.by_kind.insert(kind.into(), Arc::new(handler));
        self
    }

    /// A handler for every kind without one of its own. With it the pool claims jobs of any
    /// kind, or only of the kinds given to [`WorkerPoolBuilder::kinds`]. Defaults to none.
    pub fn fallback_handler(mut self, handler: impl Handler) -> Self {
        self.handlers.fallback = Some(Arc::new(handler));
        self
    }

    /// Claims only these kinds (for a pool with a fallback handler). Defaults to the kinds
    /// with handlers, or any kind with a fallback handler.
    pub fn kinds<I, S>(mut self, kinds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.kinds = Some(kinds.into_iter().map(Into::into).collect());
        self
    }

    /// A job of `kind` running longer than `timeout` fails with code `TIMEOUT`; its thread
    /// is abandoned (its late result is refused) and a new handler thread takes its slot.
    /// Given before or after the kind's handler (or for a kind the fallback handler runs).
    /// Defaults to the default job timeout.
    pub fn job_timeout(mut self, kind: &str, timeout: Duration) -> Self {
        self.handlers.setting(kind).timeout = Some(timeout);
        self
    }

    /// The timeout of every kind without its own. Defaults to none.
    pub fn default_job_timeout(mut self, timeout: Duration) -> Self {
        self.handlers.default_timeout = Some(timeout);
        self
    }

    /// The retry policy of the jobs of `kind` run by this pool, given before or after the
    /// kind's handler. Defaults to the queue's policy for the job.
    pub fn retry_policy(mut self, kind: &str, policy: RetryPolicy) -> Self {
        self.handlers.setting(kind).retry = Some(policy);
        self
    }

    /// How often an idle pool looks for work made by other processes. In-process enqueues
    /// wake it at once; an idle look costs one `PRAGMA data_version` read. Defaults to 1 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often the heartbeat of every running job is refreshed (one statement for all).
    /// Keep it well under the heartbeat timeout. Defaults to 5 s.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// When the pool's maintenance releases other workers' running jobs as stale.
    /// Defaults to [`StaleTimeouts::default`] (heartbeat older than 60 s).
    pub fn stale_timeouts(mut self, timeouts: StaleTimeouts) -> Self {
        self.stale = timeouts;
        self
    }

    /// How often the pool releases stale jobs (and prunes, if asked). `None` turns
    /// maintenance off. Defaults to every 30 s.
    pub fn maintenance_interval(mut self, interval: Option<Duration>) -> Self {
        self.maintenance_interval = interval;
        self
    }

    /// How often the pool fires the schedules that are due (every pool takes part; each
    /// slot fires once however many run). `None` leaves it to other processes. Defaults to
    /// every second.
    pub fn schedule_interval(mut self, interval: Option<Duration>) -> Self {
        self.schedule_interval = interval;
        self
    }

    /// Deletes finished jobs once they are older than `age`, at each maintenance. Defaults
    /// to keeping them.
    pub fn prune_finished_after(mut self, age: Duration) -> Self {
        self.prune_after = Some(age);
        self
    }

    /// How long [`WorkerPool::shutdown`] lets running handlers finish before releasing
    /// their jobs. Defaults to 10 s.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The worker id written as `locked_by`. Defaults to `host-pid-random`.
    pub fn worker_id(mut self, id: impl Into<String>) -> Self {
        self.worker_id = Some(id.into());
        self
    }

    /// Stops after claiming this many jobs and finishing them. Defaults to no limit.
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Stops once nothing is ready and nothing runs. Defaults to false (run until shut down).
    pub fn stop_when_idle(mut self, stop: bool) -> Self {
        self.stop_when_idle = stop;
        self
    }

    /// Called with each job's outcome once it is recorded in the database (or refused):
    /// succeeded, retrying (with when), failed for good, released, or refused because the
    /// job moved on without this pool. It runs on the pool's completer thread, in the order
    /// outcomes are recorded: keep it short. Defaults to none.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{NewJob, OutcomeKind, Queue, WorkerPool};
    /// use serde_json::json;
    ///
    /// let queue = Queue::open(dir.path().join("q.db"))?;
    /// queue.enqueue(NewJob::new("greet"))?;
    /// WorkerPool::builder(&queue)
    ///     .handler("greet", |_: &jobq::JobContext| Ok(json!("hi")))
    ///     .on_outcome(|o| {
    ///         if let OutcomeKind::Retrying { error, retry_at } = &o.recorded {
    ///             println!("job {} failed ({error}); again at {retry_at}", o.job_id);
    ///         }
    ///     })
    ///     .run_until_idle()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_outcome(mut self, f: impl Fn(&Outcome) + Send + Sync + 'static) -> Self {
        self.on_outcome = Some(Arc::new(f));
        self
    }

    fn check(&self) -> Result<()> {
        self.handlers.check(self.kinds.as_deref())?;
        if self.queues.is_empty() || self.queues.iter().any(|q| q.trim().is_empty()) {
            return Err(Error::invalid(
                "queues",
                "serve at least one queue, with a non-empty name",
            ));
        }
        if let Some(heartbeat) = self.stale.heartbeat() {
            if self.heartbeat_interval >= heartbeat {
                return Err(Error::invalid(
                    "heartbeat_interval",
                    format!(
                        "{:?} is not shorter than the heartbeat timeout {heartbeat:?}: running jobs would be released",
                        self.heartbeat_interval
                    ),
                ));
            }
        }
        Ok(())
    }

    fn claim_filter(&self) -> ClaimFilter {
        let filter = ClaimFilter::queues(self.queues.clone());
        match (&self.kinds, &self.handlers.fallback) {
            (Some(kinds), _) => filter.kinds(kinds.clone()),
            (None, Some(_)) => filter,
            (None, None) => filter.kinds(self.handlers.by_kind.keys().cloned()),
        }
    }

    /// Starts the pool's threads and returns its handle.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] without handlers or queues, or with a heartbeat interval not
    /// shorter than the heartbeat timeout; database errors opening the dispatcher's
    /// connection.
    pub fn start(self) -> Result<WorkerPool> {
        self.check()?;
        let filter = self.claim_filter();
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let prefetch = match self.prefetch {
            Some(n) => Prefetch::Fixed(n),
            None => Prefetch::Adaptive { max: MAX_PREFETCH },
        };
        let most_in_flight = self.concurrency + self.prefetch.unwrap_or(MAX_PREFETCH);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<ClaimedJob>(most_in_flight);
        let (outcome_tx, outcome_rx) = crossbeam_channel::unbounded::<Finished>();
        let (work_tx, work_rx) = crossbeam_channel::bounded::<()>(1);
        self.queue
            .shared
            .events
            .register_dispatcher(work_tx.clone());
        let (slot_tx, slot_rx) = crossbeam_channel::bounded::<()>(1);
        // Never sent on: dropping the sender is what tells the helper threads to stop.
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let registration = WorkerInfo {
            id: worker_id.clone(),
            host: crate::workers::hostname(),
            pid: std::process::id(),
            queues: filter.queue_names().to_vec(),
            kinds: filter.kind_names().map(<[String]>::to_vec),
            concurrency: u32::try_from(self.concurrency).unwrap_or(u32::MAX),
            started_at: self.queue.now(),
            last_seen: self.queue.now(),
            stale_after_ms: self
                .stale
                .heartbeat()
                .map_or(60_000, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            running: 0,
        };
        let pool = Arc::new(Pool {
            queue: self.queue.clone(),
            worker_id,
            handlers: self.handlers,
            stop_when_idle: self.stop_when_idle,
            on_outcome: self.on_outcome,
            registration,
            claimer: Claimer::new(filter, self.concurrency, prefetch, self.limit),
            in_flight: InFlightTable::default(),
            channels: Channels {
                job_tx: Mutex::new(Some(job_tx)),
                job_rx,
                outcome_tx: Mutex::new(Some(outcome_tx)),
                slot_tx,
                handler_threads: Mutex::new(Vec::new()),
                stop_helpers: Mutex::new(Some(stop_tx)),
            },
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            hurry: AtomicBool::new(false),
            snoozed: std::sync::Mutex::default(),
        });
        pool.register();
        // A cancel in this process marks the job cancelled at once, on the cancelling thread.
        let listening = Arc::downgrade(&pool);
        self.queue
            .shared
            .events
            .register_cancel_listener(Box::new(move |id| match listening.upgrade() {
                Some(pool) => {
                    pool.mark_cancelled(id);
                    true
                }
                None => false,
            }));
        tracing::info!(worker = %pool.worker_id, concurrency = pool.claimer.concurrency(), queues = ?pool.claimer.filter.queue_names(), pool = pool.queue.engine().name(), database = pool.queue.engine().location(), "jobq: worker pool starting");
        for _ in 0..pool.claimer.concurrency() {
            pool.spawn_handler();
        }
        let dispatcher = {
            let pool = Arc::clone(&pool);
            let wake_tx = work_tx.clone();
            let changes = pool.queue.engine().changes(Arc::new(move || {
                let _ = wake_tx.try_send(());
            }))?;
            let poll = self.poll_interval;
            let wake = dispatcher::Wakeups {
                work: work_rx,
                slots: slot_rx,
            };
            spawn("jobq-dispatcher", move || {
                dispatcher::run(&pool, wake, changes, poll)
            })
        };
        let completer = {
            let pool = Arc::clone(&pool);
            spawn("jobq-completer", move || completer::run(&pool, outcome_rx))
        };
        let heartbeat = {
            let pool = Arc::clone(&pool);
            let interval = self.heartbeat_interval;
            let stop = stop_rx.clone();
            spawn("jobq-heartbeat", move || {
                heartbeat::run(&pool, interval, stop)
            })
        };
        let maintainer = self.maintenance_interval.map(|interval| {
            let pool = Arc::clone(&pool);
            let (stale, prune_after) = (self.stale, self.prune_after);
            let stop = stop_rx.clone();
            spawn("jobq-maintainer", move || {
                maintainer::run(&pool, interval, stale, prune_after, stop)
            })
        });
        let firer = match self.schedule_interval {
            Some(interval) => Some(
                crate::schedule::Firer::spawn(self.queue.clone(), interval).map_err(|e| {
                    Error::Unavailable {
                        reason: format!("cannot start the thread that fires schedules: {e}"),
                    }
                })?,
            ),
            None => None,
        };
        Ok(WorkerPool {
            pool,
            grace: self.grace,
            firer,
            dispatcher: Some(dispatcher),
            completer: Some(completer),
            helpers: [Some(heartbeat), maintainer]
                .into_iter()
                .flatten()
                .collect(),
        })
    }

    /// Runs every ready job of the served queues and returns when nothing is ready and
    /// nothing runs: the `--once` of a worker. Jobs retried with a delay that has not passed
    /// are left for later.
    ///
    /// # Errors
    ///
    /// As [`WorkerPoolBuilder::start`].
    pub fn run_until_idle(self) -> Result<Summary> {
        Ok(self.stop_when_idle(true).start()?.wait())
    }

    /// Runs the ready jobs of the served queues one by one on the calling thread, with no
    /// other threads, and returns what happened to each: for tests of handlers (in the
    /// spirit of Oban's `drain_queue`). Jobs that fail and are ready again at once (a zero
    /// backoff) run again, up to their attempts.
    ///
    /// # Errors
    ///
    /// As [`WorkerPoolBuilder::start`], and database errors.
    pub fn drain_inline(self) -> Result<Vec<InlineOutcome>> {
        self.check()?;
        let filter = self.claim_filter();
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let mut outcomes = Vec::new();
        loop {
            let jobs = self.queue.claim(&worker_id, 1, &filter)?;
            let Some(job) = jobs.into_iter().next() else {
                return Ok(outcomes);
            };
            let (lease, leased) = (job.lease(), job.leased());
            let Registered { handler, retry, .. } =
                self.handlers.for_kind(&job.kind).ok_or_else(|| {
                    Error::invalid("kind", format!("no handler for kind {}", job.kind))
                })?;
            let (kind, attempt, id) = (job.kind.clone(), job.attempt, job.id.clone());
            let ctx = JobContext::new(job, self.queue.clone(), Arc::new(AtomicBool::new(false)));
            let started = Instant::now();
            let result = executor::perform(&*handler, &ctx);
            let report = executor::report_of(result.clone(), retry, attempt);
            let status =
                self.queue
                    .record_one(&lease, Some(leased), report, Some(started.elapsed()))?;
            outcomes.push(InlineOutcome {
                job_id: id,
                kind,
                attempt,
                result,
                status,
            });
        }
    }
}

/// What happened to one job run by [`WorkerPoolBuilder::drain_inline`].
#[derive(Debug, Clone, PartialEq)]
pub struct InlineOutcome {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: String,
    /// The attempt that ran.
    pub attempt: u32,
    /// The handler's result.
    pub result: std::result::Result<Value, JobError>,
    /// The job's status afterwards.
    pub status: Status,
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
    completer: Option<JoinHandle<()>>,
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
        WorkerPoolBuilder {
            queue: queue.clone(),
            concurrency: 4,
            prefetch: None,
            queues: vec!["default".into()],
            kinds: None,
            handlers: Handlers::default(),
            poll_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(5),
            stale: StaleTimeouts::default(),
            maintenance_interval: Some(Duration::from_secs(30)),
            prune_after: None,
            schedule_interval: Some(Duration::from_secs(1)),
            grace: Duration::from_secs(10),
            worker_id: None,
            limit: None,
            stop_when_idle: false,
            on_outcome: None,
        }
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
        // Closing the outcomes channel ends the completer once it has recorded everything.
        pool.close_outcomes();
        if let Some(c) = self.completer.take() {
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
        if self.completer.is_some() {
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

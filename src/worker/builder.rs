//! The settings of a worker pool, and starting it: its threads, their channels, and what
//! they share.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long emitted events are kept by default: 7 days.
pub const DEFAULT_EVENT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

use super::claimer::{Claimer, Prefetch};
use super::flight::InFlightTable;
use super::handlers::{Handlers, Registered};
use super::outcome::{Counters, Outcome, Summary};
use super::pool::{Channels, Pool};
use super::{
    Handler, JobContext, WorkerPool, completer, default_worker_id, dispatcher, executor, heartbeat,
    maintainer, spawn,
};
use crate::error::{Error, Result};
use crate::job::{ClaimedJob, JobId, Status};
use crate::maintenance::{RollupRetention, StaleTimeouts};
use crate::model::{ClaimFilter, JobError, WorkerInfo};
use crate::queue::{Finished, Queue};
use crate::retry::RetryPolicy;
use serde_json::Value;

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
    rollups: RollupRetention,
    event_retention: Duration,
    schedule_interval: Option<Duration>,
    grace: Duration,
    completers: Option<usize>,
    worker_id: Option<String>,
    limit: Option<u64>,
    stop_when_idle: bool,
    on_outcome: Option<OutcomeCallback>,
}

/// What [`WorkerPoolBuilder::on_outcome`] calls.
pub(super) type OutcomeCallback = Arc<dyn Fn(&Outcome) + Send + Sync>;

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
    /// The defaults, for a pool running the jobs of `queue`.
    pub(super) fn new(queue: &Queue) -> WorkerPoolBuilder {
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
            rollups: RollupRetention::default(),
            event_retention: DEFAULT_EVENT_RETENTION,
            schedule_interval: Some(Duration::from_secs(1)),
            grace: Duration::from_secs(10),
            completers: None,
            worker_id: None,
            limit: None,
            stop_when_idle: false,
            on_outcome: None,
        }
    }

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

    /// How long the rollups keep minutes and hours before they fold (at each
    /// maintenance). Defaults to [`RollupRetention::default`]: minutes 48 hours, hours 90
    /// days.
    pub fn rollup_retention(mut self, retention: RollupRetention) -> Self {
        self.rollups = retention;
        self
    }

    /// How long emitted events are kept (for jobs that wait for them only later) before
    /// the maintainer deletes them. Defaults to 7 days.
    pub fn event_retention(mut self, age: Duration) -> Self {
        self.event_retention = age;
        self
    }

    /// How many threads record outcomes (and claim the jobs that refill the slots they
    /// free), each a transaction at a time on a connection of its own. Defaults to one: on
    /// SQLite writes take turns anyway, and on PostgreSQL four measured no faster than one
    /// on a 2-core machine (see BENCHMARKS.md). At least one.
    pub fn completers(mut self, n: usize) -> Self {
        self.completers = Some(n);
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
    /// job moved on without this pool. It runs on a completer thread, in the order each
    /// completer records its batches (on PostgreSQL several completers record at once, so
    /// outcomes of different batches may come in either order): keep it short. Defaults to
    /// none.
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
        if self.completers == Some(0) {
            return Err(Error::invalid(
                "completers",
                "a pool needs at least one thread to record its outcomes",
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
        let timing = self.timing();
        let completers = self.completers.unwrap_or(1);
        let (job_tx, job_rx) = crossbeam_channel::bounded::<ClaimedJob>(self.most_in_flight());
        let (outcome_tx, outcomes) = crossbeam_channel::unbounded::<Finished>();
        let (work_tx, work) = crossbeam_channel::bounded::<()>(1);
        let (slot_tx, slots) = crossbeam_channel::bounded::<()>(1);
        // Never sent on: dropping the sender is what tells the helper threads to stop.
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        self.queue
            .shared
            .events
            .register_dispatcher(work_tx.clone());
        let pool = Arc::new(self.into_pool(Channels {
            job_tx: Mutex::new(Some(job_tx)),
            job_rx,
            outcome_tx: Mutex::new(Some(outcome_tx)),
            slot_tx,
            handler_threads: Mutex::new(Vec::new()),
            stop_helpers: Mutex::new(Some(stop_tx)),
        }));
        pool.register();
        listen_for_cancels(&pool);
        tracing::info!(worker = %pool.worker_id, concurrency = pool.claimer.concurrency(), queues = ?pool.claimer.filter.queue_names(), pool = pool.queue.engine().name(), database = pool.queue.engine().location(), "jobq: worker pool starting");
        for _ in 0..pool.claimer.concurrency() {
            pool.spawn_handler();
        }
        let wakeups = dispatcher::Wakeups { work, slots };
        let dispatcher = start_dispatcher(&pool, wakeups, work_tx, timing.poll)?;
        let completers = (0..completers)
            .map(|_| {
                let (pool, outcomes) = (Arc::clone(&pool), outcomes.clone());
                spawn("jobq-completer", move || completer::run(&pool, outcomes))
            })
            .collect();
        let helpers = start_helpers(&pool, &timing, &stop);
        let firer = start_firer(&pool.queue, timing.schedules)?;
        Ok(WorkerPool {
            pool,
            grace: timing.grace,
            firer,
            dispatcher: Some(dispatcher),
            completers,
            helpers,
        })
    }

    /// The most jobs the pool holds at once: one per handler and the prefetched ones.
    fn most_in_flight(&self) -> usize {
        self.concurrency + self.prefetch.unwrap_or(MAX_PREFETCH)
    }

    fn timing(&self) -> Timing {
        Timing {
            poll: self.poll_interval,
            heartbeat: self.heartbeat_interval,
            maintenance: self.maintenance_interval,
            stale: self.stale,
            prune_after: self.prune_after,
            rollups: self.rollups,
            event_retention: self.event_retention,
            schedules: self.schedule_interval,
            grace: self.grace,
        }
    }

    /// What every thread of the pool shares, made of these settings and `channels`.
    fn into_pool(self, channels: Channels) -> Pool {
        let filter = self.claim_filter();
        let worker_id = self.worker_id.clone().unwrap_or_else(default_worker_id);
        let prefetch = match self.prefetch {
            Some(n) => Prefetch::Fixed(n),
            None => Prefetch::Adaptive { max: MAX_PREFETCH },
        };
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
        Pool {
            queue: self.queue,
            worker_id,
            handlers: self.handlers,
            stop_when_idle: self.stop_when_idle,
            on_outcome: self.on_outcome,
            registration,
            claimer: Claimer::new(filter, self.concurrency, prefetch, self.limit),
            in_flight: InFlightTable::default(),
            channels,
            counters: Counters::default(),
            stopping: AtomicBool::new(false),
            hurry: AtomicBool::new(false),
            snoozed: Mutex::default(),
        }
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

/// The pool's intervals and timeouts, copied out of its builder.
#[derive(Clone, Copy)]
struct Timing {
    poll: Duration,
    heartbeat: Duration,
    maintenance: Option<Duration>,
    stale: StaleTimeouts,
    prune_after: Option<Duration>,
    rollups: RollupRetention,
    event_retention: Duration,
    schedules: Option<Duration>,
    grace: Duration,
}

/// A cancel in this process marks the job cancelled at once, on the cancelling thread.
fn listen_for_cancels(pool: &Arc<Pool>) {
    let listening = Arc::downgrade(pool);
    pool.queue
        .shared
        .events
        .register_cancel_listener(Box::new(move |id| match listening.upgrade() {
            Some(pool) => {
                pool.mark_cancelled(id);
                true
            }
            None => false,
        }));
}

/// The dispatcher: woken by enqueues in this process, by the engine's change feed (other
/// processes), by freed slots, and every `poll` at the latest.
fn start_dispatcher(
    pool: &Arc<Pool>,
    wakeups: dispatcher::Wakeups,
    work_tx: crossbeam_channel::Sender<()>,
    poll: Duration,
) -> Result<JoinHandle<()>> {
    let changes = pool.queue.engine().changes(Arc::new(move || {
        let _ = work_tx.try_send(());
    }))?;
    let pool = Arc::clone(pool);
    Ok(spawn("jobq-dispatcher", move || {
        dispatcher::run(&pool, wakeups, changes, poll)
    }))
}

/// The heartbeat and, unless turned off, the maintainer; both end when `stop`'s sender is
/// dropped.
fn start_helpers(
    pool: &Arc<Pool>,
    timing: &Timing,
    stop: &crossbeam_channel::Receiver<()>,
) -> Vec<JoinHandle<()>> {
    let heartbeat = {
        let (pool, stop, interval) = (Arc::clone(pool), stop.clone(), timing.heartbeat);
        spawn("jobq-heartbeat", move || {
            heartbeat::run(&pool, interval, stop)
        })
    };
    let maintainer = timing.maintenance.map(|interval| {
        let (pool, stop) = (Arc::clone(pool), stop.clone());
        let (stale, prune_after, rollups) = (timing.stale, timing.prune_after, timing.rollups);
        let events = timing.event_retention;
        spawn("jobq-maintainer", move || {
            maintainer::run(&pool, interval, stale, prune_after, (rollups, events), stop)
        })
    });
    [Some(heartbeat), maintainer]
        .into_iter()
        .flatten()
        .collect()
}

/// The thread that fires due schedules, unless turned off.
fn start_firer(
    queue: &Queue,
    interval: Option<Duration>,
) -> Result<Option<crate::schedule::Firer>> {
    let Some(interval) = interval else {
        return Ok(None);
    };
    crate::schedule::Firer::spawn(queue.clone(), interval)
        .map(Some)
        .map_err(|e| Error::Unavailable {
            reason: format!("cannot start the thread that fires schedules: {e}"),
        })
}

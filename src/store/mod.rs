//! The storage boundary: what an engine does, each operation a whole transaction (or one
//! read snapshot), in the manner of River's driver interface and Oban's engine behaviour.
//!
//! Everything above it — validation, retry decisions, events, tracing, the worker pool, the
//! command line and HTTP — is written once, in terms of these operations. An engine holds
//! its pool, migrations, SQL and row mapping, and its own tricks (SQLite's integer row key,
//! `BEGIN IMMEDIATE` and `data_version`; PostgreSQL's `SKIP LOCKED` and `LISTEN/NOTIFY`).
//!
//! Every operation takes the owner scope of the handle (`None`: an admin handle sees every
//! owner's rows) and, where time matters, the clock reading `now` of the caller, in
//! milliseconds since the epoch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::error::Result;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, JobLink, Lease, Status};
use crate::owner::Owner;
use crate::queue::{ClaimFilter, JobError};
use crate::stats::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};
use crate::workers::WorkerInfo;

#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod sqlite;

pub use sqlite::Durability;
pub(crate) use sqlite::StoreOptions;

/// Whose rows an operation sees: one owner's, or (`None`) everyone's.
pub(crate) type Scope<'a> = Option<&'a str>;

/// A job checked against every rule that needs no database, ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub kind: String,
    pub input: String,
    pub queue: String,
    pub priority: i32,
    pub run_after: i64,
    pub max_attempts: u32,
    pub key: Option<String>,
    pub group_id: Option<String>,
    pub owner: Option<String>,
    pub cost_cents: i64,
    pub external_id: Option<String>,
    /// The jobs it waits for.
    pub after: Vec<DepRef>,
    /// Runs anyway when a dependency fails (else it is cancelled with it).
    pub run_on_dependency_failure: bool,
    pub unique: Unique,
    /// For the per-key running limit of its queue.
    pub concurrency_key: Option<String>,
    /// Its local name in the flow it is submitted in.
    pub flow_ref: Option<String>,
}

impl NewRow {
    /// Whether inserting it needs nothing but the insert: no key to look up, no group, no
    /// row of options.
    pub(crate) fn is_plain(&self) -> bool {
        self.key.is_none() && self.group_id.is_none() && !self.has_options()
    }

    /// Whether it gets a row of `jobq_job_options`: dependencies, a uniqueness window, a
    /// concurrency key or a flow ref.
    pub(crate) fn has_options(&self) -> bool {
        !self.after.is_empty()
            || self.unique != Unique::Forever
            || self.concurrency_key.is_some()
            || self.flow_ref.is_some()
    }
}

/// What the jobs of a batch add to each owner's spending: one budget check per owner.
pub(crate) fn costs_by_owner<'a>(
    jobs: impl IntoIterator<Item = &'a NewRow>,
) -> BTreeMap<&'a str, i128> {
    let mut costs: BTreeMap<&str, i128> = BTreeMap::new();
    for job in jobs {
        if let Some(owner) = &job.owner {
            *costs.entry(owner).or_default() += i128::from(job.cost_cents);
        }
    }
    costs
}

/// What submitting a flow did: created it, or found the flow its key names.
#[derive(Debug, Clone)]
pub(crate) enum FlowInsert {
    /// The group was created with these jobs (in the order given).
    Created(Vec<Enqueued>),
    /// The owner's flow of that key, made before: its group and its jobs by ref.
    Existing {
        group_id: String,
        jobs: Vec<(String, JobId)>,
    },
}

/// A dependency of a job, with its flow ref and its output (JSON text; none before it
/// succeeded).
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub id: JobId,
    pub flow_ref: Option<String>,
    pub output: Option<String>,
}

/// Each dependency of a job with its output.
pub(crate) type Outputs = Vec<Output>;

/// What a job's page shows beside its row: the jobs it waits for, those that wait for it,
/// its concurrency key and its flow ref.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub dependencies: Vec<JobLink>,
    pub dependents: Vec<JobLink>,
    pub concurrency_key: Option<String>,
    pub flow_ref: Option<String>,
}

/// A job a new job waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DepRef {
    /// An existing job.
    Job(JobId),
    /// The job at this index of the same batch (always an earlier one).
    Earlier(usize),
}

/// How a new job stands towards the jobs it waits for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Waits {
    /// Each dependency once.
    pub jobs: Vec<JobId>,
    /// How many have not settled.
    pub waiting: i64,
    /// A dependency that failed or was cancelled, for a job that does not run anyway.
    pub failed: Option<(JobId, Status)>,
}

impl Waits {
    pub(crate) fn add(&mut self, id: JobId, status: Status, run_on_failure: bool) {
        if self.jobs.contains(&id) {
            return;
        }
        let ended_badly = matches!(status, Status::Failed | Status::Cancelled);
        if !(status == Status::Succeeded || (run_on_failure && ended_badly)) {
            self.waiting += 1;
        }
        if ended_badly && !run_on_failure && self.failed.is_none() {
            self.failed = Some((id.clone(), status));
        }
        self.jobs.push(id);
    }

    /// The refusal of a dependency that does not exist (or that the owner cannot see).
    pub(crate) fn missing(id: &JobId) -> crate::error::Error {
        crate::error::Error::invalid(
            "after",
            format!("the dependency {id} does not exist (or belongs to another owner)"),
        )
    }

    /// The new job's status: cancelled with a failed dependency, blocked while one has not
    /// settled, else queued.
    pub(crate) fn status(&self) -> Status {
        if self.failed.is_some() {
            Status::Cancelled
        } else if self.waiting > 0 {
            Status::Blocked
        } else {
            Status::Queued
        }
    }

    /// The message of a job created cancelled.
    pub(crate) fn failure_message(&self) -> Option<String> {
        self.failed
            .as_ref()
            .map(|(id, status)| format!("dependency {id} {status}"))
    }
}

/// The refusal of a manual retry of `job` while its `dependency` has failed or was
/// cancelled: the job would wait for ever.
pub(crate) fn retry_refused(
    job: &JobId,
    from: Status,
    dependency: &JobId,
    status: Status,
) -> crate::error::Error {
    crate::error::Error::InvalidTransition {
        job: job.clone(),
        from,
        action: format!("retry while its dependency {dependency} is {status} (retry that first)"),
    }
}

/// Whether an idempotency key still holds its job: within its window (`until`), and for a
/// key held while active, while the job has not ended.
pub(crate) fn key_holds(until: Option<i64>, while_active: bool, status: Status, now: i64) -> bool {
    until.is_none_or(|u| now < u) && !(while_active && status.is_terminal())
}

/// How long an idempotency key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Unique {
    /// For as long as its job exists.
    #[default]
    Forever,
    /// Until this time.
    Until(i64),
    /// While its job has not ended.
    WhileActive,
}

impl Unique {
    /// The stored columns: `unique_until` and `unique_while_active`.
    pub(crate) fn columns(self) -> (Option<i64>, bool) {
        match self {
            Unique::Forever => (None, false),
            Unique::Until(t) => (Some(t), false),
            Unique::WhileActive => (None, true),
        }
    }
}

/// What a claim takes: up to `limit` ready jobs of `filter`, for `worker`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimSpec<'a> {
    pub worker: &'a str,
    pub limit: usize,
    pub filter: &'a ClaimFilter,
}

/// What is recorded for a job a worker holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Report<'a> {
    /// Succeeded with this output (JSON text) and this cost added.
    Complete { output: &'a str, cost_cents: i64 },
    /// The attempt failed, and what follows was decided above the engine: `retry` (runs
    /// again at `retry_at`) or `failed` (the dead letter).
    Fail {
        error: &'a JobError,
        status: Status,
        retry_at: i64,
    },
    /// Give the job back unstarted: `queued`, without spending the attempt.
    Release,
    /// Back to `queued`, runnable at `run_after`, without spending the attempt; `counted`
    /// adds one to the job's snoozes (a snooze the handler asked for, not a deferral).
    Snooze { run_after: i64, counted: bool },
}

/// What recording one report did: the job's new status and, for a retry, when it runs
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub status: Status,
    pub retry_at: Option<i64>,
    /// It may have made jobs that wait for it ready (it has dependents and ended).
    pub readied: bool,
}

/// What a failure's decision needs to know of the job a lease holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LeasedJob {
    pub queue: String,
    pub kind: String,
    pub max_attempts: u32,
    /// How many times it snoozed before this claim.
    pub snoozes: u32,
}

/// A report made while a job runs (counts as a heartbeat).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress<'a> {
    pub progress: Option<f64>,
    pub stage: Option<&'a str>,
    pub cost_cents: i64,
}

/// An admin's change to one job, checked against its status inside the transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Cancel,
    /// The manual retry (from `failed` or `cancelled`).
    Retry,
    Delete,
    /// `transition`: to `running` (held by `manual`), `succeeded`, `failed` or `retry` (with
    /// this message), or `queued` (a release from `running`, else the manual retry).
    To(Status, &'a str),
}

/// When a running job counts as stale: its heartbeat (or lock) older than these cutoffs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaleCutoffs {
    pub heartbeat_before: i64,
    pub lock_before: i64,
}

/// A job released as stale.
#[derive(Debug, Clone)]
pub(crate) struct Released {
    pub id: JobId,
    pub status: Status,
    pub code: String,
    pub worker: Option<String>,
}

/// Which jobs a listing returns, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery<'a> {
    pub status: Option<Status>,
    /// Only `queued` or `retry` jobs whose `run_after` is after this time.
    pub scheduled_after: Option<i64>,
    /// Only the jobs a search finds.
    pub search: Option<Search>,
    pub queue: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub owner: Option<&'a str>,
    /// Only jobs older than the job with this row key (the cursor), if any.
    pub before: Option<JobId>,
    pub limit: usize,
}

/// What a search looks for: the whole text (an id, an idempotency key or an external id)
/// and, when it reads as the start of an id, that start as hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Search {
    pub text: String,
    /// Lowercase hex digits (4 to 32), dashes removed, when the text is one.
    pub id_prefix: Option<String>,
}

impl Search {
    pub(crate) fn of(text: &str) -> Search {
        let hex: String = text
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        let id_prefix =
            (hex.len() >= 4 && hex.len() <= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
                .then_some(hex);
        Search {
            text: text.to_string(),
            id_prefix,
        }
    }

    /// The first 64 bits of the ids the prefix covers (a row key range on SQLite).
    pub(crate) fn key_range(&self) -> Option<(i64, i64)> {
        let hex = self.id_prefix.as_deref()?;
        let head = &hex[..hex.len().min(16)];
        let lo = format!("{head:0<16}");
        let hi = format!("{head:f<16}");
        Some((
            u64::from_str_radix(&lo, 16).ok()? as i64,
            u64::from_str_radix(&hi, 16).ok()? as i64,
        ))
    }

    /// The lowest and highest UUIDs the prefix covers.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn uuid_range(&self) -> Option<(String, String)> {
        let hex = self.id_prefix.as_deref()?;
        Some((format!("{hex:0<32}"), format!("{hex:f<32}")))
    }
}

/// Which jobs a count covers.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CountQuery<'a> {
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
    pub queue: Option<&'a str>,
}

/// Jobs by stored status, and of `queued` and `retry` those whose `run_after` lies ahead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub by_status: BTreeMap<Status, i64>,
    pub scheduled: BTreeMap<Status, i64>,
}

/// What the health checks read, beside the counts.
#[derive(Debug, Clone, Default)]
pub(crate) struct HealthRows {
    pub running: i64,
    pub stale: i64,
    pub oldest_ready: Option<i64>,
    pub finished_succeeded: i64,
    pub finished_failed: i64,
    /// Blocked jobs waiting for a dependency that failed or was cancelled.
    pub blocked_behind_failure: i64,
    /// The database file deleted or replaced under this process, in words.
    pub file_problem: Option<String>,
}

/// The cutoffs of the health checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HealthQuery {
    pub now: i64,
    pub stale_before: i64,
    pub finished_since: i64,
}

/// One finished job's figures for timings: status, kind, run time and queue wait (ms).
pub(crate) type Duration4 = (Status, String, i64, i64);

/// The run times (or queue waits) of the finished jobs of one status, counted into buckets:
/// `buckets[i]` jobs took more than `bounds[i - 1]` and at most `bounds[i]` milliseconds
/// (the last bucket: more than the last bound).
#[cfg_attr(not(feature = "http"), allow(dead_code))] // read by the metrics, an HTTP route
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Histogram {
    pub status: Option<Status>,
    pub wait: bool,
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_ms: i128,
}

/// Ready and active jobs by queue, for the metrics: (queue, ready, oldest due) and
/// (queue, status, count) of `running` and `retry`.
#[cfg_attr(not(feature = "http"), allow(dead_code))] // read by the metrics, an HTTP route
#[derive(Debug, Clone, Default)]
pub(crate) struct QueueRows {
    pub ready: Vec<(String, i64, Option<i64>)>,
    pub active: Vec<(String, Status, i64)>,
}

/// A group's row and the counts behind its stage and progress.
#[derive(Debug, Clone)]
pub(crate) struct GroupRow {
    pub id: String,
    pub owner: Option<String>,
    pub name: String,
    pub metadata: String,
    pub created_at: i64,
    /// The idempotency key of the flow that made it, if it had one.
    pub flow_key: Option<String>,
    /// Per status: jobs, the sum of their progress as a group counts it, and how many started.
    pub by_status: Vec<(Status, i64, f64, i64)>,
}

/// A new owner, or a budget: what to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OwnerWrite {
    /// Create it; refused with `Duplicate` when it exists.
    Create(Option<i64>),
    /// Create it if needed and set its budget.
    SetBudget(Option<i64>),
    /// Create it if needed, leaving an existing one as it is.
    Ensure,
}

/// Ready jobs of one queue and kind that have waited since `oldest`: what the health check
/// of unserved work reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReadyKind {
    pub queue: String,
    pub kind: String,
    pub jobs: i64,
    pub oldest: i64,
}

/// A queue's flow control, as stored: what the claim reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QueueControl {
    pub name: String,
    pub paused: bool,
    pub max_running: Option<u32>,
    pub max_running_per_key: Option<u32>,
    /// At most this many claims per this many milliseconds.
    pub rate: Option<(u32, i64)>,
}

impl QueueControl {
    /// Whether a claim must take it into account.
    pub(crate) fn is_controlled(&self) -> bool {
        self.paused
            || self.max_running.is_some()
            || self.max_running_per_key.is_some()
            || self.rate.is_some()
    }
}

/// A change to a queue's flow control: `Some(None)` clears a limit, `None` leaves it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct QueueWrite {
    pub paused: Option<bool>,
    pub max_running: Option<Option<u32>>,
    pub max_running_per_key: Option<Option<u32>>,
    pub rate: Option<Option<(u32, i64)>>,
}

/// Jobs of one queue in one status (of the statuses a queue listing shows), and how many
/// of them wait for a `run_after` ahead.
pub(crate) type QueueCount = (String, Status, i64, i64);

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduleRow {
    pub name: String,
    pub owner: Option<String>,
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub timezone: String,
    pub kind: String,
    pub input: String,
    pub queue: String,
    pub priority: i32,
    pub max_attempts: Option<u32>,
    pub catch_up: String,
    pub paused: bool,
    pub next_fire: i64,
    pub last_fire: Option<i64>,
    pub created_at: i64,
}

/// How a schedule is stored: a new one (refused when its owner has one of that name) or in
/// place of the one of that name, and the most schedules its owner may have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedulePut {
    pub replace: bool,
    pub max_per_owner: usize,
}

/// The refusal of a schedule past its owner's allowance.
pub(crate) fn too_many_schedules(owner: &str, max: usize) -> crate::error::Error {
    crate::error::Error::invalid(
        "name",
        format!(
            "owner {owner} already has {max} schedules, the most allowed (remove one, or raise the limit)"
        ),
    )
}

/// A change to one schedule (named by its owner and name).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScheduleChange {
    Pause,
    /// Resume, next firing at this time.
    Resume(i64),
    Remove,
}

/// The firing of one schedule's due slots: its `next_fire` moves from `expected` to
/// `next` (the statement that checks it makes the firing happen once), and `jobs` are
/// enqueued, in one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Firing<'a> {
    pub owner: Option<&'a str>,
    pub name: &'a str,
    pub expected: i64,
    pub next: i64,
    pub last_fire: Option<i64>,
    pub jobs: Vec<NewRow>,
}

/// The operations of a storage engine. See the module documentation.
pub(crate) trait Engine: Send + Sync + fmt::Debug + 'static {
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;
    /// The file or the server (without its password), for messages.
    fn location(&self) -> &str;
    /// How much of a commit survives a crash.
    fn durability(&self) -> Durability;

    // ---- jobs: writes

    /// Inserts checked jobs in one transaction, all or none: ids, idempotency keys, groups
    /// and budgets resolved inside it. Results in the order given.
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>>;
    /// Inserts a flow's group and its jobs in one transaction, all or none (the jobs as
    /// [`Engine::insert_jobs`] does them, each after the jobs of the batch it waits for).
    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert>;
    /// Each dependency of `id` with its output (JSON text); `None` when the scope does not
    /// see `id`.
    fn dependency_outputs(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Outputs>>;
    /// The jobs of a group that have a flow ref, with it.
    fn flow_refs(&self, group: &str) -> Result<Vec<(String, JobId)>>;
    /// Who waits for whom among the jobs of a group: `(job, dependency)`, the job in the
    /// group (the dependency may be outside it), at most `limit`.
    fn group_edges(&self, group: &str, limit: usize) -> Result<Vec<(JobId, JobId)>>;
    /// Claims ready jobs in claim order.
    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>>;
    /// Records many reports, each under its lease (a lost lease refuses that report only; a
    /// database failure refuses them all), then claims for `refill`. With `again`, these
    /// reports were sent before and their answer was lost: a job found already as its
    /// report would leave it, under the same lease, counts as recorded (once).
    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Report<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)>;
    /// What a failure's decision needs of the job `lease` holds; `LockLost` or `NotFound`
    /// when it holds none.
    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob>;
    /// Refreshes the heartbeat of the job `lease` holds.
    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()>;
    /// Refreshes the heartbeats of jobs one worker holds, each under its claim; returns
    /// those it still holds.
    fn heartbeat_many(
        &self,
        scope: Scope<'_>,
        worker: &str,
        held: &[(JobId, u32)],
        now: i64,
    ) -> Result<Vec<(JobId, u32)>>;
    /// Progress, stage and cost of the job `lease` holds; refuses a cost that would pass
    /// the job's bound.
    fn report(&self, scope: Scope<'_>, lease: &Lease, update: Progress<'_>, now: i64)
    -> Result<()>;
    /// An admin's change, refused by `allowed` (given the job's status) or applied, in one
    /// transaction. Returns the status the job had.
    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status>;
    /// One chunk of the dead letter back in the queue (of `kind` and `queue` when given).
    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>>;
    /// Releases stale running jobs: to `retry`, or `failed` with no attempts left.
    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>>;
    /// Deletes one chunk of jobs finished with one of `statuses` before `cutoff`.
    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize>;

    // ---- jobs: reads

    /// The job, with the jobs it waits for, those that wait for it and its concurrency
    /// key (one snapshot).
    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>>;
    /// Up to `query.limit` jobs, newest first.
    fn list_jobs(&self, query: &ListQuery<'_>) -> Result<Vec<Job>>;
    /// The earliest `run_after` after `now` of the ready jobs of these queues.
    fn next_run_after(&self, queues: &[String], now: i64) -> Result<Option<i64>>;

    // ---- what the queue looks like

    /// What is wrong with the database under this process (a SQLite file deleted or
    /// replaced), if anything.
    fn file_problem(&self) -> Option<String> {
        None
    }
    /// The counts of `query` and, in the same snapshot, the counts of every job and the
    /// health rows (for the overview, whose health covers the whole queue).
    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<(Counts, Counts, HealthRows)>;
    /// The counts of `query`.
    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts>;
    /// Every finished job since `since` (of `queue`), one call of `each` per job.
    fn durations(
        &self,
        scope: Scope<'_>,
        since: i64,
        queue: Option<&str>,
        each: &mut dyn FnMut(Duration4),
    ) -> Result<()>;
    /// The run times and queue waits of every finished job, by status, in buckets of
    /// `bounds_ms` (ascending): what the metrics' histograms show. Engines that can count
    /// them where the rows are do; the others go through [`Engine::durations`].
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn histograms(&self, bounds_ms: &[i64]) -> Result<Vec<Histogram>> {
        let mut out: BTreeMap<(Status, bool), Histogram> = BTreeMap::new();
        self.durations(None, i64::MIN, None, &mut |(status, _, run, wait)| {
            for (wait_side, ms) in [(false, run), (true, wait)] {
                let h = out.entry((status, wait_side)).or_insert_with(|| Histogram {
                    status: Some(status),
                    wait: wait_side,
                    buckets: vec![0; bounds_ms.len() + 1],
                    ..Histogram::default()
                });
                h.buckets[bounds_ms.partition_point(|b| *b < ms)] += 1;
                h.count += 1;
                h.sum_ms += i128::from(ms);
            }
        })?;
        Ok(out.into_values().collect())
    }
    fn stages(&self, scope: Scope<'_>) -> Result<Vec<StageCount>>;
    fn running(&self, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>>;
    fn dead_letter(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<DeadJob>>;
    fn costs(&self, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>>;
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn queue_rows(&self, now: i64) -> Result<QueueRows>;

    // ---- groups, owners, tokens

    fn insert_group(&self, group: &GroupRow) -> Result<()>;
    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>>;
    /// The newest groups, at most `limit`.
    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>>;
    /// Deletes a group with its jobs (refused while one runs); how many jobs went.
    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize>;
    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()>;
    fn owner(&self, id: &str) -> Result<Option<Owner>>;
    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()>;
    /// The owner and the secret's hash of a token.
    fn token(&self, token_id: &str) -> Result<Option<(String, String)>>;
    fn revoke_tokens(&self, owner: &str) -> Result<usize>;

    // ---- the registry of live workers

    /// Registers a worker (or registers it again, as it is now).
    fn register_worker(&self, worker: &WorkerInfo) -> Result<()>;
    /// The worker is alive at `now`; false when it has no row (expired while it was
    /// paused: register it again).
    fn worker_seen(&self, id: &str, now: i64) -> Result<bool>;
    /// The worker stopped cleanly.
    fn unregister_worker(&self, id: &str) -> Result<()>;
    /// The workers seen within their stale timeout at `now`, with the jobs each runs.
    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>>;
    /// Deletes the rows of workers not seen within their stale timeout; how many.
    fn expire_workers(&self, now: i64) -> Result<usize>;
    /// Ready jobs due at `due_before` or earlier, by queue and kind.
    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>>;

    // ---- flow control

    /// Every queue with a row of flow control.
    fn queue_controls(&self) -> Result<Vec<QueueControl>>;
    /// Changes a queue's flow control (creating its row); returns it as it now is.
    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl>;
    /// Whether some queue is under flow control (as last seen): an idle pool then looks for
    /// work at every poll, since room can come back without an event (a rate's window).
    fn any_controlled(&self) -> bool {
        false
    }
    /// Jobs by queue in the statuses a queue listing shows (blocked, queued, running,
    /// retry), with the scheduled ones of `queued` and `retry`.
    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>>;

    // ---- schedules

    /// Inserts a schedule, or replaces the one of that name (keeping whether it is paused
    /// and when it last fired); `Duplicate` when its owner has one of that name and this
    /// is no replacement, `InvalidInput` when the owner would have more than its allowance.
    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()>;
    /// The schedules this scope sees, by owner and name; with `due`, only those not paused
    /// whose next firing is at `due` or earlier.
    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>>;
    /// Pauses, resumes or removes the schedule `name` of `owner`; false when there is none.
    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool>;
    /// Fires a schedule's due slots; `None` when another process fired them first (or the
    /// schedule was paused or removed meanwhile).
    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>>;

    // ---- changes made by others

    /// A counter that moves on when another connection (process, host) commits, for an
    /// idle pool deciding whether to look for work; `on_change` is called as soon as one is
    /// known, where the engine learns of them by itself.
    fn changes(&self, on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>>;

    /// The SQLite engine, for what only it offers (the caller's own transactions).
    fn as_sqlite(&self) -> Option<&sqlite::Sqlite> {
        None
    }
}

/// See [`Engine::changes`].
pub(crate) trait Changes: Send {
    /// A number that differs from its last answer once another connection has committed.
    fn version(&mut self) -> Option<i64>;
}

/// Names the position of the refused job in a batch.
pub(crate) fn at_index(i: usize, err: crate::error::Error) -> crate::error::Error {
    use crate::error::Error;
    match err {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("job #{i} of the batch: {reason}"),
        },
        other => other,
    }
}

impl Recorded {
    pub(crate) fn new(status: Status) -> Recorded {
        Recorded {
            status,
            retry_at: None,
            readied: false,
        }
    }

    /// The same, having made jobs that wait for it ready when `readied`.
    pub(crate) fn readying(mut self, readied: bool) -> Recorded {
        self.readied = readied;
        self
    }

    /// What recording `report` does to a job.
    pub(crate) fn of(report: &Report<'_>) -> Recorded {
        match *report {
            Report::Complete { .. } => Recorded::new(Status::Succeeded),
            Report::Release => Recorded::new(Status::Queued),
            Report::Snooze { run_after, counted } => Recorded {
                status: Status::Queued,
                // A deferral is a release that waits a moment: told as a release.
                retry_at: counted.then_some(run_after),
                readied: false,
            },
            Report::Fail {
                status, retry_at, ..
            } => Recorded {
                status,
                retry_at: (status == Status::Retry).then_some(retry_at),
                readied: false,
            },
        }
    }
}

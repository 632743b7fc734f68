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
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, LeasedJob, Status};
use crate::model::{
    Change, ClaimSpec, CostGrouping, CostRow, CountQuery, Counts, DeadJob, Duration4, Firing,
    FlowInsert, GroupRow, HealthQuery, HealthRows, Histogram, ListQuery, NewRow, Outputs, Owner,
    OwnerWrite, Progress, QueueControl, QueueCount, QueueRows, QueueWrite, ReadyKind, Recorded,
    Released, Report, RunningJob, ScheduleChange, SchedulePut, ScheduleRow, Scope, StageCount,
    StaleCutoffs, WorkerInfo,
};

pub(crate) mod migrations;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod rules;
pub(crate) mod sqlite;

pub use sqlite::Durability;
pub(crate) use sqlite::StoreOptions;

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

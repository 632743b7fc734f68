//! Jobs: inserts (one job, a batch, a flow), the claim, what is recorded on a held job
//! (outcomes, heartbeats, reports), admins' changes, maintenance, and reads.

use crate::error::Result;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, LeasedJob, Status};
use crate::model::{
    Change, ClaimSpec, FlowInsert, GroupRow, ListQuery, NewRow, Outputs, Progress, Record,
    Recorded, Released, Scope, StaleCutoffs,
};

/// Jobs: inserts (one job, a batch, a flow), the claim, what is recorded on a held job
pub(crate) trait JobStore {
    /// Inserts checked jobs in one transaction, all or none: ids, idempotency keys, groups
    /// and budgets resolved inside it. Results in the order given.
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>>;

    /// Inserts a flow's group and its jobs in one transaction, all or none (the jobs as
    /// [`JobStore::insert_jobs`] does them, each after the jobs of the batch it waits for).
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
        reports: &[(&Lease, Record<'_>)],
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

    /// The job, with the jobs it waits for, those that wait for it and its concurrency
    /// key (one snapshot).
    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>>;

    /// Up to `query.limit` jobs, newest first.
    fn list_jobs(&self, query: &ListQuery<'_>) -> Result<Vec<Job>>;

    /// The earliest `run_after` after `now` of the ready jobs of these queues.
    fn next_run_after(&self, queues: &[String], now: i64) -> Result<Option<i64>>;
}

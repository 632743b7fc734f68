//! The engine operations on SQLite: each write a `BEGIN IMMEDIATE` transaction on the
//! writer connection, each read one snapshot of a pooled connection.

use std::sync::Arc;

use rusqlite::Connection;

use super::{Sqlite, deps, ids, jobs, queues, schedules, stats, tenants, workers};
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, Status};
use crate::model::Owner;
use crate::model::WorkerInfo;
use crate::model::{
    Change, ClaimSpec, CountQuery, Counts, Duration4, Firing, FlowInsert, GroupRow, HealthQuery,
    HealthRows, ListQuery, NewRow, OwnerWrite, Progress, QueueControl, QueueCount, QueueRows,
    QueueWrite, ReadyKind, Recorded, Released, Report, ScheduleChange, SchedulePut, ScheduleRow,
    Scope, StaleCutoffs,
};
use crate::model::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};
use crate::store::{Changes, Durability, Engine};

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn durability(&self) -> Durability {
        self.opts.durability
    }

    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        self.write(|tx| {
            let ids = ids::allocate_in(tx, now, jobs.len())?;
            jobs::insert_jobs(tx, scope, jobs, ids, now)
        })
    }

    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert> {
        self.write(|tx| {
            if let Some(found) = tenants::existing_flow(tx, group)? {
                return Ok(found);
            }
            tenants::insert_group(tx, group)?;
            let ids = ids::allocate_in(tx, now, jobs.len())?;
            jobs::insert_jobs(tx, scope, jobs, ids, now).map(FlowInsert::Created)
        })
    }

    fn flow_refs(&self, group: &str) -> Result<Vec<(String, JobId)>> {
        self.read(|conn| tenants::flow_refs(conn, group))
    }

    fn group_edges(&self, group: &str, limit: usize) -> Result<Vec<(JobId, JobId)>> {
        self.read(|conn| deps::group_edges(conn, group, limit))
    }

    fn dependency_outputs(
        &self,
        scope: Scope<'_>,
        id: &JobId,
    ) -> Result<Option<crate::model::Outputs>> {
        self.read(|conn| {
            if jobs::status_of(conn, scope, id)?.is_none() {
                return Ok(None);
            }
            deps::outputs(conn, id).map(Some)
        })
    }

    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>> {
        self.write(|tx| jobs::claim(tx, scope, spec, now))
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Report<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        self.write(|tx| {
            let mut results = Vec::with_capacity(reports.len());
            for (lease, report) in reports {
                match jobs::record(tx, scope, lease, *report, again, now) {
                    Err(e) if !matches!(e, Error::LockLost { .. } | Error::NotFound { .. }) => {
                        return Err(e);
                    }
                    r => results.push(r),
                }
            }
            let claimed = match refill {
                Some(spec) if spec.limit > 0 => jobs::claim(tx, scope, spec, now)?,
                _ => Vec::new(),
            };
            Ok((results, claimed))
        })
    }

    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
        self.read(|conn| jobs::leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.write(|tx| jobs::heartbeat(tx, scope, lease, now))
    }

    fn heartbeat_many(
        &self,
        scope: Scope<'_>,
        worker: &str,
        held: &[(JobId, u32)],
        now: i64,
    ) -> Result<Vec<(JobId, u32)>> {
        if held.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| jobs::heartbeat_many(tx, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.write(|tx| jobs::report(tx, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.write(|tx| jobs::change(tx, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.write(|tx| jobs::retry_dead(tx, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.write(|tx| jobs::release_stale(tx, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.write(|tx| jobs::prune(tx, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.read(|conn| match jobs::get(conn, scope, id)? {
            Some(job) => Ok(Some(job.with_links(deps::links(conn, id)?))),
            None => Ok(None),
        })
    }

    fn list_jobs(&self, query: &ListQuery<'_>) -> Result<Vec<Job>> {
        self.read(|conn| jobs::list(conn, query))
    }

    fn next_run_after(&self, queues: &[String], now: i64) -> Result<Option<i64>> {
        self.read(|conn| jobs::next_run_after(conn, queues, now))
    }

    fn file_problem(&self) -> Option<String> {
        Sqlite::file_problem(self)
    }

    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<(Counts, Counts, HealthRows)> {
        self.read(|conn| {
            let counts = stats::counts(conn, query, health.now)?;
            let everything = CountQuery {
                owner: scope,
                group: None,
                queue: None,
            };
            let whole = if query.owner == scope && query.group.is_none() && query.queue.is_none() {
                counts.clone()
            } else {
                stats::counts(conn, everything, health.now)?
            };
            let mut rows = stats::health(conn, scope, health)?;
            rows.file_problem = self.file_problem();
            Ok((counts, whole, rows))
        })
    }

    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts> {
        self.read(|conn| stats::counts(conn, query, now))
    }

    fn durations(
        &self,
        scope: Scope<'_>,
        since: i64,
        queue: Option<&str>,
        each: &mut dyn FnMut(Duration4),
    ) -> Result<()> {
        self.read(|conn| stats::durations(conn, scope, since, queue, each))
    }

    fn stages(&self, scope: Scope<'_>) -> Result<Vec<StageCount>> {
        self.read(|conn| stats::stages(conn, scope))
    }

    fn running(&self, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>> {
        self.read(|conn| stats::running(conn, scope, now))
    }

    fn dead_letter(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<DeadJob>> {
        self.read(|conn| stats::dead_letter(conn, scope, limit))
    }

    fn costs(&self, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>> {
        self.read(|conn| stats::costs(conn, scope, by))
    }

    fn queue_rows(&self, now: i64) -> Result<QueueRows> {
        self.read(|conn| stats::queue_rows(conn, now))
    }

    fn insert_group(&self, group: &GroupRow) -> Result<()> {
        self.write(|tx| tenants::insert_group(tx, group))
    }

    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
        self.read(|conn| tenants::group(conn, scope, id))
    }

    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
        self.read(|conn| tenants::groups(conn, scope, limit))
    }

    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize> {
        self.write(|tx| tenants::delete_group(tx, scope, id))
    }

    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
        self.write(|tx| tenants::write_owner(tx, id, write, now))
    }

    fn owner(&self, id: &str) -> Result<Option<Owner>> {
        self.read(|conn| tenants::owner(conn, id))
    }

    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()> {
        self.write(|tx| tenants::insert_token(tx, owner, token_id, secret_hash, now))
    }

    fn token(&self, token_id: &str) -> Result<Option<(String, String)>> {
        self.read(|conn| tenants::token(conn, token_id))
    }

    fn revoke_tokens(&self, owner: &str) -> Result<usize> {
        self.write(|tx| tenants::revoke_tokens(tx, owner))
    }

    fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        self.write(|tx| workers::register(tx, worker))
    }

    fn worker_seen(&self, id: &str, now: i64) -> Result<bool> {
        self.write(|tx| workers::seen(tx, id, now))
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        self.write(|tx| workers::unregister(tx, id))
    }

    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>> {
        self.read(|conn| workers::live(conn, now))
    }

    fn expire_workers(&self, now: i64) -> Result<usize> {
        self.write(|tx| workers::expire(tx, now))
    }

    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>> {
        self.read(|conn| workers::ready_kinds(conn, due_before))
    }

    fn queue_controls(&self) -> Result<Vec<QueueControl>> {
        self.read(queues::controls)
    }

    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl> {
        self.write(|tx| {
            tx.forget_controls();
            queues::write(tx, name, write, now)
        })
    }

    fn any_controlled(&self) -> bool {
        self.any_controlled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>> {
        self.read(|c| queues::counts(c, now))
    }

    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()> {
        self.write(|c| schedules::insert(c, row, put))
    }

    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>> {
        self.read(|c| schedules::list(c, scope, due))
    }

    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool> {
        self.write(|c| schedules::change(c, owner, name, change, now))
    }

    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>> {
        self.write(|tx| schedules::fire(tx, firing.clone(), now))
    }

    fn changes(&self, _on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>> {
        Ok(Box::new(DataVersion(self.connect()?)))
    }

    fn as_sqlite(&self) -> Option<&Sqlite> {
        Some(self)
    }
}

/// `PRAGMA data_version` on a connection of its own: it changes only when another
/// connection commits, so that an idle pool costs one cheap read per poll.
struct DataVersion(Connection);

impl Changes for DataVersion {
    fn version(&mut self) -> Option<i64> {
        self.0
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ok()
    }
}

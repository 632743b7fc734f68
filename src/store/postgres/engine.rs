//! The engine operations on PostgreSQL. A single statement runs in autocommit; anything
//! that reads before it writes (an enqueue's idempotency and budget, an admin's check of a
//! status) runs in one transaction with the rows it depends on locked.

use std::sync::Arc;

use super::{Postgres, deps, jobs, listen, queues, schedules, stats, tenants, workers};
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, Status};
use crate::model::Owner;
use crate::model::WorkerInfo;
use crate::model::{
    Change, ClaimSpec, CountQuery, Counts, Duration4, Firing, FlowInsert, GroupRow, HealthQuery,
    HealthRows, Histogram, ListQuery, NewRow, OwnerWrite, Progress, QueueControl, QueueCount,
    QueueRows, QueueWrite, ReadyKind, Recorded, Released, Report, ScheduleChange, SchedulePut,
    ScheduleRow, Scope, StaleCutoffs,
};
use crate::model::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};
use crate::store::{Changes, Durability, Engine};

impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn durability(&self) -> Durability {
        // What survives is the server's to say (`synchronous_commit`, `fsync`).
        Durability::Full
    }

    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        let ids = jobs::new_ids(now, jobs.len());
        // A job without an owner or a group has no budget or group to check: its insert
        // (after the look for its idempotency key, if any) is the only write.
        // (Nor options: dependencies to lock, a window that could retire an older key.)
        let alone = matches!(jobs.as_slice(),
            [job] if job.owner.is_none() && job.group_id.is_none() && !job.has_options());
        if alone {
            return self.run(|conn| jobs::insert_jobs(conn, scope, jobs.clone(), ids.clone(), now));
        }
        self.transaction(|conn| jobs::insert_jobs(conn, scope, jobs.clone(), ids.clone(), now))
    }

    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert> {
        let ids = jobs::new_ids(now, jobs.len());
        self.transaction(|conn| {
            if let Some(found) = tenants::insert_flow_group(conn, group)? {
                return Ok(found);
            }
            jobs::insert_jobs(conn, scope, jobs.clone(), ids.clone(), now).map(FlowInsert::Created)
        })
    }

    fn flow_refs(&self, group: &str) -> Result<Vec<(String, JobId)>> {
        self.snapshot(|conn| tenants::flow_refs(conn, group))
    }

    fn group_edges(&self, group: &str, limit: usize) -> Result<Vec<(JobId, JobId)>> {
        self.snapshot(|conn| deps::group_edges(conn, group, limit))
    }

    fn dependency_outputs(
        &self,
        scope: Scope<'_>,
        id: &JobId,
    ) -> Result<Option<crate::model::Outputs>> {
        self.snapshot(|conn| deps::outputs(conn, scope, id))
    }

    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>> {
        let claimed = self.run(|conn| jobs::claim(conn, scope, spec, now))?;
        self.top_up(scope, spec, claimed, now)
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Report<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        // The usual batch, successes and a refill, goes in one statement.
        if let Some(spec) = refill.filter(|s| s.limit > 0) {
            if let Some((results, claimed)) =
                self.run(|conn| jobs::complete_and_claim(conn, scope, reports, spec, again, now))?
            {
                let claimed = match self.top_up(scope, spec, claimed, now) {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, "jobq: claiming after recording outcomes failed");
                        Vec::new()
                    }
                };
                return Ok((results, claimed));
            }
        }
        let results = self.run(|conn| jobs::record(conn, scope, reports, again, now))?;
        let claimed = match refill {
            Some(spec) if spec.limit > 0 => {
                match self
                    .run(|conn| jobs::claim(conn, scope, spec, now))
                    .and_then(|claimed| self.top_up(scope, spec, claimed, now))
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        // The outcomes are recorded; the dispatcher claims again at its next turn.
                        tracing::warn!(error = %e, "jobq: claiming after recording outcomes failed");
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        Ok((results, claimed))
    }

    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
        self.read(|conn| jobs::leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.run(|conn| jobs::heartbeat(conn, scope, lease, now))
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
        self.run(|conn| jobs::heartbeat_many(conn, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.run(|conn| jobs::report(conn, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.transaction(|conn| jobs::change(conn, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.transaction(|conn| jobs::retry_dead(conn, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.run(|conn| jobs::release_stale(conn, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.run(|conn| jobs::prune(conn, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.snapshot(|conn| match jobs::get(conn, scope, id)? {
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

    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<(Counts, Counts, HealthRows)> {
        self.snapshot(|conn| {
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
            let rows = stats::health(conn, scope, health)?;
            Ok((counts, whole, rows))
        })
    }

    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts> {
        self.snapshot(|conn| stats::counts(conn, query, now))
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

    fn histograms(&self, bounds_ms: &[i64]) -> Result<Vec<Histogram>> {
        self.snapshot(|conn| stats::histograms(conn, bounds_ms))
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
        self.snapshot(|conn| stats::costs(conn, scope, by))
    }

    fn queue_rows(&self, now: i64) -> Result<QueueRows> {
        self.snapshot(|conn| stats::queue_rows(conn, now))
    }

    fn insert_group(&self, group: &GroupRow) -> Result<()> {
        self.run(|conn| tenants::insert_group(conn, group))
    }

    fn group(&self, scope: Scope<'_>, id: &str) -> Result<Option<GroupRow>> {
        self.snapshot(|conn| tenants::group(conn, scope, id))
    }

    fn groups(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<GroupRow>> {
        self.snapshot(|conn| tenants::groups(conn, scope, limit))
    }

    fn delete_group(&self, scope: Scope<'_>, id: &str) -> Result<usize> {
        self.transaction(|conn| tenants::delete_group(conn, scope, id))
    }

    fn write_owner(&self, id: &str, write: OwnerWrite, now: i64) -> Result<()> {
        self.run(|conn| tenants::write_owner(conn, id, write, now))
    }

    fn owner(&self, id: &str) -> Result<Option<Owner>> {
        self.snapshot(|conn| tenants::owner(conn, id))
    }

    fn insert_token(&self, owner: &str, token_id: &str, secret_hash: &str, now: i64) -> Result<()> {
        self.transaction(|conn| tenants::insert_token(conn, owner, token_id, secret_hash, now))
    }

    fn token(&self, token_id: &str) -> Result<Option<(String, String)>> {
        self.read(|conn| tenants::token(conn, token_id))
    }

    fn revoke_tokens(&self, owner: &str) -> Result<usize> {
        self.run(|conn| tenants::revoke_tokens(conn, owner))
    }

    fn register_worker(&self, worker: &WorkerInfo) -> Result<()> {
        self.run(|conn| workers::register(conn, worker))
    }

    fn worker_seen(&self, id: &str, now: i64) -> Result<bool> {
        self.run(|conn| workers::seen(conn, id, now))
    }

    fn unregister_worker(&self, id: &str) -> Result<()> {
        self.run(|conn| workers::unregister(conn, id))
    }

    fn workers(&self, now: i64) -> Result<Vec<WorkerInfo>> {
        self.read(|conn| workers::live(conn, now))
    }

    fn expire_workers(&self, now: i64) -> Result<usize> {
        self.run(|conn| workers::expire(conn, now))
    }

    fn ready_kinds(&self, due_before: i64) -> Result<Vec<ReadyKind>> {
        self.read(|conn| workers::ready_kinds(conn, due_before))
    }

    fn queue_controls(&self) -> Result<Vec<QueueControl>> {
        self.snapshot(queues::controls)
    }

    fn write_queue(&self, name: &str, write: QueueWrite, now: i64) -> Result<QueueControl> {
        let control = self.run(|conn| queues::write(conn, name, write, now))?;
        self.forget_controlled();
        Ok(control)
    }

    fn any_controlled(&self) -> bool {
        !self
            .controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .is_empty()
    }

    fn queue_counts(&self, now: i64) -> Result<Vec<QueueCount>> {
        self.snapshot(|conn| queues::counts(conn, now))
    }

    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()> {
        self.transaction(|c| schedules::insert(c, row, put))
    }

    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>> {
        self.snapshot(|c| schedules::list(c, scope, due))
    }

    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool> {
        self.run(|c| schedules::change(c, owner, name, change, now))
    }

    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>> {
        let ids = jobs::new_ids(now, firing.jobs.len());
        self.transaction(|conn| schedules::fire(conn, firing.clone(), ids.clone(), now))
    }

    fn changes(&self, on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>> {
        let listener = listen::listen(self.config.clone(), self.location.clone(), on_change)
            .map_err(|e| Error::Unavailable {
                reason: format!("cannot start the thread that listens for wake-ups: {e}"),
            })?;
        Ok(Box::new(listener))
    }
}

impl Postgres {
    /// The queues under flow control, read again when the last read is a second old. (The
    /// claim statement's own guard keeps a queue that became controlled since out of the
    /// ordinary claim; this only says which queues the controlled claim should look at.)
    fn controlled_queues(&self) -> Result<std::sync::Arc<std::collections::HashSet<String>>> {
        {
            let cached = self
                .controlled
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let (Some(at), set) = &*cached {
                if at.elapsed() < std::time::Duration::from_secs(1) {
                    return Ok(std::sync::Arc::clone(set));
                }
            }
        }
        let set: std::sync::Arc<std::collections::HashSet<String>> =
            std::sync::Arc::new(self.run(queues::controlled)?.into_iter().collect());
        *self
            .controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Some(std::time::Instant::now()), std::sync::Arc::clone(&set));
        Ok(set)
    }

    fn forget_controlled(&self) {
        self.controlled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0 = None;
    }

    /// After the ordinary claim, the controlled queues of the filter, for the slots left.
    fn top_up(
        &self,
        scope: Scope<'_>,
        spec: ClaimSpec<'_>,
        mut claimed: Vec<ClaimedJob>,
        now: i64,
    ) -> Result<Vec<ClaimedJob>> {
        if claimed.len() >= spec.limit {
            return Ok(claimed);
        }
        let controlled = self.controlled_queues()?;
        let queues: Vec<String> = spec
            .filter
            .queue_names()
            .iter()
            .filter(|q| controlled.contains(q.as_str()))
            .cloned()
            .collect();
        if queues.is_empty() {
            return Ok(claimed);
        }
        let rest = ClaimSpec {
            limit: spec.limit - claimed.len(),
            ..spec
        };
        let more = self.transaction(|conn| queues::claim(conn, scope, &rest, &queues, now))?;
        claimed.extend(more);
        Ok(claimed)
    }
}

//! Jobs on PostgreSQL, one file per family as in `queue/`: `insert`, `claim`, `lease` (what a
//! worker reports under its lease), `admin` (admins' changes), `maintain` (stale releases
//! and pruning) and `read`. Their functions run inside the caller's transaction; the
//! `JobStore` implementation here opens it.

mod admin;
mod claim;
mod insert;
mod lease;
mod maintain;
mod read;

use super::Postgres;
use super::tenants;
use crate::model::FlowInsert;
use crate::model::GroupRow;
pub(crate) use claim::claimed_from;
pub(crate) use insert::{insert, insert_all, insert_jobs};

use super::deps;
use super::ids::new_ids;
use crate::error::Result;
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, Status};
use crate::model::{
    Change, ClaimSpec, ListQuery, NewRow, Progress, Record, Recorded, Released, Scope, StaleCutoffs,
};
use admin::{change, retry_dead};
use claim::{claim, complete_and_claim, next_run_after};
pub(crate) use lease::{EVENT_LOCK, put_step};
use lease::{heartbeat, heartbeat_many, leased, record, report};
use maintain::{prune, release_stale};
use read::{get, list};

impl crate::store::JobStore for Postgres {
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        let ids = new_ids(now, jobs.len());
        // A job without an owner or a group has no budget or group to check: its insert
        // (after the look for its idempotency key, if any) is the only write.
        // (Nor options: dependencies to lock, a window that could retire an older key.)
        let alone = matches!(jobs.as_slice(),
            [job] if job.owner.is_none() && job.group_id.is_none() && !job.has_options());
        if alone {
            return self.run(|conn| insert_jobs(conn, scope, jobs.clone(), ids.clone(), now));
        }
        self.transaction(|conn| insert_jobs(conn, scope, jobs.clone(), ids.clone(), now))
    }

    fn insert_flow(
        &self,
        scope: Scope<'_>,
        group: &GroupRow,
        jobs: Vec<NewRow>,
        now: i64,
    ) -> Result<FlowInsert> {
        let ids = new_ids(now, jobs.len());
        self.transaction(|conn| {
            if let Some(found) = tenants::insert_flow_group(conn, group)? {
                return Ok(found);
            }
            insert_jobs(conn, scope, jobs.clone(), ids.clone(), now).map(FlowInsert::Created)
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
        let claimed = self.run(|conn| claim(conn, scope, spec, now))?;
        self.top_up(scope, spec, claimed, now)
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Record<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        // The usual batch, successes and a refill, goes in one statement.
        if let Some(spec) = refill.filter(|s| s.limit > 0) {
            if let Some((results, claimed)) =
                self.run(|conn| complete_and_claim(conn, scope, reports, spec, again, now))?
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
        let results = self.run(|conn| record(conn, scope, reports, again, now))?;
        let claimed = match refill {
            Some(spec) if spec.limit > 0 => {
                match self
                    .run(|conn| claim(conn, scope, spec, now))
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
        self.read(|conn| leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.run(|conn| heartbeat(conn, scope, lease, now))
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
        self.run(|conn| heartbeat_many(conn, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.run(|conn| report(conn, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.transaction(|conn| self::change(conn, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.transaction(|conn| retry_dead(conn, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.run(|conn| release_stale(conn, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.run(|conn| prune(conn, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.snapshot(|conn| match get(conn, scope, id)? {
            Some(job) => Ok(Some(
                job.with_links(deps::links(conn, id)?)
                    .with_steps(super::steps::steps(conn, id)?),
            )),
            None => Ok(None),
        })
    }

    fn list_jobs(&self, query: &ListQuery<'_>) -> Result<Vec<Job>> {
        self.read(|conn| list(conn, query))
    }

    fn next_run_after(&self, queues: &[String], now: i64) -> Result<Option<i64>> {
        self.read(|conn| next_run_after(conn, queues, now))
    }
}

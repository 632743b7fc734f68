//! Jobs on SQLite, one file per family as in `queue/`: `insert`, `claim`, `lease` (what a
//! worker reports under its lease), `admin` (admins' changes), `maintain` (stale releases
//! and pruning) and `read`. Their functions run inside the caller's transaction; the
//! `JobStore` implementation here opens it.

mod admin;
mod claim;
mod insert;
mod lease;
mod maintain;
mod read;

use super::Sqlite;
use super::ids;
use super::tenants;
use crate::model::FlowInsert;
use crate::model::GroupRow;
pub(crate) use insert::{insert, insert_flow, insert_jobs};

use super::deps;
use crate::error::{Error, Result};
use crate::job::LeasedJob;
use crate::job::{ClaimedJob, Enqueued, Job, JobId, Lease, Status};
use crate::model::{
    Change, ClaimSpec, ListQuery, NewRow, Progress, Record, Recorded, Released, Scope, StaleCutoffs,
};
pub(crate) use admin::status_of;
use admin::{change, retry_dead};
use claim::{claim, next_run_after};
pub(crate) use lease::put_step;
use lease::{heartbeat, heartbeat_many, leased, record, report};
use maintain::{prune, release_stale};
use read::{get, list};

impl crate::store::JobStore for Sqlite {
    fn insert_jobs(&self, scope: Scope<'_>, jobs: Vec<NewRow>, now: i64) -> Result<Vec<Enqueued>> {
        self.write(|tx| {
            let ids = ids::allocate_in(tx, now, jobs.len())?;
            insert_jobs(tx, scope, jobs, ids, now)
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
            insert_jobs(tx, scope, jobs, ids, now).map(FlowInsert::Created)
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
            if status_of(conn, scope, id)?.is_none() {
                return Ok(None);
            }
            deps::outputs(conn, id).map(Some)
        })
    }

    fn claim(&self, scope: Scope<'_>, spec: ClaimSpec<'_>, now: i64) -> Result<Vec<ClaimedJob>> {
        self.write(|tx| claim(tx, scope, spec, now))
    }

    fn record(
        &self,
        scope: Scope<'_>,
        reports: &[(&Lease, Record<'_>)],
        refill: Option<ClaimSpec<'_>>,
        again: bool,
        now: i64,
    ) -> Result<(Vec<Result<Recorded>>, Vec<ClaimedJob>)> {
        self.write(|tx| {
            let mut results = Vec::with_capacity(reports.len());
            for (lease, report) in reports {
                match record(tx, scope, lease, *report, again, now) {
                    Err(e) if !matches!(e, Error::LockLost { .. } | Error::NotFound { .. }) => {
                        return Err(e);
                    }
                    r => results.push(r),
                }
            }
            let claimed = match refill {
                Some(spec) if spec.limit > 0 => claim(tx, scope, spec, now)?,
                _ => Vec::new(),
            };
            Ok((results, claimed))
        })
    }

    fn leased(&self, scope: Scope<'_>, lease: &Lease) -> Result<LeasedJob> {
        self.read(|conn| leased(conn, scope, lease))
    }

    fn heartbeat(&self, scope: Scope<'_>, lease: &Lease, now: i64) -> Result<()> {
        self.write(|tx| heartbeat(tx, scope, lease, now))
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
        self.write(|tx| heartbeat_many(tx, scope, worker, held, now))
    }

    fn report(
        &self,
        scope: Scope<'_>,
        lease: &Lease,
        update: Progress<'_>,
        now: i64,
    ) -> Result<()> {
        self.write(|tx| report(tx, scope, lease, update, now))
    }

    fn change(
        &self,
        scope: Scope<'_>,
        id: &JobId,
        change: Change<'_>,
        allowed: &dyn Fn(Status) -> Result<()>,
        now: i64,
    ) -> Result<Status> {
        self.write(|tx| self::change(tx, scope, id, change, allowed, now))
    }

    fn retry_dead(
        &self,
        scope: Scope<'_>,
        kind: Option<&str>,
        queue: Option<&str>,
        now: i64,
    ) -> Result<Vec<JobId>> {
        self.write(|tx| retry_dead(tx, scope, kind, queue, now))
    }

    fn release_stale(
        &self,
        scope: Scope<'_>,
        cutoffs: StaleCutoffs,
        now: i64,
    ) -> Result<Vec<Released>> {
        self.write(|tx| release_stale(tx, scope, cutoffs, now))
    }

    fn prune(&self, scope: Scope<'_>, statuses: &[Status], cutoff: i64) -> Result<usize> {
        self.write(|tx| prune(tx, scope, statuses, cutoff))
    }

    fn get_job(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Job>> {
        self.read(|conn| match get(conn, scope, id)? {
            Some(job) => Ok(Some(
                job.with_links(deps::links(conn, id)?)
                    .with_steps(super::steps::steps(conn, id.key())?),
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

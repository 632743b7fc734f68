//! Flows: a group of jobs that wait for each other, named by local refs, created in one
//! transaction — all of it or none.

use std::collections::{BTreeMap, HashMap};

use rusqlite::Connection;
use serde::Serialize;
use serde_json::Value;

use super::Queue;
use crate::error::{Error, Result};
use crate::job::{JobId, NewJob};
use crate::model::{DepRef, FlowInsert, GroupRow, NewRow};

/// The most jobs one flow may hold.
pub const MAX_FLOW_JOBS: usize = 100_000;

/// A flow to submit: jobs that name each other by a local `ref`, and the group they make.
///
/// A job waits for the jobs its `after` names: refs of this flow, or ids of jobs that
/// already exist. The flow is refused whole, naming the ref, for a duplicate or unknown ref
/// or a cycle.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use jobq::{Flow, NewJob, Queue, Status};
///
/// let queue = Queue::open(dir.path().join("q.db"))?;
/// let flow = Flow::new("campaign")
///     .job("scene-1", NewJob::new("render"))
///     .job("scene-2", NewJob::new("render"))
///     .job_after("composite", NewJob::new("composite"), ["scene-1", "scene-2"]);
/// let created = queue.submit_flow(flow)?;
/// let composite = queue.get(&created.jobs["composite"])?;
/// assert_eq!(composite.status, Status::Blocked);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Flow {
    name: String,
    metadata: Option<Value>,
    owner: Option<String>,
    key: Option<String>,
    jobs: Vec<(String, NewJob, Vec<String>)>,
}

/// What submitting a flow created (or, for a key used before, found): its group and each
/// ref's job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlowCreated {
    /// The flow's group.
    pub group_id: String,
    /// Each ref's job id.
    pub jobs: BTreeMap<String, JobId>,
    /// True when the flow's key named a flow the owner had submitted before: that flow is
    /// returned, and nothing was created.
    pub already_existed: bool,
}

impl Flow {
    /// A flow whose group is called `name`.
    pub fn new(name: impl Into<String>) -> Flow {
        Flow {
            name: name.into(),
            metadata: None,
            owner: None,
            key: None,
            jobs: Vec::new(),
        }
    }

    /// An idempotency key (per owner): submitting a flow with a key the owner used before
    /// creates nothing and returns the first flow (its group and jobs, with
    /// `already_existed`), however its jobs have fared since. Defaults to none.
    pub fn key(mut self, key: impl Into<String>) -> Flow {
        self.key = Some(key.into());
        self
    }

    /// The group's metadata, a JSON object.
    pub fn metadata(mut self, metadata: Value) -> Flow {
        self.metadata = Some(metadata);
        self
    }

    /// The owner of the group and its jobs (an admin handle only; a scoped handle stamps
    /// its own).
    pub fn owner(mut self, owner: impl Into<String>) -> Flow {
        self.owner = Some(owner.into());
        self
    }

    /// A job that waits for nothing in the flow (it may still wait for existing jobs, by
    /// [`NewJob::after`]).
    pub fn job(self, r#ref: impl Into<String>, job: NewJob) -> Flow {
        self.job_after(r#ref, job, std::iter::empty::<String>())
    }

    /// A job that waits for `after`: refs of this flow, or ids of existing jobs.
    pub fn job_after<S: Into<String>>(
        mut self,
        r#ref: impl Into<String>,
        job: NewJob,
        after: impl IntoIterator<Item = S>,
    ) -> Flow {
        self.jobs.push((
            r#ref.into(),
            job,
            after.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// The number of jobs.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether it has no job.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

/// A flow checked against everything that needs no database: its group, and its jobs in
/// an order where every job comes after the jobs of the flow it waits for.
pub(crate) struct CheckedFlow {
    pub group: GroupRow,
    pub rows: Vec<NewRow>,
    /// The ref of each row.
    pub refs: Vec<String>,
}

impl CheckedFlow {
    /// What inserting it did: the group, and each ref's job.
    fn created(self, out: FlowInsert) -> FlowCreated {
        match out {
            FlowInsert::Created(out) => FlowCreated {
                jobs: self
                    .refs
                    .into_iter()
                    .zip(out.into_iter().map(|e| e.job_id))
                    .collect(),
                group_id: self.group.id,
                already_existed: false,
            },
            FlowInsert::Existing { group_id, jobs } => FlowCreated {
                group_id,
                jobs: jobs.into_iter().collect(),
                already_existed: true,
            },
        }
    }
}

impl Queue {
    /// Creates a flow — its group and all its jobs — in one transaction: all of it or
    /// nothing. Jobs that wait for others start `blocked`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the ref for a duplicate or unknown ref, a cycle, or a
    /// job the enqueue would refuse; [`Error::BudgetExceeded`] as the enqueue. Nothing is
    /// written on any error.
    pub fn submit_flow(&self, flow: Flow) -> Result<FlowCreated> {
        let now = self.now_ms();
        let checked = self.check_flow(flow, now)?;
        let out =
            self.engine()
                .insert_flow(self.owner(), &checked.group, checked.rows.clone(), now)?;
        self.after_flow(checked, out, now)
    }

    /// [`Queue::submit_flow`] inside the caller's own SQLite transaction, as
    /// [`Queue::enqueue_tx`]: the flow exists if and only if the caller's writes commit.
    ///
    /// # Errors
    ///
    /// As [`Queue::submit_flow`]; [`Error::Unsupported`] on a queue kept in PostgreSQL.
    pub fn submit_flow_tx(&self, conn: &Connection, flow: Flow) -> Result<FlowCreated> {
        if self.sqlite().is_none() {
            return Err(Error::Unsupported {
                action: "submit a flow inside a SQLite transaction",
                engine: self.engine().name(),
            });
        }
        let now = self.now_ms();
        let checked = self.check_flow(flow, now)?;
        let out = crate::store::sqlite::jobs::insert_flow(
            conn,
            self.owner(),
            &checked.group,
            checked.rows.clone(),
            now,
        )?;
        Ok(checked.created(out))
    }

    /// [`Queue::submit_flow`] inside the caller's own PostgreSQL transaction, as
    /// [`Queue::enqueue_pg_tx`]: the flow exists if and only if the caller's writes commit.
    ///
    /// # Errors
    ///
    /// As [`Queue::submit_flow`]; [`Error::Unsupported`] on a queue kept in SQLite.
    #[cfg(feature = "postgres")]
    pub fn submit_flow_pg_tx(
        &self,
        client: &mut impl postgres::GenericClient,
        flow: Flow,
    ) -> Result<FlowCreated> {
        use crate::store::postgres::{Foreign, ids, jobs, tenants};
        if !matches!(self.shared.backend, crate::store::Backend::Postgres(_)) {
            return Err(Error::Unsupported {
                action: "submit a flow inside a PostgreSQL transaction",
                engine: self.engine().name(),
            });
        }
        let now = self.now_ms();
        let checked = self.check_flow(flow, now)?;
        let ids = ids::new_ids(now, checked.rows.len());
        let mut sql = Foreign(client);
        if let Some(found) = tenants::insert_flow_group(&mut sql, &checked.group)? {
            return Ok(checked.created(found));
        }
        let out = jobs::insert_all(&mut sql, self.owner(), checked.rows.clone(), ids, now)?;
        Ok(checked.created(FlowInsert::Created(out)))
    }

    fn after_flow(&self, checked: CheckedFlow, out: FlowInsert, now: i64) -> Result<FlowCreated> {
        match &out {
            FlowInsert::Created(jobs) => {
                self.after_enqueue(jobs, now);
                tracing::info!(group_id = %checked.group.id, jobs = jobs.len(), "jobq: flow submitted");
            }
            FlowInsert::Existing { group_id, .. } => {
                tracing::info!(%group_id, "jobq: flow submitted again: its key names an existing flow");
            }
        }
        Ok(checked.created(out))
    }

    /// Checks a flow: refs, the graph, each job as an enqueue checks it.
    pub(crate) fn check_flow(&self, flow: Flow, now: i64) -> Result<CheckedFlow> {
        if flow.jobs.is_empty() {
            return Err(Error::invalid("jobs", "a flow needs at least one job"));
        }
        if flow.jobs.len() > MAX_FLOW_JOBS {
            return Err(Error::invalid(
                "jobs",
                format!("more than {MAX_FLOW_JOBS} jobs in one flow"),
            ));
        }
        let mut group = self.group_row(&flow.name, flow.metadata, flow.owner.as_deref(), now)?;
        if let Some(key) = flow.key {
            super::check_text("key", &key, 500)?;
            group.flow_key = Some(key);
        }
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(flow.jobs.len());
        for (i, (r, _, _)) in flow.jobs.iter().enumerate() {
            if r.trim().is_empty() || r.chars().count() > 200 {
                return Err(Error::invalid(
                    "ref",
                    format!("job #{i} of the flow: a ref must be 1 to 200 characters"),
                ));
            }
            if index.insert(r.as_str(), i).is_some() {
                return Err(Error::invalid("ref", format!("duplicate ref {r:?}")));
            }
        }
        // Each job's edges: refs of the flow, or ids of existing jobs.
        let mut inside: Vec<Vec<usize>> = vec![Vec::new(); flow.jobs.len()];
        let mut outside: Vec<Vec<JobId>> = vec![Vec::new(); flow.jobs.len()];
        for (i, (r, _, after)) in flow.jobs.iter().enumerate() {
            for name in after {
                if let Some(&j) = index.get(name.as_str()) {
                    if j == i {
                        return Err(Error::invalid(
                            "after",
                            format!("job {r:?} waits for itself: a cycle"),
                        ));
                    }
                    if !inside[i].contains(&j) {
                        inside[i].push(j);
                    }
                } else if let Ok(id) = name.parse::<JobId>() {
                    outside[i].push(id);
                } else {
                    return Err(Error::invalid(
                        "after",
                        format!(
                            "job {r:?} waits for {name:?}: no job of the flow has that ref, and it is not a job id"
                        ),
                    ));
                }
            }
        }
        let order = topological(&inside).map_err(|cycle| {
            let names: Vec<&str> = cycle.iter().map(|&i| flow.jobs[i].0.as_str()).collect();
            Error::invalid(
                "after",
                format!(
                    "the refs {} wait for each other: a cycle",
                    names.join(" → ")
                ),
            )
        })?;
        let mut position = vec![0; flow.jobs.len()];
        for (p, &i) in order.iter().enumerate() {
            position[i] = p;
        }
        let mut jobs: Vec<Option<(String, NewJob, Vec<String>)>> =
            flow.jobs.into_iter().map(Some).collect();
        let mut rows = Vec::with_capacity(order.len());
        let mut refs = Vec::with_capacity(order.len());
        for &i in &order {
            let Some((r, mut job, _)) = jobs[i].take() else {
                continue;
            };
            job.after.append(&mut outside[i]);
            if let Some(g) = &job.group_id
                && *g != group.id
            {
                return Err(Error::invalid(
                    "group_id",
                    format!("job {r:?}: the jobs of a flow belong to the flow's group"),
                ));
            }
            job.group_id = Some(group.id.clone());
            if job.owner.is_none() {
                job.owner = group.owner.clone();
            }
            let mut row = self.check(job, now).map_err(|e| name_ref(&r, e))?;
            row.after
                .extend(inside[i].iter().map(|&j| DepRef::Earlier(position[j])));
            // The bound counts the flow's own refs as well as the jobs outside it.
            crate::model::check_dependency_count(row.after.len()).map_err(|e| name_ref(&r, e))?;
            row.flow_ref = Some(r.clone());
            rows.push(row);
            refs.push(r);
        }
        Ok(CheckedFlow { group, rows, refs })
    }
}

/// Names the ref of the refused job.
fn name_ref(r: &str, err: Error) -> Error {
    match err {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("job {r:?} of the flow: {reason}"),
        },
        other => other,
    }
}

/// The jobs in an order where each comes after those it waits for (`after[i]`: the jobs
/// `i` waits for), keeping the given order where it can; or the jobs of a cycle.
fn topological(after: &[Vec<usize>]) -> std::result::Result<Vec<usize>, Vec<usize>> {
    let n = after.len();
    let mut waiting: Vec<usize> = after.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, deps) in after.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BinaryHeap<std::cmp::Reverse<usize>> = (0..n)
        .filter(|&i| waiting[i] == 0)
        .map(std::cmp::Reverse)
        .collect();
    let mut order = Vec::with_capacity(n);
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        order.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.push(std::cmp::Reverse(d));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Walk back from a job left waiting until a job comes round again: that is a cycle.
    let left = (0..n).find(|&i| waiting[i] > 0).unwrap_or(0);
    let mut seen = vec![usize::MAX; n];
    let mut path = Vec::new();
    let mut at = left;
    while seen[at] == usize::MAX {
        seen[at] = path.len();
        path.push(at);
        at = after[at]
            .iter()
            .copied()
            .find(|&d| waiting[d] > 0)
            .unwrap_or(at);
    }
    let mut cycle = path.split_off(seen[at]);
    cycle.reverse();
    cycle.push(cycle[0]);
    Err(cycle)
}

#[cfg(test)]
mod tests {
    use super::topological;

    #[test]
    fn orders_dependencies_first_and_finds_cycles() {
        // 0 ← 1 ← 2, 3 alone.
        assert_eq!(
            topological(&[vec![], vec![0], vec![1], vec![]]).unwrap(),
            vec![0, 1, 2, 3]
        );
        // 2 waits for 1 waits for 2; 0 waits for 2.
        let cycle = topological(&[vec![2], vec![2], vec![1]]).unwrap_err();
        assert_eq!(cycle.first(), cycle.last());
        assert!(cycle.contains(&1) && cycle.contains(&2) && !cycle.contains(&0));
    }
}

/// A flow as its page shows it: the group, and its jobs in the order they can run, each
/// at its level (1 + the highest level of the jobs of the flow it waits for).
#[derive(Debug, Clone, Serialize)]
pub struct FlowView {
    /// The group, with its stage and progress.
    pub group: crate::Group,
    /// Its jobs by level, then age.
    pub jobs: Vec<FlowNode>,
    /// True when the group has more jobs than the view shows (the first 10,000).
    pub truncated: bool,
}

/// One job of a [`FlowView`].
#[derive(Debug, Clone, Serialize)]
pub struct FlowNode {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its stored status.
    pub status: crate::Status,
    /// As jobq shows it (`scheduled` for a job whose `run_after` lies ahead).
    pub shown_status: &'static str,
    /// Its stage.
    pub stage: Option<String>,
    /// Its progress, 0 to 1.
    pub progress: f64,
    /// Its local name in the flow.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub flow_ref: Option<String>,
    /// 0 for a job that waits for no job of the flow.
    pub level: usize,
    /// The jobs it waits for (of the flow, or outside it).
    pub after: Vec<JobId>,
}

impl Queue {
    /// A flow's group and its jobs in the order they can run, for its page.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing (or another owner's) group.
    pub fn flow_view(&self, group_id: &str) -> Result<FlowView> {
        const SHOWN: usize = 10_000;
        let group = self.get_group(group_id)?;
        let page = self.list(
            &crate::JobFilter::new()
                .group(group_id.to_string())
                .limit(SHOWN),
        )?;
        let truncated = page.next.is_some();
        let edges = self.engine().group_edges(group_id, SHOWN * 20)?;
        let mut refs: HashMap<JobId, String> = self
            .engine()
            .flow_refs(group_id)?
            .into_iter()
            .map(|(r, id)| (id, r))
            .collect();
        let mut after: HashMap<JobId, Vec<JobId>> = HashMap::new();
        for (job, dep) in edges {
            after.entry(job).or_default().push(dep);
        }
        let mut jobs = page.jobs;
        jobs.reverse(); // oldest first
        let position: HashMap<JobId, usize> = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| (j.id.clone(), i))
            .collect();
        let inside: Vec<Vec<usize>> = jobs
            .iter()
            .map(|j| {
                after
                    .get(&j.id)
                    .map(|deps| {
                        deps.iter()
                            .filter_map(|d| position.get(d).copied())
                            .collect()
                    })
                    .unwrap_or_default()
            })
            .collect();
        let order = topological(&inside).unwrap_or_else(|_| (0..jobs.len()).collect());
        let mut level = vec![0; jobs.len()];
        for &i in &order {
            level[i] = inside[i].iter().map(|&d| level[d] + 1).max().unwrap_or(0);
        }
        let mut nodes: Vec<FlowNode> = jobs
            .into_iter()
            .enumerate()
            .map(|(i, j)| FlowNode {
                after: after.remove(&j.id).unwrap_or_default(),
                flow_ref: refs.remove(&j.id),
                shown_status: j.shown_status(),
                id: j.id,
                kind: j.kind,
                status: j.status,
                stage: j.stage,
                progress: j.progress,
                level: level[i],
            })
            .collect();
        nodes.sort_by(|a, b| a.level.cmp(&b.level).then_with(|| a.id.cmp(&b.id)));
        Ok(FlowView {
            group,
            jobs: nodes,
            truncated,
        })
    }
}

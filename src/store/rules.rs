//! The rules both engines follow, written once: what a batch adds to each owner's
//! spending, when a key holds, the refusals both engines word the same way.

use std::collections::BTreeMap;

use crate::job::{JobId, Status};
use crate::model::NewRow;

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

/// The refusal of a schedule past its owner's allowance.
pub(crate) fn too_many_schedules(owner: &str, max: usize) -> crate::error::Error {
    crate::error::Error::invalid(
        "name",
        format!(
            "owner {owner} already has {max} schedules, the most allowed (remove one, or raise the limit)"
        ),
    )
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

/// A sum of costs from its two parts, `sum(cost_cents >> 20)` and
/// `sum(cost_cents & 1048575)`: each part of each cost is below 2^20, so neither sum can
/// overflow SQLite's 64-bit integers for any number of jobs a file can hold, and the whole
/// is put together in 128 bits.
pub(crate) fn exact_sum(high: i64, low: i64) -> i128 {
    (i128::from(high) << 20) + i128::from(low)
}

/// A 128-bit sum as an `i64` for reports, saturating (only a sum of over 9 million jobs at
/// the largest cost gets there).
pub(crate) fn saturate(sum: i128) -> i64 {
    i64::try_from(sum).unwrap_or(if sum < 0 { i64::MIN } else { i64::MAX })
}

/// The jobs of a batch with their ids and places, split the way both engines insert them:
/// plain jobs (no key, no dependencies, no options) in bulk statements, the others one by
/// one. Each owner's share of the plain jobs' costs is checked once, by `check_budget`,
/// before anything is written.
pub(crate) type Placed<I> = Vec<(usize, (NewRow, I))>;

pub(crate) fn split_batch<I>(
    jobs: Vec<NewRow>,
    ids: Vec<I>,
    mut check_budget: impl FnMut(&str, i128) -> crate::error::Result<()>,
) -> crate::error::Result<(Placed<I>, Placed<I>)> {
    let (plain, special): (Placed<I>, Placed<I>) = jobs
        .into_iter()
        .zip(ids)
        .enumerate()
        .partition(|(_, (job, _))| job.is_plain());
    for (owner, cost) in costs_by_owner(plain.iter().map(|(_, (job, _))| job)) {
        check_budget(owner, cost)?;
    }
    Ok((plain, special))
}

/// Whether `cost` more fits an owner's `budget` after what it has `spent`; the refusal
/// names the owner and the three figures.
pub(crate) fn within_budget(
    owner: &str,
    budget: i64,
    spent: i128,
    cost: i128,
) -> crate::error::Result<()> {
    if spent + cost > i128::from(budget) {
        return Err(crate::error::Error::BudgetExceeded {
            owner: owner.to_string(),
            budget_cents: budget,
            spent_cents: saturate(spent),
            requested_cents: saturate(cost),
        });
    }
    Ok(())
}

/// The owner a job of a group takes: the group's, unless the job names one. A group that
/// does not exist, or belongs to another owner than the handle's `scope`, is not found.
pub(crate) fn group_owner(
    group: &str,
    found: Option<Option<String>>,
    scope: Option<&str>,
    job_owner: Option<String>,
) -> crate::error::Result<Option<String>> {
    let not_found = || crate::error::Error::NotFound {
        what: "group",
        id: group.to_string(),
    };
    let group_owner = found.ok_or_else(not_found)?;
    if scope.is_some() && group_owner.as_deref() != scope {
        return Err(not_found());
    }
    Ok(job_owner.or(group_owner))
}

/// The refusal of a delete while a job that has not ended waits for this one.
pub(crate) fn delete_refused(job: &JobId, from: Status, waiting: &JobId) -> crate::error::Error {
    crate::error::Error::InvalidTransition {
        job: job.clone(),
        from,
        action: format!("delete (job {waiting} waits for it: cancel that first)"),
    }
}

/// The refusal of a cost report that would take a job past the most a job may cost.
pub(crate) fn cost_too_high(job: &JobId, current: i64, cost: i64) -> crate::error::Error {
    use crate::job::MAX_COST_CENTS;
    crate::error::Error::invalid(
        "cost_cents",
        format!(
            "job {job}: adding {cost} to its {current} cents would pass the most a job may cost ({MAX_COST_CENTS} cents)"
        ),
    )
}

/// How many finished jobs one statement of a prune deletes: short transactions, so that
/// writers are never held up for long.
pub(crate) const PRUNE_CHUNK_ROWS: i64 = 2_000;

/// The overview's plan: the counts asked for, and the counts of every job the handle sees
/// (`scope`) for its health, counted again only when the query narrows them.
pub(crate) fn whole_query<'a>(
    scope: Option<&'a str>,
    query: crate::model::CountQuery<'a>,
) -> Option<crate::model::CountQuery<'a>> {
    let everything = crate::model::CountQuery {
        owner: scope,
        group: None,
        queue: None,
    };
    let narrowed = query.owner != scope || query.group.is_some() || query.queue.is_some();
    narrowed.then_some(everything)
}

/// A batch's results in its order, once its plain jobs are written: each plain job
/// `queued` under its id, then each other job inserted by `insert_one` after the ones
/// before it (which it may wait for: they are handed to it). A refusal names its place.
pub(crate) fn batch_results<I>(
    plain: &Placed<I>,
    special: Placed<I>,
    id_of: impl Fn(&I) -> JobId,
    mut insert_one: impl FnMut(
        NewRow,
        I,
        &[Option<crate::job::Enqueued>],
    ) -> crate::error::Result<crate::job::Enqueued>,
) -> crate::error::Result<Vec<crate::job::Enqueued>> {
    let mut out: Vec<Option<crate::job::Enqueued>> = vec![None; plain.len() + special.len()];
    for (i, (_, id)) in plain {
        out[*i] = Some(crate::job::Enqueued {
            job_id: id_of(id),
            status: Status::Queued,
            already_existed: false,
            group_id: None,
        });
    }
    for (i, (job, id)) in special {
        out[i] = Some(insert_one(job, id, &out).map_err(|e| at_index(i, e))?);
    }
    Ok(out.into_iter().flatten().collect())
}

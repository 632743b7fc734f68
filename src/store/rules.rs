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

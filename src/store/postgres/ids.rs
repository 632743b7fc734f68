//! Job ids on PostgreSQL: UUIDv7 values that rise in order within this process.

use std::sync::Mutex;

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::job::JobId;

/// The last row key this process handed out: ids from one process increase, and never run
/// behind its clock. (Ids from several hosts interleave by their clocks.)
static LAST_KEY: Mutex<Option<i64>> = Mutex::new(None);

/// `n` new job ids for jobs enqueued at `now`.
pub(crate) fn new_ids(now: i64, n: usize) -> Vec<Uuid> {
    let mut last = LAST_KEY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let ids = crate::job::ids_after(*last, now, n);
    if let Some(id) = ids.last() {
        *last = Some(crate::job::key_of(id));
    }
    ids.iter()
        .map(|id| Uuid::parse_str(id).unwrap_or_else(|_| Uuid::now_v7()))
        .collect()
}

/// The UUID of a job id; an id that is not one names no job.
pub(super) fn uuid_of(id: &JobId) -> Result<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| Error::job_not_found(id))
}

pub(super) fn job_id(uuid: Uuid) -> JobId {
    JobId::from_db(uuid.hyphenated().to_string())
}

pub(super) fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

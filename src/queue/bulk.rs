//! Admin actions on many jobs at once: cancel, retry or delete the jobs named, or every job
//! a filter matches. Each job is its own transaction, as the single actions are: a job that
//! may not take the action is refused (and named), the others change.

use serde::Serialize;

use super::{JobFilter, Queue};
use crate::error::{Error, Result};
use crate::job::JobId;

/// What [`Queue::bulk`] does to each job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BulkAction {
    /// [`Queue::cancel`].
    Cancel,
    /// [`Queue::retry`].
    Retry,
    /// [`Queue::delete`].
    Delete,
}

impl std::str::FromStr for BulkAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<BulkAction> {
        match s {
            "cancel" => Ok(BulkAction::Cancel),
            "retry" => Ok(BulkAction::Retry),
            "delete" => Ok(BulkAction::Delete),
            other => Err(Error::invalid(
                "action",
                format!("{other:?} is not an action (cancel, retry or delete)"),
            )),
        }
    }
}

/// A job a bulk action left alone, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BulkRefusal {
    /// The job.
    pub job_id: JobId,
    /// Why it was refused, in words.
    pub reason: String,
}

/// What a bulk action did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BulkOutcome {
    /// Jobs changed.
    pub changed: usize,
    /// Jobs refused, with the reason (the first [`MAX_REFUSALS_SHOWN`]).
    pub refused: Vec<BulkRefusal>,
    /// Jobs refused in all.
    pub refused_total: usize,
}

/// The most refusals a [`BulkOutcome`] lists; it counts them all.
pub const MAX_REFUSALS_SHOWN: usize = 1000;

/// Jobs a filtered bulk action reads at a time.
const PAGE: usize = 1000;

impl BulkOutcome {
    fn refuse(&mut self, job_id: JobId, error: &Error) {
        self.refused_total += 1;
        if self.refused.len() < MAX_REFUSALS_SHOWN {
            self.refused.push(BulkRefusal {
                job_id,
                reason: error.to_string(),
            });
        }
    }
}

impl Queue {
    /// Cancels, retries or deletes each of `ids`, each in its own transaction, as
    /// [`Queue::cancel`], [`Queue::retry`] and [`Queue::delete`] do one. A job the action
    /// does not apply to (another status, another owner's, not found) is refused and named;
    /// the others change.
    ///
    /// # Errors
    ///
    /// Database errors only (the jobs changed before one stay changed).
    pub fn bulk(&self, action: BulkAction, ids: &[JobId]) -> Result<BulkOutcome> {
        let mut outcome = BulkOutcome::default();
        for id in ids {
            self.bulk_one(action, id, &mut outcome)?;
        }
        Ok(outcome)
    }

    /// The same on every job `filter` matches (its limit and cursor aside), newest first.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a filter the listing refuses; database errors.
    pub fn bulk_matching(&self, action: BulkAction, filter: &JobFilter) -> Result<BulkOutcome> {
        let mut outcome = BulkOutcome::default();
        let mut page_filter = filter.clone().limit(PAGE).first_page();
        loop {
            let page = self.list(&page_filter)?;
            for job in &page.jobs {
                self.bulk_one(action, &job.id, &mut outcome)?;
            }
            match page.next {
                Some(next) => page_filter = page_filter.after(next),
                None => return Ok(outcome),
            }
        }
    }

    fn bulk_one(&self, action: BulkAction, id: &JobId, outcome: &mut BulkOutcome) -> Result<()> {
        let done = match action {
            BulkAction::Cancel => self.cancel(id),
            BulkAction::Retry => self.retry(id),
            BulkAction::Delete => self.delete(id),
        };
        match done {
            Ok(_) => outcome.changed += 1,
            Err(e) if refusal(&e) => outcome.refuse(id.clone(), &e),
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

/// Whether an error refuses one job (the action goes on with the others) rather than
/// stopping it.
fn refusal(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidTransition { .. }
            | Error::NotFound { .. }
            | Error::InvalidInput { .. }
            | Error::Forbidden { .. }
            | Error::BudgetExceeded { .. }
    )
}

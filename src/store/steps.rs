//! Durable steps and events: a job's stored steps (written under its lease), and the
//! events that end its waits.

use crate::error::Result;
use crate::job::{JobId, Lease};
use crate::model::{Emitted, EventQuery, EventRow, Scope, Step};

/// Durable steps and events.
pub(crate) trait StepStore {
    /// The stored steps of a job, in the order they began; `None` when the scope does not
    /// see the job.
    fn steps(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Vec<Step>>>;

    /// Stores (or replaces) a step of the job `lease` holds; `LockLost` or `NotFound` when
    /// it holds none.
    fn put_step(&self, scope: Scope<'_>, lease: &Lease, step: &Step) -> Result<()>;

    /// The first stored event a wait takes, if there is one.
    fn find_event(&self, query: EventQuery<'_>) -> Result<Option<EventRow>>;

    /// Stores an event of `owner` (`None`: no owner) and, in the same transaction, wakes
    /// every job of that owner waiting for its name (`queued` at once). Returns the event
    /// and the jobs it woke.
    fn emit_event(
        &self,
        owner: Option<&str>,
        name: &str,
        payload: Option<&str>,
        now: i64,
    ) -> Result<(Emitted, Vec<JobId>)>;

    /// Deletes events emitted before `cutoff`; how many.
    fn prune_events(&self, cutoff: i64) -> Result<usize>;
}

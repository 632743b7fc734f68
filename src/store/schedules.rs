//! Schedules, and the firing of their due slots.

use crate::error::Result;
use crate::job::Enqueued;
use crate::model::{Firing, ScheduleChange, SchedulePut, ScheduleRow, Scope};

/// Schedules, and the firing of their due slots.
pub(crate) trait ScheduleStore {
    /// Inserts a schedule, or replaces the one of that name (keeping whether it is paused
    /// and when it last fired); `Duplicate` when its owner has one of that name and this
    /// is no replacement, `InvalidInput` when the owner would have more than its allowance.
    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()>;

    /// The schedules this scope sees, by owner and name; with `due`, only those not paused
    /// whose next firing is at `due` or earlier.
    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>>;

    /// Pauses, resumes or removes the schedule `name` of `owner`; false when there is none.
    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool>;

    /// Fires a schedule's due slots; `None` when another process fired them first (or the
    /// schedule was paused or removed meanwhile).
    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>>;
}

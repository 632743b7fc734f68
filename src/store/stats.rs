//! What the queue looks like: counts, health rows, timings, the other views.

use crate::error::Result;
use crate::model::{
    CostGrouping, CostRow, CountQuery, Counts, DeadJob, FinishedJob, HealthQuery, OverviewRows,
    QueueRows, RollupQuery, RollupRow, RunningJob, Scope, StageCount,
};

/// What the queue looks like: counts, health rows, timings, the other views.
pub(crate) trait StatsStore {
    /// What is wrong with the database under this process (a SQLite file deleted or
    /// replaced), if anything.
    fn file_problem(&self) -> Option<String> {
        None
    }

    /// The counts of `query` and, in the same snapshot, the counts of every job and the
    /// health rows (for the overview, whose health covers the whole queue).
    fn overview(
        &self,
        scope: Scope<'_>,
        query: CountQuery<'_>,
        health: HealthQuery,
    ) -> Result<OverviewRows>;

    /// The counts of `query`.
    fn counts(&self, query: CountQuery<'_>, now: i64) -> Result<Counts>;

    /// Every finished job since `since` (of `queue`), one call of `each` per job.
    fn durations(
        &self,
        scope: Scope<'_>,
        since: i64,
        queue: Option<&str>,
        each: &mut dyn FnMut(FinishedJob),
    ) -> Result<()>;

    /// The sums of the rollup rows `query` asks for, of `scope`'s jobs.
    fn rollup_rows(&self, scope: Scope<'_>, query: RollupQuery<'_>) -> Result<Vec<RollupRow>>;

    /// Folds the rollups' minutes that start before `minutes_before` into hours, and hours
    /// that start before `hours_before` into the all-time rows, in one transaction. Returns
    /// how many rows were folded.
    fn fold_rollups(&self, minutes_before: i64, hours_before: i64) -> Result<usize>;

    fn stages(&self, scope: Scope<'_>) -> Result<Vec<StageCount>>;

    fn running(&self, scope: Scope<'_>, now: i64) -> Result<Vec<RunningJob>>;

    fn dead_letter(&self, scope: Scope<'_>, limit: usize) -> Result<Vec<DeadJob>>;

    fn costs(&self, scope: Scope<'_>, by: CostGrouping) -> Result<Vec<CostRow>>;

    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn queue_rows(&self, now: i64) -> Result<QueueRows>;
}

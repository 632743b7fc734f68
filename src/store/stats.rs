//! What the queue looks like: counts, health rows, timings, the other views.

use crate::error::Result;
use crate::job::Status;
use crate::model::{
    CostGrouping, CostRow, CountQuery, Counts, DeadJob, FinishedJob, HealthQuery, Histogram,
    OverviewRows, QueueRows, RollupQuery, RollupRow, RunningJob, Scope, StageCount,
};
use std::collections::BTreeMap;

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

    /// The run times and queue waits of every finished job, by status, in buckets of
    /// `bounds_ms` (ascending): what the metrics' histograms show. Engines that can count
    /// them where the rows are do; the others go through [`StatsStore::durations`].
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    fn histograms(&self, bounds_ms: &[i64]) -> Result<Vec<Histogram>> {
        let mut out: BTreeMap<(Status, bool), Histogram> = BTreeMap::new();
        self.durations(None, i64::MIN, None, &mut |job| {
            let status = job.status;
            for (wait_side, ms) in [(false, job.run_ms), (true, job.wait_ms)] {
                let h = out.entry((status, wait_side)).or_insert_with(|| Histogram {
                    status: Some(status),
                    wait: wait_side,
                    buckets: vec![0; bounds_ms.len() + 1],
                    ..Histogram::default()
                });
                h.buckets[bounds_ms.partition_point(|b| *b < ms)] += 1;
                h.count += 1;
                h.sum_ms += i128::from(ms);
            }
        })?;
        Ok(out.into_values().collect())
    }

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

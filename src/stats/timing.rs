//! Run times and queue waits of finished jobs, with exact nearest-rank percentiles.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::clock::millis;
use crate::error::Result;
use crate::job::Status;
use crate::queue::Queue;
use crate::store::Engine;

/// Run time and queue wait of finished jobs of one status (and kind), in seconds.
///
/// Percentiles are exact, by nearest rank: the value at rank `ceil(p × n)` of the sorted
/// values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timing {
    /// The status (`succeeded`, `failed` or `cancelled`).
    pub status: Status,
    /// The kind, when timings are broken down by kind.
    pub kind: Option<String>,
    /// Jobs measured.
    pub count: i64,
    /// Mean run time (`completed_at - started_at` of the last attempt).
    pub avg_seconds: f64,
    /// Median run time.
    pub p50_seconds: f64,
    /// 95th percentile run time.
    pub p95_seconds: f64,
    /// Longest run time.
    pub max_seconds: f64,
    /// Mean queue wait (`started_at - run_after`: from when the job became ready — its
    /// enqueue, scheduled time, retry time or release — to its last attempt's start).
    pub wait_avg_seconds: f64,
    /// Median queue wait.
    pub wait_p50_seconds: f64,
    /// 95th percentile queue wait.
    pub wait_p95_seconds: f64,
    /// Longest queue wait.
    pub wait_max_seconds: f64,
}

/// Which finished jobs [`Queue::timing`] measures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct TimingFilter {
    since: Option<Duration>,
    by_kind: bool,
    queue: Option<String>,
}

impl TimingFilter {
    /// All finished jobs, by status.
    pub fn new() -> TimingFilter {
        TimingFilter::default()
    }

    /// Only jobs that finished within this long before now.
    pub fn within(mut self, window: Duration) -> Self {
        self.since = Some(window);
        self
    }

    /// One row per status and kind.
    pub fn by_kind(mut self) -> Self {
        self.by_kind = true;
        self
    }

    /// Only the jobs of one queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }
}

impl Queue {
    /// Run times and queue waits of finished jobs, per status (and kind), with exact
    /// percentiles.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn timing(&self, filter: &TimingFilter) -> Result<Vec<Timing>> {
        let since = filter
            .since
            .map_or(i64::MIN, |w| self.now_ms().saturating_sub(millis(w)));
        let groups = durations(
            self.engine(),
            self.owner(),
            since,
            filter.queue.as_deref(),
            filter.by_kind,
        )?;
        let mut timings: Vec<Timing> = groups
            .into_iter()
            .map(|((status, kind), d)| Timing {
                status,
                kind,
                count: d.run.count as i64,
                avg_seconds: d.run.mean(),
                p50_seconds: d.run.percentile(50),
                p95_seconds: d.run.percentile(95),
                max_seconds: d.run.max(),
                wait_avg_seconds: d.wait.mean(),
                wait_p50_seconds: d.wait.percentile(50),
                wait_p95_seconds: d.wait.percentile(95),
                wait_max_seconds: d.wait.max(),
            })
            .collect();
        // By status name, as the SQL view orders them.
        timings.sort_by(|a, b| (a.status.as_str(), &a.kind).cmp(&(b.status.as_str(), &b.kind)));
        Ok(timings)
    }
}

/// Every value seen, counted by value: exact percentiles in memory proportional to the
/// number of distinct values (durations in whole milliseconds), with no sort.
#[derive(Debug, Clone, Default)]
pub(crate) struct Distribution {
    pub count: u64,
    pub sum_ms: i128,
    pub values: BTreeMap<i64, u64>,
}

impl Distribution {
    fn add(&mut self, ms: i64) {
        self.count += 1;
        self.sum_ms += i128::from(ms);
        *self.values.entry(ms).or_default() += 1;
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum_ms as f64 / self.count as f64 / 1000.0
        }
    }

    pub fn max(&self) -> f64 {
        self.values
            .keys()
            .next_back()
            .map_or(0.0, |ms| *ms as f64 / 1000.0)
    }

    /// The nearest-rank percentile: the value at rank `ceil(p × n / 100)`.
    pub fn percentile(&self, p: u64) -> f64 {
        let rank = (p * self.count).div_ceil(100).max(1);
        let mut seen = 0;
        for (ms, n) in &self.values {
            seen += n;
            if seen >= rank {
                return *ms as f64 / 1000.0;
            }
        }
        0.0
    }
}

/// Run times and queue waits of one group of finished jobs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durations {
    pub run: Distribution,
    pub wait: Distribution,
}

/// One pass over the finished jobs since `since`: durations by status (and kind).
pub(crate) fn durations(
    engine: &dyn Engine,
    owner: Option<&str>,
    since: i64,
    queue: Option<&str>,
    by_kind: bool,
) -> Result<BTreeMap<(Status, Option<String>), Durations>> {
    let mut groups: BTreeMap<(Status, Option<String>), Durations> = BTreeMap::new();
    engine.durations(owner, since, queue, &mut |job| {
        let kind = by_kind.then_some(job.kind);
        let group = groups.entry((job.status, kind)).or_default();
        group.run.add(job.run_ms);
        group.wait.add(job.wait_ms);
    })?;
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_and_bucket_counts() {
        let mut d = Distribution::default();
        for ms in [3000, 1000, 10_000, 2000] {
            d.add(ms);
        }
        // Sorted: 1, 2, 3, 10 s. p50 is rank ceil(2) = 2; p95 is rank ceil(3.8) = 4.
        assert_eq!(
            (d.percentile(50), d.percentile(95), d.max(), d.mean()),
            (2.0, 10.0, 10.0, 4.0)
        );
        assert_eq!((d.percentile(1), d.percentile(100)), (1.0, 10.0));
        let mut one = Distribution::default();
        one.add(7);
        assert_eq!((one.percentile(50), one.percentile(95)), (0.007, 0.007));
        assert_eq!(Distribution::default().percentile(50), 0.0);
    }
}

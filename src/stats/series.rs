//! Counts and latencies over time, read from the rollups: one point per step, oldest first,
//! including empty steps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::clock::millis;
use crate::error::{Error, Result};
use crate::job::Timestamp;
use crate::model::{HOUR_MS, MINUTE_MS, Metric, RollupQuery, RollupRow, SLOT_BOUNDS_MS};
use crate::queue::Queue;

/// The most points one series may hold.
pub const MAX_SERIES_POINTS: u64 = 10_000;

/// What [`Queue::series`] covers: the last `window` (default an hour) in steps of `step`
/// (default a minute; a whole number of minutes, or of hours from an hour up), of one queue
/// or kind if given.
///
/// # Examples
///
/// ```
/// use jobq::SeriesQuery;
/// use std::time::Duration;
///
/// let q = SeriesQuery::new()
///     .window(Duration::from_secs(6 * 3600))
///     .step(Duration::from_secs(600))
///     .queue("emails");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct SeriesQuery {
    window: Duration,
    step: Duration,
    queue: Option<String>,
    kind: Option<String>,
}

impl Default for SeriesQuery {
    fn default() -> Self {
        SeriesQuery {
            window: Duration::from_secs(3600),
            step: Duration::from_secs(60),
            queue: None,
            kind: None,
        }
    }
}

impl SeriesQuery {
    /// The last hour, minute by minute, of every queue and kind.
    pub fn new() -> SeriesQuery {
        SeriesQuery::default()
    }

    /// How far back the series reaches.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long each point covers.
    pub fn step(mut self, step: Duration) -> Self {
        self.step = step;
        self
    }

    /// Only jobs of this queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = Some(queue.into());
        self
    }

    /// Only jobs of this kind.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// The step and the number of points, or why they do not make a series.
    fn shape(&self) -> Result<(i64, i64)> {
        let step = millis(self.step);
        let window = millis(self.window);
        let unit = if step >= HOUR_MS { HOUR_MS } else { MINUTE_MS };
        if step < MINUTE_MS || step % unit != 0 {
            return Err(Error::invalid(
                "step",
                format!(
                    "{} is not a whole number of minutes (or, from an hour up, of hours)",
                    crate::format_duration(self.step)
                ),
            ));
        }
        if window < step {
            return Err(Error::invalid(
                "window",
                format!(
                    "{} is shorter than the step ({})",
                    crate::format_duration(self.window),
                    crate::format_duration(self.step)
                ),
            ));
        }
        let points = (window + step - 1) / step;
        if points > MAX_SERIES_POINTS as i64 {
            return Err(Error::invalid(
                "window",
                format!(
                    "{} in steps of {} is {points} points; at most {MAX_SERIES_POINTS}",
                    crate::format_duration(self.window),
                    crate::format_duration(self.step)
                ),
            ));
        }
        Ok((step, points))
    }
}

/// Percentiles of a histogram, in milliseconds; `None` with nothing measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The median.
    pub p50: Option<f64>,
    /// The 95th percentile.
    pub p95: Option<f64>,
    /// The 99th percentile.
    pub p99: Option<f64>,
}

impl Percentiles {
    /// From slot counts (`SLOT_BOUNDS_MS`): the value at rank `ceil(p × n)`, placed by
    /// linear interpolation inside its slot (the overflow slot reads as the last bound).
    pub(crate) fn of(slots: &BTreeMap<i64, i64>) -> Percentiles {
        let total: i64 = slots.values().sum();
        let at = |p: f64| -> Option<f64> {
            if total <= 0 {
                return None;
            }
            let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
            let mut before = 0;
            for (&slot, &n) in slots {
                if n <= 0 {
                    continue;
                }
                if before + n >= rank {
                    let index = usize::try_from(slot).unwrap_or(0);
                    let last = SLOT_BOUNDS_MS.len() - 1;
                    let upper = SLOT_BOUNDS_MS[index.min(last)] as f64;
                    if index > last {
                        return Some(upper);
                    }
                    let lower = if index == 0 {
                        0.0
                    } else {
                        SLOT_BOUNDS_MS[index - 1] as f64
                    };
                    let within = (rank - before) as f64 / n as f64;
                    return Some(((lower + (upper - lower) * within) * 10.0).round() / 10.0);
                }
                before += n;
            }
            None
        };
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

/// One step of a [`Series`]: what happened to jobs from `t` for one step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SeriesPoint {
    /// The step's start.
    pub t: Timestamp,
    /// Jobs inserted.
    pub enqueued: i64,
    /// Claims (a worker's or an admin's).
    pub started: i64,
    /// Jobs that succeeded.
    pub succeeded: i64,
    /// Jobs that failed for good.
    pub failed: i64,
    /// Attempts that failed and will run again.
    pub retried: i64,
    /// Jobs cancelled.
    pub cancelled: i64,
    /// Running jobs snoozed.
    pub snoozed: i64,
    /// Running jobs given back unspent.
    pub released: i64,
    /// Finished jobs sent back to run (manual retries).
    pub revived: i64,
    /// Running jobs that parked themselves (a sleep, a wait for an event).
    pub waited: i64,
    /// Run time of the attempts that ended in the step.
    pub run_ms: Percentiles,
    /// Queue wait of the claims in the step (from when the job was due).
    pub wait_ms: Percentiles,
}

impl SeriesPoint {
    fn add(&mut self, metric: Metric, n: i64) {
        let field = match metric {
            Metric::Enqueued => &mut self.enqueued,
            Metric::Started => &mut self.started,
            Metric::Succeeded => &mut self.succeeded,
            Metric::Failed => &mut self.failed,
            Metric::Retried => &mut self.retried,
            Metric::Cancelled => &mut self.cancelled,
            Metric::Snoozed => &mut self.snoozed,
            Metric::Released => &mut self.released,
            Metric::Revived => &mut self.revived,
            Metric::Waited => &mut self.waited,
            Metric::RunMs | Metric::WaitMs => return,
        };
        *field += n;
    }
}

/// Counts and latencies over time: see [`Queue::series`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Series {
    /// The length of a step, in seconds.
    pub step_s: i64,
    /// One point per step, oldest first; the last is the step under way.
    pub points: Vec<SeriesPoint>,
}

impl Queue {
    /// What happened to jobs over the last `query.window`, step by step: arrivals, claims,
    /// successes, failures, retries, cancels, snoozes and releases, and the p50/p95/p99 of
    /// run time and queue wait. Read from the rollups the transactions keep, so it costs
    /// the same with ten jobs or ten million; an owner-scoped handle sees its owner's jobs
    /// only. Steps of an hour or more also cover what the rollups keep by the hour (minutes
    /// are kept 48 hours by default, see [`crate::RollupRetention`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a step that is not a whole number of minutes (or of
    /// hours, from an hour up), a window shorter than the step, or more than
    /// [`MAX_SERIES_POINTS`] points.
    pub fn series(&self, query: &SeriesQuery) -> Result<Series> {
        let (step, points) = query.shape()?;
        let now = self.now_ms();
        let last = now - now.rem_euclid(step);
        let from = last - (points - 1) * step;
        let rows = self.engine().rollup_rows(
            self.owner(),
            RollupQuery {
                from,
                to: last + step,
                queue: query.queue.as_deref(),
                kind: query.kind.as_deref(),
                by_queue_kind: false,
                step,
            },
        )?;
        Ok(series_of(&rows, from, step, points))
    }
}

impl Queue {
    /// The whole of `query.window` (whole minutes, up to the minute under way) as one point:
    /// its counts and the percentiles of every run and wait in it (which the points of a
    /// series cannot give: percentiles do not add up). `query.step` is not used.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a window shorter than a minute.
    pub fn series_summary(&self, query: &SeriesQuery) -> Result<SeriesPoint> {
        Ok(self
            .summaries(query, false)?
            .pop()
            .map(|(_, point)| point)
            .unwrap_or_default())
    }

    /// [`Queue::series_summary`] for each queue that had anything happen in the window, by
    /// name, in one read.
    ///
    /// # Errors
    ///
    /// As [`Queue::series_summary`].
    pub fn series_summary_by_queue(
        &self,
        query: &SeriesQuery,
    ) -> Result<Vec<(String, SeriesPoint)>> {
        self.summaries(query, true)
    }

    fn summaries(&self, query: &SeriesQuery, by_queue: bool) -> Result<Vec<(String, SeriesPoint)>> {
        let minutes = millis(query.window) / MINUTE_MS;
        if minutes < 1 {
            return Err(Error::invalid(
                "window",
                format!(
                    "{} is shorter than a minute",
                    crate::format_duration(query.window)
                ),
            ));
        }
        let now = self.now_ms();
        let last = now - now.rem_euclid(MINUTE_MS);
        let from = last - (minutes - 1) * MINUTE_MS;
        let rows = self.engine().rollup_rows(
            self.owner(),
            RollupQuery {
                from,
                to: last + MINUTE_MS,
                queue: query.queue.as_deref(),
                kind: query.kind.as_deref(),
                by_queue_kind: by_queue,
                step: 0,
            },
        )?;
        // Summed over the window in SQL: every row is at `from`, the one step's start.
        let mut names: Vec<&str> = if by_queue {
            rows.iter().map(|r| r.queue.as_str()).collect()
        } else {
            vec![""]
        };
        names.sort_unstable();
        names.dedup();
        Ok(names
            .into_iter()
            .map(|name| {
                let mine = rows.iter().filter(|r| !by_queue || r.queue == name);
                let mut one = series_of(mine, from, MINUTE_MS, 1);
                (name.to_string(), one.points.pop().unwrap_or_default())
            })
            .collect())
    }
}

/// Buckets rollup rows into `points` steps of `step` from `from`.
fn series_of<'r>(
    rows: impl IntoIterator<Item = &'r RollupRow>,
    from: i64,
    step: i64,
    points: i64,
) -> Series {
    let n = usize::try_from(points).unwrap_or(0);
    let mut out: Vec<SeriesPoint> = (0..points)
        .map(|i| SeriesPoint {
            t: Timestamp::from_millis(from + i * step),
            ..SeriesPoint::default()
        })
        .collect();
    let mut run: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(); n];
    let mut wait: Vec<BTreeMap<i64, i64>> = vec![BTreeMap::new(); n];
    for row in rows {
        let Ok(i) = usize::try_from((row.at - from).div_euclid(step)) else {
            continue;
        };
        if i >= n {
            continue;
        }
        match row.metric {
            Metric::RunMs => *run[i].entry(row.slot).or_insert(0) += row.n,
            Metric::WaitMs => *wait[i].entry(row.slot).or_insert(0) += row.n,
            metric => out[i].add(metric, row.n),
        }
    }
    for (i, point) in out.iter_mut().enumerate() {
        point.run_ms = Percentiles::of(&run[i]);
        point.wait_ms = Percentiles::of(&wait[i]);
    }
    Series {
        step_s: step / 1000,
        points: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_read_the_slots() {
        let mut slots = BTreeMap::new();
        assert_eq!(Percentiles::of(&slots), Percentiles::default());
        // 100 measurements in (75, 100] ms.
        slots.insert(15, 100);
        let p = Percentiles::of(&slots);
        assert_eq!(p.p50, Some(87.5));
        assert_eq!(p.p99, Some(99.8));
        // One slow one past the last bound.
        slots.insert(64, 1);
        assert_eq!(Percentiles::of(&slots).p99.map(|v| v < 101.0), Some(true));
        slots.insert(64, 10);
        assert_eq!(Percentiles::of(&slots).p99, Some(100_000_000.0));
    }

    #[test]
    fn shapes_are_checked() {
        let m = Duration::from_secs(60);
        assert_eq!(SeriesQuery::new().shape().unwrap(), (60_000, 60));
        assert!(SeriesQuery::new().step(m / 2).shape().is_err());
        assert!(SeriesQuery::new().step(m * 90).shape().is_err());
        assert!(
            SeriesQuery::new()
                .step(m * 120)
                .window(m * 60)
                .shape()
                .is_err()
        );
        assert_eq!(
            SeriesQuery::new()
                .step(m * 120)
                .window(m * 60 * 24)
                .shape()
                .unwrap(),
            (7_200_000, 12)
        );
        assert!(SeriesQuery::new().window(m * 20_000).shape().is_err());
    }
}

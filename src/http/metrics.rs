//! The queue's figures in the Prometheus text exposition format (version 0.0.4), for
//! `GET /metrics`.
//!
//! Everything is read from the database at each scrape, so every process sees the same
//! figures. The gauges of jobs by status come from the counts the transactions keep; the
//! counters (`jobq_jobs_finished_total`, `jobq_job_transitions_total`) and the histograms by
//! queue and kind (`jobq_attempt_run_seconds`, `jobq_claim_wait_seconds`) from the rollups:
//! pruning never lowers them, and a scrape costs the same with any number of jobs.

use std::fmt::Write as _;

use crate::error::Result;
use crate::job::Status;
use std::collections::BTreeMap;

use crate::model::{Metric, QueueRows, RollupQuery, SLOT_BOUNDS_MS};
use crate::queue::Queue;
use crate::stats::{HealthThresholds, StatsFilter};

/// Escapes a label value: backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v}")
    }
}

impl Queue {
    /// The queue's figures in the Prometheus text exposition format: jobs by status; waiting
    /// and running jobs by queue; the age of the oldest ready job per queue; running and
    /// dead-lettered jobs; finished jobs and other transitions by queue, kind and status
    /// (counters); attempt run time and claim wait by queue and kind (histograms); and the
    /// health, one-hot.
    ///
    /// # Errors
    ///
    /// [`Error::Forbidden`](crate::Error::Forbidden) on an owner-scoped handle (the figures
    /// cover every owner); database errors.
    pub fn metrics(&self) -> Result<String> {
        self.require_admin("read metrics")?;
        let now = self.now_ms();
        let overview = self.overview(&StatsFilter::new(), &HealthThresholds::default())?;
        let mut out = String::with_capacity(4096);

        family(
            &mut out,
            "jobq_jobs",
            "gauge",
            "Jobs in the database by status.",
        );
        for (status, n) in &overview.stats.by_status {
            let _ = writeln!(out, "jobq_jobs{{status=\"{status}\"}} {n}");
        }

        let QueueRows {
            ready: by_queue,
            active,
        } = self.engine().queue_rows(now)?;
        family(
            &mut out,
            "jobq_queue_jobs",
            "gauge",
            "Waiting and running jobs by queue and status.",
        );
        let mut queues: Vec<&str> = by_queue
            .iter()
            .map(|r| r.0.as_str())
            .chain(active.iter().map(|r| r.0.as_str()))
            .collect();
        queues.sort_unstable();
        queues.dedup();
        for queue in &queues {
            let count = |status: Status| {
                active
                    .iter()
                    .find(|a| a.0 == *queue && a.1 == status)
                    .map_or(0, |a| a.2)
            };
            let ready = by_queue.iter().find(|r| r.0 == *queue).map_or(0, |r| r.1);
            let q = label(queue);
            let _ = writeln!(
                out,
                "jobq_queue_jobs{{queue=\"{q}\",status=\"queued\"}} {}",
                ready - count(Status::Retry)
            );
            let _ = writeln!(
                out,
                "jobq_queue_jobs{{queue=\"{q}\",status=\"retry\"}} {}",
                count(Status::Retry)
            );
            let _ = writeln!(
                out,
                "jobq_queue_jobs{{queue=\"{q}\",status=\"running\"}} {}",
                count(Status::Running)
            );
        }
        family(
            &mut out,
            "jobq_ready_oldest_age_seconds",
            "gauge",
            "How long the oldest ready job of each queue has waited (0 when none is ready).",
        );
        for (queue, _, oldest) in &by_queue {
            let age = oldest.map_or(0.0, |o| (now - o).max(0) as f64 / 1000.0);
            let _ = writeln!(
                out,
                "jobq_ready_oldest_age_seconds{{queue=\"{}\"}} {}",
                label(queue),
                number(age)
            );
        }

        family(&mut out, "jobq_running_jobs", "gauge", "Jobs running now.");
        let _ = writeln!(
            out,
            "jobq_running_jobs {}",
            overview.stats.count(Status::Running)
        );
        family(
            &mut out,
            "jobq_dead_letter_jobs",
            "gauge",
            "Jobs in the dead letter (failed for good).",
        );
        let _ = writeln!(
            out,
            "jobq_dead_letter_jobs {}",
            overview.stats.count(Status::Failed)
        );
        self.rollup_metrics(&mut out)?;

        family(
            &mut out,
            "jobq_health",
            "gauge",
            "The queue's health: 1 for the current state, 0 for the others.",
        );
        for state in ["healthy", "degraded", "unhealthy"] {
            let _ = writeln!(
                out,
                "jobq_health{{state=\"{state}\"}} {}",
                u8::from(overview.health.as_str() == state)
            );
        }
        Ok(out)
    }
}

/// The slot bounds a rollup histogram is shown at (`le`, in milliseconds): a subset of
/// `SLOT_BOUNDS_MS`, so each bucket's count is exact.
const ROLLUP_LE_MS: [i64; 19] = [
    5, 10, 24, 56, 100, 237, 562, 1000, 2371, 5623, 10000, 23714, 56234, 100000, 316228, 1000000,
    3162278, 10000000, 100000000,
];

/// Counts by metric and slot.
type BySlot = BTreeMap<Metric, BTreeMap<i64, i64>>;

impl Queue {
    /// The counters and histograms kept by the rollups, all time, by queue and kind: true
    /// counters (pruning never lowers them) that Prometheus can rate.
    fn rollup_metrics(&self, out: &mut String) -> Result<()> {
        let rows = self.engine().rollup_rows(
            None,
            RollupQuery {
                from: i64::MIN,
                to: i64::MAX,
                queue: None,
                kind: None,
                by_queue_kind: true,
                step: 0,
            },
        )?;
        // (queue, kind) → metric → slot → count.
        let mut totals: BTreeMap<(&str, &str), BySlot> = BTreeMap::new();
        for row in &rows {
            *totals
                .entry((row.queue.as_str(), row.kind.as_str()))
                .or_default()
                .entry(row.metric)
                .or_default()
                .entry(row.slot)
                .or_insert(0) += row.n;
        }
        let sum = |m: &BySlot, metric: Metric| -> i64 {
            m.get(&metric).map_or(0, |slots| slots.values().sum())
        };
        family(
            out,
            "jobq_jobs_finished_total",
            "counter",
            "Jobs that finished, by queue, kind and terminal status (kept by the rollups: pruning never lowers it).",
        );
        for ((queue, kind), m) in &totals {
            for (status, metric) in [
                ("succeeded", Metric::Succeeded),
                ("failed", Metric::Failed),
                ("cancelled", Metric::Cancelled),
            ] {
                let _ = writeln!(
                    out,
                    "jobq_jobs_finished_total{{queue=\"{}\",kind=\"{}\",status=\"{status}\"}} {}",
                    label(queue),
                    label(kind),
                    sum(m, metric)
                );
            }
        }
        family(
            out,
            "jobq_job_transitions_total",
            "counter",
            "Other transitions of jobs, by queue, kind and transition (enqueued, started, retried, snoozed, released, revived, waited).",
        );
        for ((queue, kind), m) in &totals {
            for metric in [
                Metric::Enqueued,
                Metric::Started,
                Metric::Retried,
                Metric::Snoozed,
                Metric::Released,
                Metric::Revived,
                Metric::Waited,
            ] {
                let _ = writeln!(
                    out,
                    "jobq_job_transitions_total{{queue=\"{}\",kind=\"{}\",transition=\"{}\"}} {}",
                    label(queue),
                    label(kind),
                    metric.as_str(),
                    sum(m, metric)
                );
            }
        }
        for (name, help, metric) in [
            (
                "jobq_attempt_run_seconds",
                "Run time of every attempt that ended (succeeded, failed or retried), by queue and kind, from the rollups (log-scale slots; no _sum).",
                Metric::RunMs,
            ),
            (
                "jobq_claim_wait_seconds",
                "Queue wait of every claim, from when the job was due, by queue and kind, from the rollups (log-scale slots; no _sum).",
                Metric::WaitMs,
            ),
        ] {
            family(out, name, "histogram", help);
            for ((queue, kind), m) in &totals {
                let Some(slots) = m.get(&metric) else {
                    continue;
                };
                let labels = format!("queue=\"{}\",kind=\"{}\"", label(queue), label(kind));
                for le in ROLLUP_LE_MS {
                    let upto = SLOT_BOUNDS_MS.partition_point(|b| *b <= le) as i64;
                    let n: i64 = slots.range(..upto).map(|(_, n)| n).sum();
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels},le=\"{}\"}} {n}",
                        number(le as f64 / 1000.0)
                    );
                }
                let count: i64 = slots.values().sum();
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
                let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("line\nbreak"), "line\\nbreak");
    }
}

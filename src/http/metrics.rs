//! The queue's figures in the Prometheus text exposition format (version 0.0.4), for
//! `GET /metrics`.
//!
//! Everything is read from the database at each scrape, so every process sees the same
//! figures. Counters of finished jobs count the finished jobs still in the file: pruning
//! lowers them, which Prometheus treats as a counter reset.

use std::fmt::Write as _;

use crate::error::Result;
use crate::job::Status;
use crate::model::QueueRows;
use crate::queue::Queue;
use crate::stats::{HealthThresholds, StatsFilter};

/// Bucket bounds of the duration histograms, in seconds.
const BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

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
    /// dead-lettered jobs; finished jobs by status; run time and queue wait histograms; and
    /// the health, one-hot.
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
        family(
            &mut out,
            "jobq_jobs_finished_total",
            "counter",
            "Finished jobs still in the database, by terminal status (pruning resets it).",
        );
        for status in [Status::Succeeded, Status::Failed, Status::Cancelled] {
            let _ = writeln!(
                out,
                "jobq_jobs_finished_total{{status=\"{status}\"}} {}",
                overview.stats.count(status)
            );
        }

        // Whole milliseconds: a duration of at most a bound is at most its floor.
        let bounds: Vec<i64> = BUCKETS
            .iter()
            .map(|b| (b * 1000.0).floor() as i64)
            .collect();
        let histograms = self.engine().histograms(&bounds)?;
        for (name, help, wait) in [
            (
                "jobq_job_duration_seconds",
                "Run time of finished jobs (completed_at - started_at).",
                false,
            ),
            (
                "jobq_queue_wait_seconds",
                "Queue wait of finished jobs, from when they became ready (started_at - run_after).",
                true,
            ),
        ] {
            family(&mut out, name, "histogram", help);
            for h in histograms.iter().filter(|h| h.wait == wait) {
                let Some(status) = h.status else { continue };
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(&h.buckets) {
                    cumulative += n;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{status=\"{status}\",le=\"{}\"}} {cumulative}",
                        number(*bound)
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{{status=\"{status}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{{status=\"{status}\"}} {}",
                    number(h.sum_ms as f64 / 1000.0)
                );
                let _ = writeln!(out, "{name}_count{{status=\"{status}\"}} {}", h.count);
            }
        }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(label("line\nbreak"), "line\\nbreak");
    }
}

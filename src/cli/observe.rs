//! What is going on: stats, running, workers, dead, timing, stages, costs.

use std::path::Path;
use std::time::Duration;

use crate::{CostGrouping, HealthThresholds, Percentiles, SeriesQuery, StatsFilter, TimingFilter};
use clap::{Args, ValueEnum};
use serde_json::{Value, json};

use super::output::{Table, clean, fmt_opt, fmt_secs, print_json};

use super::{Done, duration, open_existing};

#[derive(Args, Debug)]
pub(super) struct StatsArgs {
    #[arg(long)]
    pub(super) queue: Option<String>,
    /// Counts and latencies over time, one row per step (from the rollups).
    #[arg(long)]
    pub(super) series: bool,
    /// With --series: how far back (default 1h).
    #[arg(long, value_parser = duration, requires = "series")]
    pub(super) window: Option<Duration>,
    /// With --series: how long a row covers (default 1m; from 1h up, whole hours).
    #[arg(long, value_parser = duration, requires = "series")]
    pub(super) step: Option<Duration>,
    /// With --series: only jobs of this kind.
    #[arg(long, requires = "series")]
    pub(super) kind: Option<String>,
    #[arg(long)]
    pub(super) owner: Option<String>,
    #[arg(long)]
    pub(super) group: Option<String>,
}

#[derive(Args, Debug)]
pub(super) struct TimingArgs {
    /// Only jobs that finished within this window.
    #[arg(long, value_parser = duration)]
    pub(super) since: Option<Duration>,
    /// One row per status and kind.
    #[arg(long)]
    pub(super) by_kind: bool,
    #[arg(long)]
    pub(super) queue: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum CostBy {
    Status,
    Owner,
    Group,
}

pub(super) fn stats(db: &Path, json: bool, a: StatsArgs) -> Done {
    if a.series {
        return series(db, json, a);
    }
    let mut filter = StatsFilter::new();
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    if let Some(o) = a.owner {
        filter = filter.owner(o);
    }
    if let Some(g) = a.group {
        filter = filter.group(g);
    }
    let queue = open_existing(db)?;
    let overview = queue.overview(&filter, &HealthThresholds::default())?;
    if json {
        print_json(&overview);
        return Ok(());
    }
    // As jobq shows them: a queued or retrying job whose run_after lies ahead is scheduled.
    let mut table = Table::new(["STATUS", "JOBS"]);
    for name in [
        "blocked",
        "queued",
        "scheduled",
        "waiting",
        "running",
        "retry",
        "succeeded",
        "failed",
        "cancelled",
    ] {
        let n = overview.stats.shown.get(name).copied().unwrap_or(0);
        table.row([name.to_string(), n.to_string()]);
    }
    table.row(["total".to_string(), overview.stats.total.to_string()]);
    table.print();
    let s = overview.summary;
    println!(
        "\nhealth: {}   running: {}   pending: {}   failed: {}   dead letter: {}",
        overview.health,
        s.running,
        s.pending,
        s.failed,
        if s.has_dead_letter { "yes" } else { "no" }
    );
    for r in &overview.reasons {
        println!("  {} ({}): {}", r.check, r.level, r.message);
    }
    Ok(())
}

pub(super) fn running(db: &Path, json: bool) -> Done {
    let queue = open_existing(db)?;
    let jobs = queue.running_jobs()?;
    if json {
        print_json(&json!({ "running": jobs }));
        return Ok(());
    }
    println!("Running jobs: {}", jobs.len());
    for j in &jobs {
        println!(
            "  {}: kind={} stage={} progress={:.0}% running={:.0}s heartbeat_age={:.0}s worker={}",
            j.id,
            clean(&j.kind),
            fmt_opt(&j.stage),
            j.progress * 100.0,
            j.running_seconds,
            j.heartbeat_age_seconds,
            fmt_opt(&j.worker)
        );
    }
    Ok(())
}

pub(super) fn workers(db: &Path, json: bool) -> Done {
    let queue = open_existing(db)?;
    let workers = queue.workers()?;
    if json {
        print_json(&json!({ "workers": workers }));
        return Ok(());
    }
    println!("Live workers: {}", workers.len());
    let now = queue.now().as_millis();
    for w in &workers {
        let kinds = w
            .kinds
            .as_ref()
            .map_or_else(|| "any".to_string(), |k| k.join(","));
        println!(
            "  {}: host={} pid={} queues={} kinds={} concurrency={} running={} started={} last_seen={:.0}s ago",
            clean(&w.id),
            clean(&w.host),
            w.pid,
            clean(&w.queues.join(",")),
            clean(&kinds),
            w.concurrency,
            w.running,
            w.started_at,
            (now - w.last_seen.as_millis()).max(0) as f64 / 1000.0
        );
    }
    Ok(())
}

pub(super) fn dead(db: &Path, json: bool, limit: usize) -> Done {
    let queue = open_existing(db)?;
    let jobs = queue.dead_letter(limit)?;
    if json {
        print_json(&json!({ "dead": jobs }));
        return Ok(());
    }
    let mut table = Table::new(["ID", "KIND", "ATTEMPTS", "CODE", "LAST ERROR", "FAILED AT"]);
    for j in &jobs {
        let error: String = j
            .last_error
            .clone()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        table.row([
            j.id.to_string(),
            j.kind.clone(),
            format!("{}/{}", j.attempts, j.max_attempts),
            fmt_opt(&j.error_code),
            error.replace('\n', " "),
            j.failed_at.to_rfc3339(),
        ]);
    }
    table.print();
    println!("{} in the dead letter", super::output::jobs(jobs.len()));
    Ok(())
}

pub(super) fn timing(db: &Path, json: bool, a: TimingArgs) -> Done {
    let mut filter = TimingFilter::new();
    if let Some(w) = a.since {
        filter = filter.within(w);
    }
    if a.by_kind {
        filter = filter.by_kind();
    }
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    let queue = open_existing(db)?;
    let rows = queue.timing(&filter)?;
    if json {
        print_json(&json!({ "timing": rows, "window_seconds": a.since.map(|w| w.as_secs()) }));
        return Ok(());
    }
    let mut table = Table::new([
        "STATUS", "KIND", "COUNT", "AVG", "P50", "P95", "MAX", "WAIT P50", "WAIT P95",
    ]);
    for t in &rows {
        table.row([
            t.status.to_string(),
            t.kind.clone().unwrap_or_else(|| "*".into()),
            t.count.to_string(),
            fmt_secs(t.avg_seconds),
            fmt_secs(t.p50_seconds),
            fmt_secs(t.p95_seconds),
            fmt_secs(t.max_seconds),
            fmt_secs(t.wait_p50_seconds),
            fmt_secs(t.wait_p95_seconds),
        ]);
    }
    table.print();
    Ok(())
}

pub(super) fn stages(db: &Path, json: bool) -> Done {
    let queue = open_existing(db)?;
    let rows = queue.stage_distribution()?;
    if json {
        print_json(&json!({ "stages": rows }));
        return Ok(());
    }
    let mut table = Table::new(["STAGE", "STATUS", "JOBS"]);
    for s in &rows {
        table.row([fmt_opt(&s.stage), s.status.to_string(), s.count.to_string()]);
    }
    table.print();
    Ok(())
}

pub(super) fn costs(db: &Path, json: bool, by: CostBy) -> Done {
    let queue = open_existing(db)?;
    let (grouping, name) = match by {
        CostBy::Status => (CostGrouping::Status, "status"),
        CostBy::Owner => (CostGrouping::Owner, "owner"),
        CostBy::Group => (CostGrouping::Group, "group"),
    };
    let rows = queue.costs(grouping)?;
    if json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(obj) = v.as_object_mut() {
                    let key = obj.remove("key").unwrap_or(Value::Null);
                    obj.insert(name.to_string(), key);
                }
                v
            })
            .collect();
        print_json(&json!({ "by": name, "costs": rows }));
        return Ok(());
    }
    let owner = matches!(by, CostBy::Owner);
    let mut headers = vec![
        name.to_uppercase(),
        "JOBS".into(),
        "TOTAL (¢)".into(),
        "AVERAGE (¢)".into(),
    ];
    if owner {
        headers.extend([
            "SPENT (¢)".into(),
            "BUDGET (¢)".into(),
            "REMAINING (¢)".into(),
        ]);
    }
    let mut table = Table::new(headers);
    for r in &rows {
        let mut cells = vec![
            r.key.clone().unwrap_or_else(|| "-".into()),
            r.count.to_string(),
            r.total_cost_cents.to_string(),
            format!("{:.1}", r.avg_cost_cents),
        ];
        if owner {
            let show = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            cells.extend([
                show(r.spent_cents),
                show(r.budget_cents),
                show(r.remaining_cents),
            ]);
        }
        table.row(cells);
    }
    table.print();
    Ok(())
}

/// `stats --series`: one row per step, oldest first.
fn series(db: &Path, json: bool, a: StatsArgs) -> Done {
    if a.group.is_some() {
        return Err(super::Refused(
            "--series covers queues and kinds, not groups (leave out --group)".into(),
        ));
    }
    let mut query = SeriesQuery::new();
    if let Some(w) = a.window {
        query = query.window(w);
    }
    if let Some(s) = a.step {
        query = query.step(s);
    }
    if let Some(q) = a.queue {
        query = query.queue(q);
    }
    if let Some(k) = a.kind {
        query = query.kind(k);
    }
    let mut queue = open_existing(db)?;
    if let Some(owner) = a.owner {
        queue = queue.scoped(owner);
    }
    let series = queue.series(&query)?;
    if json {
        print_json(&series);
        return Ok(());
    }
    let ms = |p: Option<f64>| p.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    let pair = |p: &Percentiles| format!("{}/{}", ms(p.p50), ms(p.p95));
    let mut table = Table::new([
        "TIME",
        "ENQUEUED",
        "STARTED",
        "SUCCEEDED",
        "FAILED",
        "RETRIED",
        "CANCELLED",
        "SNOOZED",
        "RUN P50/P95 MS",
        "WAIT P50/P95 MS",
    ]);
    for p in &series.points {
        table.row([
            p.t.to_rfc3339(),
            p.enqueued.to_string(),
            p.started.to_string(),
            p.succeeded.to_string(),
            p.failed.to_string(),
            p.retried.to_string(),
            p.cancelled.to_string(),
            p.snoozed.to_string(),
            pair(&p.run_ms),
            pair(&p.wait_ms),
        ]);
    }
    table.print();
    Ok(())
}

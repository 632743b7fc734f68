//! `jobq queue`: queues with their counts and limits; pause, resume, limits.

use std::path::Path;

use crate::Queue;
use clap::Subcommand;
use serde_json::json;

use super::output::{Table, clean, print_json};

use super::{Done, Refused, open_existing};

#[derive(Subcommand, Debug)]
pub(super) enum QueueCommand {
    /// Every queue: counts (ready, scheduled, blocked, running, retry), paused, limits.
    List,
    /// Pause a queue: no process claims from it until resumed; running jobs finish.
    Pause { queue: String },
    /// Resume a paused queue.
    Resume { queue: String },
    /// Set limits that hold across every process and host (`none` clears one).
    Set {
        queue: String,
        /// Running jobs of the queue, at most.
        #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
        max_running: Option<String>,
        /// Running jobs per concurrency key, at most.
        #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
        max_running_per_key: Option<String>,
        /// Claims per time window, at most: N/DUR (e.g. 100/1m).
        #[arg(long, value_name = "N/DUR|none")]
        rate: Option<String>,
    },
}

/// `N` or `none` (`Some(None)`); absent: `None`.
pub(super) fn limit_arg(
    field: &str,
    value: Option<String>,
) -> Result<Option<Option<u32>>, Refused> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(n) => n.parse::<u32>().map(|n| Some(Some(n))).map_err(|_| {
            Refused(format!(
                "invalid {field}: {n:?} is not a whole number or none"
            ))
        }),
    }
}

pub(super) fn queue_command(db: &Path, json: bool, cmd: QueueCommand) -> Done {
    let show = |q: &crate::QueueInfo| {
        if json {
            print_json(q);
        } else {
            println!(
                "{}: {}, max running {}, per key {}, rate {}",
                clean(&q.name),
                if q.paused { "paused" } else { "active" },
                q.max_running.map_or_else(|| "-".into(), |n| n.to_string()),
                q.max_running_per_key
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                q.rate.map_or_else(|| "-".into(), |r| r.to_string()),
            );
        }
    };
    match cmd {
        QueueCommand::List => {
            let queue = open_existing(db)?;
            let list = queue.queues()?;
            if json {
                print_json(&json!({ "queues": list }));
                return Ok(());
            }
            let mut table = Table::new([
                "QUEUE",
                "READY",
                "SCHEDULED",
                "BLOCKED",
                "WAITING",
                "RUNNING",
                "RETRY",
                "PAUSED",
                "MAX RUNNING",
                "PER KEY",
                "RATE",
            ]);
            for q in &list {
                let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
                table.row([
                    clean(&q.name).into_owned(),
                    q.ready.to_string(),
                    q.scheduled.to_string(),
                    q.blocked.to_string(),
                    q.waiting.to_string(),
                    q.running.to_string(),
                    q.retry.to_string(),
                    if q.paused { "yes" } else { "no" }.into(),
                    opt(q.max_running),
                    opt(q.max_running_per_key),
                    q.rate.map_or_else(|| "-".into(), |r| r.to_string()),
                ]);
            }
            table.print();
        }
        QueueCommand::Pause { queue: name } => show(&Queue::open(db)?.pause_queue(&name)?),
        QueueCommand::Resume { queue: name } => show(&Queue::open(db)?.resume_queue(&name)?),
        QueueCommand::Set {
            queue: name,
            max_running,
            max_running_per_key,
            rate,
        } => {
            let mut limits = crate::QueueLimits::new();
            if let Some(v) = limit_arg("max_running", max_running)? {
                limits = limits.max_running(v);
            }
            if let Some(v) = limit_arg("max_running_per_key", max_running_per_key)? {
                limits = limits.max_running_per_key(v);
            }
            match rate.as_deref().map(str::trim) {
                None => {}
                Some("none") => limits = limits.rate(None),
                Some(r) => limits = limits.rate(Some(r.parse()?)),
            }
            show(&Queue::open(db)?.set_queue_limits(&name, limits)?);
        }
    }
    Ok(())
}

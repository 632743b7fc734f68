//! Flow control: pause and resume a queue, and limit it — running jobs of the queue, running
//! jobs per concurrency key, claims per time window. The claim reads the limits itself, in
//! the transaction that takes the jobs, so they hold across every process and host; there
//! are no slots to hand back, so none can leak: a slot is free as soon as its job is no
//! longer `running` (finished, released as stale, or its worker died and it was released).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration, parse_duration};
use crate::error::{Error, Result};
use crate::job::Status;
use crate::model::{QueueControl, QueueWrite};
use crate::queue::Queue;

/// At most `limit` claims from a queue per `window`, sliding: a claim made at time `t`
/// counts against the claims made from `t` until `t + window`, exclusive — at exactly
/// `t + window` it no longer counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Claims allowed per window.
    pub limit: u32,
    /// The window.
    pub window: Duration,
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.limit, format_duration(self.window))
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Rate {
    type Err = Error;

    /// `N/DUR`: `100/1m`, `5/1s`.
    fn from_str(s: &str) -> Result<Rate> {
        let bad = || {
            Error::invalid(
                "rate",
                format!("{s:?} is not a rate (N/DURATION, e.g. 100/1m)"),
            )
        };
        let (n, window) = s.trim().split_once('/').ok_or_else(bad)?;
        let limit: u32 = n.trim().parse().map_err(|_| bad())?;
        let window = parse_duration(window.trim()).map_err(|_| bad())?;
        Rate::new(limit, window)
    }
}

impl Rate {
    /// A rate of `limit` claims per `window`, both more than zero.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a zero limit or window, or a window past the bound.
    pub fn new(limit: u32, window: Duration) -> Result<Rate> {
        if limit == 0 || limit > i32::MAX as u32 {
            return Err(Error::invalid("rate", "the limit must be 1 or more"));
        }
        if window < Duration::from_millis(1) || window > MAX_DURATION {
            return Err(Error::invalid(
                "rate",
                format!(
                    "the window must be at least 1ms and at most {}",
                    format_duration(MAX_DURATION)
                ),
            ));
        }
        Ok(Rate { limit, window })
    }
}

/// Limits to set on a queue; a limit left out stays as it is, `None` clears it.
#[derive(Debug, Clone, Copy, Default)]
#[must_use]
pub struct QueueLimits {
    max_running: Option<Option<u32>>,
    max_running_per_key: Option<Option<u32>>,
    rate: Option<Option<Rate>>,
}

impl QueueLimits {
    /// No change.
    pub fn new() -> QueueLimits {
        QueueLimits::default()
    }

    /// At most `n` running jobs of the queue across every process (`None`: no limit).
    pub fn max_running(mut self, n: Option<u32>) -> QueueLimits {
        self.max_running = Some(n);
        self
    }

    /// At most `n` running jobs per concurrency key (`None`: no limit).
    pub fn max_running_per_key(mut self, n: Option<u32>) -> QueueLimits {
        self.max_running_per_key = Some(n);
        self
    }

    /// At most so many claims per window (`None`: no limit).
    pub fn rate(mut self, rate: Option<Rate>) -> QueueLimits {
        self.rate = Some(rate);
        self
    }
}

/// A queue: its counts, whether it is paused, and its limits.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct QueueInfo {
    /// Its name.
    pub name: String,
    /// Paused: no process claims from it.
    pub paused: bool,
    /// Its running limit.
    pub max_running: Option<u32>,
    /// Its running limit per concurrency key.
    pub max_running_per_key: Option<u32>,
    /// Its claim rate, `N/DUR`.
    pub rate: Option<Rate>,
    /// Ready now (`queued` and `retry` jobs whose time has come).
    pub ready: i64,
    /// `queued` and `retry` jobs whose `run_after` lies ahead.
    pub scheduled: i64,
    /// Waiting for their dependencies.
    pub blocked: i64,
    /// Parked by their handlers: sleeping, or waiting for an event.
    pub waiting: i64,
    /// Running.
    pub running: i64,
    /// Waiting for a retry (due or not).
    pub retry: i64,
}

fn info(name: &str, control: Option<&QueueControl>) -> QueueInfo {
    QueueInfo {
        name: name.to_string(),
        paused: control.is_some_and(|c| c.paused),
        max_running: control.and_then(|c| c.max_running),
        max_running_per_key: control.and_then(|c| c.max_running_per_key),
        rate: control.and_then(|c| c.rate).map(|(limit, window)| Rate {
            limit,
            window: Duration::from_millis(window.max(0) as u64),
        }),
        ready: 0,
        scheduled: 0,
        blocked: 0,
        waiting: 0,
        running: 0,
        retry: 0,
    }
}

impl Queue {
    fn admin_only(&self, action: &str) -> Result<()> {
        match self.owner() {
            Some(owner) => Err(Error::invalid(
                "owner",
                format!("a handle scoped to {owner} cannot {action}: queues belong to every owner"),
            )),
            None => Ok(()),
        }
    }

    /// Every queue that has jobs waiting or running, or settings: counts, paused or not,
    /// limits; by name.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn queues(&self) -> Result<Vec<QueueInfo>> {
        let now = self.now_ms();
        let controls = self.engine().queue_controls()?;
        let mut out: std::collections::BTreeMap<String, QueueInfo> = controls
            .iter()
            .map(|c| (c.name.clone(), info(&c.name, Some(c))))
            .collect();
        for (queue, status, n, scheduled) in self.engine().queue_counts(now)? {
            let entry = out
                .entry(queue.clone())
                .or_insert_with(|| info(&queue, controls.iter().find(|c| c.name == queue)));
            match status {
                Status::Queued => {
                    entry.ready += n - scheduled;
                    entry.scheduled += scheduled;
                }
                Status::Retry => {
                    entry.retry += n;
                    entry.ready += n - scheduled;
                    entry.scheduled += scheduled;
                }
                Status::Running => entry.running += n,
                Status::Blocked => entry.blocked += n,
                Status::Waiting => entry.waiting += n,
                _ => {}
            }
        }
        Ok(out.into_values().collect())
    }

    /// One queue, as [`Queue::queues`] lists it (all zero for a queue without jobs).
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn queue_info(&self, name: &str) -> Result<QueueInfo> {
        Ok(self
            .queues()?
            .into_iter()
            .find(|q| q.name == name)
            .unwrap_or_else(|| info(name, None)))
    }

    fn write_queue(&self, name: &str, write: QueueWrite, action: &str) -> Result<QueueInfo> {
        self.admin_only(action)?;
        crate::queue::check_text("queue", name, 200)?;
        self.engine().write_queue(name, write, self.now_ms())?;
        tracing::info!(queue = name, "jobq: queue {action}");
        // A resumed queue or a raised limit may have work ready now.
        self.shared.events.wake_dispatchers();
        self.queue_info(name)
    }

    /// Pauses a queue: from their next claim on, no process or host claims from it; the
    /// jobs running finish. Stored: it survives restarts.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] on a handle scoped to an owner, or for an empty name.
    pub fn pause_queue(&self, name: &str) -> Result<QueueInfo> {
        self.write_queue(
            name,
            QueueWrite {
                paused: Some(true),
                ..QueueWrite::default()
            },
            "pause",
        )
    }

    /// Resumes a paused queue.
    ///
    /// # Errors
    ///
    /// As [`Queue::pause_queue`].
    pub fn resume_queue(&self, name: &str) -> Result<QueueInfo> {
        self.write_queue(
            name,
            QueueWrite {
                paused: Some(false),
                ..QueueWrite::default()
            },
            "resume",
        )
    }

    /// Sets (or clears) a queue's limits; those not named stay as they are.
    ///
    /// # Errors
    ///
    /// As [`Queue::pause_queue`].
    pub fn set_queue_limits(&self, name: &str, limits: QueueLimits) -> Result<QueueInfo> {
        self.write_queue(
            name,
            QueueWrite {
                paused: None,
                max_running: limits.max_running,
                max_running_per_key: limits.max_running_per_key,
                rate: limits
                    .rate
                    .map(|r| r.map(|r| (r.limit, millis(r.window).max(1)))),
            },
            "set",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let r: Rate = "100/1m".parse().unwrap();
        assert_eq!((r.limit, r.window), (100, Duration::from_secs(60)));
        assert_eq!(r.to_string(), "100/1m");
        for bad in ["100", "0/1m", "x/1m", "5/0s", "5/forever", ""] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }
}

//! Schedules as stored, and their firings.

use crate::model::NewRow;

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduleRow {
    pub name: String,
    pub owner: Option<String>,
    pub cron: Option<String>,
    pub every_ms: Option<i64>,
    pub timezone: String,
    pub kind: String,
    pub input: String,
    pub queue: String,
    pub priority: i32,
    pub max_attempts: Option<u32>,
    pub catch_up: String,
    pub paused: bool,
    pub next_fire: i64,
    pub last_fire: Option<i64>,
    pub created_at: i64,
}

/// How a schedule is stored: a new one (refused when its owner has one of that name) or in
/// place of the one of that name, and the most schedules its owner may have.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SchedulePut {
    pub replace: bool,
    pub max_per_owner: usize,
}

/// A change to one schedule (named by its owner and name).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ScheduleChange {
    Pause,
    /// Resume, next firing at this time.
    Resume(i64),
    Remove,
}

/// The firing of one schedule's due slots: its `next_fire` moves from `expected` to
/// `next` (the statement that checks it makes the firing happen once), and `jobs` are
/// enqueued, in one transaction.
#[derive(Debug, Clone)]
pub(crate) struct Firing<'a> {
    pub owner: Option<&'a str>,
    pub name: &'a str,
    pub expected: i64,
    pub next: i64,
    pub last_fire: Option<i64>,
    pub jobs: Vec<NewRow>,
}

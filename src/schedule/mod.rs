//! Schedules: periodic jobs stored in the database, by a cron expression (5 fields or
//! `@hourly`-style, in a time zone) or a fixed interval. Every worker pool and `jobq serve`
//! takes part in firing them; each slot fires once however many processes run, because
//! the process that moves a schedule's next firing on is the one that enqueues the slot's
//! job (with the idempotency key `schedule:NAME:<slot time>`), in one transaction.

mod fire;
mod slots;

pub(crate) use fire::Firer;

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::job::Timestamp;

/// The most missed slots one firing enqueues for a schedule whose catch-up is `all` (the
/// latest ones): a start after a long stop fires at most this many jobs of a schedule.
pub const MAX_CATCH_UP: usize = 100;

/// The shortest period of a schedule that fires at a fixed interval.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// The longest cron expression accepted.
const MAX_CRON_LEN: usize = 256;

/// The longest time zone name accepted (IANA names are at most 32 characters).
const MAX_TIMEZONE_LEN: usize = 64;

/// A slot fired within this of its time is on time; later, it was missed (what the
/// catch-up rule `none` skips). Half the period instead, for a shorter period.
const ON_TIME: i64 = 60_000;

/// What a start after missed slots enqueues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Nothing for the missed slots: the schedule goes on from the next one.
    None,
    /// One job, for the last missed slot. The default.
    #[default]
    One,
    /// One job per missed slot, up to [`MAX_CATCH_UP`] of them (the latest ones).
    All,
}

impl CatchUp {
    fn as_str(self) -> &'static str {
        match self {
            CatchUp::None => "none",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }
}

impl FromStr for CatchUp {
    type Err = Error;

    fn from_str(s: &str) -> Result<CatchUp> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(CatchUp::None),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            _ => Err(Error::invalid(
                "catch_up",
                format!("unknown value {s:?} (expected none, one or all)"),
            )),
        }
    }
}

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A cron expression: 5 fields (minute hour day-of-month month day-of-week) or an
    /// alias (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), in the schedule's
    /// time zone.
    Cron(String),
    /// Every this long, from the schedule's creation.
    Every(Duration),
}

/// A schedule to add: built with setters; the rule, the name and the kind are required.
///
/// # Examples
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use jobq::{CatchUp, NewSchedule, Queue};
///
/// let queue = Queue::open(dir.path().join("q.db"))?;
/// let nightly = queue.add_schedule(
///     NewSchedule::cron("nightly-report", "0 2 * * *", "report")
///         .timezone("Europe/Paris")
///         .catch_up(CatchUp::One),
/// )?;
/// assert_eq!(nightly.kind, "report");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewSchedule {
    name: String,
    rule: Rule,
    kind: String,
    input: Value,
    queue: Option<String>,
    priority: i32,
    max_attempts: Option<u32>,
    timezone: String,
    catch_up: CatchUp,
    owner: Option<String>,
    replace: bool,
}

impl NewSchedule {
    /// A schedule `name` that enqueues a job of `kind` at each time `expression` names.
    pub fn cron(
        name: impl Into<String>,
        expression: impl Into<String>,
        kind: impl Into<String>,
    ) -> NewSchedule {
        NewSchedule::new(name, Rule::Cron(expression.into()), kind)
    }

    /// A schedule `name` that enqueues a job of `kind` every `period`.
    pub fn every(
        name: impl Into<String>,
        period: Duration,
        kind: impl Into<String>,
    ) -> NewSchedule {
        NewSchedule::new(name, Rule::Every(period), kind)
    }

    /// A schedule with this rule.
    pub fn new(name: impl Into<String>, rule: Rule, kind: impl Into<String>) -> NewSchedule {
        NewSchedule {
            name: name.into(),
            rule,
            kind: kind.into(),
            input: Value::Object(Default::default()),
            queue: None,
            priority: 0,
            max_attempts: None,
            timezone: "UTC".into(),
            catch_up: CatchUp::One,
            owner: None,
            replace: false,
        }
    }

    /// The input of every job it enqueues. Defaults to `{}`.
    pub fn input(mut self, input: Value) -> NewSchedule {
        self.input = input;
        self
    }

    /// The queue of its jobs. Defaults to `default`.
    pub fn queue(mut self, queue: impl Into<String>) -> NewSchedule {
        self.queue = Some(queue.into());
        self
    }

    /// The priority of its jobs. Defaults to 0.
    pub fn priority(mut self, priority: i32) -> NewSchedule {
        self.priority = priority;
        self
    }

    /// The attempts of its jobs. Defaults to the queue's setting.
    pub fn max_attempts(mut self, n: u32) -> NewSchedule {
        self.max_attempts = Some(n);
        self
    }

    /// The time zone a cron expression is read in (an IANA name). Defaults to `UTC`.
    pub fn timezone(mut self, tz: impl Into<String>) -> NewSchedule {
        self.timezone = tz.into();
        self
    }

    /// What a start after missed slots enqueues. Defaults to [`CatchUp::One`].
    pub fn catch_up(mut self, catch_up: CatchUp) -> NewSchedule {
        self.catch_up = catch_up;
        self
    }

    /// The owner of the schedule and its jobs (an admin handle only; a scoped handle
    /// stamps its own).
    pub fn owner(mut self, owner: impl Into<String>) -> NewSchedule {
        self.owner = Some(owner.into());
        self
    }

    /// Takes the place of the owner's schedule of the same name, if there is one: its rule
    /// and jobs change, counted from now; it stays paused or not and keeps when it last
    /// fired. Defaults to false: a name already taken is refused.
    pub fn replace(mut self, replace: bool) -> NewSchedule {
        self.replace = replace;
        self
    }
}

/// A schedule as stored, with its next and last firing.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Schedule {
    /// Its name, unique per owner.
    pub name: String,
    /// Its owner.
    pub owner: Option<String>,
    /// Its cron expression, if it has one.
    pub cron: Option<String>,
    /// Its period, if it fires at a fixed interval (e.g. `"5m"`).
    pub every: Option<String>,
    /// The time zone its cron expression is read in.
    pub timezone: String,
    /// The kind of its jobs.
    pub kind: String,
    /// The input of its jobs.
    pub input: Value,
    /// The queue of its jobs.
    pub queue: String,
    /// The priority of its jobs.
    pub priority: i32,
    /// The attempts of its jobs, if set.
    pub max_attempts: Option<u32>,
    /// What a start after missed slots enqueues.
    pub catch_up: CatchUp,
    /// Paused: it fires nothing until resumed.
    pub paused: bool,
    /// Its next slot.
    pub next_fire: Timestamp,
    /// The last slot it fired, if any.
    pub last_fire: Option<Timestamp>,
    /// When it was added.
    pub created_at: Timestamp,
}

impl Schedule {
    /// The rule as text: the cron expression, or `every 5m`.
    pub fn rule(&self) -> String {
        match (&self.cron, &self.every) {
            (Some(cron), _) => cron.clone(),
            (None, Some(every)) => format!("every {every}"),
            (None, None) => String::new(),
        }
    }
}

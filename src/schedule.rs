//! Schedules: periodic jobs stored in the database, by a cron expression (5 fields or
//! `@hourly`-style, in a time zone) or a fixed interval. Every worker pool and `jobq serve`
//! takes part in firing them; each slot fires once however many processes run, because
//! the process that moves a schedule's next firing on is the one that enqueues the slot's
//! job (with the idempotency key `schedule:NAME:<slot time>`), in one transaction.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;
use serde_json::Value;

use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration};
use crate::error::{Error, Result};
use crate::job::{NewJob, Timestamp};
use crate::model::{Firing, ScheduleChange, SchedulePut, ScheduleRow};
use crate::queue::Queue;

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

/// A rule ready to compute slots with.
enum Slots {
    Cron(Box<Cron>, Tz),
    Every(i64),
}

fn parse_cron(expression: &str) -> std::result::Result<Cron, croner::errors::CronError> {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(expression)
}

/// The fields of a cron expression: name, and what it takes.
const CRON_FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT, 0 and 7 both Sunday"),
];

const CRON_ALIASES: &str = "@yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly";

/// Why `expression` is not a cron expression, in words: which field is wrong and what it
/// takes.
fn explain_cron(expression: &str, error: &croner::errors::CronError) -> String {
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.is_empty() {
        return "the expression is empty: give 5 fields (minute hour day-of-month month \
                day-of-week), e.g. \"0 2 * * *\" for 02:00 every day, or an alias such as @daily"
            .to_string();
    }
    if fields[0].starts_with('@') {
        return format!(
            "{:?} is not an alias this accepts ({CRON_ALIASES})",
            fields[0]
        );
    }
    if fields.len() != 5 {
        let seconds = if fields.len() == 6 {
            " (seconds are not supported: drop the first field)"
        } else {
            ""
        };
        return format!(
            "it has {} field{}, and a cron expression has 5: minute hour day-of-month month \
             day-of-week{seconds}",
            fields.len(),
            if fields.len() == 1 { "" } else { "s" }
        );
    }
    for (i, (name, range)) in CRON_FIELDS.iter().enumerate() {
        let mut alone = ["*"; 5];
        alone[i] = fields[i];
        if let Err(e) = parse_cron(&alone.join(" ")) {
            let why = match &e {
                croner::errors::CronError::ComponentError(m)
                | croner::errors::CronError::IllegalCharacters(m)
                | croner::errors::CronError::InvalidPattern(m) => {
                    m.trim_end_matches('.').to_string()
                }
                other => other.to_string(),
            };
            return format!(
                "the {name} field {:?} is not valid ({}): it takes {range}, as numbers, ranges \
                 (a-b), lists (a,b), steps (*/n) or *",
                fields[i],
                why.to_lowercase()
            );
        }
    }
    error.to_string()
}

impl Slots {
    fn of(cron: Option<&str>, every_ms: Option<i64>, timezone: &str) -> Result<Slots> {
        if timezone.len() > MAX_TIMEZONE_LEN {
            return Err(Error::invalid(
                "timezone",
                format!("a time zone name is at most {MAX_TIMEZONE_LEN} characters"),
            ));
        }
        let tz: Tz = timezone.parse().map_err(|_| {
            Error::invalid(
                "timezone",
                format!("unknown time zone {timezone:?} (an IANA name such as Europe/Paris)"),
            )
        })?;
        match (cron, every_ms) {
            (Some(expression), _) => {
                if expression.len() > MAX_CRON_LEN {
                    return Err(Error::invalid(
                        "cron",
                        format!("a cron expression is at most {MAX_CRON_LEN} characters"),
                    ));
                }
                let parsed = parse_cron(expression).map_err(|e| {
                    Error::invalid(
                        "cron",
                        format!(
                            "{expression:?} is not a cron expression: {}",
                            explain_cron(expression, &e)
                        ),
                    )
                })?;
                Ok(Slots::Cron(Box::new(parsed), tz))
            }
            (None, Some(ms)) if ms > 0 => Ok(Slots::Every(ms)),
            _ => Err(Error::invalid(
                "rule",
                "a schedule needs a cron expression or a period",
            )),
        }
    }

    fn at(ms: i64, tz: Tz) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.with_timezone(&tz))
    }

    /// The first slot after `ms` (or at it, when `inclusive`); for an interval, counted
    /// from `anchor`.
    fn next(&self, ms: i64, inclusive: bool, anchor: i64) -> Option<i64> {
        match self {
            Slots::Cron(cron, tz) => cron
                .find_next_occurrence(&Slots::at(ms, *tz)?, inclusive)
                .ok()
                .map(|t| t.timestamp_millis()),
            Slots::Every(period) => {
                let steps = (ms - anchor).div_euclid(*period);
                let slot = anchor + steps * period;
                Some(if inclusive && slot == ms {
                    slot
                } else {
                    slot + period
                })
            }
        }
    }

    /// The last slot at `ms` or before.
    fn previous(&self, ms: i64, anchor: i64) -> Option<i64> {
        match self {
            Slots::Cron(cron, tz) => cron
                .find_previous_occurrence(&Slots::at(ms, *tz)?, true)
                .ok()
                .map(|t| t.timestamp_millis()),
            Slots::Every(period) => Some(anchor + (ms - anchor).div_euclid(*period) * period),
        }
    }
}

/// The slots due at `now` of a schedule whose next slot is `next` that the catch-up rule
/// fires (oldest first), and its next slot after them.
fn due(slots: &Slots, next: i64, now: i64, anchor: i64, catch_up: CatchUp) -> (Vec<i64>, i64) {
    let Some(last) = slots.previous(now, anchor).filter(|l| *l >= next) else {
        return (Vec::new(), next);
    };
    let following = slots.next(now, false, anchor).unwrap_or(i64::MAX);
    let fired = match catch_up {
        CatchUp::One => vec![last],
        CatchUp::None => {
            let period = slots
                .next(last, false, anchor)
                .map_or(ON_TIME, |n| n - last);
            if now - last <= ON_TIME.min(period / 2).max(1000) {
                vec![last]
            } else {
                Vec::new()
            }
        }
        CatchUp::All => {
            let mut all = vec![last];
            let mut at = last;
            while all.len() < MAX_CATCH_UP {
                match slots.previous(at - 1, anchor) {
                    Some(p) if p >= next => {
                        all.push(p);
                        at = p;
                    }
                    _ => break,
                }
            }
            all.reverse();
            all
        }
    };
    (fired, following)
}

fn schedule_of(row: ScheduleRow) -> Schedule {
    Schedule {
        every: row
            .every_ms
            .map(|ms| format_duration(Duration::from_millis(ms.max(0) as u64))),
        input: serde_json::from_str(&row.input).unwrap_or(Value::Null),
        catch_up: row.catch_up.parse().unwrap_or_default(),
        next_fire: Timestamp::from_millis(row.next_fire),
        last_fire: row.last_fire.map(Timestamp::from_millis),
        created_at: Timestamp::from_millis(row.created_at),
        name: row.name,
        owner: row.owner,
        cron: row.cron,
        timezone: row.timezone,
        kind: row.kind,
        queue: row.queue,
        priority: row.priority,
        max_attempts: row.max_attempts,
        paused: row.paused,
    }
}

impl Queue {
    /// Adds a schedule. Its first slot is the first after now (for an interval, one period
    /// from now).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the field: an empty name or kind, a cron expression
    /// that does not parse, an unknown time zone, a period of zero or past the bound, an
    /// input that is not JSON; [`Error::Duplicate`] when the owner has a schedule of that
    /// name. Nothing is written on any error.
    pub fn add_schedule(&self, s: NewSchedule) -> Result<Schedule> {
        crate::queue::check_text("name", &s.name, 200)?;
        crate::queue::check_text("kind", &s.kind, 200)?;
        let owner = match (self.owner(), s.owner) {
            (Some(me), Some(other)) if other != me => {
                return Err(Error::invalid(
                    "owner",
                    format!("a handle scoped to {me} cannot add a schedule for {other}"),
                ));
            }
            (Some(me), _) => Some(me.to_string()),
            (None, owner) => owner,
        };
        let (cron, every_ms) = match &s.rule {
            Rule::Cron(expression) => (Some(expression.trim().to_string()), None),
            Rule::Every(period) if *period < MIN_EVERY || *period > MAX_DURATION => {
                return Err(Error::invalid(
                    "every",
                    format!(
                        "must be at least {} and at most {}",
                        format_duration(MIN_EVERY),
                        format_duration(MAX_DURATION)
                    ),
                ));
            }
            Rule::Every(period) => (None, Some(millis(*period).max(1))),
        };
        if s.max_attempts == Some(0) {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        let slots = Slots::of(cron.as_deref(), every_ms, &s.timezone)?;
        let input =
            serde_json::to_string(&s.input).map_err(|e| Error::invalid("input", e.to_string()))?;
        crate::json::check_integers("input", &input)?;
        let now = self.now_ms();
        let next_fire = slots.next(now, false, now).ok_or_else(|| {
            Error::invalid("cron", "the expression names no time in the years ahead")
        })?;
        let queue = s.queue.unwrap_or_else(|| "default".into());
        crate::queue::check_text("queue", &queue, 200)?;
        let put = SchedulePut {
            replace: s.replace,
            max_per_owner: self.shared.max_schedules_per_owner,
        };
        let row = ScheduleRow {
            name: s.name,
            owner,
            cron,
            every_ms,
            timezone: s.timezone,
            kind: s.kind,
            input,
            queue,
            priority: s.priority,
            max_attempts: s.max_attempts,
            catch_up: s.catch_up.as_str().into(),
            paused: false,
            next_fire,
            last_fire: None,
            created_at: now,
        };
        self.engine().insert_schedule(&row, put)?;
        tracing::info!(schedule = %row.name, replace = put.replace, "jobq: schedule added");
        if !put.replace {
            return Ok(schedule_of(row));
        }
        // A replacement kept the old one's pause and last firing: read what is stored.
        let stored = self
            .engine()
            .schedules(row.owner.as_deref(), None)?
            .into_iter()
            .find(|r| r.name == row.name && r.owner == row.owner)
            .unwrap_or(row);
        Ok(schedule_of(stored))
    }

    /// The schedules this handle sees, by owner and name.
    ///
    /// # Errors
    ///
    /// Database errors only.
    pub fn schedules(&self) -> Result<Vec<Schedule>> {
        Ok(self
            .engine()
            .schedules(self.owner(), None)?
            .into_iter()
            .map(schedule_of)
            .collect())
    }

    /// The schedule `name` this handle sees (for an admin handle, of whichever owner, as
    /// long as only one has that name).
    fn schedule_row(&self, name: &str) -> Result<ScheduleRow> {
        let mut found: Vec<ScheduleRow> = self
            .engine()
            .schedules(self.owner(), None)?
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        match found.len() {
            0 => Err(Error::NotFound {
                what: "schedule",
                id: name.to_string(),
            }),
            1 => Ok(found.remove(0)),
            _ => {
                let owners: Vec<&str> = found
                    .iter()
                    .map(|s| s.owner.as_deref().unwrap_or("(none)"))
                    .collect();
                Err(Error::invalid(
                    "name",
                    format!(
                        "several owners have a schedule {name:?} ({}): name the owner (a handle scoped to it, `--owner`, `?owner=`)",
                        owners.join(", ")
                    ),
                ))
            }
        }
    }

    /// The schedule `name`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when this handle sees no schedule of that name.
    pub fn schedule(&self, name: &str) -> Result<Schedule> {
        self.schedule_row(name).map(schedule_of)
    }

    fn change_schedule(
        &self,
        name: &str,
        change: impl Fn(&ScheduleRow) -> Result<ScheduleChange>,
    ) -> Result<()> {
        let row = self.schedule_row(name)?;
        let change = change(&row)?;
        if !self
            .engine()
            .change_schedule(row.owner.as_deref(), &row.name, change, self.now_ms())?
        {
            return Err(Error::NotFound {
                what: "schedule",
                id: name.to_string(),
            });
        }
        tracing::info!(schedule = name, change = ?change, "jobq: schedule changed");
        Ok(())
    }

    /// Pauses a schedule: it fires nothing until resumed.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when this handle sees no schedule of that name.
    pub fn pause_schedule(&self, name: &str) -> Result<Schedule> {
        self.change_schedule(name, |_| Ok(ScheduleChange::Pause))?;
        self.schedule(name)
    }

    /// Resumes a paused schedule from its next slot after now (the slots it was paused for
    /// are not caught up).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when this handle sees no schedule of that name.
    pub fn resume_schedule(&self, name: &str) -> Result<Schedule> {
        let now = self.now_ms();
        self.change_schedule(name, |row| {
            let slots = Slots::of(row.cron.as_deref(), row.every_ms, &row.timezone)?;
            let next = slots.next(now, false, row.created_at).unwrap_or(i64::MAX);
            Ok(ScheduleChange::Resume(next))
        })?;
        self.schedule(name)
    }

    /// Removes a schedule (the jobs it enqueued stay).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when this handle sees no schedule of that name.
    pub fn remove_schedule(&self, name: &str) -> Result<()> {
        self.change_schedule(name, |_| Ok(ScheduleChange::Remove))
    }

    /// Fires the due slots of every schedule this handle sees, as the catch-up rule of each
    /// says; returns how many jobs this call enqueued. Worker pools and `jobq serve` call it
    /// every second; a slot another process fired first is not fired again.
    ///
    /// # Errors
    ///
    /// Database errors; a schedule whose rule no longer parses is skipped (and logged).
    pub fn fire_schedules(&self) -> Result<usize> {
        let now = self.now_ms();
        let mut enqueued = 0;
        for row in self.engine().schedules(self.owner(), Some(now))? {
            match self.fire_one(&row, now) {
                Ok(n) => enqueued += n,
                Err(e) => {
                    tracing::warn!(schedule = %row.name, error = %e, "jobq: a schedule could not fire");
                }
            }
        }
        // Each firing woke this process's pools itself (as any enqueue does).
        Ok(enqueued)
    }

    /// Enqueues one job of the schedule `name` now, as a slot would (its kind, input, queue,
    /// priority, attempts and owner), with the key `schedule:NAME:run:<now>`. Its slots are
    /// unchanged: a run now is not a firing.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when this handle sees no schedule of that name; as
    /// [`Queue::enqueue`].
    pub fn run_schedule_now(&self, name: &str) -> Result<crate::job::Enqueued> {
        let row = self.schedule_row(name)?;
        let now = self.now_ms();
        let job = schedule_job(
            &row,
            format!("run:{}", Timestamp::from_millis(now).to_rfc3339()),
        );
        let enqueued = self.unscoped().enqueue(job)?;
        tracing::info!(schedule = %row.name, job_id = %enqueued.job_id, "jobq: schedule run now");
        Ok(enqueued)
    }

    fn fire_one(&self, row: &ScheduleRow, now: i64) -> Result<usize> {
        let slots = Slots::of(row.cron.as_deref(), row.every_ms, &row.timezone)?;
        let catch_up: CatchUp = row.catch_up.parse()?;
        let (fire, next) = due(&slots, row.next_fire, now, row.created_at, catch_up);
        let mut jobs = Vec::with_capacity(fire.len());
        // Checked as the schedule's owner's jobs (this handle may be an admin's).
        let checker = self.unscoped();
        for slot in &fire {
            let job = schedule_job(row, Timestamp::from_millis(*slot).to_rfc3339());
            jobs.push(checker.check(job, now)?);
        }
        let firing = Firing {
            owner: row.owner.as_deref(),
            name: &row.name,
            expected: row.next_fire,
            next,
            last_fire: fire.last().copied(),
            jobs,
        };
        let Some(out) = self.engine().fire(firing, now)? else {
            return Ok(0);
        };
        let new = out.iter().filter(|e| !e.already_existed).count();
        if new > 0 {
            tracing::info!(schedule = %row.name, jobs = new, "jobq: schedule fired");
            self.after_enqueue(&out, now);
        }
        Ok(new)
    }
}

/// A job of the schedule `row`, keyed `schedule:NAME:<what>` (a slot's time, or a run now).
fn schedule_job(row: &ScheduleRow, what: String) -> NewJob {
    let mut job = NewJob::new(row.kind.clone())
        .input_json(row.input.clone())
        .queue(row.queue.clone())
        .priority(row.priority)
        .idempotency_key(format!("schedule:{}:{what}", row.name));
    if let Some(n) = row.max_attempts {
        job = job.max_attempts(n);
    }
    if let Some(owner) = &row.owner {
        job = job.owner(owner.clone());
    }
    job
}

/// A thread that fires due schedules every `interval` until dropped (or stopped).
pub(crate) struct Firer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Firer {
    pub(crate) fn spawn(queue: Queue, interval: Duration) -> std::io::Result<Firer> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("jobq-schedules".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    if let Err(e) = queue.fire_schedules() {
                        tracing::debug!(error = %e, "jobq: firing schedules failed");
                    }
                    // Sleep in short steps so that a stop is quick.
                    let mut left = interval;
                    while !left.is_zero() && !flag.load(Ordering::SeqCst) {
                        let step = left.min(Duration::from_millis(50));
                        std::thread::sleep(step);
                        left -= step;
                    }
                }
            })?;
        Ok(Firer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Firer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    #[test]
    fn catch_up_rules_pick_the_missed_slots() {
        let every = Slots::Every(MIN);
        // Next slot at minute 10; now at minute 15 and a half: slots 10..=15 are due.
        let (one, next) = due(&every, 10 * MIN, 15 * MIN + MIN / 2, 0, CatchUp::One);
        assert_eq!((one, next), (vec![15 * MIN], 16 * MIN));
        let (all, _) = due(&every, 10 * MIN, 15 * MIN + MIN / 2, 0, CatchUp::All);
        assert_eq!(all, (10..=15).map(|m| m * MIN).collect::<Vec<_>>());
        // `none`: the current slot fires when on time, a missed one does not.
        let (none, next) = due(&every, 10 * MIN, 15 * MIN + 1000, 0, CatchUp::None);
        assert_eq!((none, next), (vec![15 * MIN], 16 * MIN));
        let (none, _) = due(&every, 10 * MIN, 15 * MIN + MIN / 2 + 1, 0, CatchUp::None);
        assert!(none.is_empty());
        // Not due yet.
        let (nothing, next) = due(&every, 10 * MIN, 9 * MIN, 0, CatchUp::All);
        assert_eq!((nothing, next), (vec![], 10 * MIN));
        // `all` is bounded.
        let (all, _) = due(&every, 0, 5000 * MIN, 0, CatchUp::All);
        assert_eq!(all.len(), MAX_CATCH_UP);
        assert_eq!(all.last(), Some(&(5000 * MIN)));
    }

    #[test]
    fn cron_slots_follow_the_time_zone() {
        let daily = Slots::of(Some("0 2 * * *"), None, "Europe/Paris").unwrap();
        // 2026-01-10T00:00:00Z: 02:00 in Paris (UTC+1) is 01:00Z.
        let t0 = 1_768_003_200_000;
        assert_eq!(daily.next(t0, false, 0), Some(t0 + 3_600_000));
        let hourly = Slots::of(Some("@hourly"), None, "UTC").unwrap();
        assert_eq!(hourly.next(t0 + 1, false, 0), Some(t0 + 3_600_000));
        assert_eq!(hourly.previous(t0 + 1, 0), Some(t0));
        assert!(Slots::of(Some("61 * * * *"), None, "UTC").is_err());
        assert!(
            Slots::of(Some("0 0 * * * *"), None, "UTC").is_err(),
            "5 fields"
        );
        assert!(Slots::of(Some("* * * * *"), None, "Mars/Olympus").is_err());
    }
}

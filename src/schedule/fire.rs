//! Adding, listing, changing and firing schedules, and the thread that fires them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration};
use crate::error::{Error, Result};
use crate::job::{NewJob, Timestamp};
use crate::model::{Firing, ScheduleChange, SchedulePut, ScheduleRow};
use crate::queue::Queue;

use super::slots::{Slots, due};
use super::{CatchUp, MIN_EVERY, NewSchedule, Rule, Schedule};

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

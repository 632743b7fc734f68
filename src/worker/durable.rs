//! Durable steps, sleeps and waits: what a handler calls on its [`JobContext`].
//!
//! A step's output is stored under the job's lease as the step returns; when the job runs
//! again (a crash, a retry, a resume after a sleep or a wait) the handler runs again from
//! the top and each finished step returns its stored output without running. A sleep or a
//! wait is stored the same way, named by its place among the run's sleeps or waits
//! (`@sleep 1`, `@wait 2`), and parks the job by returning a [`JobError`] the handler passes
//! on with `?`: the worker records the job as `waiting`, holding no slot.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::JobContext;
use crate::error::Error;
use crate::job::Timestamp;
use crate::model::{EventQuery, JobError, Park, Step, StepKind};

/// Longest step name, in characters.
pub const MAX_STEP_NAME_CHARS: usize = 200;

/// What a run knows of its job's steps.
#[derive(Debug, Default)]
pub(crate) struct Durable {
    /// The job's stored steps by name, read at the first call of the run.
    stored: Option<BTreeMap<String, Step>>,
    /// The names this run used, in order, and where each is in that order.
    used: Vec<String>,
    positions: std::collections::HashMap<String, usize>,
    /// When each step begun and not yet recorded began.
    started: std::collections::HashMap<String, i64>,
    /// A file that keeps `used` (and a park) across the processes of one run: the
    /// `jobq step`, `jobq sleep` and `jobq wait-event` commands of an exec handler.
    journal: Option<PathBuf>,
}

/// One line of a run's journal (JSON).
#[derive(Debug, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum JournalLine {
    /// A name the run used.
    Used(String),
    /// The run parked the job.
    Park {
        until: i64,
        event: Option<String>,
        after_event: i64,
    },
}

/// What a run's journal holds: the names used, and the park, if the run parked.
#[cfg(feature = "cli")]
pub(crate) fn read_journal(path: &std::path::Path) -> (Vec<String>, Option<Park>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut used = Vec::new();
    let mut park = None;
    for line in text.lines() {
        match serde_json::from_str::<JournalLine>(line) {
            Ok(JournalLine::Used(name)) => used.push(name),
            Ok(JournalLine::Park {
                until,
                event,
                after_event,
            }) => {
                park = Some(Park {
                    until,
                    event,
                    after_event,
                });
            }
            Err(_) => {}
        }
    }
    (used, park)
}

fn append_journal(path: &std::path::Path, line: &JournalLine) -> Result<(), JobError> {
    let mut text = serde_json::to_string(line).unwrap_or_default();
    text.push('\n');
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| {
            JobError::retryable(format!(
                "cannot write the run's journal {}: {e}",
                path.display()
            ))
        })
}

fn bad_step(message: String) -> JobError {
    JobError::permanent(message).code("BAD_STEP")
}

impl JobContext {
    /// Runs `f` once per job: its output is stored under the job's lease as it returns,
    /// and when the job runs again (after a crash, a retry, a sleep or a wait) this returns
    /// the stored output without running `f`. Names are the identity: use each once per
    /// run.
    ///
    /// # Errors
    ///
    /// `f`'s error (nothing stored: the step runs again next time); a permanent error with
    /// code `BAD_STEP` for a name used twice in one run, an empty one, one starting with
    /// `@` (kept for sleeps and waits) or longer than 200 characters; a retryable one when
    /// the output cannot be stored (the job was cancelled or taken from this worker, or the
    /// database failed).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # fn run(ctx: &jobq::JobContext) -> Result<serde_json::Value, jobq::JobError> {
    /// let url: String = ctx.step("upload", || Ok("s3://bucket/render.mp4".to_string()))?;
    /// let invoice: u64 = ctx.step("bill", || Ok(42))?;
    /// # Ok(serde_json::json!({"url": url, "invoice": invoice}))
    /// # }
    /// ```
    pub fn step<T, F>(&self, name: &str, f: F) -> Result<T, JobError>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T, JobError>,
    {
        let output = self.step_json(name, || {
            let value = f()?;
            serde_json::to_value(&value)
                .map_err(|e| bad_step(format!("the output of step {name:?} is not JSON: {e}")))
        })?;
        serde_json::from_value(output).map_err(|e| {
            bad_step(format!(
                "the stored output of step {name:?} of job {} does not fit: {e}",
                self.id()
            ))
        })
    }

    /// [`JobContext::step`] on JSON values.
    pub(crate) fn step_json(
        &self,
        name: &str,
        f: impl FnOnce() -> Result<Value, JobError>,
    ) -> Result<Value, JobError> {
        if let Some(stored) = self.stored_step(name)? {
            return Ok(stored);
        }
        let value = f()?;
        self.record_step(name, &value)?;
        Ok(value)
    }

    /// The first half of [`JobContext::step`], for a handler that runs its steps itself (in
    /// another language, on an async runtime): marks `name` used in this run and returns
    /// the step's stored output if it finished in an earlier run. When it returns `None`,
    /// run the step and store its output with [`JobContext::record_step`].
    ///
    /// # Errors
    ///
    /// As [`JobContext::step`] for the name; a retryable error when the steps cannot be
    /// read.
    pub fn stored_step(&self, name: &str) -> Result<Option<Value>, JobError> {
        if name.trim().is_empty() || name.starts_with('@') || name.contains('\0') {
            return Err(bad_step(format!(
                "step name {name:?} of job {}: a name must not be empty, contain NUL or start with @ (kept for sleeps and waits)",
                self.id()
            )));
        }
        if name.chars().count() > MAX_STEP_NAME_CHARS {
            return Err(bad_step(format!(
                "step name of job {} is longer than {MAX_STEP_NAME_CHARS} characters",
                self.id()
            )));
        }
        self.use_name(name)?;
        if let Some(step) = self.stored(name)? {
            if step.kind == StepKind::Step && step.ended_at.is_some() {
                return parse_stored(step.output.as_deref(), name, self).map(Some);
            }
        }
        let now = self.queue().now_ms();
        self.state().started.insert(name.to_string(), now);
        Ok(None)
    }

    /// The second half of [`JobContext::step`]: stores the output of the step `name`
    /// (which [`JobContext::stored_step`] found unfinished) under the job's lease.
    ///
    /// # Errors
    ///
    /// A permanent error with code `BAD_STEP` for a name this run did not begin with
    /// `stored_step`; a retryable one when the output cannot be stored (the job was
    /// cancelled or taken from this worker, or the database failed).
    pub fn record_step(&self, name: &str, output: &Value) -> Result<(), JobError> {
        let started_at = self.state().started.remove(name).ok_or_else(|| {
            bad_step(format!(
                "step {name:?} of job {} was not begun in this run (stored_step first)",
                self.id()
            ))
        })?;
        self.put(Step {
            name: name.to_string(),
            position: 0,
            kind: StepKind::Step,
            output: Some(output.to_string()),
            event: None,
            event_id: None,
            wake_at: None,
            started_at,
            ended_at: Some(self.queue().now_ms()),
        })
    }

    /// Parks the job for `duration`: returns `Ok` once the time has come, and until then
    /// an error the handler passes on with `?`, which ends the run and records the job as
    /// `waiting` (no slot held, no attempt spent). The job runs again from the top when the
    /// time comes, its finished steps replayed, and this sleep then returns `Ok`. The wake
    /// time is stored at the first call: running again does not sleep again.
    ///
    /// # Errors
    ///
    /// The park (see above); a retryable error when the sleep cannot be stored.
    pub fn sleep_for(&self, duration: Duration) -> Result<(), JobError> {
        let ms = i64::try_from(duration.min(crate::MAX_DURATION).as_millis()).unwrap_or(i64::MAX);
        self.sleep_until(Timestamp::from_millis(
            self.queue().now_ms().saturating_add(ms),
        ))
    }

    /// [`JobContext::sleep_for`] until a time.
    ///
    /// # Errors
    ///
    /// As [`JobContext::sleep_for`].
    pub fn sleep_until(&self, at: Timestamp) -> Result<(), JobError> {
        let name = self.next_name("@sleep")?;
        let now = self.queue().now_ms();
        let stored = self.stored(&name)?;
        if stored.as_ref().is_some_and(|s| s.ended_at.is_some()) {
            return Ok(());
        }
        let started_at = stored.as_ref().map_or(now, |s| s.started_at);
        let wake_at = stored
            .as_ref()
            .and_then(|s| s.wake_at)
            .unwrap_or(at.as_millis());
        let ended = wake_at <= now;
        if stored.is_none() || ended {
            self.put(Step {
                name,
                position: 0,
                kind: StepKind::Sleep,
                output: None,
                event: None,
                event_id: None,
                wake_at: Some(wake_at),
                started_at,
                ended_at: ended.then_some(now),
            })?;
        }
        if ended {
            return Ok(());
        }
        Err(self.park(Park {
            until: wake_at,
            event: None,
            after_event: 0,
        }))
    }

    /// Waits for the event `name` (see [`Queue::emit_event`](crate::Queue::emit_event)) for
    /// at most `timeout`: returns its payload once it is there, `None` at the timeout, and
    /// until then an error the handler passes on with `?`, which parks the job as `waiting`
    /// (no slot held, no attempt spent); one emitted event wakes every job waiting for it.
    /// An event of the job's owner emitted after the job was created counts even when it
    /// came before the wait. The payload (or the timeout) is stored: running again returns
    /// the same.
    ///
    /// # Errors
    ///
    /// The park (see above); a permanent error with code `BAD_STEP` for an empty event
    /// name; a retryable one when the wait cannot be stored.
    pub fn wait_for_event(&self, name: &str, timeout: Duration) -> Result<Option<Value>, JobError> {
        crate::queue::check_event_name(name)
            .map_err(|e| bad_step(format!("wait of job {}: {e}", self.id())))?;
        let slot = self.next_name("@wait")?;
        let now = self.queue().now_ms();
        let stored = self
            .stored(&slot)?
            .filter(|s| s.event.as_deref() == Some(name));
        if let Some(step) = stored.as_ref().filter(|s| s.ended_at.is_some()) {
            return match step.output.as_deref() {
                Some(output) => parse_stored(Some(output), &slot, self).map(Some),
                None => Ok(None),
            };
        }
        let timeout_ms =
            i64::try_from(timeout.min(crate::MAX_DURATION).as_millis()).unwrap_or(i64::MAX);
        let started_at = stored.as_ref().map_or(now, |s| s.started_at);
        let wake_at = stored
            .as_ref()
            .and_then(|s| s.wake_at)
            .unwrap_or_else(|| now.saturating_add(timeout_ms));
        let after_event = self.last_event_taken(name, &slot)?;
        let mut step = Step {
            name: slot,
            position: 0,
            kind: StepKind::Wait,
            output: None,
            event: Some(name.to_string()),
            event_id: None,
            wake_at: Some(wake_at),
            started_at,
            ended_at: None,
        };
        let found = self
            .queue()
            .find_event(EventQuery {
                owner: self.job().owner.as_deref(),
                name,
                after_id: after_event,
                created_from: self.job().created_at.as_millis(),
            })
            .map_err(|e| self.db_error(e))?;
        if let Some(event) = found {
            step.output = Some(event.payload.unwrap_or_else(|| "null".into()));
            step.event_id = Some(event.id);
            step.ended_at = Some(now);
            let payload = parse_stored(step.output.as_deref(), &step.name, self)?;
            self.put(step)?;
            return Ok(Some(payload));
        }
        if wake_at <= now {
            step.ended_at = Some(now);
            self.put(step)?;
            return Ok(None);
        }
        if stored.is_none() {
            self.put(step)?;
        }
        Err(self.park(Park {
            until: wake_at,
            event: Some(name.to_string()),
            after_event,
        }))
    }

    /// A context whose run is kept in a journal file across processes (an exec handler's
    /// `jobq step` commands): the names it used so far are read from it.
    #[cfg(feature = "cli")]
    pub(crate) fn with_journal(self, journal: PathBuf) -> JobContext {
        let (used, _) = read_journal(&journal);
        {
            let mut durable = self.state();
            durable.positions = used
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i))
                .collect();
            durable.used = used;
            durable.journal = Some(journal);
        }
        self
    }

    /// The id of the last event an earlier wait of this job for `name` took (0: none).
    fn last_event_taken(&self, name: &str, slot: &str) -> Result<i64, JobError> {
        self.load()?;
        let durable = self.state();
        Ok(durable
            .stored
            .iter()
            .flat_map(|m| m.values())
            .filter(|s| s.name != slot && s.event.as_deref() == Some(name))
            .filter_map(|s| s.event_id)
            .max()
            .unwrap_or(0))
    }

    /// Marks `name` used in this run; refuses it used before.
    fn use_name(&self, name: &str) -> Result<(), JobError> {
        let journal = {
            let mut durable = self.state();
            if durable.positions.contains_key(name) {
                return Err(bad_step(format!(
                    "step {name:?} was used twice in one run of job {}: each step needs a name of its own",
                    self.id()
                )));
            }
            let at = durable.used.len();
            durable.positions.insert(name.to_string(), at);
            durable.used.push(name.to_string());
            durable.journal.clone()
        };
        match journal {
            Some(path) => append_journal(&path, &JournalLine::Used(name.to_string())),
            None => Ok(()),
        }
    }

    /// The next name of a sleep or a wait (`@sleep 1`, `@sleep 2`, …), marked used.
    fn next_name(&self, prefix: &str) -> Result<String, JobError> {
        let n = {
            let durable = self.state();
            durable
                .used
                .iter()
                .filter(|u| u.strip_prefix(prefix).is_some_and(|r| r.starts_with(' ')))
                .count()
        };
        let name = format!("{prefix} {}", n + 1);
        self.use_name(&name)?;
        Ok(name)
    }

    /// What this run knows of its steps.
    fn state(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads the job's stored steps, once per run.
    fn load(&self) -> Result<(), JobError> {
        let loaded = self.state().stored.is_some();
        if loaded {
            return Ok(());
        }
        // Steps are stored only under a claim's lease: on its first claim a job has none (a
        // manual retry keeps counting claims), and nothing needs reading.
        let steps = if self.lease().claim <= 1 {
            Vec::new()
        } else {
            self.queue()
                .steps(self.id())
                .map_err(|e| self.db_error(e))?
        };
        self.state().stored = Some(steps.into_iter().map(|s| (s.name.clone(), s)).collect());
        Ok(())
    }

    /// The stored step `name`.
    fn stored(&self, name: &str) -> Result<Option<Step>, JobError> {
        self.load()?;
        let durable = self.state();
        Ok(durable.stored.as_ref().and_then(|m| m.get(name)).cloned())
    }

    /// Stores a step under the job's lease (at its place among the names this run used),
    /// and remembers it.
    fn put(&self, mut step: Step) -> Result<(), JobError> {
        step.position = {
            let durable = self.state();
            let at = durable.positions.get(&step.name).copied();
            u32::try_from(at.unwrap_or(durable.used.len())).unwrap_or(u32::MAX)
        };
        self.queue()
            .put_step(self.lease(), &step)
            .map_err(|e| self.db_error(e))?;
        let mut durable = self.state();
        durable
            .stored
            .get_or_insert_with(BTreeMap::new)
            .insert(step.name.clone(), step);
        Ok(())
    }

    /// The error that parks the job, written to the journal for an exec handler's worker.
    fn park(&self, park: Park) -> JobError {
        let journal = self.state().journal.clone();
        if let Some(path) = journal {
            let line = JournalLine::Park {
                until: park.until,
                event: park.event.clone(),
                after_event: park.after_event,
            };
            if let Err(e) = append_journal(&path, &line) {
                return e;
            }
        }
        JobError::parked(park)
    }

    /// A database error met by a step: retryable; a lost lease marks the context cancelled.
    fn db_error(&self, error: Error) -> JobError {
        let error = self.watch::<()>(Err(error)).unwrap_err();
        JobError::retryable(error.to_string()).code("STEP_NOT_STORED")
    }
}

fn parse_stored(output: Option<&str>, name: &str, ctx: &JobContext) -> Result<Value, JobError> {
    serde_json::from_str(output.unwrap_or("null")).map_err(|e| {
        bad_step(format!(
            "the stored output of step {name:?} of job {} is not JSON: {e}",
            ctx.id()
        ))
    })
}

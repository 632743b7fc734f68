//! Jobs, their ids, statuses and timestamps.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::error::{Error, Result};

/// The most a job may cost, in cents (ten billion dollars): a cost given at enqueue, a
/// cost reported while it runs, and their total must stay within 0 to this. Bounding each
/// job keeps every sum of costs exact (see [`Queue::costs`](crate::Queue::costs)).
pub const MAX_COST_CENTS: i64 = 1_000_000_000_000;

/// The id of a job: a UUID v7 in its hyphenated text form, so ids sort by creation time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Parses a job id, accepting any UUID spelling and normalizing it to lowercase
    /// hyphenated text.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] with field `"id"` when `text` is not a UUID.
    pub fn parse(text: &str) -> Result<JobId> {
        uuid::Uuid::parse_str(text.trim())
            .map(|u| JobId(u.hyphenated().to_string()))
            .map_err(|_| Error::invalid("id", format!("{text:?} is not a job id (a UUID)")))
    }

    pub(crate) fn from_db(text: String) -> JobId {
        JobId(text)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The job's row key: the first 64 bits of the UUID (its 48-bit millisecond timestamp,
    /// version and 12-bit counter), which jobq keeps unique. Ordering keys orders ids.
    pub(crate) fn key(&self) -> i64 {
        key_of(&self.0)
    }
}

/// The row key of a UUID in text: its first 64 bits as a big-endian integer. Text that is
/// not a UUID (which no job has) gets -1, a key no job has either (a UUID v7's first bit is
/// the top of its millisecond timestamp, 0 until the year 10889).
pub(crate) fn key_of(text: &str) -> i64 {
    uuid::Uuid::try_parse(text).map_or(-1, |id| id.as_u64_pair().0 as i64)
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl FromStr for JobId {
    type Err = Error;
    fn from_str(s: &str) -> Result<JobId> {
        JobId::parse(s)
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Where a job stands. Statuses are always written in lowercase.
///
/// ```text
///  queued ──claim──▶ running ──complete──▶ succeeded
///    ▲  │              │  │
///    │  │              │  └──fail, attempts left──▶ retry ──run_after passes, claim──▶ running
///    │  │              └─────fail, none left / permanent error──▶ failed  (the dead letter)
///    │  └──cancel──▶ cancelled ◀──cancel── retry / running (cooperative)
///    └──────manual retry (from failed or cancelled; attempts start again)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for its `run_after` and a worker. Left by a claim (to `running`) or a cancel.
    Queued,
    /// Claimed by a worker, which holds its lock. Left by the worker's completion or
    /// failure, by a cancel, or by the stale release when the worker stops heartbeating.
    Running,
    /// Failed an attempt and waits for its backoff to pass; then claimed like `queued`.
    Retry,
    /// Done. Terminal.
    Succeeded,
    /// Failed with no attempts left, or permanently: the dead letter. Terminal; a manual
    /// retry puts it back in the queue.
    Failed,
    /// Cancelled by an admin. Terminal; a manual retry puts it back in the queue.
    Cancelled,
}

impl Status {
    /// Every status, in the order of the state machine.
    pub const ALL: [Status; 6] = [
        Status::Queued,
        Status::Running,
        Status::Retry,
        Status::Succeeded,
        Status::Failed,
        Status::Cancelled,
    ];

    /// The lowercase name, as stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Retry => "retry",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }

    /// True for `succeeded`, `failed` and `cancelled`: no transition leaves them but the
    /// explicit manual retry.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Failed | Status::Cancelled)
    }

    /// True for the statuses a claim takes jobs from (`queued` and `retry`).
    pub fn is_ready(self) -> bool {
        matches!(self, Status::Queued | Status::Retry)
    }

    /// Whether the state machine allows moving from `self` to `to`.
    ///
    /// `running → queued` is the release of a job that was claimed but not run (a worker
    /// shutting down); `failed | cancelled → queued` is the manual retry.
    pub fn can_become(self, to: Status) -> bool {
        use Status::*;
        matches!(
            (self, to),
            (Queued, Running)
                | (Queued, Cancelled)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Retry)
                | (Running, Cancelled)
                | (Running, Queued)
                | (Retry, Running)
                | (Retry, Cancelled)
                | (Failed, Queued)
                | (Cancelled, Queued)
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = Error;

    /// Parses a status name, ignoring case (`"FAILED"` is `failed`).
    fn from_str(s: &str) -> Result<Status> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::invalid(
                    "status",
                    format!(
                        "unknown status {s:?} (expected one of queued, running, retry, succeeded, failed, cancelled)"
                    ),
                )
            })
    }
}

/// A point in time: milliseconds since the Unix epoch, UTC. Serialized as RFC 3339 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the Unix epoch.
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(self) -> i64 {
        self.0
    }

    /// As a `time::OffsetDateTime` in UTC. `time` reaches the years -9999 to 9999: a
    /// timestamp beyond them comes back as the nearest it reaches (jobq stores none: it
    /// refuses times more than 100 years ahead).
    pub fn to_datetime(self) -> time::OffsetDateTime {
        use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};
        OffsetDateTime::from_unix_timestamp_nanos(self.0 as i128 * 1_000_000).unwrap_or_else(|_| {
            let edge = if self.0 < 0 { Date::MIN } else { Date::MAX };
            let time = if self.0 < 0 {
                Time::MIDNIGHT
            } else {
                Time::MAX
            };
            PrimitiveDateTime::new(edge, time).assume_utc()
        })
    }

    /// RFC 3339 text in UTC with milliseconds, e.g. `2026-11-23T13:01:53.123Z`. Any
    /// timestamp prints as itself: a year past 9999 (or before 0) gets its sign and all its
    /// digits, as ISO 8601 writes expanded years (`+292278994-08-17T07:12:55.807Z`).
    pub fn to_rfc3339(self) -> String {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        let year = if (0..=9999).contains(&year) {
            format!("{year:04}")
        } else {
            format!("{year:+05}")
        };
        format!(
            "{year}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60
        )
    }

    /// Parses RFC 3339 text (any offset).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming `field` when `text` is not RFC 3339.
    pub fn parse_rfc3339(field: &'static str, text: &str) -> Result<Timestamp> {
        let dt = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|e| Error::invalid(field, format!("{text:?} is not an RFC 3339 time: {e}")))?;
        Ok(Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), for any day an
/// `i64` of milliseconds can name (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

/// One failed attempt, as kept in a job's `errors` history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// The error code, e.g. `EXIT_1`, `TIMEOUT`, `PANIC`, `HEARTBEAT_TIMEOUT`.
    pub code: Option<String>,
    /// The error message.
    pub message: String,
    /// When it failed.
    #[serde(serialize_with = "ser_ms", deserialize_with = "de_ms")]
    pub at: i64,
}

fn ser_ms<S: Serializer>(ms: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    Timestamp(*ms).serialize(s)
}

fn de_ms<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Ms(i64),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::Ms(ms) => Ok(ms),
        Either::Text(t) => Timestamp::parse_rfc3339("at", &t)
            .map(Timestamp::as_millis)
            .map_err(serde::de::Error::custom),
    }
}

/// A job with every field, as `get` and `list` return it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct Job {
    /// The id.
    pub id: JobId,
    /// The queue it waits in.
    pub queue: String,
    /// Its type: which handler runs it.
    pub kind: String,
    /// Where it stands.
    pub status: Status,
    /// Higher runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempts: u32,
    /// Attempts allowed before it is dead-lettered.
    pub max_attempts: u32,
    /// Not claimed before this time.
    pub run_after: Timestamp,
    /// The worker of the last claim.
    pub locked_by: Option<String>,
    /// When the last claim happened.
    pub locked_at: Option<Timestamp>,
    /// The last heartbeat of the running attempt.
    pub heartbeat_at: Option<Timestamp>,
    /// Where the job is in its work, as its handler reports it.
    pub stage: Option<String>,
    /// How far along the job is, 0.0 to 1.0.
    pub progress: f64,
    /// The input given at enqueue.
    pub input: Value,
    /// The output of its success.
    pub output: Option<Value>,
    /// The idempotency key, unique per owner.
    pub idempotency_key: Option<String>,
    /// The message of the last failure.
    pub last_error: Option<String>,
    /// The code of the last failure.
    pub error_code: Option<String>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// What the job cost, in cents.
    pub cost_cents: i64,
    /// The owner.
    pub owner: Option<String>,
    /// The group it belongs to.
    pub group_id: Option<String>,
    /// An id at an outside service.
    pub external_id: Option<String>,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
    /// When its last attempt started.
    pub started_at: Option<Timestamp>,
    /// When it reached its terminal status.
    pub completed_at: Option<Timestamp>,
    /// True for a `queued` or `retry` job whose `run_after` lies ahead when it was read:
    /// shown as *scheduled* (not a stored status).
    pub scheduled: bool,
}

/// The columns of [`Job`], in the order [`Job::from_row`] reads them (a macro so that
/// statements can be assembled with `concat!` at compile time).
macro_rules! job_columns {
    () => {
        "id, queue, kind, status, priority, attempts, max_attempts, run_after, locked_by, \
         locked_at, heartbeat_at, stage, progress, input, output, idempotency_key, last_error, \
         error_code, errors, cost_cents, owner, group_id, external_id, created_at, updated_at, \
         started_at, completed_at"
    };
}
pub(crate) use job_columns;

impl Job {
    pub(crate) fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
        let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
            Ok(row.get::<_, Option<i64>>(i)?.map(Timestamp))
        };
        let json = |i: usize| -> rusqlite::Result<Option<Value>> {
            match row.get::<_, Option<String>>(i)? {
                None => Ok(None),
                Some(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        i,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                }),
            }
        };
        let status: String = row.get(3)?;
        Ok(Job {
            id: JobId(row.get(0)?),
            queue: row.get(1)?,
            kind: row.get(2)?,
            status: parse_status_column(3, &status)?,
            priority: row.get(4)?,
            attempts: row.get(5)?,
            max_attempts: row.get(6)?,
            run_after: Timestamp(row.get(7)?),
            locked_by: row.get(8)?,
            locked_at: ts(9)?,
            heartbeat_at: ts(10)?,
            stage: row.get(11)?,
            progress: row.get(12)?,
            input: json(13)?.unwrap_or(Value::Null),
            output: json(14)?,
            idempotency_key: row.get(15)?,
            last_error: row.get(16)?,
            error_code: row.get(17)?,
            errors: json(18)?
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| {
                    rusqlite::Error::FromSqlConversionFailure(
                        18,
                        rusqlite::types::Type::Text,
                        Box::new(e),
                    )
                })?
                .unwrap_or_default(),
            cost_cents: cost_column(row, 19)?,
            owner: row.get(20)?,
            group_id: row.get(21)?,
            external_id: row.get(22)?,
            created_at: Timestamp(row.get(23)?),
            updated_at: Timestamp(row.get(24)?),
            started_at: ts(25)?,
            completed_at: ts(26)?,
            scheduled: false,
        })
    }

    /// The job as read at `now`: scheduled if it waits for a `run_after` still ahead.
    pub(crate) fn read_at(mut self, now: i64) -> Job {
        self.scheduled = self.status.is_ready() && self.run_after.as_millis() > now;
        self
    }

    /// The status as jobq shows it: `scheduled` for a job waiting for its `run_after`, else
    /// its stored status.
    pub fn shown_status(&self) -> &'static str {
        if self.scheduled {
            "scheduled"
        } else {
            self.status.as_str()
        }
    }
}

/// A cost as stored: an integer. A REAL (what an overflow made of a sum in files from
/// before costs were bounded) reads as the nearest integer in range, so that the row reads.
pub(crate) fn cost_column(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<i64> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(i)? {
        ValueRef::Integer(n) => n,
        ValueRef::Real(f) => f.clamp(0.0, MAX_COST_CENTS as f64) as i64,
        _ => 0,
    })
}

pub(crate) fn parse_status_column(i: usize, text: &str) -> rusqlite::Result<Status> {
    text.parse().map_err(|e: Error| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// The proof that a worker holds a job: the job, the worker id, and which claim of the job.
///
/// Every report on a running job (complete, fail, heartbeat, progress) names its lease, and
/// is refused with [`Error::LockLost`] when the job is no longer `running` under it: released
/// as stale, cancelled, or claimed again since (even after a manual retry started its
/// attempts again).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The worker that claimed it.
    pub worker: String,
    /// The attempt number the claim started (1 for the first; starts again after a manual
    /// retry).
    pub attempt: u32,
    /// Which claim of the job this is: it counts every claim and never starts again.
    pub claim: u32,
}

/// A job handed to a worker by a claim: what a handler needs, and the lease.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClaimedJob {
    /// The id.
    pub id: JobId,
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The priority.
    pub priority: i32,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// When it became claimable.
    pub run_after: Timestamp,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// The owner.
    pub owner: Option<String>,
    /// The group.
    pub group_id: Option<String>,
    /// The worker holding it.
    pub worker: String,
    /// Which claim of the job this is (see [`Lease::claim`]).
    pub claim: u32,
    /// JSON text, valid by the table's CHECK constraint.
    pub(crate) input: String,
}

impl ClaimedJob {
    /// The input as JSON text.
    pub fn input_json(&self) -> &str {
        &self.input
    }

    /// The input deserialized into `T`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] with field `"input"` when it does not fit `T`.
    pub fn input<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.input)
            .map_err(|e| Error::invalid("input", format!("job {}: {e}", self.id)))
    }

    /// The lease to report on this job with.
    pub fn lease(&self) -> Lease {
        Lease {
            job_id: self.id.clone(),
            worker: self.worker.clone(),
            attempt: self.attempt,
            claim: self.claim,
        }
    }
}

/// When a new job becomes claimable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RunAfter {
    /// At once. The default.
    #[default]
    Now,
    /// After this delay from the enqueue.
    Delay(Duration),
    /// At this time.
    At(Timestamp),
}

/// A job to enqueue, built with setters. Only the kind is required.
///
/// # Examples
///
/// ```
/// use jobq::NewJob;
/// use serde_json::json;
/// use std::time::Duration;
///
/// let job = NewJob::new("send_email")
///     .input(json!({"to": "ada@example.com"}))
///     .queue("mail")
///     .priority(10)
///     .run_after(Duration::from_secs(60))
///     .max_attempts(3)
///     .idempotency_key("welcome-ada");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct NewJob {
    pub(crate) kind: String,
    pub(crate) input: std::result::Result<String, String>,
    pub(crate) queue: Option<String>,
    pub(crate) priority: i32,
    pub(crate) run_after: RunAfter,
    pub(crate) max_attempts: Option<u32>,
    pub(crate) idempotency_key: Option<String>,
    pub(crate) group_id: Option<String>,
    pub(crate) owner: Option<String>,
    pub(crate) cost_cents: i64,
    pub(crate) external_id: Option<String>,
}

impl NewJob {
    /// A job of `kind` (its type: which handler runs it). It must not be empty.
    pub fn new(kind: impl Into<String>) -> NewJob {
        NewJob {
            kind: kind.into(),
            input: Ok(String::from("{}")),
            queue: None,
            priority: 0,
            run_after: RunAfter::Now,
            max_attempts: None,
            idempotency_key: None,
            group_id: None,
            owner: None,
            cost_cents: 0,
            external_id: None,
        }
    }

    /// The input the handler receives. Defaults to `{}`.
    pub fn input(mut self, input: impl Serialize) -> NewJob {
        self.input = serde_json::to_string(&input).map_err(|e| e.to_string());
        self
    }

    /// The input as JSON text; it is checked when the job is enqueued. Defaults to `{}`.
    pub fn input_json(mut self, json: impl Into<String>) -> NewJob {
        let json = json.into();
        self.input = match serde_json::from_str::<serde::de::IgnoredAny>(&json) {
            Ok(_) => Ok(json),
            Err(e) => Err(format!("not valid JSON: {e}")),
        };
        self
    }

    /// The queue. Defaults to the queue's default, `"default"`.
    pub fn queue(mut self, queue: impl Into<String>) -> NewJob {
        self.queue = Some(queue.into());
        self
    }

    /// Higher priorities are claimed first. Defaults to 0.
    pub fn priority(mut self, priority: i32) -> NewJob {
        self.priority = priority;
        self
    }

    /// Not claimable before this delay has passed. Defaults to at once.
    pub fn run_after(mut self, delay: Duration) -> NewJob {
        self.run_after = RunAfter::Delay(delay);
        self
    }

    /// Not claimable before this time. Defaults to at once.
    pub fn run_at(mut self, at: Timestamp) -> NewJob {
        self.run_after = RunAfter::At(at);
        self
    }

    /// Attempts allowed before the job is dead-lettered, at least 1. Defaults to the
    /// queue's setting (5 unless configured).
    pub fn max_attempts(mut self, n: u32) -> NewJob {
        self.max_attempts = Some(n);
        self
    }

    /// Makes the enqueue idempotent: a second enqueue with the same key (for the same
    /// owner) returns the first job. Defaults to none.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> NewJob {
        self.idempotency_key = Some(key.into());
        self
    }

    /// The group the job belongs to; it must exist. Defaults to none.
    pub fn group(mut self, group_id: impl Into<String>) -> NewJob {
        self.group_id = Some(group_id.into());
        self
    }

    /// The owner. An owner-scoped handle stamps its own owner. Defaults to none.
    pub fn owner(mut self, owner: impl Into<String>) -> NewJob {
        self.owner = Some(owner.into());
        self
    }

    /// The cost known up front, in cents; counted against the owner's budget. Defaults to 0.
    pub fn cost_cents(mut self, cents: i64) -> NewJob {
        self.cost_cents = cents;
        self
    }

    /// An id at an outside service. Defaults to none.
    pub fn external_id(mut self, id: impl Into<String>) -> NewJob {
        self.external_id = Some(id.into());
        self
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The job's id: the new one, or the existing one for a repeated idempotency key.
    pub job_id: JobId,
    /// The job's status.
    pub status: Status,
    /// True when an idempotency key matched an existing job and nothing was inserted.
    pub already_existed: bool,
    /// The job's group: the one asked for, or for an existing job, the one it has.
    pub group_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_refuse_everything_but_manual_retry() {
        for from in Status::ALL {
            for to in Status::ALL {
                let allowed = from.can_become(to);
                if from == Status::Succeeded {
                    assert!(!allowed, "succeeded -> {to} must be refused");
                }
                if from.is_terminal() && allowed {
                    assert_eq!(to, Status::Queued, "{from} -> {to} only by manual retry");
                }
            }
        }
    }

    #[test]
    fn transition_table_matches_the_design() {
        use Status::*;
        let allowed: Vec<(Status, Status)> = Status::ALL
            .into_iter()
            .flat_map(|f| Status::ALL.into_iter().map(move |t| (f, t)))
            .filter(|(f, t)| f.can_become(*t))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Queued, Running),
                (Queued, Cancelled),
                (Running, Queued),
                (Running, Retry),
                (Running, Succeeded),
                (Running, Failed),
                (Running, Cancelled),
                (Retry, Running),
                (Retry, Cancelled),
                (Failed, Queued),
                (Cancelled, Queued),
            ]
        );
    }

    #[test]
    fn status_parses_any_case_and_refuses_unknown_names() {
        assert_eq!("FAILED".parse::<Status>().unwrap(), Status::Failed);
        assert_eq!("retry".parse::<Status>().unwrap(), Status::Retry);
        let err = "pending".parse::<Status>().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidInput {
                    field: "status",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn timestamps_print_as_rfc3339_with_millis() {
        let t = Timestamp::from_millis(1_700_000_000_123);
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20.123Z");
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
            (253_402_300_800_000, "+10000-01-01T00:00:00.000Z"),
            (i64::MAX, "+292278994-08-17T07:12:55.807Z"),
            (i64::MIN, "-292275055-05-16T16:47:04.192Z"),
        ] {
            assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), text, "{ms}");
        }
        assert_eq!(Timestamp::from_millis(i64::MAX).to_datetime().year(), 9999);
        assert_eq!(Timestamp::from_millis(i64::MIN).to_datetime().year(), -9999);
        // Agrees with the time crate wherever it reaches.
        for ms in [
            -62_135_596_800_000i64,
            -1_000_000_000_000,
            1_234_567_890_123,
            4_102_444_800_000,
        ] {
            let dt = Timestamp::from_millis(ms).to_datetime();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                dt.year(),
                u8::from(dt.month()),
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second(),
                dt.millisecond()
            );
            assert_eq!(Timestamp::from_millis(ms).to_rfc3339(), expected);
        }
        assert_eq!(
            Timestamp::parse_rfc3339("t", "2023-11-14T22:13:20.123Z").unwrap(),
            t
        );
        assert!(Timestamp::parse_rfc3339("t", "yesterday").is_err());
    }

    #[test]
    fn job_ids_normalize_and_refuse_garbage() {
        let id = JobId::parse("0192F4A5-8B3C-7D2E-9F10-1234567890AB").unwrap();
        assert_eq!(id.as_str(), "0192f4a5-8b3c-7d2e-9f10-1234567890ab");
        assert!(JobId::parse("not-a-uuid").is_err());
    }
}

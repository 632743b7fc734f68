//! A job as stored, with every field, and the history of its failed attempts.

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use super::{JobId, Status, Timestamp};

/// One failed attempt, as kept in a job's `errors` history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptError {
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// The error code, e.g. `EXIT_1`, `TIMEOUT`, `PANIC`, `HEARTBEAT_TIMEOUT`.
    pub code: Option<String>,
    /// The error message.
    pub message: String,
    /// More than the message, when there is more: a traceback, the end of a command's
    /// stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When it failed.
    #[serde(serialize_with = "ser_ms", deserialize_with = "de_ms")]
    pub at: i64,
}

fn ser_ms<S: Serializer>(ms: &i64, s: S) -> std::result::Result<S::Ok, S::Error> {
    Timestamp::from_millis(*ms).serialize(s)
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
    /// How many times it snoozed (see [`JobError::snooze`](crate::JobError::snooze)).
    pub snoozes: u32,
    /// How many times a claim took it (a worker's or an admin's), across manual retries:
    /// unlike `attempts`, it never starts again.
    pub claims: u32,
    /// For a `waiting` job, the event it waits for (none: it sleeps); its `run_after` is
    /// when it runs again at the latest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// True for a `queued` or `retry` job whose `run_after` lies ahead when it was read:
    /// shown as *scheduled* (not a stored status).
    pub scheduled: bool,
    /// The jobs it waits for, with their statuses (filled by [`Queue::get`](crate::Queue::get);
    /// empty in listings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependencies: Option<Vec<JobLink>>,
    /// The jobs that wait for it, with their statuses (as `dependencies`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dependents: Option<Vec<JobLink>>,
    /// Its concurrency key, if it has one (filled by [`Queue::get`](crate::Queue::get)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Its local name in its flow, if it was submitted in one (filled by
    /// [`Queue::get`](crate::Queue::get)).
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub flow_ref: Option<String>,
    /// Its stored steps, sleeps and waits, in the order they began (filled by
    /// [`Queue::get`](crate::Queue::get)).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<crate::model::Step>>,
}

/// A job another waits for, or that waits for another: its id, flow ref and status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobLink {
    /// The job.
    pub id: JobId,
    /// Its local name in its flow, if it has one.
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub flow_ref: Option<String>,
    /// Its kind.
    pub kind: String,
    /// Its status.
    pub status: Status,
}

impl Job {
    /// The job with what its page shows beside its row.
    pub(crate) fn with_links(mut self, links: crate::job::Links) -> Job {
        self.dependencies = Some(links.dependencies);
        self.dependents = Some(links.dependents);
        self.concurrency_key = links.concurrency_key;
        self.flow_ref = links.flow_ref;
        self
    }

    /// The job with its stored steps.
    pub(crate) fn with_steps(mut self, steps: Vec<crate::model::Step>) -> Job {
        self.steps = Some(steps);
        self
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

/// What a job's page shows beside its row: the jobs it waits for, those that wait for it,
/// its concurrency key and its flow ref.
#[derive(Debug, Clone, Default)]
pub(crate) struct Links {
    pub dependencies: Vec<JobLink>,
    pub dependents: Vec<JobLink>,
    pub concurrency_key: Option<String>,
    pub flow_ref: Option<String>,
}

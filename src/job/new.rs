//! A job to enqueue, and what an enqueue did.

use std::time::Duration;

use serde::Serialize;

use super::{JobId, Status, Timestamp};

/// The most a job may cost, in cents (ten billion dollars): a cost given at enqueue, a
/// cost reported while it runs, and their total must stay within 0 to this. Bounding each
/// job keeps every sum of costs exact (see [`Queue::costs`](crate::Queue::costs)).
pub const MAX_COST_CENTS: i64 = 1_000_000_000_000;

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

/// What a job whose dependency failed or was cancelled does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDependencyFailure {
    /// It is cancelled with error code `DEPENDENCY_FAILED` (and so are the jobs waiting for
    /// it). A manual retry of the dependency puts it back to `blocked`. The default.
    #[default]
    Cancel,
    /// It runs anyway, once every dependency has ended, whichever way.
    Run,
}

impl std::str::FromStr for OnDependencyFailure {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<OnDependencyFailure> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cancel" => Ok(OnDependencyFailure::Cancel),
            "run" => Ok(OnDependencyFailure::Run),
            _ => Err(crate::error::Error::invalid(
                "on_dependency_failure",
                format!("unknown value {s:?} (expected cancel or run)"),
            )),
        }
    }
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
    pub(crate) after: Vec<JobId>,
    pub(crate) on_dependency_failure: OnDependencyFailure,
    pub(crate) unique_for: Option<Duration>,
    pub(crate) unique_while_active: bool,
    pub(crate) concurrency_key: Option<String>,
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
            after: Vec::new(),
            on_dependency_failure: OnDependencyFailure::Cancel,
            unique_for: None,
            unique_while_active: false,
            concurrency_key: None,
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

    /// Waits for the job `id`: the new job is `blocked` until every job it waits for has
    /// succeeded, and becomes `queued` in the transaction that records the last success.
    /// Call it once per dependency. The job must exist and be visible to the enqueuing
    /// owner. (Within a [`Flow`](crate::Flow), jobs name each other by ref instead.)
    pub fn after(mut self, id: &JobId) -> NewJob {
        self.after.push(id.clone());
        self
    }

    /// What the job does when a dependency fails or is cancelled. Defaults to
    /// [`OnDependencyFailure::Cancel`].
    pub fn on_dependency_failure(mut self, what: OnDependencyFailure) -> NewJob {
        self.on_dependency_failure = what;
        self
    }

    /// The idempotency key holds only for `window` after the first job's creation; an
    /// enqueue of the key later makes a new job. Needs an idempotency key.
    pub fn unique_for(mut self, window: Duration) -> NewJob {
        self.unique_for = Some(window);
        self
    }

    /// The idempotency key holds only while its job has not ended (`blocked`, `queued`,
    /// `running` or `retry`); once it has, an enqueue of the key makes a new job. Needs an
    /// idempotency key.
    pub fn unique_while_active(mut self) -> NewJob {
        self.unique_while_active = true;
        self
    }

    /// Its concurrency key: where its queue has a per-key running limit
    /// (`max_running_per_key`), no more than that many running jobs share a key. Defaults
    /// to none.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> NewJob {
        self.concurrency_key = Some(key.into());
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

//! What the boundary says about jobs: new rows, claims, the reports recorded on held jobs,
//! admin changes, stale releases and listings.

use crate::job::{Enqueued, JobId, Status};
use crate::model::JobError;

/// Whose rows an operation sees: one owner's, or (`None`) everyone's.
pub(crate) type Scope<'a> = Option<&'a str>;

/// What submitting a flow did: created it, or found the flow its key names.
#[derive(Debug, Clone)]
pub(crate) enum FlowInsert {
    /// The group was created with these jobs (in the order given).
    Created(Vec<Enqueued>),
    /// The owner's flow of that key, made before: its group and its jobs by ref.
    Existing {
        group_id: String,
        jobs: Vec<(String, JobId)>,
    },
}

/// A dependency of a job, with its flow ref and its output (JSON text; none before it
/// succeeded).
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub id: JobId,
    pub flow_ref: Option<String>,
    pub output: Option<String>,
}

/// Each dependency of a job with its output.
pub(crate) type Outputs = Vec<Output>;

/// A job a new job waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DepRef {
    /// An existing job.
    Job(JobId),
    /// The job at this index of the same batch (always an earlier one).
    Earlier(usize),
}

/// How a new job stands towards the jobs it waits for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Waits {
    /// Each dependency once.
    pub jobs: Vec<JobId>,
    /// How many have not settled.
    pub waiting: i64,
    /// A dependency that failed or was cancelled, for a job that does not run anyway.
    pub failed: Option<(JobId, Status)>,
}

impl Waits {
    pub(crate) fn add(&mut self, id: JobId, status: Status, run_on_failure: bool) {
        if self.jobs.contains(&id) {
            return;
        }
        let ended_badly = matches!(status, Status::Failed | Status::Cancelled);
        if !(status == Status::Succeeded || (run_on_failure && ended_badly)) {
            self.waiting += 1;
        }
        if ended_badly && !run_on_failure && self.failed.is_none() {
            self.failed = Some((id.clone(), status));
        }
        self.jobs.push(id);
    }

    /// The refusal of a dependency that does not exist (or that the owner cannot see).
    pub(crate) fn missing(id: &JobId) -> crate::error::Error {
        crate::error::Error::invalid(
            "after",
            format!("the dependency {id} does not exist (or belongs to another owner)"),
        )
    }

    /// The new job's status: cancelled with a failed dependency, blocked while one has not
    /// settled, else queued.
    pub(crate) fn status(&self) -> Status {
        if self.failed.is_some() {
            Status::Cancelled
        } else if self.waiting > 0 {
            Status::Blocked
        } else {
            Status::Queued
        }
    }

    /// The message of a job created cancelled.
    pub(crate) fn failure_message(&self) -> Option<String> {
        self.failed
            .as_ref()
            .map(|(id, status)| format!("dependency {id} {status}"))
    }
}

/// How long an idempotency key holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Unique {
    /// For as long as its job exists.
    #[default]
    Forever,
    /// Until this time.
    Until(i64),
    /// While its job has not ended.
    WhileActive,
}

impl Unique {
    /// The stored columns: `unique_until` and `unique_while_active`.
    pub(crate) fn columns(self) -> (Option<i64>, bool) {
        match self {
            Unique::Forever => (None, false),
            Unique::Until(t) => (Some(t), false),
            Unique::WhileActive => (None, true),
        }
    }
}

/// What a claim takes: up to `limit` ready jobs of `filter`, for `worker`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClaimSpec<'a> {
    pub worker: &'a str,
    pub limit: usize,
    pub filter: &'a ClaimFilter,
}

/// What is recorded for a job a worker holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Record<'a> {
    /// Succeeded with this output (JSON text) and this cost added.
    Complete { output: &'a str, cost_cents: i64 },
    /// The attempt failed, and what follows was decided above the engine: `retry` (runs
    /// again at `retry_at`) or `failed` (the dead letter).
    Fail {
        error: &'a JobError,
        status: Status,
        retry_at: i64,
    },
    /// Give the job back unstarted: `queued`, without spending the attempt.
    Release,
    /// Back to `queued`, runnable at `run_after`, without spending the attempt; `counted`
    /// adds one to the job's snoozes (a snooze the handler asked for, not a deferral).
    Snooze { run_after: i64, counted: bool },
    /// Parked by its handler, without spending the attempt: `waiting` until `run_after`,
    /// or until an event named `event` (of the job's owner, emitted no earlier than the job
    /// was created, with an id above `after_event`) — and if one is stored already, `queued`
    /// at once instead, in the same transaction.
    Wait {
        run_after: i64,
        event: Option<&'a str>,
        after_event: i64,
    },
}

/// What recording one report did: the job's new status and, for a retry, when it runs
/// again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recorded {
    pub status: Status,
    pub retry_at: Option<i64>,
    /// It may have made jobs that wait for it ready (it has dependents and ended).
    pub readied: bool,
}

/// A report made while a job runs (counts as a heartbeat).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress<'a> {
    pub progress: Option<f64>,
    pub stage: Option<&'a str>,
    pub cost_cents: i64,
}

/// An admin's change to one job, checked against its status inside the transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Change<'a> {
    Cancel,
    /// The manual retry (from `failed` or `cancelled`); `from_scratch` also forgets the
    /// job's stored steps.
    Retry {
        from_scratch: bool,
    },
    Delete,
    /// `transition`: to `running` (held by `manual`), `succeeded`, `failed` or `retry` (with
    /// this message), or `queued` (a release from `running`, else the manual retry).
    To(Status, &'a str),
}

/// When a running job counts as stale: its heartbeat (or lock) older than these cutoffs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaleCutoffs {
    pub heartbeat_before: i64,
    pub lock_before: i64,
}

/// A job released as stale.
#[derive(Debug, Clone)]
pub(crate) struct Released {
    pub id: JobId,
    pub status: Status,
    pub code: String,
    pub worker: Option<String>,
}

/// Which jobs a listing returns, newest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct ListQuery<'a> {
    pub status: Option<Status>,
    /// Only `queued` or `retry` jobs whose `run_after` is after this time.
    pub scheduled_after: Option<i64>,
    /// Only the jobs a search finds.
    pub search: Option<Search>,
    pub queue: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub group_id: Option<&'a str>,
    pub owner: Option<&'a str>,
    /// Only jobs older than the job with this row key (the cursor), if any.
    pub before: Option<JobId>,
    /// Only jobs created at or after this time (ms); their ids are at or after
    /// `JobId::first_at` of it (an id never runs behind its job's creation), which bounds
    /// the scan.
    pub created_from: Option<i64>,
    /// Only jobs created before this time (ms).
    pub created_to: Option<i64>,
    pub limit: usize,
}

/// What a search looks for: the whole text (an id, an idempotency key or an external id)
/// and, when it reads as the start of an id, that start as hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Search {
    pub text: String,
    /// Lowercase hex digits (4 to 32), dashes removed, when the text is one.
    pub id_prefix: Option<String>,
}

impl Search {
    pub(crate) fn of(text: &str) -> Search {
        let hex: String = text
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        let id_prefix =
            (hex.len() >= 4 && hex.len() <= 32 && hex.chars().all(|c| c.is_ascii_hexdigit()))
                .then_some(hex);
        Search {
            text: text.to_string(),
            id_prefix,
        }
    }

    /// The first 64 bits of the ids the prefix covers (a row key range on SQLite).
    pub(crate) fn key_range(&self) -> Option<(i64, i64)> {
        let hex = self.id_prefix.as_deref()?;
        let head = &hex[..hex.len().min(16)];
        let lo = format!("{head:0<16}");
        let hi = format!("{head:f<16}");
        Some((
            u64::from_str_radix(&lo, 16).ok()? as i64,
            u64::from_str_radix(&hi, 16).ok()? as i64,
        ))
    }

    /// The lowest and highest UUIDs the prefix covers.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn uuid_range(&self) -> Option<(String, String)> {
        let hex = self.id_prefix.as_deref()?;
        Some((format!("{hex:0<32}"), format!("{hex:f<32}")))
    }
}

impl Recorded {
    pub(crate) fn new(status: Status) -> Recorded {
        Recorded {
            status,
            retry_at: None,
            readied: false,
        }
    }

    /// The same, having made jobs that wait for it ready when `readied`.
    pub(crate) fn readying(mut self, readied: bool) -> Recorded {
        self.readied = readied;
        self
    }

    /// What recording `report` does to a job.
    pub(crate) fn of(report: &Record<'_>) -> Recorded {
        match *report {
            Record::Complete { .. } => Recorded::new(Status::Succeeded),
            Record::Release => Recorded::new(Status::Queued),
            Record::Snooze { run_after, counted } => Recorded {
                status: Status::Queued,
                // A deferral is a release that waits a moment: told as a release.
                retry_at: counted.then_some(run_after),
                readied: false,
            },
            Record::Wait { run_after, .. } => Recorded {
                status: Status::Waiting,
                retry_at: Some(run_after),
                readied: false,
            },
            Record::Fail {
                status, retry_at, ..
            } => Recorded {
                status,
                retry_at: (status == Status::Retry).then_some(retry_at),
                readied: false,
            },
        }
    }
}

/// Which jobs a worker takes: the queues it serves and, optionally, only some kinds.
///
/// # Examples
///
/// ```
/// use jobq::ClaimFilter;
///
/// let all_of_default = ClaimFilter::default();
/// let mail = ClaimFilter::queues(["mail", "mail-bulk"]).kinds(["send_email"]);
/// ```
#[derive(Debug, Clone)]
pub struct ClaimFilter {
    queues: Vec<String>,
    /// The kinds, or `None` for any kind.
    kinds: Option<Vec<String>>,
    /// The same as a JSON array (for SQLite's `json_each`).
    kinds_json: Option<String>,
}

impl Default for ClaimFilter {
    /// The queue `"default"`, any kind.
    fn default() -> Self {
        ClaimFilter::queues(["default"])
    }
}

impl ClaimFilter {
    /// Jobs of these queues (the queue `"default"` when empty), of any kind.
    pub fn queues<I, S>(queues: I) -> ClaimFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut queues: Vec<String> = queues.into_iter().map(Into::into).collect();
        if queues.is_empty() {
            queues.push("default".into());
        }
        queues.sort();
        queues.dedup();
        ClaimFilter {
            queues,
            kinds: None,
            kinds_json: None,
        }
    }

    /// Only jobs of these kinds.
    pub fn kinds<I, S>(mut self, kinds: I) -> ClaimFilter
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let kinds: Vec<String> = kinds.into_iter().map(Into::into).collect();
        self.kinds_json = Some(serde_json::to_string(&kinds).unwrap_or_else(|_| "[]".into()));
        self.kinds = Some(kinds);
        self
    }

    /// The kinds taken, or `None` for any kind.
    pub fn kind_names(&self) -> Option<&[String]> {
        self.kinds.as_deref()
    }

    /// The kinds as a JSON array, or `None` for any kind.
    pub(crate) fn kinds_json(&self) -> Option<&str> {
        self.kinds_json.as_deref()
    }

    /// The queues served.
    pub fn queue_names(&self) -> &[String] {
        &self.queues
    }
}

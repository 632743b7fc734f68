//! Why a job's attempt failed: the error a handler returns, as the boundary records it.

use std::fmt;
use std::time::Duration;

/// Longest error message kept, in characters; the rest is cut.
const MAX_MESSAGE_CHARS: usize = 8 * 1024;

/// Longest error detail kept, in characters: its end (where a traceback says what
/// happened).
const MAX_DETAIL_CHARS: usize = 16 * 1024;

/// Why a job's attempt failed, as a handler (or anyone failing a job) reports it.
///
/// A retryable error puts the job in `retry` with a backoff delay while attempts remain;
/// a permanent one fails it at once (the dead letter).
///
/// Any error converts into a retryable `JobError` (see its `From` impl), so `?` works in
/// handlers.
///
/// # Examples
///
/// ```
/// use jobq::JobError;
/// use std::time::Duration;
///
/// let transient = JobError::retryable("upstream 503").code("UPSTREAM").retry_after(Duration::from_secs(30));
/// let fatal = JobError::permanent("the video file is corrupt").code("BAD_INPUT");
/// assert!(fatal.is_permanent() && !transient.is_permanent());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub(crate) message: String,
    pub(crate) detail: Option<String>,
    pub(crate) code: Option<String>,
    pub(crate) permanent: bool,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) snooze: Option<Duration>,
    pub(crate) park: Option<Box<Park>>,
}

/// A job parking itself, carried by the [`JobError`] a sleep or a wait returns: `waiting`
/// until `until` (ms), or until the event `event` (one with an id above `after_event`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Park {
    pub until: i64,
    pub event: Option<String>,
    pub after_event: i64,
}

impl JobError {
    /// A failure worth retrying (a timeout, a 503): retried with backoff while attempts remain.
    pub fn retryable(message: impl Into<String>) -> JobError {
        JobError {
            message: message.into(),
            detail: None,
            code: None,
            permanent: false,
            retry_after: None,
            snooze: None,
            park: None,
        }
    }

    /// The job parks itself: not a failure but the end of this run, which the worker
    /// records as `waiting` (see [`JobContext::sleep_for`](crate::JobContext::sleep_for)
    /// and [`JobContext::wait_for_event`](crate::JobContext::wait_for_event), which return
    /// it; a handler passes it on with `?`).
    pub(crate) fn parked(park: Park) -> JobError {
        let message = match &park.event {
            Some(event) => format!(
                "waiting for event {event:?} until {}",
                crate::job::Timestamp::from_millis(park.until).to_rfc3339()
            ),
            None => format!(
                "sleeping until {}",
                crate::job::Timestamp::from_millis(park.until).to_rfc3339()
            ),
        };
        JobError {
            park: Some(Box::new(park)),
            ..JobError::retryable(message)
        }
    }

    /// True when this is a sleep or a wait parking the job, not a failure: a handler that
    /// catches errors must pass this one on.
    pub fn is_park(&self) -> bool {
        self.park.is_some()
    }

    /// Not a failure but an outcome of its own: the job goes back to `queued`, to run again
    /// after `delay`, and the attempt is not spent (a rate-limited API asking to come back
    /// later, a resource not ready yet). Return it as the handler's error:
    /// `Err(JobError::snooze(Duration::from_secs(60)))`.
    pub fn snooze(delay: Duration) -> JobError {
        JobError {
            snooze: Some(delay),
            ..JobError::retryable(format!(
                "snoozed for {}",
                crate::duration::format_duration(delay)
            ))
        }
    }

    /// The delay, when this is a snooze rather than a failure.
    pub fn snoozed_for(&self) -> Option<Duration> {
        self.snooze
    }

    /// A failure that will not go away (bad input): the job fails at once, no retry.
    pub fn permanent(message: impl Into<String>) -> JobError {
        JobError {
            permanent: true,
            ..JobError::retryable(message)
        }
    }

    /// A machine-readable code, stored as the job's `error_code`. Defaults to none.
    pub fn code(mut self, code: impl Into<String>) -> JobError {
        self.code = Some(code.into());
        self
    }

    /// More than the message: a traceback, the end of a command's stderr. Kept with the
    /// attempt in the job's `errors` history (the message stays one line to read at a
    /// glance). Defaults to none.
    pub fn detail(mut self, detail: impl Into<String>) -> JobError {
        self.detail = Some(detail.into());
        self
    }

    /// The detail, if any.
    pub fn error_detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// Retry after exactly this delay instead of the policy's backoff. Defaults to the
    /// retry policy of the job's kind or queue.
    pub fn retry_after(mut self, delay: Duration) -> JobError {
        self.retry_after = Some(delay);
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code, if any.
    pub fn error_code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// True when no retry is wanted.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    /// The delay asked for, if any.
    pub fn requested_delay(&self) -> Option<Duration> {
        self.retry_after
    }

    pub(crate) fn with_default_delay(mut self, delay: impl FnOnce() -> Duration) -> JobError {
        if self.retry_after.is_none() {
            self.retry_after = Some(delay());
        }
        self
    }

    /// The message as stored: at most [`MAX_MESSAGE_CHARS`], NUL characters (which
    /// PostgreSQL's text cannot hold) shown as U+FFFD.
    pub(crate) fn stored_message(&self) -> String {
        let message = match self.message.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((cut, _)) => format!("{}… (cut)", &self.message[..cut]),
            None => self.message.clone(),
        };
        message.replace('\0', "\u{fffd}")
    }

    /// The detail as stored: at most [`MAX_DETAIL_CHARS`] (its end), NUL characters shown
    /// as U+FFFD.
    pub(crate) fn stored_detail(&self) -> Option<String> {
        let detail = self.detail.as_ref()?;
        let count = detail.chars().count();
        let kept = match count.checked_sub(MAX_DETAIL_CHARS) {
            Some(skip) if skip > 0 => {
                format!("…{}", detail.chars().skip(skip).collect::<String>())
            }
            _ => detail.clone(),
        };
        Some(kept.replace('\0', "\u{fffd}"))
    }

    /// The code as stored (NUL characters shown as U+FFFD).
    pub(crate) fn stored_code(&self) -> Option<String> {
        self.code.as_ref().map(|c| c.replace('\0', "\u{fffd}"))
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(code) => write!(f, "{code}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Any error a handler meets converts into a retryable `JobError`, so that `?` works on it:
/// every `std::error::Error + Send + Sync`, `Box<dyn Error + Send + Sync>`, anyhow- and
/// eyre-style error types (which convert into that box), and plain `&str` or `String`
/// messages. The message is the error's, followed by its sources.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for JobError {
    fn from(err: E) -> JobError {
        let err: Box<dyn std::error::Error + Send + Sync> = err.into();
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::retryable(message)
    }
}

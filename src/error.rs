//! The one error type of the library.

use std::path::PathBuf;
use std::time::Duration;

use crate::job::{JobId, Status};

/// A specialized `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in jobq, as variants a caller can act on.
///
/// A handler's failure is not an `Error`: it is an outcome of the job (see
/// [`JobError`](crate::JobError)). An `Error` always means the request itself was refused or
/// could not be carried out, and a refused request changed nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The job, group or owner does not exist, or belongs to another owner than the one the
    /// handle is scoped to (a scoped handle cannot tell the two apart, by design).
    #[error("{what} {id} not found")]
    NotFound {
        /// `"job"`, `"group"`, `"owner"` or `"token"`.
        what: &'static str,
        /// The id that was looked up.
        id: String,
    },

    /// The state machine does not allow this action from the job's current status, e.g.
    /// cancelling a job that already succeeded.
    #[error("job {job} is {from}: cannot {action}")]
    InvalidTransition {
        /// The job.
        job: JobId,
        /// Its status when the request was made.
        from: Status,
        /// What was asked: `"cancel"`, `"retry"`, `"delete"`, or `"move to <status>"`.
        action: String,
    },

    /// A worker reported on a job it no longer holds: the job was released as stale,
    /// cancelled, or claimed again since. The report was not applied.
    #[error(
        "job {job}: worker {worker} no longer holds the lock (attempt {attempt}; the job is {status} now)"
    )]
    LockLost {
        /// The job.
        job: JobId,
        /// The worker that reported.
        worker: String,
        /// The attempt the worker was running.
        attempt: u32,
        /// The job's status now.
        status: Status,
    },

    /// Something with this id exists already (an owner, a group).
    #[error("{what} {id} already exists")]
    Duplicate {
        /// `"owner"` or `"group"`.
        what: &'static str,
        /// The id.
        id: String,
    },

    /// Enqueueing would take an owner past its budget. Nothing was written.
    #[error(
        "owner {owner} is over budget: {spent_cents} spent + {requested_cents} requested > {budget_cents} budget (cents)"
    )]
    BudgetExceeded {
        /// The owner.
        owner: String,
        /// The owner's budget.
        budget_cents: i64,
        /// What the owner's jobs have cost so far.
        spent_cents: i64,
        /// What the refused enqueue would have added.
        requested_cents: i64,
    },

    /// A value given to jobq is not acceptable: names the field and says why.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The field, e.g. `"input"`, `"progress"`, `"status"`, `"max_attempts"`.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// An owner-scoped handle asked for something only an admin handle may do.
    #[error("an owner-scoped handle cannot {action}")]
    Forbidden {
        /// What was asked.
        action: &'static str,
    },

    /// [`Queue::wait`](crate::Queue::wait) reached its deadline before the job finished. The
    /// job goes on; wait again, or look at it later.
    #[error("job {job} is still {status} after waiting {waited:?}")]
    Timeout {
        /// The job waited for.
        job: JobId,
        /// Its status at the deadline.
        status: Status,
        /// How long was waited.
        waited: Duration,
    },

    /// The database stayed locked by other connections for longer than the busy timeout.
    #[error("database is busy: still locked after {timeout:?} ({context})")]
    Busy {
        /// The busy timeout that passed.
        timeout: Duration,
        /// What was being attempted.
        context: String,
    },

    /// The file was written by a newer jobq; this version cannot read it.
    #[error(
        "{path}: schema version {found} is newer than this jobq supports ({supported}); upgrade jobq"
    )]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// The file's version.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },

    /// The file is not a jobq database: not SQLite at all, or a SQLite database holding
    /// other tables and no jobq schema. The file was left untouched.
    #[error("{path} is not a jobq database: {reason}")]
    NotJobqDatabase {
        /// The file.
        path: PathBuf,
        /// What was found.
        reason: String,
    },

    /// The database file cannot be opened (missing folder, permissions, read-only path).
    #[error("cannot open {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// The database file is damaged (SQLite reports it as malformed).
    #[error("database is corrupt: {0}")]
    Corrupt(String),

    /// The disk (or the file system holding the database) is full. The transaction was rolled
    /// back; the file is intact, and writing works again once there is room.
    #[error("the disk is full: {0}")]
    DiskFull(String),

    /// Any other failure reported by the database (SQLite or PostgreSQL), with its message.
    #[error("database error: {0}")]
    Database(#[source] DatabaseError),

    /// This engine does not offer what was asked (e.g. enqueueing inside a SQLite
    /// transaction on a queue kept in PostgreSQL).
    #[error("{action} is not possible on a queue kept in {engine}")]
    Unsupported {
        /// What was asked.
        action: &'static str,
        /// The engine of the queue: `"sqlite"` or `"postgres"`.
        engine: &'static str,
    },

    /// The database server cannot be reached, or it went away in the middle of a request
    /// (restarting, shutting down, the connection cut). Trying again later may succeed; a
    /// write whose answer was lost may or may not have been applied.
    #[error("the database is unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },

    /// No pooled connection became free in time.
    #[error("connection pool: {0}")]
    Pool(String),
}

impl Error {
    /// True when the request failed only because the database stayed locked too long:
    /// trying again later may succeed.
    pub fn is_busy(&self) -> bool {
        matches!(self, Error::Busy { .. })
    }

    /// True when trying again later may succeed: the database was busy or unavailable, or
    /// no pooled connection came free in time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Busy { .. } | Error::Unavailable { .. } | Error::Pool(_)
        )
    }

    /// True for [`Error::Timeout`]: a wait reached its deadline first.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when a worker's report was refused because it lost the job's lock.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Error::LockLost { .. })
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn job_not_found(id: &JobId) -> Error {
        Error::NotFound {
            what: "job",
            id: id.to_string(),
        }
    }
}

/// A failure the database reported, beyond those jobq tells apart: which engine, its code
/// where it gives one (SQLite's extended result code name, PostgreSQL's SQLSTATE), and the
/// driver's own error as the source.
#[derive(Debug)]
pub struct DatabaseError {
    engine: &'static str,
    code: Option<String>,
    message: String,
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl DatabaseError {
    pub(crate) fn new(
        engine: &'static str,
        code: Option<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> DatabaseError {
        let source = source.into();
        DatabaseError {
            engine,
            code,
            message: source.to_string(),
            source,
        }
    }

    /// The same, with the database's own words (when the driver's error says less).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn with_message(mut self, message: String) -> DatabaseError {
        self.message = message;
        self
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn engine(&self) -> &'static str {
        self.engine
    }

    /// The database's code for the failure, if it gave one (a PostgreSQL SQLSTATE such as
    /// `40001`, or a SQLite result code name).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

impl std::fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy {
                timeout: Duration::ZERO,
                context: err.to_string(),
            },
            Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt(err.to_string()),
            Some(ErrorCode::DiskFull) => Error::DiskFull(err.to_string()),
            Some(ErrorCode::NotADatabase) => Error::Corrupt(err.to_string()),
            code => Error::Database(DatabaseError::new(
                "sqlite",
                code.map(|c| format!("{c:?}")),
                err,
            )),
        }
    }
}

impl From<r2d2::Error> for Error {
    fn from(err: r2d2::Error) -> Self {
        Error::Pool(err.to_string())
    }
}

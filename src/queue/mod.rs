//! The [`Queue`]: a handle on one database file, and every verb on its jobs.
//!
//! One file per operation: `enqueue.rs`, `claim.rs`, `lease.rs` (what a worker reports on a
//! job it holds), `admin.rs` (cancel, retry, delete, transition), `read.rs` (get, list).

mod admin;
mod bulk;
mod claim;
mod enqueue;
pub(crate) mod flow;
mod lease;
mod read;
mod steps;
mod subscribe;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use crate::model::MAX_DEPENDENCIES;
pub(crate) use crate::model::check_text;
pub use bulk::{BulkAction, BulkOutcome, BulkRefusal, MAX_REFUSALS_SHOWN};
pub use lease::{DEFAULT_MAX_SNOOZES, MIN_SNOOZE};
pub(crate) use lease::{Finished, OUTCOME_TARGET, Report};
pub use read::{JobFilter, Page};
pub use steps::MAX_EVENT_NAME_CHARS;
pub(crate) use steps::check_event_name;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::events::{EventBus, JobEvent};
use crate::job::Timestamp;
use crate::retry::{RetryPolicies, RetryPolicy};
use crate::store::sqlite::Sqlite;
use crate::store::{Backend, Durability, Engine, StoreOptions};

/// Settings for opening a [`Queue`]. Made by [`Queue::builder`].
///
/// # Examples
///
/// ```no_run
/// use jobq::{Durability, Queue, RetryPolicy};
/// use std::time::Duration;
///
/// let queue = Queue::builder("app.db")
///     .durability(Durability::Full)
///     .busy_timeout(Duration::from_secs(10))
///     .queue_retry_policy("mail", RetryPolicy::exponential(Duration::from_secs(30), Duration::from_secs(3600)))
///     .open()?;
/// # Ok::<(), jobq::Error>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct QueueBuilder {
    path: PathBuf,
    store: StoreOptions,
    clock: Option<Arc<dyn Clock>>,
    retry: RetryPolicies,
    default_max_attempts: u32,
    max_schedules_per_owner: usize,
    max_snoozes: u32,
}

/// The most schedules an owner may have unless [`QueueBuilder::max_schedules_per_owner`]
/// says otherwise.
pub const DEFAULT_MAX_SCHEDULES_PER_OWNER: usize = 100;

impl QueueBuilder {
    /// How much of each commit survives a crash. Defaults to [`Durability::Normal`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.store.durability = durability;
        self
    }

    /// How long a request waits for a database locked by another connection before it
    /// fails with [`Error::Busy`] (on PostgreSQL: how long it waits for a connection).
    /// Defaults to 5 seconds.
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.store.busy_timeout = timeout;
        self
    }

    /// The most pooled read connections. Defaults to 4.
    pub fn pool_size(mut self, size: u32) -> Self {
        self.store.pool_size = size;
        self
    }

    /// The clock every statement takes `now` from. Defaults to the system clock on SQLite
    /// and to the database server's clock on PostgreSQL (this host's clock corrected by its
    /// measured distance to the server's, so that hosts whose clocks drift apart still agree
    /// on `run_after`, leases and heartbeats).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The retry policy of every job without a more specific one. Defaults to
    /// [`RetryPolicy::default`].
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry.default = policy;
        self
    }

    /// The retry policy of the jobs of one queue. Defaults to the queue-wide policy.
    pub fn queue_retry_policy(mut self, queue: impl Into<String>, policy: RetryPolicy) -> Self {
        self.retry.by_queue.insert(queue.into(), policy);
        self
    }

    /// The retry policy of the jobs of one kind; wins over the queue's. Defaults to the
    /// queue's policy.
    pub fn kind_retry_policy(mut self, kind: impl Into<String>, policy: RetryPolicy) -> Self {
        self.retry.by_kind.insert(kind.into(), policy);
        self
    }

    /// Attempts allowed to a job that does not say. Defaults to 5.
    pub fn default_max_attempts(mut self, n: u32) -> Self {
        self.default_max_attempts = n.max(1);
        self
    }

    /// The most schedules one owner may have (a token holder cannot make the queue fire
    /// more than this many jobs a second). Schedules without an owner (an admin's) are not
    /// counted. Defaults to [`DEFAULT_MAX_SCHEDULES_PER_OWNER`] (100).
    pub fn max_schedules_per_owner(mut self, n: usize) -> Self {
        self.max_schedules_per_owner = n;
        self
    }

    /// How many times a job may snooze (a snooze spends no attempt, so a job that snoozes
    /// for ever would never finish): the next snooze fails it for good, error code
    /// `SNOOZE_LIMIT`. Defaults to [`DEFAULT_MAX_SNOOZES`] (1,000).
    pub fn max_snoozes(mut self, n: u32) -> Self {
        self.max_snoozes = n;
        self
    }

    /// Lets jobq add its tables to a SQLite file that already holds an application's own
    /// tables (which is what makes [`Queue::enqueue_tx`] useful). The application must leave
    /// `PRAGMA user_version` to jobq. Defaults to false: a file with foreign tables and no
    /// jobq schema is refused, untouched.
    pub fn allow_foreign_tables(mut self, allow: bool) -> Self {
        self.store.allow_foreign_tables = allow;
        self
    }

    /// Opens the file (or connects to the PostgreSQL server of a `postgres://` URL),
    /// creating and migrating the schema as needed.
    ///
    /// # Errors
    ///
    /// [`Error::Open`] when the folder is missing, the file cannot be opened for writing or
    /// the server cannot be reached; [`Error::NotJobqDatabase`] when the file is not SQLite
    /// or holds foreign tables; [`Error::SchemaTooNew`] when a newer jobq wrote it. In each
    /// case the database is untouched.
    pub fn open(self) -> Result<Queue> {
        let location = self.path.to_string_lossy().into_owned();
        let (backend, clock) = if is_postgres_url(&location) {
            open_postgres(&location, &self.store, self.clock)?
        } else {
            let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
            let sqlite = Sqlite::open(&self.path, self.store, clock.now_ms())?;
            (Backend::Sqlite(sqlite), clock)
        };
        Ok(Queue {
            shared: Arc::new(Shared {
                backend,
                path: self.path,
                clock,
                retry: self.retry,
                default_max_attempts: self.default_max_attempts,
                max_schedules_per_owner: self.max_schedules_per_owner,
                max_snoozes: self.max_snoozes,
                events: EventBus::default(),
            }),
            owner: None,
        })
    }
}

/// True for a `postgres://` or `postgresql://` URL, which [`Queue::open`] opens with the
/// PostgreSQL engine (anything else is a SQLite file path).
pub fn is_postgres_url(location: &str) -> bool {
    let lower = location.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

#[cfg(feature = "postgres")]
fn open_postgres(
    url: &str,
    store: &StoreOptions,
    clock: Option<Arc<dyn Clock>>,
) -> Result<(Backend, Arc<dyn Clock>)> {
    use crate::store::postgres::{PgOptions, Postgres};
    let opts = PgOptions {
        connect_timeout: store.busy_timeout,
        pool_size: store.pool_size.max(4) + 4,
    };
    let engine = Postgres::open(url, opts)?;
    let clock = clock.unwrap_or_else(|| Arc::new(engine.clock()));
    Ok((Backend::Postgres(engine), clock))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(
    url: &str,
    _store: &StoreOptions,
    _clock: Option<Arc<dyn Clock>>,
) -> Result<(Backend, Arc<dyn Clock>)> {
    Err(Error::Open {
        path: url.into(),
        reason: "this build of jobq has no PostgreSQL engine (the `postgres` feature)".into(),
    })
}

/// A durable job queue in one SQLite file (or one PostgreSQL database).
///
/// `Queue` is cheap to clone and safe to share between threads; every clone uses the same
/// connections. Many processes may open the same file at once. Every verb is one short
/// transaction.
///
/// A handle made by [`Queue::scoped`] belongs to one owner: it sees and changes only that
/// owner's jobs and groups (another owner's job is "not found"), and what it creates is
/// stamped with the owner.
#[derive(Clone, Debug)]
pub struct Queue {
    pub(crate) shared: Arc<Shared>,
    owner: Option<Arc<str>>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    path: PathBuf,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) retry: RetryPolicies,
    pub(crate) default_max_attempts: u32,
    pub(crate) max_schedules_per_owner: usize,
    pub(crate) max_snoozes: u32,
    pub(crate) events: EventBus,
}

impl Queue {
    /// Opens (creating if needed) the queue at `path` with the default settings.
    ///
    /// # Errors
    ///
    /// As [`QueueBuilder::open`].
    pub fn open(path: impl AsRef<Path>) -> Result<Queue> {
        Queue::builder(path).open()
    }

    /// Settings for opening the queue at `path`.
    pub fn builder(path: impl AsRef<Path>) -> QueueBuilder {
        QueueBuilder {
            path: path.as_ref().to_path_buf(),
            store: StoreOptions::default(),
            clock: None,
            retry: RetryPolicies::default(),
            default_max_attempts: 5,
            max_schedules_per_owner: DEFAULT_MAX_SCHEDULES_PER_OWNER,
            max_snoozes: DEFAULT_MAX_SNOOZES,
        }
    }

    /// A handle on the same file that sees and changes only `owner`'s jobs and groups, like
    /// row-level security, and stamps `owner` on what it creates.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{NewJob, Queue};
    ///
    /// let admin = Queue::open(dir.path().join("q.db"))?;
    /// let alice = admin.scoped("alice");
    /// let bob = admin.scoped("bob");
    /// let job = alice.enqueue(NewJob::new("render"))?;
    /// assert!(bob.get(&job.job_id).unwrap_err().is_not_found());
    /// assert_eq!(admin.get(&job.job_id)?.owner.as_deref(), Some("alice"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn scoped(&self, owner: impl Into<String>) -> Queue {
        Queue {
            shared: Arc::clone(&self.shared),
            owner: Some(Arc::from(owner.into())),
        }
    }

    /// A handle on the same file that sees everything (what [`Queue::open`] returns).
    pub fn unscoped(&self) -> Queue {
        Queue {
            shared: Arc::clone(&self.shared),
            owner: None,
        }
    }

    /// The owner this handle is scoped to, if any.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The database file, or the PostgreSQL URL, as given (a URL with its password).
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// The database for people to read: the file, or the URL without its password.
    pub fn location(&self) -> &str {
        self.engine().location()
    }

    /// The engine the queue runs on: `"sqlite"` or `"postgres"`.
    pub fn engine_name(&self) -> &'static str {
        self.engine().name()
    }

    /// The durability this handle was opened with.
    pub fn durability(&self) -> Durability {
        self.engine().durability()
    }

    /// The current time of the queue's clock.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now_ms())
    }

    pub(crate) fn now_ms(&self) -> i64 {
        self.shared.clock.now_ms()
    }

    /// The engine every operation runs on.
    pub(crate) fn engine(&self) -> &dyn Engine {
        self.shared.backend.engine()
    }

    /// The SQLite engine, when the queue is on SQLite (for its own transactions and tests).
    pub(crate) fn sqlite(&self) -> Option<&Sqlite> {
        match &self.shared.backend {
            Backend::Sqlite(engine) => Some(engine),
            #[cfg(feature = "postgres")]
            _ => None,
        }
    }

    pub(crate) fn require_admin(&self, action: &'static str) -> Result<()> {
        match self.owner {
            Some(_) => Err(Error::Forbidden { action }),
            None => Ok(()),
        }
    }

    pub(crate) fn emit(&self, make: impl FnOnce() -> Vec<JobEvent>) {
        self.shared.events.emit(make);
    }

    /// Wakes the dispatchers of worker pools of this process, so they claim at once.
    ///
    /// Enqueues through a `Queue` do this by themselves. Call it after committing a
    /// transaction that used [`Queue::enqueue_tx`]: until then the new jobs are invisible,
    /// and pools would find them only at their next poll.
    pub fn notify(&self) {
        self.shared.events.wake_dispatchers();
    }

    /// Receives every job event of this process from now on (enqueued, claimed, succeeded,
    /// failed, retrying, cancelled, released, retried, deleted).
    ///
    /// The channel holds up to 10,000 events; a subscriber that falls that far behind misses
    /// events rather than slowing the queue down. Changes made by other processes are not
    /// seen here; [`Queue::wait`] watches the file as well.
    pub fn subscribe(&self) -> crossbeam_channel::Receiver<JobEvent> {
        self.shared.events.subscribe()
    }
}

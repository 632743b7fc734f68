//! # jobq
//!
//! A durable job queue in one SQLite file: enqueue jobs from any thread or process, run
//! them in a worker pool with retries, heartbeats and crash recovery, and watch them from
//! the `jobq` command line or its HTTP dashboard. Nothing to install, no server to run.
//!
//! ```
//! use jobq::{ClaimFilter, JobError, NewJob, Queue, Status};
//! use serde_json::json;
//!
//! # let dir = tempfile::tempdir()?;
//! let queue = Queue::open(dir.path().join("jobs.db"))?;
//!
//! // Enqueue: the job is on disk when this returns.
//! let job = queue.enqueue(NewJob::new("resize").input(json!({"image": "cat.png", "width": 640})))?;
//!
//! // A worker claims it, reports progress, and completes it under its lease.
//! let claimed = queue.claim("worker-1", 10, &ClaimFilter::default())?;
//! let lease = claimed[0].lease();
//! queue.set_progress(&lease, 0.5, Some("resizing"))?;
//! queue.complete(&lease, json!({"thumbnail": "cat-640.png"}))?;
//!
//! let done = queue.get(&job.job_id)?;
//! assert_eq!(done.status, Status::Succeeded);
//! assert_eq!(done.output, Some(json!({"thumbnail": "cat-640.png"})));
//!
//! // A failure with attempts left goes to `retry`, with exponential backoff.
//! let job = queue.enqueue(NewJob::new("resize").max_attempts(3))?;
//! let lease = queue.claim("worker-1", 1, &ClaimFilter::default())?[0].lease();
//! assert_eq!(queue.fail(&lease, &JobError::retryable("disk busy"))?, Status::Retry);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! See the README for the guarantees (at-least-once delivery, what survives a crash and a
//! power loss) and the state machine.

#![deny(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
mod clock;
mod duration;
mod error;
mod events;
#[cfg(all(feature = "cli", unix))]
pub mod exec;
mod flow_control;
mod group;
#[cfg(feature = "http")]
pub mod http;
mod job;
mod json;
mod maintenance;
mod model;
mod owner;
mod queue;
mod random;
mod retry;
mod schedule;
mod stats;
mod store;
pub mod testing;
mod worker;
mod workers;

/// The rusqlite jobq is built with, for [`Queue::enqueue_tx`]: use this one, so that your
/// transaction's type is the one jobq takes (`jobq::rusqlite::Transaction`).
pub use rusqlite;

/// The `postgres` client jobq is built with, for [`Queue::enqueue_pg_tx`].
#[cfg(feature = "postgres")]
pub use postgres;

pub use clock::{Clock, ManualClock, SystemClock};
pub use duration::{MAX_DURATION, format_duration, parse_duration};
pub use error::{DatabaseError, Error, Result};
pub use events::{EventKind, JobEvent};
pub use flow_control::{QueueInfo, QueueLimits, Rate};
pub use group::Group;
pub use job::{
    AttemptError, ClaimedJob, Enqueued, Job, JobId, JobLink, Lease, MAX_COST_CENTS, NewJob,
    OnDependencyFailure, RunAfter, Status, Timestamp,
};
pub use json::parse_json;
pub use maintenance::{RollupRetention, StaleTimeouts};
pub use model::{
    ClaimFilter, CostGrouping, CostRow, DeadJob, Emitted, JobError, Owner, RunningJob,
    SLOT_BOUNDS_MS, StageCount, Step, StepKind, WorkerInfo,
};
pub use queue::flow::{Flow, FlowCreated, FlowNode, FlowView, MAX_FLOW_JOBS};
pub use queue::{
    BulkAction, BulkOutcome, BulkRefusal, DEFAULT_MAX_SCHEDULES_PER_OWNER, DEFAULT_MAX_SNOOZES,
    JobFilter, MAX_DEPENDENCIES, MAX_EVENT_NAME_CHARS, MAX_REFUSALS_SHOWN, MIN_SNOOZE, Page, Queue,
    QueueBuilder, is_postgres_url,
};
pub use retry::RetryPolicy;
pub use schedule::{CatchUp, MAX_CATCH_UP, MIN_EVERY, NewSchedule, Rule, Schedule};
pub use stats::{
    Health, HealthReason, HealthThresholds, MAX_SERIES_POINTS, Overview, Percentiles, Series,
    SeriesPoint, SeriesQuery, Stats, StatsFilter, StatsSummary, Timing, TimingFilter,
};
pub use store::Durability;
pub use store::sqlite::schema::schema_version;
pub use worker::{
    DEFAULT_EVENT_RETENTION, Handler, InlineOutcome, JobContext, MAX_STEP_NAME_CHARS, Outcome,
    OutcomeKind, StopHandle, Summary, WorkerPool, WorkerPoolBuilder, default_worker_id,
};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

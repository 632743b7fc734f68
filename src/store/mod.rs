//! The storage boundary: what an engine does, each operation a whole transaction (or one
//! read snapshot), in the manner of River's driver interface and Oban's engine behaviour.
//!
//! Everything above it — validation, retry decisions, events, tracing, the worker pool, the
//! command line and HTTP — is written once, in terms of these operations. An engine holds
//! its pool, migrations, SQL and row mapping, and its own tricks (SQLite's integer row key,
//! `BEGIN IMMEDIATE` and `data_version`; PostgreSQL's `SKIP LOCKED` and `LISTEN/NOTIFY`).
//!
//! Every operation takes the owner scope of the handle (`None`: an admin handle sees every
//! owner's rows) and, where time matters, the clock reading `now` of the caller, in
//! milliseconds since the epoch.
//!
//! The layout reads as columns of the same names: one trait per family of operations here
//! (`jobs`, `stats`, `tenants`, `workers`, `queues`, `schedules`, `changes`), implemented by
//! each engine in its file of the same name (`sqlite/jobs/` and `postgres/jobs/` split the
//! way `queue/` is: `insert`, `claim`, `lease`, `admin`, `maintain`, `read`); each engine's
//! `rows.rs` holds every column a job is written with and read back by. The values the
//! boundary speaks live below it in `model/`; the rules both engines follow are written
//! once in `rules.rs`. A queue holds its engine as a [`Backend`], told apart by type.

use std::fmt;

pub(crate) mod changes;
pub(crate) mod jobs;
pub(crate) mod migrations;
#[cfg(feature = "postgres")]
pub(crate) mod postgres;
pub(crate) mod queues;
pub(crate) mod rules;
pub(crate) mod schedules;
pub(crate) mod sqlite;
pub(crate) mod stats;
pub(crate) mod steps;
pub(crate) mod tenants;
pub(crate) mod workers;

pub(crate) use changes::{ChangeFeed, Changes};
pub(crate) use jobs::JobStore;
pub(crate) use queues::QueueStore;
pub(crate) use schedules::ScheduleStore;
pub(crate) use stats::StatsStore;
pub(crate) use steps::StepStore;
pub(crate) use tenants::TenantStore;
pub(crate) use workers::WorkerStore;

pub use sqlite::Durability;
pub(crate) use sqlite::StoreOptions;

/// A storage engine: every family of operations, and what it is. See the module documentation.
pub(crate) trait Engine:
    JobStore
    + StatsStore
    + StepStore
    + TenantStore
    + WorkerStore
    + QueueStore
    + ScheduleStore
    + ChangeFeed
    + Send
    + Sync
    + fmt::Debug
    + 'static
{
    /// `sqlite` or `postgres`.
    fn name(&self) -> &'static str;

    /// The file or the server (without its password), for messages.
    fn location(&self) -> &str;

    /// How much of a commit survives a crash.
    fn durability(&self) -> Durability;
}

/// The engine a queue runs on, told apart by type: every operation goes through
/// [`Backend::engine`]; what only one engine offers (the caller's own transactions) matches
/// on the variant.
#[derive(Debug)]
pub(crate) enum Backend {
    Sqlite(sqlite::Sqlite),
    #[cfg(feature = "postgres")]
    Postgres(postgres::Postgres),
}

impl Backend {
    pub(crate) fn engine(&self) -> &dyn Engine {
        match self {
            Backend::Sqlite(engine) => engine,
            #[cfg(feature = "postgres")]
            Backend::Postgres(engine) => engine,
        }
    }
}

//! The floor: the values the storage boundary speaks — new job rows, reports on held jobs,
//! filters, stats rows, owners, workers, queues' controls, schedules, handlers' errors — as
//! named structs. `store/` and everything above it use them; this module uses only the
//! other floor modules (`job`, `error`).

mod job_error;
mod jobs;
mod new_row;
mod queues;
mod rollups;
mod schedules;
mod stats;
mod steps;
mod tenants;
mod workers;

pub use job_error::JobError;
pub(crate) use job_error::Park;
pub use jobs::ClaimFilter;
pub(crate) use jobs::*;
pub use new_row::MAX_DEPENDENCIES;
pub(crate) use new_row::{NewRow, check_cost, check_dependency_count, check_text};
pub(crate) use queues::*;
pub use rollups::SLOT_BOUNDS_MS;
pub(crate) use rollups::*;
pub(crate) use schedules::*;
pub(crate) use stats::*;
pub use stats::{CostGrouping, CostRow, DeadJob, RunningJob, StageCount};
pub use steps::{Emitted, Step, StepKind};
pub(crate) use steps::{EventQuery, EventRow};
pub use tenants::Owner;
pub(crate) use tenants::*;
pub use workers::WorkerInfo;
pub(crate) use workers::*;

//! Jobs: their ids, statuses and timestamps, a job as stored, what a claim hands a worker,
//! and a job to enqueue.

mod claimed;
mod id;
pub(crate) mod ids;
mod new;
mod record;
mod status;
mod time;

pub(crate) use claimed::LeasedJob;
pub use claimed::{ClaimedJob, Lease};
pub use id::JobId;
pub(crate) use id::key_of;
pub(crate) use ids::{ids_after, uuid_v7};
pub use new::{Enqueued, MAX_COST_CENTS, NewJob, OnDependencyFailure, RunAfter};
pub(crate) use record::Links;
pub use record::{AttemptError, Job, JobLink};
pub use status::Status;
pub use time::Timestamp;

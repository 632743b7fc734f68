//! Groups and owners, as the boundary stores them.

use serde::Serialize;

use crate::job::{Status, Timestamp};

/// A group's row and the counts behind its stage and progress.
#[derive(Debug, Clone)]
pub(crate) struct GroupRow {
    pub id: String,
    pub owner: Option<String>,
    pub name: String,
    pub metadata: String,
    pub created_at: i64,
    /// The idempotency key of the flow that made it, if it had one.
    pub flow_key: Option<String>,
    /// Per status: jobs, the sum of their progress as a group counts it, and how many started.
    pub by_status: Vec<(Status, i64, f64, i64)>,
}

/// A new owner, or a budget: what to write.
#[derive(Debug, Clone, Copy)]
pub(crate) enum OwnerWrite {
    /// Create it; refused with `Duplicate` when it exists.
    Create(Option<i64>),
    /// Create it if needed and set its budget.
    SetBudget(Option<i64>),
    /// Create it if needed, leaving an existing one as it is.
    Ensure,
}

/// An owner: a tenant of the queue, with an optional budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Owner {
    /// The id.
    pub id: String,
    /// The spending limit in cents, if any. An enqueue that would pass it is refused.
    pub budget_cents: Option<i64>,
    /// What the owner's jobs have cost so far (all jobs but those cancelled unstarted).
    pub spent_cents: i64,
    /// When the owner was created.
    pub created_at: Timestamp,
}

/// A stored API token: its owner and the SHA-256 of its secret.
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    pub owner: String,
    pub secret_hash: String,
}

//! A new job's row: the job as the caller described it, checked against every rule that
//! needs no database, ready for an engine to insert; and the checks the other verbs share.

use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration};
use crate::error::{Error, Result};
use crate::job::{MAX_COST_CENTS, NewJob, OnDependencyFailure, RunAfter};
use crate::json::check_integers;
use crate::model::{DepRef, Unique};

/// The most jobs one job may wait for.
pub const MAX_DEPENDENCIES: usize = 10_000;

/// Refuses a job that would wait for more than [`MAX_DEPENDENCIES`] jobs.
pub(crate) fn check_dependency_count(n: usize) -> Result<()> {
    if n > MAX_DEPENDENCIES {
        return Err(Error::invalid(
            "after",
            format!("{n} dependencies: more than {MAX_DEPENDENCIES}"),
        ));
    }
    Ok(())
}

/// A cost in cents must be within 0 to [`MAX_COST_CENTS`].
pub(crate) fn check_cost(field: &'static str, cents: i64) -> Result<()> {
    if !(0..=MAX_COST_CENTS).contains(&cents) {
        return Err(Error::invalid(
            field,
            format!("{cents} is outside 0 to {MAX_COST_CENTS} cents"),
        ));
    }
    Ok(())
}

pub(crate) fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
    }
    if value.contains('\0') {
        // PostgreSQL's text cannot hold one; refused on both engines alike.
        return Err(Error::invalid(field, "must not contain a NUL character"));
    }
    if value.chars().count() > max {
        return Err(Error::invalid(
            field,
            format!("longer than {max} characters"),
        ));
    }
    Ok(())
}

/// A job checked against every rule that needs no database, ready to insert.
#[derive(Debug, Clone)]
pub(crate) struct NewRow {
    pub kind: String,
    pub input: String,
    pub queue: String,
    pub priority: i32,
    pub run_after: i64,
    pub max_attempts: u32,
    pub key: Option<String>,
    pub group_id: Option<String>,
    pub owner: Option<String>,
    pub cost_cents: i64,
    pub external_id: Option<String>,
    /// The jobs it waits for.
    pub after: Vec<DepRef>,
    /// Runs anyway when a dependency fails (else it is cancelled with it).
    pub run_on_dependency_failure: bool,
    pub unique: Unique,
    /// For the per-key running limit of its queue.
    pub concurrency_key: Option<String>,
    /// Its local name in the flow it is submitted in.
    pub flow_ref: Option<String>,
}

impl NewRow {
    /// A job checked against every rule that needs no database: its texts, numbers,
    /// owner (a handle scoped to `scope` enqueues only for it), window, dependencies and
    /// start, with `default_max_attempts` when it names none.
    pub(crate) fn checked(
        job: NewJob,
        scope: Option<&str>,
        default_max_attempts: u32,
        now: i64,
    ) -> Result<NewRow> {
        check_text("kind", &job.kind, 200)?;
        let input = job
            .input
            .map_err(|reason| Error::invalid("input", reason))?;
        let queue = job.queue.unwrap_or_else(|| String::from("default"));
        check_text("queue", &queue, 200)?;
        let max_attempts = job.max_attempts.unwrap_or(default_max_attempts);
        if max_attempts == 0 {
            return Err(Error::invalid("max_attempts", "must be at least 1"));
        }
        if max_attempts > i32::MAX as u32 {
            return Err(Error::invalid("max_attempts", "too large"));
        }
        check_cost("cost_cents", job.cost_cents)?;
        check_integers("input", &input)?;
        if let Some(key) = &job.idempotency_key {
            check_text("idempotency_key", key, 500)?;
        }
        if let Some(external_id) = &job.external_id {
            check_text("external_id", external_id, 500)?;
        }
        if let Some(group) = &job.group_id {
            check_text("group_id", group, 200)?;
        }
        if let Some(key) = &job.concurrency_key {
            check_text("concurrency_key", key, 200)?;
        }
        let owner = match (scope, job.owner) {
            (Some(me), Some(other)) if other != me => {
                return Err(Error::invalid(
                    "owner",
                    format!("a handle scoped to {me} cannot enqueue for {other}"),
                ));
            }
            (Some(me), _) => Some(me.to_string()),
            (None, owner) => owner,
        };
        if let Some(owner) = &owner {
            check_text("owner", owner, 200)?;
        }
        let unique = match (job.unique_for, job.unique_while_active) {
            (None, false) => Unique::Forever,
            _ if job.idempotency_key.is_none() => {
                return Err(Error::invalid(
                    "idempotency_key",
                    "a uniqueness window (unique_for, unique_while_active) needs an idempotency key",
                ));
            }
            (Some(_), true) => {
                return Err(Error::invalid(
                    "unique_for",
                    "give unique_for or unique_while_active, not both",
                ));
            }
            (Some(d), false) if d.is_zero() || d > MAX_DURATION => {
                return Err(Error::invalid(
                    "unique_for",
                    format!(
                        "must be more than 0 and at most {}",
                        format_duration(MAX_DURATION)
                    ),
                ));
            }
            (Some(d), false) => Unique::Until(now.saturating_add(millis(d))),
            (None, true) => Unique::WhileActive,
        };
        let mut after: Vec<DepRef> = Vec::with_capacity(job.after.len());
        for id in job.after {
            let dep = DepRef::Job(id);
            if !after.contains(&dep) {
                after.push(dep);
            }
        }
        check_dependency_count(after.len())?;
        // The same bound however it is given; a time in the past means now, so that it
        // cannot jump ahead of older jobs of its priority.
        let latest = now.saturating_add(millis(MAX_DURATION));
        let run_after = match job.run_after {
            RunAfter::Now => now,
            RunAfter::Delay(d) if d > MAX_DURATION => {
                return Err(Error::invalid(
                    "run_after",
                    format!(
                        "a delay of {} s is more than {} ahead",
                        d.as_secs(),
                        format_duration(MAX_DURATION)
                    ),
                ));
            }
            RunAfter::Delay(d) => now.saturating_add(millis(d)),
            RunAfter::At(t) if t.as_millis() > latest => {
                return Err(Error::invalid(
                    "run_after",
                    format!("{t} is more than {} ahead", format_duration(MAX_DURATION)),
                ));
            }
            RunAfter::At(t) => t.as_millis().max(now),
        };
        Ok(NewRow {
            kind: job.kind,
            input,
            queue,
            priority: job.priority,
            run_after,
            max_attempts,
            key: job.idempotency_key,
            group_id: job.group_id,
            owner,
            cost_cents: job.cost_cents,
            external_id: job.external_id,
            after,
            run_on_dependency_failure: job.on_dependency_failure == OnDependencyFailure::Run,
            unique,
            concurrency_key: job.concurrency_key,
            flow_ref: None,
        })
    }

    /// Whether inserting it needs nothing but the insert: no key to look up, no group, no
    /// row of options.
    pub(crate) fn is_plain(&self) -> bool {
        self.key.is_none() && self.group_id.is_none() && !self.has_options()
    }

    /// Whether it gets a row of `jobq_job_options`: dependencies, a uniqueness window, a
    /// concurrency key or a flow ref.
    pub(crate) fn has_options(&self) -> bool {
        !self.after.is_empty()
            || self.unique != Unique::Forever
            || self.concurrency_key.is_some()
            || self.flow_ref.is_some()
    }
}

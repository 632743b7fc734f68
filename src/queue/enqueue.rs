//! Enqueue: one job, a batch, or inside the caller's own transaction.

use rusqlite::Connection;

use super::Queue;
use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration};
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{Enqueued, MAX_COST_CENTS, NewJob, OnDependencyFailure, RunAfter};
use crate::json::check_integers;
use crate::model::{DepRef, NewRow, Unique};
use crate::store::sqlite::{ids, jobs};

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

impl Queue {
    /// Adds a job to the queue.
    ///
    /// With an idempotency key that this owner already used, nothing is inserted and the
    /// existing job comes back with `already_existed: true`; two racing enqueues of one key
    /// (threads or processes) yield one job. Idle worker pools of this process wake at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] naming the field (empty kind, invalid JSON input, zero
    /// `max_attempts`, negative cost, an owner other than the handle's own);
    /// [`Error::NotFound`] for a missing group; [`Error::BudgetExceeded`] when the owner's
    /// budget would be passed. Nothing is written on any error.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{NewJob, Queue};
    /// use serde_json::json;
    ///
    /// let queue = Queue::open(dir.path().join("q.db"))?;
    /// let first = queue.enqueue(NewJob::new("ingest").input(json!({"s3_key": "a.mp4"})).idempotency_key("a.mp4"))?;
    /// let again = queue.enqueue(NewJob::new("ingest").idempotency_key("a.mp4"))?;
    /// assert_eq!(first.job_id, again.job_id);
    /// assert!(again.already_existed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enqueue(&self, job: NewJob) -> Result<Enqueued> {
        let now = self.now_ms();
        let checked = self.check(job, now)?;
        let out = self
            .engine()
            .insert_jobs(self.owner(), vec![checked], now)?;
        self.after_enqueue(&out, now);
        out.into_iter()
            .next()
            .ok_or_else(|| Error::invalid("job", "the engine inserted nothing"))
    }

    /// Adds many jobs in one transaction: all of them, or (on any error) none.
    ///
    /// Each job is handled as [`Queue::enqueue`] handles it; the results come back in the
    /// same order.
    ///
    /// # Errors
    ///
    /// As [`Queue::enqueue`]; the error names the index of the job that was refused.
    pub fn enqueue_many(&self, jobs: impl IntoIterator<Item = NewJob>) -> Result<Vec<Enqueued>> {
        let now = self.now_ms();
        let checked = jobs
            .into_iter()
            .enumerate()
            .map(|(i, job)| {
                self.check(job, now)
                    .map_err(|e| crate::store::rules::at_index(i, e))
            })
            .collect::<Result<Vec<_>>>()?;
        if checked.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.engine().insert_jobs(self.owner(), checked, now)?;
        self.after_enqueue(&out, now);
        Ok(out)
    }

    /// Adds a job inside the caller's own transaction on the same database file, so the
    /// job exists if and only if the caller's own writes commit.
    ///
    /// `conn` is any rusqlite connection to the queue's file, usually a
    /// `rusqlite::Transaction` (start it with `TransactionBehavior::Immediate`, which avoids
    /// a busy error when upgrading to a write). Worker pools see the job only once the
    /// transaction commits: call [`Queue::notify`] then to wake them at once.
    ///
    /// # Errors
    ///
    /// As [`Queue::enqueue`]; [`Error::Unsupported`] on a queue kept in PostgreSQL.
    ///
    /// # Examples
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use jobq::{NewJob, Queue};
    /// use rusqlite::{Connection, TransactionBehavior};
    ///
    /// let path = dir.path().join("app.db");
    /// let queue = Queue::open(&path)?;
    /// let mut conn = Connection::open(&path)?;
    /// conn.execute_batch("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)")?;
    ///
    /// let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    /// tx.execute("INSERT INTO orders (id) VALUES (1)", [])?;
    /// let job = queue.enqueue_tx(&tx, NewJob::new("ship_order").input(serde_json::json!({"order": 1})))?;
    /// tx.commit()?;
    /// queue.notify();
    /// assert_eq!(queue.get(&job.job_id)?.kind, "ship_order");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn enqueue_tx(&self, conn: &Connection, job: NewJob) -> Result<Enqueued> {
        let now = self.now_ms();
        if self.sqlite().is_none() {
            return Err(Error::Unsupported {
                action: "enqueue inside a SQLite transaction",
                engine: self.engine().name(),
            });
        }
        let checked = self.check(job, now)?;
        let id = ids::allocate(conn, now, 1)?.pop().unwrap_or_default();
        jobs::insert(conn, self.owner(), checked, id, now, &[])
    }

    /// Adds a job inside the caller's own PostgreSQL transaction (or on its own client), so
    /// the job exists if and only if the caller's own writes commit.
    ///
    /// `client` is any `postgres` client of the queue's database, usually a
    /// `jobq::postgres::Transaction`. Workers everywhere are woken when it commits (the
    /// table's trigger notifies them).
    ///
    /// # Errors
    ///
    /// As [`Queue::enqueue`]; [`Error::Unsupported`] on a queue kept in SQLite.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use jobq::{NewJob, Queue};
    ///
    /// let url = "postgres://app@db.internal/app";
    /// let queue = Queue::open(url)?;
    /// let mut client = jobq::postgres::Client::connect(url, jobq::postgres::NoTls)?;
    /// let mut tx = client.transaction()?;
    /// tx.execute("INSERT INTO orders (id) VALUES (1)", &[])?;
    /// queue.enqueue_pg_tx(&mut tx, NewJob::new("ship_order"))?;
    /// tx.commit()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "postgres")]
    pub fn enqueue_pg_tx(
        &self,
        client: &mut impl postgres::GenericClient,
        job: NewJob,
    ) -> Result<Enqueued> {
        use crate::store::postgres::{Foreign, ids, jobs};
        if !matches!(self.shared.backend, crate::store::Backend::Postgres(_)) {
            return Err(Error::Unsupported {
                action: "enqueue inside a PostgreSQL transaction",
                engine: self.engine().name(),
            });
        }
        let now = self.now_ms();
        let checked = self.check(job, now)?;
        let id = ids::new_ids(now, 1)
            .pop()
            .unwrap_or_else(uuid::Uuid::now_v7);
        jobs::insert(&mut Foreign(client), self.owner(), checked, id, now, &[])
    }

    pub(crate) fn after_enqueue(&self, out: &[Enqueued], now: i64) {
        if out.iter().any(|e| !e.already_existed) {
            self.shared.events.wake_dispatchers();
        }
        for e in out {
            tracing::debug!(job_id = %e.job_id, already_existed = e.already_existed, "jobq: enqueued");
        }
        self.emit(|| {
            out.iter()
                .filter(|e| !e.already_existed)
                .map(|e| JobEvent::new(e.job_id.clone(), EventKind::Enqueued, Some(e.status), now))
                .collect()
        });
    }

    /// Checks everything that can be checked without the database.
    pub(crate) fn check(&self, job: NewJob, now: i64) -> Result<NewRow> {
        check_text("kind", &job.kind, 200)?;
        let input = job
            .input
            .map_err(|reason| Error::invalid("input", reason))?;
        let queue = job.queue.unwrap_or_else(|| String::from("default"));
        check_text("queue", &queue, 200)?;
        let max_attempts = job.max_attempts.unwrap_or(self.shared.default_max_attempts);
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
        let owner = match (self.owner(), job.owner) {
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
}

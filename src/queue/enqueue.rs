//! Enqueue: one job, a batch, or inside the caller's own transaction.

use rusqlite::{Connection, OptionalExtension, named_params};

use super::Queue;
use crate::clock::millis;
use crate::duration::{MAX_DURATION, format_duration};
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::MAX_COST_CENTS;
use crate::job::{Enqueued, JobId, NewJob, RunAfter, Status, key_of};
use crate::json::check_integers;
use crate::owner::{saturate, spent_cents};
use crate::store::sqlite::ids;

/// The head of every insert of jobs: the single and the batch path fill the same columns.
macro_rules! insert_jobs {
    () => {
        "INSERT INTO jobq_jobs (id_key, id, queue, kind, status, priority, max_attempts, run_after, input,
                           idempotency_key, cost_cents, owner, group_id, external_id,
                           created_at, updated_at)
    VALUES "
    };
}

/// Bound by position (the hot path: no lookups of parameter names), in the order of the
/// column list after the row key, which is ?14.
const INSERT_JOB: &str = concat!(
    insert_jobs!(),
    "(?14, ?1, ?2, ?3, 'queued', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13)"
);

/// Rows in one statement of a batch enqueue: enough to amortize opening the table's seven
/// b-trees, few enough to keep the statement small (32 × 13 parameters).
const ROWS_PER_INSERT: usize = 32;

/// One row of the multi-row insert: the jobs of this path have no idempotency key and no
/// group. Its parameters are the values of [`row_values`], in order.
const INSERT_ROW: &str = "(?, ?, ?, ?, 'queued', ?, ?, ?, ?, NULL, ?, ?, NULL, ?, ?, ?)";

/// `INSERT ... VALUES row, row, ...` with [`ROWS_PER_INSERT`] rows, assembled once from
/// constants (no value is ever formatted into it).
fn insert_rows_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let rows = vec![INSERT_ROW; ROWS_PER_INSERT].join(",\n    ");
        [insert_jobs!(), &rows].concat()
    })
}

/// The parameters of one [`INSERT_ROW`].
fn row_values<'a>(
    job: &'a Checked,
    id: &'a str,
    now: i64,
) -> [rusqlite::types::ToSqlOutput<'a>; 13] {
    use rusqlite::types::{ToSqlOutput, Value, ValueRef};
    let text = |s: &'a str| ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()));
    let int = |i: i64| ToSqlOutput::Owned(Value::Integer(i));
    let opt = |s: &'a Option<String>| s.as_deref().map_or(ToSqlOutput::Owned(Value::Null), text);
    [
        int(key_of(id)),
        text(id),
        text(&job.queue),
        text(&job.kind),
        int(i64::from(job.priority)),
        int(i64::from(job.max_attempts)),
        int(job.run_after),
        text(&job.input),
        int(job.cost_cents),
        opt(&job.owner),
        opt(&job.external_id),
        int(now),
        int(now),
    ]
}

const FIND_BY_KEY: &str = "
    SELECT id, status, group_id FROM jobq_jobs
    WHERE coalesce(owner, '') = coalesce(:owner, '') AND idempotency_key = :key";

const GROUP_OWNER: &str = "SELECT owner FROM jobq_groups WHERE id = ?1";

const OWNER_BUDGET: &str = "SELECT budget_cents FROM jobq_owners WHERE id = ?1";

/// A `NewJob` checked and resolved against a clock reading.
struct Checked {
    kind: String,
    input: String,
    queue: String,
    priority: i32,
    run_after: i64,
    max_attempts: u32,
    key: Option<String>,
    group_id: Option<String>,
    owner: Option<String>,
    cost_cents: i64,
    external_id: Option<String>,
}

impl Checked {
    /// The one-row insert (the batch path inserts `ROWS_PER_INSERT` at a time instead).
    fn insert_row(&self, conn: &Connection, id: &str, now: i64) -> Result<()> {
        conn.prepare_cached(INSERT_JOB)?.execute(rusqlite::params![
            id,
            self.queue,
            self.kind,
            self.priority,
            self.max_attempts,
            self.run_after,
            self.input,
            self.key,
            self.cost_cents,
            self.owner,
            self.group_id,
            self.external_id,
            now,
            key_of(id),
        ])?;
        Ok(())
    }
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

fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.trim().is_empty() {
        return Err(Error::invalid(field, "must not be empty"));
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
        let out = self.store().write(|tx| {
            let id = ids::allocate_in(tx, now, 1)?.pop().unwrap_or_default();
            self.insert(tx, checked, id, now)
        })?;
        self.after_enqueue(std::slice::from_ref(&out), now);
        Ok(out)
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
            .map(|(i, job)| self.check(job, now).map_err(|e| at_index(i, e)))
            .collect::<Result<Vec<_>>>()?;
        let out = self.store().write(|tx| {
            let ids = ids::allocate_in(tx, now, checked.len())?;
            self.insert_many(tx, checked, ids, now)
        })?;
        self.after_enqueue(&out, now);
        Ok(out)
    }

    /// Inserts a batch inside the caller's transaction. Jobs without an idempotency key or
    /// a group need no lookup: they go in multi-row statements of [`ROWS_PER_INSERT`] rows,
    /// which open the table's cursors once per chunk instead of once per job, after one
    /// budget check per owner for the whole batch. The others go one by one, and their
    /// budget checks see the rows inserted before them.
    fn insert_many(
        &self,
        conn: &Connection,
        jobs: Vec<Checked>,
        ids: Vec<String>,
        now: i64,
    ) -> Result<Vec<Enqueued>> {
        let mut out: Vec<Option<Enqueued>> = vec![None; jobs.len()];
        let (plain, special): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .zip(ids)
            .enumerate()
            .partition(|(_, (job, _))| job.key.is_none() && job.group_id.is_none());

        let mut cost_by_owner: std::collections::BTreeMap<&str, i128> = Default::default();
        for (_, (job, _)) in &plain {
            if let Some(owner) = &job.owner {
                *cost_by_owner.entry(owner).or_default() += i128::from(job.cost_cents);
            }
        }
        for (owner, cost) in cost_by_owner {
            self.check_budget(conn, owner, cost)?;
        }
        let mut chunks = plain.chunks_exact(ROWS_PER_INSERT);
        let mut stmt = conn.prepare_cached(insert_rows_sql())?;
        for chunk in chunks.by_ref() {
            let mut param = 1;
            for (_, (job, id)) in chunk {
                for value in row_values(job, id, now) {
                    stmt.raw_bind_parameter(param, value)?;
                    param += 1;
                }
            }
            stmt.raw_execute()?;
        }
        for (_, (job, id)) in chunks.remainder() {
            job.insert_row(conn, id, now)?;
        }
        for (i, (_, id)) in &plain {
            out[*i] = Some(Enqueued {
                job_id: JobId::from_db(id.clone()),
                status: Status::Queued,
                already_existed: false,
                group_id: None,
            });
        }
        for (i, (job, id)) in special {
            out[i] = Some(
                self.insert(conn, job, id, now)
                    .map_err(|e| at_index(i, e))?,
            );
        }
        Ok(out.into_iter().flatten().collect())
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
    /// As [`Queue::enqueue`].
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
        let checked = self.check(job, now)?;
        let id = ids::allocate(conn, now, 1)?.pop().unwrap_or_default();
        self.insert(conn, checked, id, now)
    }

    fn after_enqueue(&self, out: &[Enqueued], now: i64) {
        if out.iter().any(|e| !e.already_existed) {
            self.shared.events.wake_dispatchers();
        }
        for e in out {
            tracing::debug!(job_id = %e.job_id, already_existed = e.already_existed, "jobq: enqueued");
        }
        self.emit(|| {
            out.iter()
                .filter(|e| !e.already_existed)
                .map(|e| {
                    JobEvent::new(
                        e.job_id.clone(),
                        EventKind::Enqueued,
                        Some(Status::Queued),
                        now,
                    )
                })
                .collect()
        });
    }

    /// Checks everything that can be checked without the database.
    fn check(&self, job: NewJob, now: i64) -> Result<Checked> {
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
        Ok(Checked {
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
        })
    }

    /// Inserts one checked job on `conn`, inside the caller's transaction.
    fn insert(
        &self,
        conn: &Connection,
        mut job: Checked,
        id: String,
        now: i64,
    ) -> Result<Enqueued> {
        if let Some(key) = &job.key {
            let existing: Option<(String, String, Option<String>)> = conn
                .prepare_cached(FIND_BY_KEY)?
                .query_row(named_params! {":owner": job.owner, ":key": key}, |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            if let Some((id, status, group_id)) = existing {
                return Ok(Enqueued {
                    job_id: JobId::from_db(id),
                    status: status.parse()?,
                    already_existed: true,
                    group_id,
                });
            }
        }
        if let Some(group) = &job.group_id {
            let group_owner: Option<Option<String>> = conn
                .prepare_cached(GROUP_OWNER)?
                .query_row([group], |r| r.get(0))
                .optional()?;
            let not_found = || Error::NotFound {
                what: "group",
                id: group.clone(),
            };
            let group_owner = group_owner.ok_or_else(not_found)?;
            if self.owner().is_some() && group_owner.as_deref() != self.owner() {
                return Err(not_found());
            }
            if job.owner.is_none() {
                job.owner = group_owner;
            }
        }
        if let Some(owner) = &job.owner {
            self.check_budget(conn, owner, i128::from(job.cost_cents))?;
        }
        job.insert_row(conn, &id, now)?;
        Ok(Enqueued {
            job_id: JobId::from_db(id),
            status: Status::Queued,
            already_existed: false,
            group_id: job.group_id,
        })
    }

    /// Refuses `cost_cents` more for `owner` when it would pass the owner's budget. Sums are
    /// exact (`i128`): no amount of jobs or costs wraps around.
    fn check_budget(&self, conn: &Connection, owner: &str, cost_cents: i128) -> Result<()> {
        let budget: Option<Option<i64>> = conn
            .prepare_cached(OWNER_BUDGET)?
            .query_row([owner], |r| r.get(0))
            .optional()?;
        let Some(Some(budget)) = budget else {
            return Ok(());
        };
        let spent = spent_cents(conn, owner)?;
        if spent + cost_cents > i128::from(budget) {
            return Err(Error::BudgetExceeded {
                owner: owner.to_string(),
                budget_cents: budget,
                spent_cents: saturate(spent),
                requested_cents: saturate(cost_cents),
            });
        }
        Ok(())
    }
}

/// Names the position of the refused job in a batch.
fn at_index(i: usize, err: Error) -> Error {
    match err {
        Error::InvalidInput { field, reason } => Error::InvalidInput {
            field,
            reason: format!("job #{i} of the batch: {reason}"),
        },
        other => other,
    }
}

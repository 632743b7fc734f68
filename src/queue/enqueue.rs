//! Enqueue: one job, a batch, or inside the caller's own transaction.

use rusqlite::Connection;

use super::Queue;
use crate::error::{Error, Result};
use crate::events::{EventKind, JobEvent};
use crate::job::{Enqueued, NewJob};
use crate::model::NewRow;
use crate::store::sqlite::{ids, jobs};

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
        let enqueued = jobs::insert(conn, self.owner(), checked, id, now, &[])?;
        // The caller's connection has no rollup trigger (the writer's has): count it here.
        crate::store::sqlite::rollups::note_enqueued(conn, std::slice::from_ref(&enqueued), now)?;
        Ok(enqueued)
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
        NewRow::checked(job, self.owner(), self.shared.default_max_attempts, now)
    }
}

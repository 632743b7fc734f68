//! Durable steps and events on SQLite.

use rusqlite::{Connection, OptionalExtension, params};

use super::Sqlite;
use crate::error::Result;
use crate::job::{JobId, Lease};
use crate::model::{Emitted, EventQuery, EventRow, Scope, Step, StepKind};

const STEPS: &str = "
    SELECT s.name, s.kind, s.output, s.event, s.event_id, s.wake_at, s.started_at, s.ended_at,
           s.position
    FROM jobq_steps s
    WHERE s.job_key = ?1
    ORDER BY s.position, s.started_at, s.name";

const FIND_EVENT: &str = "
    SELECT id, payload FROM jobq_events
    WHERE owner = ?1 AND name = ?2 AND id > ?3 AND created_at >= ?4
    ORDER BY id LIMIT 1";

const INSERT_EVENT: &str = "
    INSERT INTO jobq_events (owner, name, payload, created_at) VALUES (?1, ?2, ?3, ?4)
    RETURNING id";

/// Every job of the owner ?1 ('' for none) waiting for the event ?2: `queued` now (?3).
const WAKE: &str = "
    UPDATE jobq_jobs SET status = 'queued', wait_for = NULL, run_after = ?3, updated_at = ?3
    WHERE wait_for = ?2 AND status = 'waiting'
      AND (owner = ?1 OR (?1 = '' AND owner IS NULL))
    RETURNING id";

pub(crate) fn steps(conn: &Connection, key: i64) -> Result<Vec<Step>> {
    let mut stmt = conn.prepare_cached(STEPS)?;
    let rows = stmt.query_map([key], |r| {
        Ok(Step {
            name: r.get(0)?,
            kind: StepKind::parse(&r.get::<_, String>(1)?),
            output: r.get(2)?,
            event: r.get(3)?,
            event_id: r.get(4)?,
            wake_at: r.get(5)?,
            started_at: r.get(6)?,
            ended_at: r.get(7)?,
            position: r.get(8)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

impl crate::store::StepStore for Sqlite {
    fn steps(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Vec<Step>>> {
        self.read(|conn| {
            if super::jobs::status_of(conn, scope, id)?.is_none() {
                return Ok(None);
            }
            steps(conn, id.key()).map(Some)
        })
    }

    fn put_step(&self, scope: Scope<'_>, lease: &Lease, step: &Step) -> Result<()> {
        self.write(|tx| super::jobs::put_step(tx, scope, lease, step))
    }

    fn find_event(&self, query: EventQuery<'_>) -> Result<Option<EventRow>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(FIND_EVENT)?
                .query_row(
                    params![
                        query.owner.unwrap_or(""),
                        query.name,
                        query.after_id,
                        query.created_from
                    ],
                    |r| {
                        Ok(EventRow {
                            id: r.get(0)?,
                            payload: r.get(1)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn emit_event(
        &self,
        owner: Option<&str>,
        name: &str,
        payload: Option<&str>,
        now: i64,
    ) -> Result<(Emitted, Vec<JobId>)> {
        let owner = owner.unwrap_or("");
        self.write(|tx| {
            let id: i64 = tx
                .prepare_cached(INSERT_EVENT)?
                .query_row(params![owner, name, payload, now], |r| r.get(0))?;
            let woken = tx
                .prepare_cached(WAKE)?
                .query_map(params![owner, name, now], |r| Ok(JobId::from_db(r.get(0)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Emitted::with(id, woken))
        })
    }

    fn prune_events(&self, cutoff: i64) -> Result<usize> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached("DELETE FROM jobq_events WHERE created_at < ?1")?
                .execute([cutoff])?)
        })
    }
}

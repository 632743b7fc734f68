//! Durable steps and events on PostgreSQL.

use super::{Conn, Postgres};
use crate::error::Result;
use crate::job::{JobId, Lease};
use crate::model::{Emitted, EventQuery, EventRow, Scope, Step, StepKind};
use crate::store::postgres::ids::{job_id, uuid_of};

const STEPS: &str = "
    SELECT s.name, s.kind, s.output, s.event, s.event_id, s.wake_at, s.started_at, s.ended_at,
           s.position
    FROM jobq_steps s
    WHERE s.job_id = $1
    ORDER BY s.position, s.started_at, s.name";

const FIND_EVENT: &str = "
    SELECT id, payload FROM jobq_events
    WHERE owner = $1 AND name = $2 AND id > $3 AND created_at >= $4
    ORDER BY id LIMIT 1";

const INSERT_EVENT: &str = "
    INSERT INTO jobq_events (owner, name, payload, created_at) VALUES ($1, $2, $3, $4)
    RETURNING id";

/// Every job of the owner $1 ('' for none) waiting for the event $2: `queued` now ($3).
const WAKE: &str = "
    UPDATE jobq_jobs SET status = 'queued', wait_for = NULL, run_after = $3, updated_at = $3
    WHERE wait_for = $2 AND status = 'waiting'
      AND (owner = $1 OR ($1 = '' AND owner IS NULL))
    RETURNING id";

pub(crate) fn steps(conn: &mut Conn, id: &JobId) -> Result<Vec<Step>> {
    let rows = conn.query(STEPS, &[&uuid_of(id)?])?;
    Ok(rows
        .iter()
        .map(|r| Step {
            name: r.get(0),
            kind: StepKind::parse(r.get(1)),
            output: r.get(2),
            event: r.get(3),
            event_id: r.get(4),
            wake_at: r.get(5),
            started_at: r.get(6),
            ended_at: r.get(7),
            position: r.get::<_, i32>(8).max(0) as u32,
        })
        .collect())
}

impl crate::store::StepStore for Postgres {
    fn steps(&self, scope: Scope<'_>, id: &JobId) -> Result<Option<Vec<Step>>> {
        self.snapshot(|conn| {
            let seen = conn.query_opt(
                "SELECT 1 FROM jobq_jobs WHERE id = $1 AND ($2::text IS NULL OR owner = $2)",
                &[&uuid_of(id)?, &scope],
            )?;
            if seen.is_none() {
                return Ok(None);
            }
            steps(conn, id).map(Some)
        })
    }

    fn put_step(&self, scope: Scope<'_>, lease: &Lease, step: &Step) -> Result<()> {
        self.run(|conn| super::jobs::put_step(conn, scope, lease, step))
    }

    fn find_event(&self, query: EventQuery<'_>) -> Result<Option<EventRow>> {
        self.read(|conn| {
            Ok(conn
                .query_opt(
                    FIND_EVENT,
                    &[
                        &query.owner.unwrap_or(""),
                        &query.name,
                        &query.after_id,
                        &query.created_from,
                    ],
                )?
                .map(|r| EventRow {
                    id: r.get(0),
                    payload: r.get(1),
                }))
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
        self.transaction(|conn| {
            conn.execute(super::jobs::EVENT_LOCK, &[&name])?;
            let id: i64 = conn
                .query_one(INSERT_EVENT, &[&owner, &name, &payload, &now])?
                .get(0);
            let woken: Vec<JobId> = conn
                .query(WAKE, &[&owner, &name, &now])?
                .iter()
                .map(|r| job_id(r.get(0)))
                .collect();
            Ok(Emitted::with(id, woken))
        })
    }

    fn prune_events(&self, cutoff: i64) -> Result<usize> {
        self.run(|conn| {
            let n = conn.execute("DELETE FROM jobq_events WHERE created_at < $1", &[&cutoff])?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }
}

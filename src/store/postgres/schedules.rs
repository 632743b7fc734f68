//! Schedules on PostgreSQL: their rows, and the firing of due slots.

use super::Postgres;
use postgres::Row;
use uuid::Uuid;

use super::Conn;
use crate::error::{Error, Result};
use crate::job::Enqueued;
use crate::model::{Firing, ScheduleChange, SchedulePut, ScheduleRow, Scope};
use crate::store::rules::too_many_schedules;

macro_rules! insert_schedule {
    ($on_conflict:literal) => {
        concat!(
            "INSERT INTO jobq_schedules (name, owner, cron, every_ms, timezone, kind, input, queue,
                                priority, max_attempts, catch_up, paused, next_fire, last_fire,
                                created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7::text::json, $8, $9, $10, $11, $12, $13, $14, $15, $15)
    ON CONFLICT (coalesce(owner, ''), name) ",
            $on_conflict
        )
    };
}

const INSERT: &str = insert_schedule!("DO NOTHING");

/// In place of the schedule of that name (as on SQLite).
const REPLACE: &str = insert_schedule!(
    "DO UPDATE SET cron = excluded.cron, every_ms = excluded.every_ms,
        timezone = excluded.timezone, kind = excluded.kind, input = excluded.input,
        queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, catch_up = excluded.catch_up,
        next_fire = excluded.next_fire, created_at = excluded.created_at,
        updated_at = excluded.updated_at"
);

/// One owner's schedules are added one at a time, so that the count holds.
const LOCK_OWNER: &str = "SELECT pg_advisory_xact_lock(hashtext('jobq_schedules'), hashtext($1))";

/// The schedules of an owner but the one named (which a replacement takes the place of).
const COUNT_OWNED: &str = "SELECT count(*) FROM jobq_schedules WHERE owner = $1 AND name <> $2";

const LIST: &str = "
    SELECT name, owner, cron, every_ms, timezone, kind, input::text, queue, priority,
           max_attempts, catch_up, paused, next_fire, last_fire, created_at
    FROM jobq_schedules
    WHERE ($1::text IS NULL OR owner = $1)
      AND ($2::bigint IS NULL OR (NOT paused AND next_fire <= $2))
    ORDER BY coalesce(owner, ''), name";

const REMOVE: &str =
    "DELETE FROM jobq_schedules WHERE coalesce(owner, '') = coalesce($1::text, '') AND name = $2";

const PAUSE: &str = "
    UPDATE jobq_schedules SET paused = true, updated_at = $3
    WHERE coalesce(owner, '') = coalesce($1::text, '') AND name = $2";

const RESUME: &str = "
    UPDATE jobq_schedules SET paused = false, next_fire = $4, updated_at = $3
    WHERE coalesce(owner, '') = coalesce($1::text, '') AND name = $2";

/// Moves `next_fire` on from the value this process read: one process wins each slot (a
/// second one waits for the first to commit, then finds the value moved).
const ADVANCE: &str = "
    UPDATE jobq_schedules SET next_fire = $1, last_fire = coalesce($2, last_fire), updated_at = $3
    WHERE coalesce(owner, '') = coalesce($4::text, '') AND name = $5
      AND next_fire = $6 AND NOT paused";

fn row(r: &Row) -> ScheduleRow {
    ScheduleRow {
        name: r.get(0),
        owner: r.get(1),
        cron: r.get(2),
        every_ms: r.get(3),
        timezone: r.get(4),
        kind: r.get(5),
        input: r.get(6),
        queue: r.get(7),
        priority: r.get(8),
        max_attempts: r.get::<_, Option<i32>>(9).map(|n| n.max(0) as u32),
        catch_up: r.get(10),
        paused: r.get(11),
        next_fire: r.get(12),
        last_fire: r.get(13),
        created_at: r.get(14),
    }
}

pub(crate) fn insert(conn: &mut Conn, s: &ScheduleRow, put: SchedulePut) -> Result<()> {
    if let Some(owner) = &s.owner {
        conn.query_one(LOCK_OWNER, &[owner])?;
        let owned: i64 = conn.query_one(COUNT_OWNED, &[owner, &s.name])?.get(0);
        if owned >= put.max_per_owner as i64 {
            return Err(too_many_schedules(owner, put.max_per_owner));
        }
    }
    let max_attempts = s.max_attempts.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    let n = conn.execute(
        if put.replace { REPLACE } else { INSERT },
        &[
            &s.name,
            &s.owner,
            &s.cron,
            &s.every_ms,
            &s.timezone,
            &s.kind,
            &s.input,
            &s.queue,
            &s.priority,
            &max_attempts,
            &s.catch_up,
            &s.paused,
            &s.next_fire,
            &s.last_fire,
            &s.created_at,
        ],
    )?;
    if n == 0 {
        return Err(Error::Duplicate {
            what: "schedule",
            id: s.name.clone(),
        });
    }
    Ok(())
}

pub(crate) fn list(
    conn: &mut Conn,
    scope: Scope<'_>,
    due: Option<i64>,
) -> Result<Vec<ScheduleRow>> {
    Ok(conn.query(LIST, &[&scope, &due])?.iter().map(row).collect())
}

pub(crate) fn change(
    conn: &mut Conn,
    owner: Option<&str>,
    name: &str,
    change: ScheduleChange,
    now: i64,
) -> Result<bool> {
    let n = match change {
        ScheduleChange::Remove => conn.execute(REMOVE, &[&owner, &name])?,
        ScheduleChange::Pause => conn.execute(PAUSE, &[&owner, &name, &now])?,
        ScheduleChange::Resume(next) => conn.execute(RESUME, &[&owner, &name, &now, &next])?,
    };
    Ok(n > 0)
}

/// Fires a schedule's due slots in the caller's transaction.
pub(crate) fn fire(
    conn: &mut Conn,
    firing: Firing<'_>,
    ids: Vec<Uuid>,
    now: i64,
) -> Result<Option<Vec<Enqueued>>> {
    let moved = conn.execute(
        ADVANCE,
        &[
            &firing.next,
            &firing.last_fire,
            &now,
            &firing.owner,
            &firing.name,
            &firing.expected,
        ],
    )?;
    if moved == 0 {
        return Ok(None);
    }
    if firing.jobs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    super::jobs::insert_jobs(conn, firing.owner, firing.jobs, ids, now).map(Some)
}

impl crate::store::ScheduleStore for Postgres {
    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()> {
        self.transaction(|c| insert(c, row, put))
    }

    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>> {
        self.snapshot(|c| list(c, scope, due))
    }

    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool> {
        self.run(|c| self::change(c, owner, name, change, now))
    }

    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>> {
        let ids = super::ids::new_ids(now, firing.jobs.len());
        self.transaction(|conn| fire(conn, firing.clone(), ids.clone(), now))
    }
}

//! Schedules on SQLite: their rows, and the firing of due slots.

use super::Sqlite;
use rusqlite::{Connection, Row, named_params, params};

use super::WriteTx;
use crate::error::{Error, Result};
use crate::job::Enqueued;
use crate::model::{Firing, ScheduleChange, SchedulePut, ScheduleRow, Scope};
use crate::store::rules::too_many_schedules;

const LIST: &str = "
    SELECT name, owner, cron, every_ms, timezone, kind, input, queue, priority, max_attempts,
           catch_up, paused, next_fire, last_fire, created_at
    FROM jobq_schedules
    WHERE (?1 IS NULL OR owner = ?1) AND (?2 IS NULL OR (paused = 0 AND next_fire <= ?2))
    ORDER BY coalesce(owner, ''), name";

const REMOVE: &str =
    "DELETE FROM jobq_schedules WHERE coalesce(owner, '') = coalesce(:owner, '') AND name = :name";

const PAUSE: &str = "
    UPDATE jobq_schedules SET paused = 1, updated_at = :now
    WHERE coalesce(owner, '') = coalesce(:owner, '') AND name = :name";

const RESUME: &str = "
    UPDATE jobq_schedules SET paused = 0, next_fire = :next, updated_at = :now
    WHERE coalesce(owner, '') = coalesce(:owner, '') AND name = :name";

macro_rules! insert_schedule {
    ($on_conflict:literal) => {
        concat!(
            "INSERT INTO jobq_schedules (name, owner, cron, every_ms, timezone, kind, input, queue,
                                priority, max_attempts, catch_up, paused, next_fire, last_fire,
                                created_at, updated_at)
    VALUES (:name, :owner, :cron, :every_ms, :timezone, :kind, :input, :queue, :priority,
            :max_attempts, :catch_up, :paused, :next_fire, :last_fire, :created_at, :created_at)
    ON CONFLICT (coalesce(owner, ''), name) ",
            $on_conflict
        )
    };
}

const INSERT: &str = insert_schedule!("DO NOTHING");

/// In place of the schedule of that name: its rule and jobs change, counted from now; it
/// stays paused or not, and keeps when it last fired.
const REPLACE: &str = insert_schedule!(
    "DO UPDATE SET cron = excluded.cron, every_ms = excluded.every_ms,
        timezone = excluded.timezone, kind = excluded.kind, input = excluded.input,
        queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, catch_up = excluded.catch_up,
        next_fire = excluded.next_fire, created_at = excluded.created_at,
        updated_at = excluded.updated_at"
);

/// The schedules of an owner but the one named (which a replacement takes the place of).
const COUNT_OWNED: &str =
    "SELECT count(*) FROM jobq_schedules WHERE owner = :owner AND name <> :name";

/// Moves `next_fire` on from the value this process read: one process wins each slot.
const ADVANCE: &str = "
    UPDATE jobq_schedules SET next_fire = :next, last_fire = coalesce(:last, last_fire),
                              updated_at = :now
    WHERE coalesce(owner, '') = coalesce(:owner, '') AND name = :name
      AND next_fire = :expected AND paused = 0";

fn row(r: &Row<'_>) -> rusqlite::Result<ScheduleRow> {
    Ok(ScheduleRow {
        name: r.get(0)?,
        owner: r.get(1)?,
        cron: r.get(2)?,
        every_ms: r.get(3)?,
        timezone: r.get(4)?,
        kind: r.get(5)?,
        input: r.get(6)?,
        queue: r.get(7)?,
        priority: r.get(8)?,
        max_attempts: r.get(9)?,
        catch_up: r.get(10)?,
        paused: r.get(11)?,
        next_fire: r.get(12)?,
        last_fire: r.get(13)?,
        created_at: r.get(14)?,
    })
}

pub(crate) fn insert(conn: &Connection, s: &ScheduleRow, put: SchedulePut) -> Result<()> {
    if let Some(owner) = &s.owner {
        let owned: i64 = conn
            .prepare_cached(COUNT_OWNED)?
            .query_row(named_params! {":owner": owner, ":name": s.name}, |r| {
                r.get(0)
            })?;
        if owned >= put.max_per_owner as i64 {
            return Err(too_many_schedules(owner, put.max_per_owner));
        }
    }
    let sql = if put.replace { REPLACE } else { INSERT };
    let n = conn.prepare_cached(sql)?.execute(named_params! {
        ":name": s.name, ":owner": s.owner, ":cron": s.cron, ":every_ms": s.every_ms,
        ":timezone": s.timezone, ":kind": s.kind, ":input": s.input, ":queue": s.queue,
        ":priority": s.priority, ":max_attempts": s.max_attempts, ":catch_up": s.catch_up,
        ":paused": s.paused, ":next_fire": s.next_fire, ":last_fire": s.last_fire,
        ":created_at": s.created_at,
    })?;
    if n == 0 {
        return Err(Error::Duplicate {
            what: "schedule",
            id: s.name.clone(),
        });
    }
    Ok(())
}

pub(crate) fn list(
    conn: &Connection,
    scope: Scope<'_>,
    due: Option<i64>,
) -> Result<Vec<ScheduleRow>> {
    let mut stmt = conn.prepare_cached(LIST)?;
    let rows = stmt.query_map(params![scope, due], row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

pub(crate) fn change(
    conn: &Connection,
    owner: Option<&str>,
    name: &str,
    change: ScheduleChange,
    now: i64,
) -> Result<bool> {
    let n = match change {
        ScheduleChange::Remove => conn
            .prepare_cached(REMOVE)?
            .execute(named_params! {":owner": owner, ":name": name})?,
        ScheduleChange::Pause => conn
            .prepare_cached(PAUSE)?
            .execute(named_params! {":owner": owner, ":name": name, ":now": now})?,
        ScheduleChange::Resume(next) => conn
            .prepare_cached(RESUME)?
            .execute(named_params! {":owner": owner, ":name": name, ":now": now, ":next": next})?,
    };
    Ok(n > 0)
}

/// Fires a schedule's due slots in the writer's transaction.
pub(crate) fn fire(
    tx: &WriteTx<'_, '_>,
    firing: Firing<'_>,
    now: i64,
) -> Result<Option<Vec<Enqueued>>> {
    let moved = tx.prepare_cached(ADVANCE)?.execute(named_params! {
        ":next": firing.next, ":last": firing.last_fire, ":now": now, ":owner": firing.owner,
        ":name": firing.name, ":expected": firing.expected,
    })?;
    if moved == 0 {
        return Ok(None);
    }
    if firing.jobs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let ids = super::ids::allocate_in(tx, now, firing.jobs.len())?;
    super::jobs::insert_jobs(tx, firing.owner, firing.jobs, ids, now).map(Some)
}

impl crate::store::ScheduleStore for Sqlite {
    fn insert_schedule(&self, row: &ScheduleRow, put: SchedulePut) -> Result<()> {
        self.write(|c| insert(c, row, put))
    }

    fn schedules(&self, scope: Scope<'_>, due: Option<i64>) -> Result<Vec<ScheduleRow>> {
        self.read(|c| list(c, scope, due))
    }

    fn change_schedule(
        &self,
        owner: Option<&str>,
        name: &str,
        change: ScheduleChange,
        now: i64,
    ) -> Result<bool> {
        self.write(|c| self::change(c, owner, name, change, now))
    }

    fn fire(&self, firing: Firing<'_>, now: i64) -> Result<Option<Vec<Enqueued>>> {
        self.write(|tx| fire(tx, firing.clone(), now))
    }
}

//! Rollups on SQLite: kept by the transactions that change jobs, read by stats and series.
//!
//! Every change of a job made through the writer connection is seen by its temporary
//! triggers, which hand each inserted or changed row to a Rust function (`jobq_note`,
//! `jobq_enqueued`) that adds it to the transaction's [`Tally`]; the writer upserts the
//! tally in one statement just before it commits, and drops it when the transaction rolls
//! back. Jobs inserted in an application's own transaction, on its own connection, are
//! counted by [`note_enqueued`] in that transaction.

use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::{Connection, named_params};

use crate::error::{Error, Result};
use crate::job::{Enqueued, Status};
use crate::model::{
    EVER, HOUR_MS, MINUTE_MS, Metric, RollupQuery, RollupRow, Scope, Tally, Transition,
};

/// Every change of a job's status or claims, handed to `jobq_note`: connection-local, so
/// only the writer connection (which installs it) carries it.
const NOTE_TRIGGER: &str = "
    CREATE TEMP TRIGGER IF NOT EXISTS jobq_rolled_up
    AFTER UPDATE OF status, claims ON main.jobq_jobs
    WHEN old.status IS NOT new.status OR old.claims <> new.claims
    BEGIN
        SELECT jobq_note(old.status, new.status, new.claims > old.claims,
                         new.snoozes > old.snoozes, new.owner, new.queue, new.kind,
                         new.updated_at, old.started_at, max(old.run_after, old.created_at));
    END";

/// Every insert, handed to `jobq_enqueued`.
const ENQUEUE_TRIGGER: &str = "
    CREATE TEMP TRIGGER IF NOT EXISTS jobq_rolled_in
    AFTER INSERT ON main.jobq_jobs
    BEGIN
        SELECT jobq_enqueued(new.owner, new.queue, new.kind, new.created_at, new.status);
    END";

/// Every delete (a prune, an admin's delete, a group's cascade), handed to `jobq_removed`.
const REMOVE_TRIGGER: &str = "
    CREATE TEMP TRIGGER IF NOT EXISTS jobq_rolled_out
    AFTER DELETE ON main.jobq_jobs
    BEGIN
        SELECT jobq_removed(old.owner, old.queue, old.status);
    END";

/// Adds to the counts of jobs by status: `:rows` is a JSON array of
/// `[owner, queue, status, delta]`.
const COUNT: &str = "
    INSERT INTO jobq_counts (owner, queue, status, n)
    SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3
    FROM json_each(:rows) WHERE true
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = n + excluded.n";

/// The counts of one status: `n` added to a row, made if missing.
const COUNT_ONE: &str = "
    INSERT INTO jobq_counts (owner, queue, status, n) VALUES (?1, ?2, ?3, ?4)
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = n + excluded.n";

/// The jobs just inserted on another connection (`:keys`), in the counts.
const COUNTED: &str = "
    INSERT INTO jobq_counts (owner, queue, status, n)
    SELECT coalesce(owner, ''), queue, status, count(*)
    FROM jobq_jobs WHERE id_key IN (SELECT value FROM json_each(:keys))
    GROUP BY 1, 2, 3
    ON CONFLICT (owner, queue, status, shard) DO UPDATE SET n = n + excluded.n";

/// Adds one row of a transaction (the usual case of a single enqueue).
const UPSERT_ONE: &str = "
    INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
    VALUES (60000, ?1, ?2, ?3, ?4, ?5, ?6, ?7)
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = n + excluded.n";

/// Adds a transaction's rows: `:rows` is a JSON array of
/// `[at, owner, queue, kind, metric, slot, n]`.
const UPSERT: &str = "
    INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
    SELECT 60000, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
           value ->> 5, value ->> 6
    FROM json_each(:rows) WHERE true
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = n + excluded.n";

/// The jobs just inserted (`:keys`, their row keys), counted as enqueued.
const ENQUEUED: &str = "
    INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
    SELECT 60000, :at, coalesce(owner, ''), queue, kind, 'enqueued', 0, count(*)
    FROM jobq_jobs WHERE id_key IN (SELECT value FROM json_each(:keys))
    GROUP BY 3, 4, 5
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = n + excluded.n";

/// Moves rows of span `:from` that start before `:before` into rows of span `:to` (their
/// start rounded down to it; everything at 0 for span 0).
const FOLD: &str = "
    INSERT INTO jobq_rollups (span, at, owner, queue, kind, metric, slot, n)
    SELECT :to, CASE WHEN :to = 0 THEN 0 ELSE at - at % :to END, owner, queue, kind,
           metric, slot, sum(n)
    FROM jobq_rollups WHERE span = :from AND at < :before
    GROUP BY 2, 3, 4, 5, 6, 7
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = n + excluded.n";

const FOLDED: &str = "DELETE FROM jobq_rollups WHERE span = :from AND at < :before";

/// The sums (per step, see `RollupQuery::step`) of the rows starting in `[:from, :to)`, by start, queue, kind, metric and slot
/// (queue and kind `''` unless asked for).
const ROWS: &str = "
    SELECT CASE WHEN :step = 0 THEN :from ELSE :from + (at - :from) / :step * :step END,
           CASE WHEN :by THEN queue ELSE '' END, CASE WHEN :by THEN kind ELSE '' END,
           metric, slot, sum(n)
    FROM jobq_rollups
    WHERE span IN (0, 60000, 3600000) AND at >= :from AND at < :to
      AND (:owner IS NULL OR owner = :owner)
      AND (:queue IS NULL OR queue = :queue) AND (:kind IS NULL OR kind = :kind)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1";

/// The text argument `i` of a call from a trigger (`None` for NULL).
fn text_arg<'c>(ctx: &'c Context<'_>, i: usize) -> Option<&'c str> {
    ctx.get_raw(i).as_str_or_null().ok().flatten()
}

/// The status argument `i` of a call from a trigger.
fn status_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<Status> {
    text_arg(ctx, i)
        .unwrap_or_default()
        .parse()
        .map_err(|e: Error| rusqlite::Error::UserFunctionError(e.to_string().into()))
}

/// Installs the triggers and their functions on the writer connection; what they note
/// goes to `tally`.
pub(crate) fn install(conn: &Connection, tally: &Arc<Mutex<Tally>>) -> Result<()> {
    let noted = Arc::clone(tally);
    conn.create_scalar_function("jobq_note", 10, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let transition = Transition {
            from: status_arg(ctx, 0)?,
            to: status_arg(ctx, 1)?,
            claimed: ctx.get(2)?,
            snoozed: ctx.get(3)?,
            now: ctx.get(7)?,
            started_at: ctx.get(8)?,
            due_at: ctx.get(9)?,
        };
        let (queue, kind) = (
            text_arg(ctx, 5).unwrap_or_default(),
            text_arg(ctx, 6).unwrap_or_default(),
        );
        let mut tally = noted.lock().unwrap_or_else(PoisonError::into_inner);
        tally.transition(&transition, text_arg(ctx, 4), queue, kind);
        Ok(rusqlite::types::Null)
    })?;
    let inserted = Arc::clone(tally);
    conn.create_scalar_function("jobq_enqueued", 5, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let (owner, queue) = (text_arg(ctx, 0), text_arg(ctx, 1).unwrap_or_default());
        let status = status_arg(ctx, 4)?;
        let now: i64 = ctx.get(3)?;
        let mut tally = inserted.lock().unwrap_or_else(PoisonError::into_inner);
        let kind = text_arg(ctx, 2).unwrap_or_default();
        tally.add(now, owner, queue, kind, Metric::Enqueued, 0);
        tally.count(owner, queue, status, 1);
        Ok(rusqlite::types::Null)
    })?;
    let removed = Arc::clone(tally);
    conn.create_scalar_function("jobq_removed", 3, FunctionFlags::SQLITE_UTF8, move |ctx| {
        let status = status_arg(ctx, 2)?;
        let mut tally = removed.lock().unwrap_or_else(PoisonError::into_inner);
        tally.count(
            text_arg(ctx, 0),
            text_arg(ctx, 1).unwrap_or_default(),
            status,
            -1,
        );
        Ok(rusqlite::types::Null)
    })?;
    conn.execute_batch(NOTE_TRIGGER)?;
    conn.execute_batch(ENQUEUE_TRIGGER)?;
    conn.execute_batch(REMOVE_TRIGGER)?;
    Ok(())
}

/// Upserts what `tally` holds in the caller's transaction, and empties it.
pub(crate) fn flush(conn: &Connection, tally: &Mutex<Tally>) -> Result<()> {
    let rows = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    if rows.is_empty() {
        return Ok(());
    }
    let counts: Vec<(&str, &str, &str, i64)> = rows
        .counts
        .iter()
        .filter(|(_, n)| *n != 0)
        .map(|(k, n)| (k.owner.as_str(), k.queue.as_str(), k.status.as_str(), *n))
        .collect();
    match &counts[..] {
        [] => {}
        [(owner, queue, status, n)] => {
            conn.prepare_cached(COUNT_ONE)?
                .execute(rusqlite::params![owner, queue, status, n])?;
        }
        counts => {
            let counts =
                serde_json::to_string(counts).map_err(|e| Error::invalid("rows", e.to_string()))?;
            conn.prepare_cached(COUNT)?
                .execute(named_params! {":rows": counts})?;
        }
    }
    if rows.rows.is_empty() {
        return Ok(());
    }
    if let [(k, n)] = &rows.rows[..] {
        conn.prepare_cached(UPSERT_ONE)?.execute(rusqlite::params![
            k.at,
            k.owner,
            k.queue,
            k.kind,
            k.metric.as_str(),
            k.slot,
            n
        ])?;
        return Ok(());
    }
    let rows: Vec<(i64, &str, &str, &str, &str, i64, i64)> = rows
        .rows
        .iter()
        .map(|(k, n)| {
            (
                k.at,
                k.owner.as_str(),
                k.queue.as_str(),
                k.kind.as_str(),
                k.metric.as_str(),
                k.slot,
                *n,
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).map_err(|e| Error::invalid("rows", e.to_string()))?;
    conn.prepare_cached(UPSERT)?
        .execute(named_params! {":rows": rows})?;
    Ok(())
}

/// Drops what `tally` holds (its transaction rolled back).
pub(crate) fn forget(tally: &Mutex<Tally>) {
    *tally.lock().unwrap_or_else(PoisonError::into_inner) = Tally::default();
}

/// Counts the jobs `inserted` at `now` on a connection other than the writer's (those not
/// already there) as enqueued, and in the counts by status.
pub(crate) fn note_enqueued(conn: &Connection, inserted: &[Enqueued], now: i64) -> Result<()> {
    let at = now - now.rem_euclid(MINUTE_MS);
    let keys: Vec<i64> = inserted
        .iter()
        .filter(|e| !e.already_existed)
        .map(|e| e.job_id.key())
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let keys = serde_json::to_string(&keys).map_err(|e| Error::invalid("keys", e.to_string()))?;
    conn.prepare_cached(ENQUEUED)?
        .execute(named_params! {":at": at, ":keys": keys})?;
    conn.prepare_cached(COUNTED)?
        .execute(named_params! {":keys": keys})?;
    Ok(())
}

/// Folds minutes that start before `minutes_before` into hours, and hours that start before
/// `hours_before` into the all-time rows. Returns how many rows were folded.
pub(crate) fn fold(conn: &Connection, minutes_before: i64, hours_before: i64) -> Result<usize> {
    let mut moved = 0;
    for (from, to, before) in [
        (MINUTE_MS, HOUR_MS, minutes_before),
        (HOUR_MS, EVER, hours_before),
    ] {
        let params = named_params! {":from": from, ":to": to, ":before": before};
        conn.prepare_cached(FOLD)?.execute(params)?;
        moved += conn
            .prepare_cached(FOLDED)?
            .execute(named_params! {":from": from, ":before": before})?;
    }
    Ok(moved)
}

/// The sums of the rollup rows `query` asks for.
pub(crate) fn rows(
    conn: &Connection,
    scope: Scope<'_>,
    query: RollupQuery<'_>,
) -> Result<Vec<RollupRow>> {
    let mut stmt = conn.prepare_cached(ROWS)?;
    let rows = stmt.query_map(
        named_params! {
            ":from": query.from, ":to": query.to, ":owner": scope, ":queue": query.queue,
            ":kind": query.kind, ":by": query.by_queue_kind, ":step": query.step,
        },
        |r| {
            let metric: String = r.get(3)?;
            let Some(metric) = Metric::parse(&metric) else {
                return Ok(None);
            };
            Ok(Some(RollupRow {
                at: r.get(0)?,
                queue: r.get(1)?,
                kind: r.get(2)?,
                metric,
                slot: r.get(4)?,
                n: r.get(5)?,
            }))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        // A metric this version does not know (a newer writer's) is left out.
        out.extend(row?);
    }
    Ok(out)
}

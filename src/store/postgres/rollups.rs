//! Rollups on PostgreSQL: kept by the statement triggers of `schema.postgres.sql`
//! (`jobq_roll_inserts`, `jobq_roll_updates`), read and folded here.

use crate::error::Result;
use crate::model::{EVER, HOUR_MS, MINUTE_MS, Metric, RollupQuery, RollupRow, Scope};
use crate::store::postgres::Conn;

/// Moves rows of span $1 that start before $3 into rows of span $2 (their start rounded
/// down to it; everything at 0 for span 0), in one statement.
const FOLD: &str = "
    WITH moved AS (
        DELETE FROM jobq_rollups WHERE span = $1::bigint AND at < $3::bigint
        RETURNING at, owner, queue, kind, metric, slot, shard, n)
    INSERT INTO jobq_rollups AS r (span, at, owner, queue, kind, metric, slot, shard, n)
    SELECT $2::bigint, CASE WHEN $2::bigint = 0 THEN 0 ELSE at - at % $2::bigint END, owner,
           queue, kind, metric,
           slot, shard, sum(n)
    FROM moved GROUP BY 2, 3, 4, 5, 6, 7, 8
    ON CONFLICT (span, at, owner, queue, kind, metric, slot, shard)
    DO UPDATE SET n = r.n + excluded.n";

/// The sums (per step, see `RollupQuery::step`) of the rows starting in `[$1, $2)`, by start, queue, kind, metric and slot
/// (queue and kind `''` unless asked for).
const ROWS: &str = "
    SELECT CASE WHEN $7::bigint = 0 THEN $1::bigint
                ELSE $1::bigint + (at - $1::bigint) / $7::bigint * $7::bigint END,
           CASE WHEN $6 THEN queue ELSE '' END, CASE WHEN $6 THEN kind ELSE '' END,
           metric, slot, sum(n)::bigint
    FROM jobq_rollups
    WHERE span IN (0, 60000, 3600000) AND at >= $1 AND at < $2
      AND ($3::text IS NULL OR owner = $3)
      AND ($4::text IS NULL OR queue = $4) AND ($5::text IS NULL OR kind = $5)
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1";

/// See `StatsStore::fold_rollups`; runs in the caller's transaction.
pub(crate) fn fold(conn: &mut Conn, minutes_before: i64, hours_before: i64) -> Result<usize> {
    let mut moved = 0;
    for (from, to, before) in [
        (MINUTE_MS, HOUR_MS, minutes_before),
        (HOUR_MS, EVER, hours_before),
    ] {
        moved += conn.execute(FOLD, &[&from, &to, &before])?;
    }
    Ok(usize::try_from(moved).unwrap_or(usize::MAX))
}

pub(crate) fn rows(
    conn: &mut Conn,
    scope: Scope<'_>,
    query: RollupQuery<'_>,
) -> Result<Vec<RollupRow>> {
    let rows = conn.query(
        ROWS,
        &[
            &query.from,
            &query.to,
            &scope,
            &query.queue,
            &query.kind,
            &query.by_queue_kind,
            &query.step,
        ],
    )?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            // A metric this version does not know (a newer writer's) is left out.
            Some(RollupRow {
                at: r.get(0),
                queue: r.get(1),
                kind: r.get(2),
                metric: Metric::parse(r.get(3))?,
                slot: i64::from(r.get::<_, i32>(4)),
                n: r.get(5),
            })
        })
        .collect())
}

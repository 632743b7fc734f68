//! The claim on PostgreSQL.
//! Each function runs on the connection it is given (a transaction or autocommit).

use postgres::Row;
use uuid::Uuid;

use super::lease::{claim_of, explain};
use crate::error::Result;
use crate::job::{ClaimedJob, Lease, Status, Timestamp};
use crate::model::{ClaimSpec, Record, Recorded, Scope};
use crate::store::postgres::Conn;
use crate::store::postgres::ids::{job_id, uuid_of};

/// What a claim sets on each job it takes, and what it returns of it.
macro_rules! claim_update {
    () => {
        "
    UPDATE jobq_jobs AS j
    SET status = 'running', locked_by = $6, locked_at = $2, heartbeat_at = $2,
        attempts = j.attempts + 1, claims = j.claims + 1, started_at = $2, stage = 'claimed',
        progress = 0, wait_for = NULL, updated_at = $2
    FROM picked WHERE j.id = picked.id
    RETURNING j.id, j.queue, j.kind, j.priority, j.attempts, j.max_attempts, j.run_after,
              j.created_at, j.owner, j.group_id, j.input::text, j.claims, j.snoozes"
    };
}

/// The ready jobs one queue ($1) hands out: the ready index in claim order, skipping rows
/// other claimers hold locked, up to $5 rows; none from a queue under flow control (the
/// claim of `queues.rs` takes those).
///
/// `SKIP LOCKED` is for speed alone, not for correctness, and no test can tell it missing
/// from the jobs' outcomes: without it a second claimer waits for the first one's commit
/// and then finds the row no longer `queued` or `retry` (READ COMMITTED re-checks an
/// updated row against the statement's conditions), so no job is claimed twice either
/// way; it is the claimers queueing up behind each other's rows that it spares (what
/// `jobq bench` and the contention tests measure).
macro_rules! picked_from_one_queue {
    () => {
        "
    picked AS (
        SELECT id FROM jobq_jobs
        WHERE queue = $1 AND status IN ('queued', 'retry', 'waiting') AND run_after <= $2
          AND ($3::text[] IS NULL OR kind = ANY($3)) AND ($4::text IS NULL OR owner = $4)
          AND NOT EXISTS (SELECT 1 FROM jobq_queues c WHERE c.name = $1 AND c.controlled)
        ORDER BY priority DESC, run_after, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED)"
    };
}

/// The same over several queues ($1, an array): each queue's best $5 in claim order
/// (locked as they are read), then the best $5 of all of them.
macro_rules! picked_from_queues {
    () => {
        "
    candidates AS (
        SELECT c.id, c.priority, c.run_after
        FROM unnest($1::text[]) AS q(name),
        LATERAL (
            SELECT id, priority, run_after FROM jobq_jobs
            WHERE queue = q.name AND status IN ('queued', 'retry', 'waiting') AND run_after <= $2
              AND ($3::text[] IS NULL OR kind = ANY($3)) AND ($4::text IS NULL OR owner = $4)
              AND NOT EXISTS (SELECT 1 FROM jobq_queues c WHERE c.name = q.name AND c.controlled)
            ORDER BY priority DESC, run_after, id
            LIMIT $5
            FOR UPDATE SKIP LOCKED) AS c),
    picked AS (
        SELECT id FROM candidates ORDER BY priority DESC, run_after, id LIMIT $5)"
    };
}

const CLAIM_ONE_QUEUE: &str = concat!("WITH", picked_from_one_queue!(), claim_update!());

const CLAIM_QUEUES: &str = concat!("WITH", picked_from_queues!(), claim_update!());

/// Successes ($7 ids, $8 workers, $9 claims, $10 outputs, $11 costs added, each under its
/// own lease) and the refill of the slots they free, in one statement: one round trip and
/// one commit where two would do. The successes come back tagged `done`, the claims
/// `claimed`.
macro_rules! complete_and_claim {
    ($picked:expr) => {
        concat!(
            "
    WITH done AS (
        UPDATE jobq_jobs AS j
        SET status = 'succeeded', output = r.output::json, cost_cents = j.cost_cents + r.cost,
            stage = 'succeeded', progress = 1, completed_at = $2, updated_at = $2
        FROM unnest($7::uuid[], $8::text[], $9::int[], $10::text[], $11::bigint[])
             AS r(id, worker, claim, output, cost)
        WHERE j.id = r.id AND j.status = 'running' AND j.locked_by = r.worker
          AND j.claims = r.claim AND ($4::text IS NULL OR j.owner = $4)
          AND j.cost_cents + r.cost <= 1000000000000
        RETURNING j.id, j.dependents),",
            $picked,
            ",
    claimed AS (",
            claim_update!(),
            ")
    SELECT 'done', id, NULL, NULL, dependents, NULL::int, NULL::int, NULL::bigint, NULL::bigint,
           NULL, NULL, NULL, NULL::int, NULL::int
    FROM done
    UNION ALL
    SELECT 'claimed', * FROM claimed"
        )
    };
}

const COMPLETE_AND_CLAIM_ONE_QUEUE: &str = complete_and_claim!(picked_from_one_queue!());

const COMPLETE_AND_CLAIM_QUEUES: &str = complete_and_claim!(picked_from_queues!());

pub(super) fn claim(
    conn: &mut Conn,
    scope: Scope<'_>,
    spec: ClaimSpec<'_>,
    now: i64,
) -> Result<Vec<ClaimedJob>> {
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kind_names();
    let rows = match filter.queue_names() {
        [queue] => conn.query(
            CLAIM_ONE_QUEUE,
            &[queue, &now, &kinds, &scope, &limit, &worker],
        )?,
        queues => conn.query(
            CLAIM_QUEUES,
            &[&queues, &now, &kinds, &scope, &limit, &worker],
        )?,
    };
    Ok(in_claim_order(
        rows.iter().map(|r| claimed(r, worker)).collect(),
    ))
}

/// RETURNING gives rows in no promised order: claim order.
fn in_claim_order(mut jobs: Vec<ClaimedJob>) -> Vec<ClaimedJob> {
    jobs.sort_by(|a, b| {
        b.priority
            .cmp(&a.priority)
            .then(a.run_after.cmp(&b.run_after))
            .then_with(|| a.id.cmp(&b.id))
    });
    jobs
}

/// Each report's result, and the jobs claimed after them.
pub(super) type RecordedAndClaimed = (Vec<Result<Recorded>>, Vec<ClaimedJob>);

/// Successes only, and a refill: both in one statement (see `complete_and_claim!`).
/// `None` when the reports are not all successes (then the caller goes the long way).
pub(super) fn complete_and_claim(
    conn: &mut Conn,
    scope: Scope<'_>,
    reports: &[(&Lease, Record<'_>)],
    spec: ClaimSpec<'_>,
    again: bool,
    now: i64,
) -> Result<Option<RecordedAndClaimed>> {
    let mut completes = Vec::with_capacity(reports.len());
    for (lease, report) in reports {
        match report {
            Record::Complete { output, cost_cents } => {
                completes.push((*lease, uuid_of(&lease.job_id)?, *output, *cost_cents));
            }
            _ => return Ok(None),
        }
    }
    let ClaimSpec {
        worker,
        limit,
        filter,
    } = spec;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let kinds = filter.kind_names();
    let ids: Vec<Uuid> = completes.iter().map(|c| c.1).collect();
    let workers: Vec<&str> = completes.iter().map(|c| c.0.worker.as_str()).collect();
    let claims: Vec<i32> = completes.iter().map(|c| claim_of(c.0)).collect();
    let outputs: Vec<&str> = completes.iter().map(|c| c.2).collect();
    let costs: Vec<i64> = completes.iter().map(|c| c.3).collect();
    let rows = match filter.queue_names() {
        [queue] => conn.query(
            COMPLETE_AND_CLAIM_ONE_QUEUE,
            &[
                queue, &now, &kinds, &scope, &limit, &worker, &ids, &workers, &claims, &outputs,
                &costs,
            ],
        )?,
        queues => conn.query(
            COMPLETE_AND_CLAIM_QUEUES,
            &[
                &queues, &now, &kinds, &scope, &limit, &worker, &ids, &workers, &claims, &outputs,
                &costs,
            ],
        )?,
    };
    let mut done = std::collections::HashMap::new();
    let mut jobs = Vec::new();
    for r in &rows {
        if r.get::<_, &str>(0) == "done" {
            done.insert(r.get::<_, Uuid>(1), r.get::<_, i32>(4) > 0);
        } else {
            jobs.push(claimed_from(r, 1, worker));
        }
    }
    let mut results = Vec::with_capacity(completes.len());
    for (lease, id, _, cost) in &completes {
        results.push(if let Some(readied) = done.get(id) {
            Ok(Recorded::new(Status::Succeeded).readying(*readied))
        } else {
            explain(
                conn,
                scope,
                lease,
                again.then_some(Recorded::new(Status::Succeeded)),
                *cost,
            )
        });
    }
    Ok(Some((results, in_claim_order(jobs))))
}

pub(super) fn claimed(r: &Row, worker: &str) -> ClaimedJob {
    claimed_from(r, 0, worker)
}

/// A claimed job from the columns of `claim_update!`'s RETURNING, from column `at` on.
pub(crate) fn claimed_from(r: &Row, at: usize, worker: &str) -> ClaimedJob {
    ClaimedJob {
        id: job_id(r.get(at)),
        queue: r.get(at + 1),
        kind: r.get(at + 2),
        priority: r.get(at + 3),
        attempt: r.get::<_, i32>(at + 4) as u32,
        max_attempts: r.get::<_, i32>(at + 5) as u32,
        run_after: Timestamp::from_millis(r.get(at + 6)),
        created_at: Timestamp::from_millis(r.get(at + 7)),
        owner: r.get(at + 8),
        group_id: r.get(at + 9),
        worker: worker.to_string(),
        input: r.get(at + 10),
        claim: r.get::<_, i32>(at + 11) as u32,
        snoozes: r.get::<_, i32>(at + 12).max(0) as u32,
    }
}

const NEXT_RUN_AFTER: &str = "
    SELECT min(run_after) FROM jobq_jobs
    WHERE queue = ANY($1) AND status IN ('queued', 'retry', 'waiting') AND run_after > $2";

pub(super) fn next_run_after(conn: &mut Conn, queues: &[String], now: i64) -> Result<Option<i64>> {
    Ok(conn.query_one(NEXT_RUN_AFTER, &[&queues, &now])?.get(0))
}

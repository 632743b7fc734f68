//! Contention: eight processes at once enqueue, claim, complete, fail, cancel, retry, list and
//! read stats on one database with a short busy timeout. No operation surfaces SQLITE_BUSY,
//! "database is locked" or a PostgreSQL conflict while its timeout lasts; the errors that do surface are the typed,
//! documented refusals of a shared queue (a job another process cancelled or finished first).

use std::collections::BTreeMap;
use std::time::Duration;

use jobq::{
    ClaimFilter, Error, HealthThresholds, JobError, JobFilter, NewJob, Queue, StaleTimeouts,
    StatsFilter, Status,
};
use serde_json::json;

use crate::common::{Db, child_env, child_report, integrity, is_child, spawn_child};

const PROCESSES: usize = 8;
const ROUNDS: usize = 150;

/// The typed name of an error, for the tally.
fn name(e: &Error) -> String {
    match e {
        Error::NotFound { .. } => "NotFound",
        Error::InvalidTransition { .. } => "InvalidTransition",
        Error::LockLost { .. } => "LockLost",
        Error::Busy { .. } => "Busy",
        Error::Database(_) => "Database",
        other => return format!("Other({other})"),
    }
    .to_string()
}

#[test]
fn child_contender() {
    if !is_child() {
        return;
    }
    let queue = Queue::builder(child_env("JOBQ_TEST_DB"))
        .busy_timeout(Duration::from_millis(
            child_env("JOBQ_TEST_BUSY_MS").parse().unwrap(),
        ))
        .open()
        .unwrap();
    let me = format!("contender-{}", std::process::id());
    let mut ok = 0usize;
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut tally = |r: Result<(), Error>| match r {
        Ok(()) => ok += 1,
        Err(e) => {
            let msg = e.to_string().to_lowercase();
            if msg.contains("locked") || msg.contains("busy") {
                *errors.entry(format!("BUSY: {e}")).or_default() += 1;
            } else {
                *errors.entry(name(&e)).or_default() += 1;
            }
        }
    };
    for round in 0..ROUNDS {
        tally(
            queue
                .enqueue(NewJob::new("contend").input(json!({"by": me, "round": round})))
                .map(|_| ()),
        );
        tally(
            queue
                .enqueue_many((0..5).map(|i| NewJob::new("contend").priority(i)))
                .map(|_| ()),
        );
        match queue.claim(&me, 4, &ClaimFilter::default()) {
            Ok(jobs) => {
                tally(Ok(()));
                for (i, job) in jobs.iter().enumerate() {
                    let lease = job.lease();
                    let r = match i % 4 {
                        0 | 1 => queue.complete(&lease, json!({"by": me})),
                        2 => queue
                            .fail(
                                &lease,
                                &JobError::retryable("try again").retry_after(Duration::ZERO),
                            )
                            .map(|_| ()),
                        _ => queue
                            .set_progress(&lease, 0.5, Some("halfway"))
                            .and_then(|_| queue.heartbeat(&lease)),
                    };
                    tally(r);
                }
            }
            Err(e) => tally(Err(e)),
        }
        // Cancel and retry what others hold or finished: the refusals are expected, typed.
        match queue.list(&JobFilter::new().limit(10)) {
            Ok(page) => {
                tally(Ok(()));
                if let Some(job) = page.jobs.get(round % 10) {
                    let r = if job.status == Status::Cancelled || job.status == Status::Failed {
                        queue.retry(&job.id).map(|_| ())
                    } else {
                        queue.cancel(&job.id).map(|_| ())
                    };
                    tally(r);
                }
            }
            Err(e) => tally(Err(e)),
        }
        tally(
            queue
                .overview(&StatsFilter::new(), &HealthThresholds::default())
                .map(|_| ()),
        );
        if round % 10 == 0 {
            tally(queue.release_stale(&StaleTimeouts::default()).map(|_| ()));
            tally(
                queue
                    .stats(&StatsFilter::new().queue("default"))
                    .map(|_| ()),
            );
        }
    }
    println!("CONTENTION {}", json!({"ok": ok, "errors": errors}));
}

#[test]
fn eight_processes_at_once_never_see_a_busy_database() {
    let fresh = Db::fresh();
    let db = fresh.path();
    drop(Queue::open(&db).unwrap());
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            spawn_child(
                "conformance::contention::child_contender",
                &[
                    ("JOBQ_TEST_DB", db.display().to_string()),
                    ("JOBQ_TEST_BUSY_MS", "1000".into()),
                ],
            )
        })
        .collect();
    let mut total_ok = 0;
    let mut all_errors: BTreeMap<String, u64> = BTreeMap::new();
    for child in children {
        let line = child_report(child, "CONTENTION ");
        let report: serde_json::Value = serde_json::from_str(&line).unwrap();
        total_ok += report["ok"].as_u64().unwrap();
        for (k, v) in report["errors"].as_object().unwrap() {
            *all_errors.entry(k.clone()).or_default() += v.as_u64().unwrap();
        }
    }
    eprintln!(
        "contention: {PROCESSES} processes, {total_ok} operations succeeded, refusals: {all_errors:?}"
    );
    let busy: Vec<_> = all_errors
        .keys()
        .filter(|k| {
            k.starts_with("BUSY")
                || k.as_str() == "Busy"
                || k.as_str() == "Database"
                || k.starts_with("Other")
        })
        .collect();
    assert!(
        busy.is_empty(),
        "busy, locked or untyped errors surfaced: {all_errors:?}"
    );
    for kind in all_errors.keys() {
        assert!(
            ["NotFound", "InvalidTransition", "LockLost"].contains(&kind.as_str()),
            "unexpected {kind}"
        );
    }
    assert!(total_ok >= (PROCESSES * ROUNDS * 4) as u64);
    assert_eq!(integrity(&db), "ok");
    let total = Queue::open(&db)
        .unwrap()
        .stats(&StatsFilter::new())
        .unwrap()
        .total;
    assert_eq!(
        total,
        (PROCESSES * ROUNDS * 6) as i64,
        "every acknowledged enqueue is there"
    );
}

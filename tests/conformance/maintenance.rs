//! Stale release and pruning.

use std::time::Duration;

use jobq::{ClaimFilter, Error, JobError, NewJob, StaleTimeouts, Status};
use serde_json::json;

use crate::common::Env;

#[test]
fn a_job_without_heartbeat_is_released_to_retry_with_heartbeat_timeout() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env
        .queue
        .claim("crashed-worker", 1, &ClaimFilter::default())
        .unwrap()[0]
        .lease();
    env.queue.set_stage(&lease, "llm_analysis").unwrap();
    let timeouts = StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(60));

    env.advance(50);
    assert_eq!(
        env.queue.release_stale(&timeouts).unwrap(),
        0,
        "heartbeat still fresh"
    );
    env.queue.heartbeat(&lease).unwrap();
    env.advance(50);
    assert_eq!(
        env.queue.release_stale(&timeouts).unwrap(),
        0,
        "the heartbeat renewed it"
    );
    env.advance(11);
    assert_eq!(env.queue.release_stale(&timeouts).unwrap(), 1);
    assert_eq!(
        env.queue.release_stale(&timeouts).unwrap(),
        0,
        "released once"
    );

    let job = env.queue.get(&id).unwrap();
    assert_eq!(job.status, Status::Retry);
    assert_eq!(job.stage.as_deref(), Some("released_stale"));
    assert_eq!(job.error_code.as_deref(), Some("HEARTBEAT_TIMEOUT"));
    assert!(
        job.last_error
            .as_deref()
            .unwrap()
            .contains("worker timed out"),
        "{:?}",
        job.last_error
    );
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].code.as_deref(), Some("HEARTBEAT_TIMEOUT"));
    assert_eq!(job.run_after, env.queue.now(), "claimable at once");
    let again = env
        .queue
        .claim("healthy", 1, &ClaimFilter::default())
        .unwrap();
    assert_eq!((again[0].id.clone(), again[0].attempt), (id, 2));
}

#[test]
fn a_lock_held_too_long_is_released_with_lock_timeout() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    let timeouts = StaleTimeouts::none()
        .heartbeat_timeout(Duration::from_secs(60))
        .lock_timeout(Duration::from_secs(3600));
    for _ in 0..70 {
        env.advance(59);
        env.queue.heartbeat(&lease).unwrap();
        if env.queue.release_stale(&timeouts).unwrap() > 0 {
            break;
        }
    }
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (Status::Retry, Some("LOCK_TIMEOUT"))
    );
}

#[test]
fn a_stale_job_with_no_attempts_left_is_dead_lettered() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("k").max_attempts(1))
        .unwrap()
        .job_id;
    env.queue.claim("w", 1, &ClaimFilter::default()).unwrap();
    env.advance(3600);
    assert_eq!(
        env.queue.release_stale(&StaleTimeouts::default()).unwrap(),
        1
    );
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (Status::Failed, Some("HEARTBEAT_TIMEOUT"))
    );
    assert!(job.completed_at.is_some());
}

#[test]
fn release_stale_needs_a_timeout() {
    let env = Env::new();
    let err = env.queue.release_stale(&StaleTimeouts::none()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "timeouts",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn prune_deletes_only_finished_jobs_older_than_the_age() {
    let env = Env::new();
    let old_done = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let old_failed = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let waiting = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let claimed = env.queue.claim("w", 2, &ClaimFilter::default()).unwrap();
    env.queue.complete(&claimed[0].lease(), json!(1)).unwrap();
    env.queue
        .fail(&claimed[1].lease(), &JobError::permanent("x"))
        .unwrap();
    env.advance(8 * 86_400);
    let running = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let fresh_done = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap();
    assert_eq!(lease[0].id, waiting);
    let c = env.queue.claim("w", 2, &ClaimFilter::default()).unwrap();
    env.queue
        .complete(
            &c.iter().find(|j| j.id == fresh_done).unwrap().lease(),
            json!(1),
        )
        .unwrap();

    let week = Duration::from_secs(7 * 86_400);
    assert_eq!(env.queue.prune(week, &[Status::Failed]).unwrap(), 1);
    assert!(env.queue.get(&old_failed).unwrap_err().is_not_found());
    assert_eq!(env.queue.prune(week, &[]).unwrap(), 1);
    assert!(env.queue.get(&old_done).unwrap_err().is_not_found());
    for kept in [&waiting, &running, &fresh_done] {
        env.queue.get(kept).unwrap();
    }
    let before = env.dump();
    let err = env
        .queue
        .prune(Duration::ZERO, &[Status::Running])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidInput {
                field: "status",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(env.dump(), before);
}

#[test]
fn prune_handles_more_rows_than_one_chunk() {
    let env = Env::new();
    env.queue
        .enqueue_many((0..4500).map(|_| NewJob::new("k")))
        .unwrap();
    for id in env
        .queue
        .list(&jobq::JobFilter::new().limit(10_000))
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.id.clone())
    {
        env.queue.cancel(&id).unwrap();
    }
    env.advance(10);
    assert_eq!(
        env.queue
            .prune(Duration::from_secs(5), &[Status::Cancelled])
            .unwrap(),
        4500
    );
}

#[test]
fn prune_keeps_the_jobs_that_a_job_not_yet_finished_waits_for() {
    let env = Env::new();
    let q = &env.queue;
    let done = q.enqueue(NewJob::new("done")).unwrap().job_id;
    let slow = q.enqueue(NewJob::new("slow")).unwrap().job_id;
    let waits = q
        .enqueue(NewJob::new("join").after(&done).after(&slow))
        .unwrap()
        .job_id;
    let lease = q
        .claim("w", 1, &ClaimFilter::default().kinds(["done"]))
        .unwrap()
        .remove(0)
        .lease();
    q.complete(&lease, json!({"part": 1})).unwrap();
    env.advance(30 * 86_400);
    // `join` is blocked on `slow` and will read `done`'s output: `done` stays.
    assert_eq!(q.prune(Duration::from_secs(86_400), &[]).unwrap(), 0);
    let lease = q
        .claim("w", 1, &ClaimFilter::default().kinds(["slow"]))
        .unwrap()
        .remove(0)
        .lease();
    q.complete(&lease, json!({"part": 2})).unwrap();
    // Queued now, not yet run: still kept.
    env.advance(30 * 86_400);
    assert_eq!(q.prune(Duration::from_secs(86_400), &[]).unwrap(), 0);
    let job = q
        .claim("w", 1, &ClaimFilter::default().kinds(["join"]))
        .unwrap()
        .remove(0);
    assert_eq!(
        q.dependency_outputs(&waits).unwrap()[done.as_str()],
        json!({"part": 1})
    );
    q.complete(&job.lease(), json!(null)).unwrap();
    env.advance(30 * 86_400);
    assert_eq!(q.prune(Duration::from_secs(86_400), &[]).unwrap(), 3);
    assert!(q.get(&slow).unwrap_err().is_not_found());
}

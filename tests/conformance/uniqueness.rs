//! Uniqueness windows on the idempotency key: forever (the default), for a duration after
//! the first job's creation, or while that job is active — and racing enqueues still yield
//! one job.

use std::time::Duration;

use jobq::{ClaimFilter, Error, NewJob, Queue, Status};
use serde_json::json;

use crate::common::{Db, Env};

fn keyed(key: &str) -> NewJob {
    NewJob::new("sync").idempotency_key(key)
}

#[test]
fn a_key_held_for_a_duration_makes_a_new_job_once_the_window_has_passed() {
    let env = Env::new();
    let q = &env.queue;
    let window = Duration::from_secs(60);
    let first = q.enqueue(keyed("k").unique_for(window)).unwrap();
    assert!(!first.already_existed);
    env.advance(59);
    let again = q.enqueue(keyed("k").unique_for(window)).unwrap();
    assert_eq!(
        (again.job_id.clone(), again.already_existed),
        (first.job_id.clone(), true)
    );
    env.advance(1);
    let later = q.enqueue(keyed("k").unique_for(window)).unwrap();
    assert!(!later.already_existed, "the window has passed");
    assert_ne!(later.job_id, first.job_id);
    // The new job holds the key from now on: the old one gave it up.
    let repeat = q.enqueue(keyed("k")).unwrap();
    assert_eq!(
        (repeat.job_id, repeat.already_existed),
        (later.job_id.clone(), true)
    );
    assert_eq!(q.get(&first.job_id).unwrap().idempotency_key, None);
    assert_eq!(
        q.get(&later.job_id).unwrap().idempotency_key.as_deref(),
        Some("k")
    );
}

#[test]
fn a_key_held_while_active_makes_a_new_job_once_its_job_has_ended() {
    let env = Env::new();
    let q = &env.queue;
    let first = q.enqueue(keyed("k").unique_while_active()).unwrap();
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    let again = q.enqueue(keyed("k").unique_while_active()).unwrap();
    assert_eq!(
        (again.job_id.clone(), again.status, again.already_existed),
        (first.job_id.clone(), Status::Running, true)
    );
    q.complete(&lease, json!(null)).unwrap();
    let later = q.enqueue(keyed("k").unique_while_active()).unwrap();
    assert!(!later.already_existed);
    assert_ne!(later.job_id, first.job_id);
    assert_eq!(later.status, Status::Queued);
}

#[test]
fn without_a_window_the_key_holds_for_as_long_as_the_job_exists() {
    let env = Env::new();
    let q = &env.queue;
    let first = q.enqueue(keyed("k")).unwrap();
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    q.complete(&lease, json!(null)).unwrap();
    env.advance(86_400 * 365);
    let again = q
        .enqueue(keyed("k").unique_for(Duration::from_secs(1)))
        .unwrap();
    assert_eq!((again.job_id, again.already_existed), (first.job_id, true));
}

#[test]
fn windows_without_a_key_or_both_at_once_are_refused_and_change_nothing() {
    let env = Env::new();
    let q = &env.queue;
    let before = env.dump();
    for (job, field) in [
        (
            NewJob::new("a").unique_for(Duration::from_secs(5)),
            "idempotency_key",
        ),
        (NewJob::new("a").unique_while_active(), "idempotency_key"),
        (
            keyed("k")
                .unique_for(Duration::from_secs(5))
                .unique_while_active(),
            "unique_for",
        ),
        (keyed("k").unique_for(Duration::ZERO), "unique_for"),
    ] {
        let err = q.enqueue(job).unwrap_err();
        assert!(
            matches!(err, Error::InvalidInput { field: f, .. } if f == field),
            "{err}"
        );
    }
    assert_eq!(env.dump(), before);
}

#[test]
fn racing_enqueues_of_a_key_whose_window_passed_still_yield_one_new_job() {
    let db = Db::fresh();
    let q = Queue::open(db.path()).unwrap();
    let first = q.enqueue(keyed("k").unique_while_active()).unwrap();
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    q.complete(&lease, json!(null)).unwrap();
    for round in 0..5 {
        let path = db.path();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let q = Queue::open(&path).unwrap();
                    q.enqueue(keyed("k").unique_while_active()).unwrap()
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let new: Vec<_> = results.iter().filter(|e| !e.already_existed).collect();
        assert_eq!(new.len(), 1, "round {round}: {results:?}");
        assert!(results.iter().all(|e| e.job_id == new[0].job_id));
        assert_ne!(new[0].job_id, first.job_id);
        // End it, for the next round's race.
        let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
        q.complete(&lease, json!(null)).unwrap();
    }
    assert_eq!(q.stats(&Default::default()).unwrap().total, 6);
}

#[test]
fn a_key_held_while_active_holds_while_its_job_waits_to_run_again() {
    let env = Env::new();
    let q = &env.queue;
    let first = q
        .enqueue(keyed("k").unique_while_active().max_attempts(3))
        .unwrap();
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    q.fail(&lease, &jobq::JobError::retryable("flaky")).unwrap();
    assert_eq!(q.get(&first.job_id).unwrap().status, Status::Retry);
    let again = q.enqueue(keyed("k").unique_while_active()).unwrap();
    assert_eq!(
        (again.job_id.clone(), again.status, again.already_existed),
        (first.job_id.clone(), Status::Retry, true),
        "a job waiting in retry is still active"
    );
    // Snoozed and blocked are active too.
    let gate = q.enqueue(NewJob::new("gate")).unwrap().job_id;
    let waiting = q
        .enqueue(keyed("b").unique_while_active().after(&gate))
        .unwrap();
    let again = q.enqueue(keyed("b").unique_while_active()).unwrap();
    assert_eq!(
        (again.job_id, again.already_existed),
        (waiting.job_id, true)
    );
}

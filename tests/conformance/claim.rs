//! The claim: order, readiness, filters, what it records.

use std::time::Duration;

use jobq::{ClaimFilter, NewJob, Status, Timestamp};
use serde_json::json;

use crate::common::{Env, T0};

#[test]
fn claims_go_by_priority_then_run_after_then_age() {
    let env = Env::new();
    let q = &env.queue;
    // Enqueued in an order that differs from the claim order. The oldest job of priority 5
    // is scheduled 5 s ahead, so that a newer one of its priority becomes ready before it.
    let high_late = q
        .enqueue(
            NewJob::new("k")
                .priority(5)
                .run_after(Duration::from_secs(5)),
        )
        .unwrap()
        .job_id;
    env.advance(1);
    let low_old = q.enqueue(NewJob::new("k").priority(0)).unwrap().job_id;
    let high_early = q.enqueue(NewJob::new("k").priority(5)).unwrap().job_id;
    let low_new = q.enqueue(NewJob::new("k").priority(0)).unwrap().job_id;
    let negative = q.enqueue(NewJob::new("k").priority(-3)).unwrap().job_id;
    let high_late_twin = q
        .enqueue(
            NewJob::new("k")
                .priority(5)
                .run_at(Timestamp::from_millis(T0 + 5_000)),
        )
        .unwrap()
        .job_id;
    env.advance(4);

    let first = q.claim("w", 3, &ClaimFilter::default()).unwrap();
    let rest = q.claim("w", 10, &ClaimFilter::default()).unwrap();
    let order: Vec<_> = first.iter().chain(&rest).map(|j| j.id.clone()).collect();
    assert_eq!(
        order,
        vec![
            high_early,
            high_late,
            high_late_twin,
            low_old,
            low_new,
            negative
        ]
    );
}

#[test]
fn a_claim_records_the_worker_lock_heartbeat_attempt_and_stage() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("k").input(json!({"x": 1})))
        .unwrap()
        .job_id;
    env.advance(5);
    let claimed = env
        .queue
        .claim("host-1-abc", 10, &ClaimFilter::default())
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(
        (c.id.clone(), c.attempt, c.worker.as_str()),
        (id.clone(), 1, "host-1-abc")
    );
    assert_eq!(c.input::<serde_json::Value>().unwrap(), json!({"x": 1}));
    assert_eq!(c.input_json(), r#"{"x":1}"#);

    let job = env.queue.get(&id).unwrap();
    let now = Timestamp::from_millis(T0 + 5_000);
    assert_eq!(job.status, Status::Running);
    assert_eq!(job.locked_by.as_deref(), Some("host-1-abc"));
    assert_eq!(
        (job.locked_at, job.heartbeat_at, job.started_at),
        (Some(now), Some(now), Some(now))
    );
    assert_eq!(job.attempts, 1);
    assert_eq!(job.stage.as_deref(), Some("claimed"));
    // A claimed job is not claimed again.
    assert!(
        env.queue
            .claim("other", 10, &ClaimFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_claim_takes_at_most_its_limit() {
    let env = Env::new();
    env.queue
        .enqueue_many((0..10).map(|_| NewJob::new("k")))
        .unwrap();
    assert_eq!(
        env.queue
            .claim("w", 4, &ClaimFilter::default())
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        env.queue
            .claim("w", 0, &ClaimFilter::default())
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        env.queue
            .claim("w", 100, &ClaimFilter::default())
            .unwrap()
            .len(),
        6
    );
}

#[test]
fn a_claim_takes_only_its_queues_and_kinds() {
    let env = Env::new();
    let mail = env
        .queue
        .enqueue(NewJob::new("send").queue("mail"))
        .unwrap()
        .job_id;
    let video = env
        .queue
        .enqueue(NewJob::new("render").queue("video"))
        .unwrap()
        .job_id;
    let mail_other_kind = env
        .queue
        .enqueue(NewJob::new("bounce").queue("mail"))
        .unwrap()
        .job_id;
    let default = env.queue.enqueue(NewJob::new("send")).unwrap().job_id;

    let got = env
        .queue
        .claim("w", 10, &ClaimFilter::queues(["mail"]).kinds(["send"]))
        .unwrap();
    assert_eq!(got.iter().map(|j| &j.id).collect::<Vec<_>>(), vec![&mail]);
    let got = env
        .queue
        .claim("w", 10, &ClaimFilter::queues(["mail", "video"]))
        .unwrap();
    let mut ids: Vec<_> = got.iter().map(|j| j.id.clone()).collect();
    ids.sort();
    let mut want = vec![video, mail_other_kind];
    want.sort();
    assert_eq!(ids, want);
    let got = env.queue.claim("w", 10, &ClaimFilter::default()).unwrap();
    assert_eq!(
        got.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&default]
    );
}

#[test]
fn a_claim_over_several_queues_keeps_the_global_order() {
    let env = Env::new();
    let a_low = env
        .queue
        .enqueue(NewJob::new("k").queue("a").priority(1))
        .unwrap()
        .job_id;
    let b_high = env
        .queue
        .enqueue(NewJob::new("k").queue("b").priority(9))
        .unwrap()
        .job_id;
    let a_high = env
        .queue
        .enqueue(NewJob::new("k").queue("a").priority(9))
        .unwrap()
        .job_id;
    let b_low = env
        .queue
        .enqueue(NewJob::new("k").queue("b").priority(1))
        .unwrap()
        .job_id;
    let got = env
        .queue
        .claim("w", 3, &ClaimFilter::queues(["a", "b"]))
        .unwrap();
    assert_eq!(
        got.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![b_high, a_high, a_low]
    );
    let got = env
        .queue
        .claim("w", 3, &ClaimFilter::queues(["b", "a"]))
        .unwrap();
    assert_eq!(
        got.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![b_low]
    );
}

#[test]
fn a_retry_is_claimed_once_its_backoff_passes() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    env.queue
        .fail(&lease, &jobq::JobError::retryable("flaky"))
        .unwrap();
    assert!(
        env.queue
            .claim("w", 1, &ClaimFilter::default())
            .unwrap()
            .is_empty()
    );
    env.clock.advance(Duration::from_secs(10));
    let again = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap();
    assert_eq!((again[0].id.clone(), again[0].attempt), (id, 2));
}

#[test]
fn a_scoped_handle_claims_only_its_owners_jobs() {
    let env = Env::new();
    env.queue.scoped("bob").enqueue(NewJob::new("k")).unwrap();
    let mine = env
        .queue
        .scoped("alice")
        .enqueue(NewJob::new("k"))
        .unwrap()
        .job_id;
    let got = env
        .queue
        .scoped("alice")
        .claim("w", 10, &ClaimFilter::default())
        .unwrap();
    assert_eq!(
        got.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![mine]
    );
}

#[test]
fn an_empty_worker_id_is_refused() {
    let env = Env::new();
    env.queue.enqueue(NewJob::new("k")).unwrap();
    let before = env.dump();
    let err = env
        .queue
        .claim(" ", 1, &ClaimFilter::default())
        .unwrap_err();
    assert!(
        matches!(
            err,
            jobq::Error::InvalidInput {
                field: "worker",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(env.dump(), before);
}

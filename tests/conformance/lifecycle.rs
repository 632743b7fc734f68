//! The state machine end to end: complete, cancel, retry, delete, transition, lost locks.

use jobq::{
    ClaimFilter, Error, JobError, JobFilter, Lease, NewJob, Queue, StaleTimeouts, Status, Timestamp,
};
use serde_json::json;

use crate::common::{Env, T0};

fn claim_one(env: &Env) -> Lease {
    env.queue.claim("w1", 1, &ClaimFilter::default()).unwrap()[0].lease()
}

#[test]
fn a_completed_job_keeps_its_output_cost_and_times() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("k").cost_cents(100))
        .unwrap()
        .job_id;
    let lease = claim_one(&env);
    env.advance(3);
    env.queue
        .set_progress(&lease, 0.5, Some("rendering"))
        .unwrap();
    env.queue.add_cost(&lease, 20).unwrap();
    let mid = env.queue.get(&id).unwrap();
    assert_eq!(
        (mid.progress, mid.stage.as_deref(), mid.cost_cents),
        (0.5, Some("rendering"), 120)
    );
    assert_eq!(
        mid.heartbeat_at,
        Some(Timestamp::from_millis(T0 + 3_000)),
        "progress counts as a heartbeat"
    );
    env.advance(4);
    env.queue
        .complete_with_cost(&lease, json!({"url": "s3://out.mp4"}), 30)
        .unwrap();
    let job = env.queue.get(&id).unwrap();
    assert_eq!(job.status, Status::Succeeded);
    assert_eq!(job.output, Some(json!({"url": "s3://out.mp4"})));
    assert_eq!(job.cost_cents, 150);
    assert_eq!(
        (job.progress, job.stage.as_deref()),
        (1.0, Some("succeeded"))
    );
    assert_eq!(job.started_at, Some(Timestamp::from_millis(T0)));
    assert_eq!(job.completed_at, Some(Timestamp::from_millis(T0 + 7_000)));
    assert_eq!(
        job.locked_by.as_deref(),
        Some("w1"),
        "the last worker stays on record"
    );
}

#[test]
fn terminal_states_refuse_every_transition_but_the_manual_retry() {
    let env = Env::new();
    // One job in each terminal status.
    let succeeded = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    env.queue.complete(&claim_one(&env), json!(1)).unwrap();
    let failed = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    env.queue
        .fail(&claim_one(&env), &JobError::permanent("no"))
        .unwrap();
    let cancelled = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    env.queue.cancel(&cancelled).unwrap();

    for (id, status) in [
        (&succeeded, Status::Succeeded),
        (&failed, Status::Failed),
        (&cancelled, Status::Cancelled),
    ] {
        let before = env.dump();
        let err = env.queue.cancel(id).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidTransition { from, .. } if *from == status),
            "{err}"
        );
        assert!(
            err.to_string().contains(id.as_str()) && err.to_string().contains("cancel"),
            "{err}"
        );
        for to in [
            Status::Running,
            Status::Retry,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
        ] {
            if to == status {
                continue;
            }
            let err = env.queue.transition(id, to, None).unwrap_err();
            assert!(
                matches!(err, Error::InvalidTransition { .. }),
                "{status} -> {to}: {err}"
            );
        }
        assert_eq!(
            env.dump(),
            before,
            "refusals on a {status} job changed nothing"
        );
        assert!(
            env.queue
                .claim("w", 10, &ClaimFilter::default())
                .unwrap()
                .is_empty()
        );
    }
    // Succeeded is final; failed and cancelled come back by the manual retry.
    assert!(matches!(
        env.queue.retry(&succeeded).unwrap_err(),
        Error::InvalidTransition { .. }
    ));
    assert_eq!(env.queue.retry(&failed).unwrap(), Status::Failed);
    assert_eq!(env.queue.retry(&cancelled).unwrap(), Status::Cancelled);
    let again = env.queue.get(&failed).unwrap();
    assert_eq!(
        (again.status, again.attempts, again.completed_at),
        (Status::Queued, 0, None)
    );
    assert_eq!(again.errors.len(), 1, "the history is kept");
    assert_eq!(
        env.queue
            .claim("w", 10, &ClaimFilter::default())
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn a_retry_only_applies_to_failed_or_cancelled_jobs() {
    let env = Env::new();
    let queued = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let err = env.queue.retry(&queued).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: Status::Queued,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_report_from_a_worker_that_lost_its_lock_is_refused_and_changes_nothing() {
    let env = Env::new();
    // Released as stale.
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let stale = claim_one(&env);
    env.advance(120);
    assert_eq!(
        env.queue.release_stale(&StaleTimeouts::default()).unwrap(),
        1
    );
    let before = env.dump();
    for result in [
        env.queue.complete(&stale, json!("late")),
        env.queue.heartbeat(&stale),
        env.queue.set_progress(&stale, 0.9, None),
        env.queue
            .fail(&stale, &JobError::retryable("late"))
            .map(|_| ()),
        env.queue.release(&stale),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::LockLost { job, status: Status::Retry, .. } if *job == id),
            "{err}"
        );
    }
    assert!(
        env.queue
            .heartbeat_many("w1", std::slice::from_ref(&stale))
            .unwrap()
            .is_empty()
    );
    assert_eq!(env.dump(), before);

    // Re-claimed by the same worker: the old attempt's lease is still refused.
    let fresh = claim_one(&env);
    assert_eq!(fresh.attempt, 2);
    assert!(
        env.queue
            .complete(&stale, json!("late"))
            .unwrap_err()
            .is_lock_lost()
    );
    env.queue.complete(&fresh, json!("fresh")).unwrap();
    assert_eq!(env.queue.get(&id).unwrap().output, Some(json!("fresh")));

    // Cancelled while running.
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = claim_one(&env);
    assert_eq!(env.queue.cancel(&id).unwrap(), Status::Running);
    let before = env.dump();
    let err = env.queue.heartbeat(&lease).unwrap_err();
    assert!(
        matches!(
            err,
            Error::LockLost {
                status: Status::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    assert!(
        env.queue
            .complete(&lease, json!(1))
            .unwrap_err()
            .is_lock_lost()
    );
    assert_eq!(env.dump(), before);

    // Another worker's name.
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let mut forged = claim_one(&env);
    forged.worker = "impostor".into();
    assert!(
        env.queue
            .complete(&forged, json!(1))
            .unwrap_err()
            .is_lock_lost()
    );
    assert_eq!(env.queue.get(&id).unwrap().status, Status::Running);
}

#[test]
fn heartbeat_many_refreshes_every_held_job_in_one_call() {
    let env = Env::new();
    env.queue
        .enqueue_many((0..3).map(|_| NewJob::new("k")))
        .unwrap();
    let leases: Vec<_> = env
        .queue
        .claim("w1", 3, &ClaimFilter::default())
        .unwrap()
        .iter()
        .map(|j| j.lease())
        .collect();
    let held: Vec<_> = leases.iter().map(|l| l.job_id.clone()).collect();
    env.queue.cancel(&held[1]).unwrap();
    env.advance(30);
    let still = env.queue.heartbeat_many("w1", &leases).unwrap();
    let mut still_sorted: Vec<_> = still.iter().map(|l| l.job_id.clone()).collect();
    still_sorted.sort();
    assert_eq!(still_sorted, vec![held[0].clone(), held[2].clone()]);
    assert!(still.iter().all(|l| leases.contains(l)));
    assert_eq!(
        env.queue.get(&held[0]).unwrap().heartbeat_at,
        Some(Timestamp::from_millis(T0 + 30_000))
    );
    assert!(
        env.queue
            .heartbeat_many("someone-else", &leases)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_released_job_goes_back_to_queued_without_spending_an_attempt() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("k").max_attempts(1))
        .unwrap()
        .job_id;
    let lease = claim_one(&env);
    env.queue.release(&lease).unwrap();
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.attempts, job.stage),
        (Status::Queued, 0, None)
    );
    assert_eq!(claim_one(&env).attempt, 1);
}

#[test]
fn cancel_works_on_queued_retry_and_running_jobs() {
    let env = Env::new();
    let queued = env
        .queue
        .enqueue(NewJob::new("k").priority(-1))
        .unwrap()
        .job_id;
    let retrying = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    env.queue
        .fail(&claim_one(&env), &JobError::retryable("x"))
        .unwrap();
    assert_eq!(env.queue.cancel(&queued).unwrap(), Status::Queued);
    assert_eq!(env.queue.cancel(&retrying).unwrap(), Status::Retry);
    for id in [&queued, &retrying] {
        let job = env.queue.get(id).unwrap();
        assert_eq!(job.status, Status::Cancelled);
        assert_eq!(job.completed_at, Some(Timestamp::from_millis(T0)));
    }
    env.advance(60);
    assert!(
        env.queue
            .claim("w", 10, &ClaimFilter::default())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn delete_refuses_running_jobs_and_removes_the_others() {
    let env = Env::new();
    let running = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    claim_one(&env);
    let queued = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let before = env.dump();
    let err = env.queue.delete(&running).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidTransition {
                from: Status::Running,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(env.dump(), before);
    assert_eq!(env.queue.delete(&queued).unwrap(), Status::Queued);
    assert!(env.queue.get(&queued).unwrap_err().is_not_found());
    assert!(env.queue.delete(&queued).unwrap_err().is_not_found());
}

#[test]
fn transition_enforces_the_state_machine_like_transition_job_status() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let before = env.dump();
    for to in [Status::Succeeded, Status::Failed, Status::Retry] {
        let err = env.queue.transition(&id, to, None).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidTransition { from: Status::Queued, action, .. } if action.contains(to.as_str())),
            "{err}"
        );
    }
    assert_eq!(env.dump(), before);
    assert_eq!(
        env.queue.transition(&id, Status::Running, None).unwrap(),
        Status::Queued
    );
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.attempts, job.locked_by.as_deref()),
        (Status::Running, 1, Some("manual"))
    );
    assert_eq!(
        env.queue
            .transition(&id, Status::Failed, Some("API timeout"))
            .unwrap(),
        Status::Running
    );
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.last_error.as_deref()),
        (Status::Failed, Some("API timeout"))
    );
    assert_eq!(job.errors[0].message, "API timeout");
    assert_eq!(
        env.queue.transition(&id, Status::Queued, None).unwrap(),
        Status::Failed
    );
    assert_eq!(
        env.queue.transition(&id, Status::Running, None).unwrap(),
        Status::Queued
    );
    assert_eq!(
        env.queue.transition(&id, Status::Succeeded, None).unwrap(),
        Status::Running
    );
    assert_eq!(env.queue.get(&id).unwrap().status, Status::Succeeded);
}

#[test]
fn a_job_survives_closing_and_reopening_the_file() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("durable").input(json!({"keep": "me"})))
        .unwrap()
        .job_id;
    let path = env.path();
    drop(env.queue);
    let reopened = Queue::open(&path).unwrap();
    let job = reopened.get(&id).unwrap();
    assert_eq!(
        (job.kind.as_str(), job.input.clone()),
        ("durable", json!({"keep": "me"}))
    );
    assert_eq!(reopened.list(&JobFilter::new()).unwrap().jobs.len(), 1);
}

#[test]
fn listing_is_newest_first_filtered_and_paged_by_cursor() {
    let env = Env::new();
    let mut ids = Vec::new();
    for i in 0..25 {
        let kind = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(
            env.queue
                .enqueue(NewJob::new(kind).queue(if i < 5 { "a" } else { "b" }))
                .unwrap()
                .job_id,
        );
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let mut filter = JobFilter::new().limit(10);
        if let Some(c) = cursor.take() {
            filter = filter.after(c);
        }
        let page = env.queue.list(&filter).unwrap();
        seen.extend(page.jobs.iter().map(|j| j.id.clone()));
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let odd_b = env
        .queue
        .list(&JobFilter::new().kind("odd").queue("b").limit(100))
        .unwrap();
    assert_eq!(odd_b.jobs.len(), 10);
    assert!(odd_b.jobs.iter().all(|j| j.kind == "odd" && j.queue == "b"));
    let claimed = claim_n(&env, 3);
    let running = env
        .queue
        .list(&JobFilter::new().status(Status::Running))
        .unwrap();
    let mut got: Vec<_> = running.jobs.iter().map(|j| j.id.clone()).collect();
    got.sort();
    assert_eq!(got, claimed);
}

fn claim_n(env: &Env, n: usize) -> Vec<jobq::JobId> {
    let mut ids: Vec<_> = env
        .queue
        .claim("w", n, &ClaimFilter::queues(["a", "b"]))
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_lease_from_before_a_manual_retry_never_matches_a_later_claim() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let old = claim_one(&env);
    env.queue.cancel(&id).unwrap();
    env.queue.retry(&id).unwrap();
    // The same worker claims it again: attempt 1 again, but a new claim.
    let new = claim_one(&env);
    assert_eq!((old.attempt, new.attempt), (1, 1));
    assert_ne!(old.claim, new.claim);
    let before = env.dump();
    let err = env
        .queue
        .complete(&old, json!("the old run's late result"))
        .unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
    assert_eq!(env.dump(), before);
    env.queue.complete(&new, json!("fresh")).unwrap();
    assert_eq!(env.queue.get(&id).unwrap().output, Some(json!("fresh")));
}

#[test]
fn a_failed_attempt_shows_where_it_failed_not_claimed() {
    let env = Env::new();
    let q = &env.queue;
    let quiet = q.enqueue(NewJob::new("k").max_attempts(2)).unwrap().job_id;
    let lease = claim_one(&env);
    q.fail(&lease, &JobError::retryable("boom")).unwrap();
    assert_eq!(q.get(&quiet).unwrap().stage.as_deref(), Some("retry"));
    env.advance(60);
    let lease = claim_one(&env);
    q.fail(&lease, &JobError::retryable("boom")).unwrap();
    assert_eq!(q.get(&quiet).unwrap().stage.as_deref(), Some("failed"));
    // A stage the handler named stays: it tells where the job failed.
    let named = q.enqueue(NewJob::new("k").max_attempts(1)).unwrap().job_id;
    let lease = claim_one(&env);
    q.set_stage(&lease, "uploading").unwrap();
    q.fail(&lease, &JobError::retryable("boom")).unwrap();
    assert_eq!(q.get(&named).unwrap().stage.as_deref(), Some("uploading"));
}

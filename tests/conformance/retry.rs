//! Failures: backoff, the dead letter after max attempts, permanent errors, policies.

use std::time::Duration;

use jobq::{ClaimFilter, JobError, ManualClock, NewJob, Queue, RetryPolicy, Status, Timestamp};

use crate::common::{Db, Env, T0};

#[test]
fn failures_retry_with_backoff_until_max_attempts_then_dead_letter() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("flaky").max_attempts(3))
        .unwrap()
        .job_id;
    for attempt in 1..=3u32 {
        let claimed = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap();
        assert_eq!(claimed.len(), 1, "attempt {attempt} is claimable");
        assert_eq!(claimed[0].attempt, attempt);
        let status = env
            .queue
            .fail(
                &claimed[0].lease(),
                &JobError::retryable(format!("boom {attempt}")).code("UPSTREAM"),
            )
            .unwrap();
        let job = env.queue.get(&id).unwrap();
        if attempt < 3 {
            assert_eq!(status, Status::Retry);
            assert_eq!(job.status, Status::Retry);
            // The fixed 10 s policy of the test queue.
            let now = env.queue.now().as_millis();
            assert_eq!(job.run_after, Timestamp::from_millis(now + 10_000));
            assert!(
                env.queue
                    .claim("w", 1, &ClaimFilter::default())
                    .unwrap()
                    .is_empty(),
                "not before its backoff"
            );
            env.advance(10);
        } else {
            assert_eq!(status, Status::Failed);
            assert_eq!(job.status, Status::Failed);
            assert!(job.completed_at.is_some());
        }
        assert_eq!(
            job.last_error.as_deref(),
            Some(format!("boom {attempt}").as_str())
        );
        assert_eq!(job.error_code.as_deref(), Some("UPSTREAM"));
        assert_eq!(
            job.errors.len(),
            attempt as usize,
            "one history entry per failed attempt"
        );
        assert_eq!(job.errors.last().unwrap().attempt, attempt);
    }
    env.advance(3600);
    assert!(
        env.queue
            .claim("w", 1, &ClaimFilter::default())
            .unwrap()
            .is_empty(),
        "dead letter stays dead"
    );
}

#[test]
fn a_permanent_error_fails_at_once() {
    let env = Env::new();
    let id = env
        .queue
        .enqueue(NewJob::new("k").max_attempts(5))
        .unwrap()
        .job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    let status = env
        .queue
        .fail(
            &lease,
            &JobError::permanent("corrupt file").code("BAD_INPUT"),
        )
        .unwrap();
    assert_eq!(status, Status::Failed);
    let job = env.queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.attempts, job.error_code.as_deref()),
        (Status::Failed, 1, Some("BAD_INPUT"))
    );
}

#[test]
fn a_requested_delay_wins_over_the_policy() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    env.queue
        .fail(
            &lease,
            &JobError::retryable("rate limited").retry_after(Duration::from_secs(90)),
        )
        .unwrap();
    assert_eq!(
        env.queue.get(&id).unwrap().run_after,
        Timestamp::from_millis(T0 + 90_000)
    );
}

#[test]
fn backoff_is_exponential_with_full_jitter_and_configurable_per_queue() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = Queue::builder(db.path())
        .clock(clock.clone())
        .retry_policy(RetryPolicy::exponential(
            Duration::from_secs(1),
            Duration::from_secs(8),
        ))
        .queue_retry_policy("slow", RetryPolicy::fixed(Duration::from_secs(300)))
        .kind_retry_policy("special", RetryPolicy::fixed(Duration::from_secs(7)))
        .open()
        .unwrap();
    let mut delays_by_attempt: Vec<Vec<i64>> = vec![Vec::new(); 6];
    for _ in 0..40 {
        let id = queue
            .enqueue(NewJob::new("k").max_attempts(7))
            .unwrap()
            .job_id;
        for attempt in 1..=5u32 {
            let claimed = queue.claim("w", 1, &ClaimFilter::default()).unwrap();
            assert_eq!(claimed[0].id, id);
            queue
                .fail(&claimed[0].lease(), &JobError::retryable("x"))
                .unwrap();
            let delay = queue.get(&id).unwrap().run_after.as_millis() - clock.now_ms();
            delays_by_attempt[attempt as usize].push(delay);
            clock.advance(Duration::from_secs(10));
        }
        queue.cancel(&id).unwrap();
    }
    for (attempt, delays) in delays_by_attempt.iter().enumerate().skip(1) {
        let ceiling = (1000i64 << (attempt - 1)).min(8000);
        assert!(
            delays.iter().all(|d| (0..=ceiling).contains(d)),
            "attempt {attempt}: {delays:?} within 0..={ceiling}"
        );
        // Jitter: not all the same.
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "attempt {attempt}: no jitter in {delays:?}"
        );
    }
    use jobq::Clock;
    let slow = queue
        .enqueue(NewJob::new("k").queue("slow"))
        .unwrap()
        .job_id;
    let lease = queue.claim("w", 1, &ClaimFilter::queues(["slow"])).unwrap()[0].lease();
    queue.fail(&lease, &JobError::retryable("x")).unwrap();
    assert_eq!(
        queue.get(&slow).unwrap().run_after.as_millis(),
        clock.now_ms() + 300_000
    );
    let special = queue
        .enqueue(NewJob::new("special").queue("slow"))
        .unwrap()
        .job_id;
    let lease = queue.claim("w", 1, &ClaimFilter::queues(["slow"])).unwrap()[0].lease();
    queue.fail(&lease, &JobError::retryable("x")).unwrap();
    assert_eq!(
        queue.get(&special).unwrap().run_after.as_millis(),
        clock.now_ms() + 7_000
    );
}

#[test]
fn a_long_error_message_is_cut() {
    let env = Env::new();
    let id = env.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let lease = env.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    env.queue
        .fail(&lease, &JobError::retryable("x".repeat(100_000)))
        .unwrap();
    let job = env.queue.get(&id).unwrap();
    let kept = job.last_error.unwrap();
    assert!(
        kept.len() < 9_000 && kept.ends_with("(cut)"),
        "{}",
        kept.len()
    );
}

//! Flow control on the claim path: pause and resume, a queue's running limit, a running
//! limit per concurrency key, a claim rate, and no key starving another — read by the claim
//! itself, so exact across processes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jobq::{
    ClaimFilter, JobContext, JobError, JobFilter, NewJob, Queue, QueueLimits, Rate, StaleTimeouts,
    Status, WorkerPool,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{Db, Env, child_env, is_child, spawn_child};

fn gpu() -> ClaimFilter {
    ClaimFilter::queues(["gpu"])
}

fn job(key: Option<&str>) -> NewJob {
    let job = NewJob::new("render").queue("gpu");
    match key {
        Some(k) => job.concurrency_key(k),
        None => job,
    }
}

fn running(q: &Queue) -> i64 {
    q.queue_info("gpu").unwrap().running
}

#[test]
fn a_paused_queue_is_claimed_by_no_one_until_resumed_and_the_pause_is_stored() {
    let env = Env::new();
    let q = &env.queue;
    q.enqueue_many((0..3).map(|_| job(None))).unwrap();
    let info = q.pause_queue("gpu").unwrap();
    assert!(info.paused);
    assert_eq!(info.ready, 3);
    assert!(q.claim("w", 10, &gpu()).unwrap().is_empty());
    // Other queues are claimed as before.
    q.enqueue(NewJob::new("x")).unwrap();
    assert_eq!(
        q.claim("w", 10, &ClaimFilter::queues(["default", "gpu"]))
            .unwrap()
            .len(),
        1
    );
    // Stored: another handle on the same database sees it paused.
    let other = Queue::builder(env.path())
        .clock(env.clock.clone())
        .open()
        .unwrap();
    assert!(other.claim("w", 10, &gpu()).unwrap().is_empty());
    assert!(other.queue_info("gpu").unwrap().paused);
    q.resume_queue("gpu").unwrap();
    assert_eq!(other.claim("w", 10, &gpu()).unwrap().len(), 3);
}

#[test]
fn a_running_limit_holds_and_frees_as_jobs_finish_fail_or_go_stale() {
    let env = Env::new();
    let q = &env.queue;
    q.enqueue_many((0..10).map(|_| job(None).max_attempts(5)))
        .unwrap();
    q.set_queue_limits("gpu", QueueLimits::new().max_running(Some(3)))
        .unwrap();
    let first = q.claim("w", 10, &gpu()).unwrap();
    assert_eq!(first.len(), 3);
    assert!(q.claim("w2", 10, &gpu()).unwrap().is_empty(), "no room");
    q.complete(&first[0].lease(), json!(null)).unwrap();
    q.fail(&first[1].lease(), &JobError::retryable("again"))
        .unwrap();
    let more = q.claim("w2", 10, &gpu()).unwrap();
    assert_eq!(more.len(), 2, "two slots freed");
    assert_eq!(running(q), 3);
    // A worker that died: its jobs go stale, and their slots free with the release.
    env.advance(3600);
    assert_eq!(q.release_stale(&StaleTimeouts::default()).unwrap(), 3);
    assert_eq!(q.claim("w3", 10, &gpu()).unwrap().len(), 3);
    // Cancelling a running job frees its slot too.
    let held: Vec<_> = q
        .list(&JobFilter::new().status(Status::Running))
        .unwrap()
        .jobs;
    q.cancel(&held[0].id).unwrap();
    assert_eq!(q.claim("w3", 10, &gpu()).unwrap().len(), 1);
    // Clearing the limit lets everything ready go.
    q.set_queue_limits("gpu", QueueLimits::new().max_running(None))
        .unwrap();
    assert!(!q.claim("w4", 10, &gpu()).unwrap().is_empty());
    let info = q.queue_info("gpu").unwrap();
    assert_eq!((info.max_running, info.paused), (None, false));
}

#[test]
fn a_per_key_limit_holds_and_a_backlog_under_one_key_starves_no_other() {
    let env = Env::new();
    let q = &env.queue;
    q.set_queue_limits("gpu", QueueLimits::new().max_running_per_key(Some(1)))
        .unwrap();
    q.enqueue_many((0..5).map(|_| job(Some("a")))).unwrap();
    q.enqueue_many((0..2).map(|_| job(Some("b")))).unwrap();
    q.enqueue(job(None)).unwrap();
    let claimed = q.claim("w", 10, &gpu()).unwrap();
    assert_eq!(
        claimed.len(),
        3,
        "one of a, one of b, and the one without a key"
    );
    assert!(q.claim("w", 10, &gpu()).unwrap().is_empty());
    // Fairness: ten thousand ready jobs under `a` (one of them running), then one under `c`.
    q.enqueue_many((0..10_000).map(|_| job(Some("a")))).unwrap();
    let c = q.enqueue(job(Some("c"))).unwrap().job_id;
    let next = q.claim("w", 1, &gpu()).unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, c, "the next claim takes c's job");
}

#[test]
fn a_rate_limits_claims_per_sliding_window() {
    let env = Env::new();
    let q = &env.queue;
    q.enqueue_many((0..20).map(|_| job(None))).unwrap();
    q.set_queue_limits(
        "gpu",
        QueueLimits::new().rate(Some("5/1m".parse().unwrap())),
    )
    .unwrap();
    let claimed = q.claim("w", 10, &gpu()).unwrap();
    assert_eq!(claimed.len(), 5);
    for j in &claimed {
        q.complete(&j.lease(), json!(null)).unwrap();
    }
    env.advance(30);
    assert!(
        q.claim("w", 10, &gpu()).unwrap().is_empty(),
        "within the window"
    );
    env.advance(31);
    assert_eq!(q.claim("w", 10, &gpu()).unwrap().len(), 5);
    let info = q.queue_info("gpu").unwrap();
    assert_eq!(
        info.rate,
        Some(Rate::new(5, Duration::from_secs(60)).unwrap())
    );
}

#[test]
fn queue_settings_are_for_admin_handles_and_bad_ones_change_nothing() {
    let env = Env::new();
    let before = env.dump();
    assert!(env.queue.scoped("acme").pause_queue("gpu").is_err());
    assert!(env.queue.pause_queue("").is_err());
    assert!("0/1m".parse::<Rate>().is_err());
    assert_eq!(env.dump(), before);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Step {
    Enqueue(u8, Option<u8>),
    Claim(u8),
    Complete(u8),
    Fail(u8),
    Cancel(u8),
    /// The worker holding these jobs died: time passes and the stale release frees them.
    Crash,
    Limit(Option<u8>, Option<u8>),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u8..6, prop::option::of(0u8..4)).prop_map(|(n, k)| Step::Enqueue(n, k)),
        (1u8..8).prop_map(Step::Claim),
        any::<u8>().prop_map(Step::Complete),
        any::<u8>().prop_map(Step::Fail),
        any::<u8>().prop_map(Step::Cancel),
        Just(Step::Crash),
        (prop::option::of(0u8..5), prop::option::of(1u8..3)).prop_map(|(m, k)| Step::Limit(m, k)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// After every step: running ≤ the queue's limit and, per key, ≤ the per-key limit; and
    /// no slot stays held: when there is room and a job that may run, a claim takes one.
    #[test]
    fn limits_hold_and_no_slot_leaks(steps in prop::collection::vec(step(), 1..40)) {
        let env = Env::new();
        let q = &env.queue;
        let (mut max, mut per_key) = (Some(2u32), Some(1u32));
        q.set_queue_limits("gpu", QueueLimits::new().max_running(max).max_running_per_key(per_key)).unwrap();
        let mut held: Vec<jobq::Lease> = Vec::new();
        let mut prev_running = 0usize;
        let mut prev_by_key: HashMap<String, u32> = HashMap::new();
        for s in steps {
            match s {
                Step::Enqueue(n, key) => {
                    let key = key.map(|k| format!("k{k}"));
                    q.enqueue_many((0..n).map(|_| job(key.as_deref()).max_attempts(3))).unwrap();
                }
                Step::Claim(n) => held.extend(q.claim("w", n as usize, &gpu()).unwrap().iter().map(|j| j.lease())),
                Step::Complete(i) | Step::Fail(i) | Step::Cancel(i) if !held.is_empty() => {
                    let lease = held.remove(i as usize % held.len());
                    let _ = match s {
                        Step::Complete(_) => q.complete(&lease, json!(null)).map(|_| ()),
                        Step::Fail(_) => q.fail(&lease, &JobError::retryable("x")).map(|_| ()),
                        _ => q.cancel(&lease.job_id).map(|_| ()),
                    };
                }
                Step::Crash => {
                    env.advance(3600);
                    q.release_stale(&StaleTimeouts::default()).unwrap();
                    held.clear();
                }
                Step::Limit(m, k) => {
                    max = m.map(u32::from);
                    per_key = k.map(u32::from);
                    q.set_queue_limits("gpu", QueueLimits::new().max_running(max).max_running_per_key(per_key)).unwrap();
                }
                _ => {}
            }
            let jobs = q.list(&JobFilter::new().status(Status::Running).limit(1000)).unwrap().jobs;
            // A limit lowered below what runs is not broken by the jobs already running,
            // only by a claim: past the limit, nothing more may start.
            if let Some(max) = max {
                prop_assert!(
                    jobs.len() as u32 <= max || jobs.len() <= prev_running,
                    "{} running (before: {prev_running}), limit {max}", jobs.len()
                );
            }
            // Keys of running jobs (from the input of enqueue: read back by id).
            let mut by_key: HashMap<String, u32> = HashMap::new();
            for j in &jobs {
                if let Some(k) = q.get(&j.id).unwrap().concurrency_key {
                    *by_key.entry(k).or_default() += 1;
                }
            }
            if let Some(limit) = per_key {
                prop_assert!(
                    by_key.iter().all(|(k, n)| *n <= limit || *n <= prev_by_key.get(k).copied().unwrap_or(0)),
                    "{by_key:?} over {limit} (before: {prev_by_key:?})"
                );
            }
            // Liveness: room, and a ready job whose key has room: a claim takes one.
            let room = max.is_none_or(|m| (jobs.len() as u32) < m);
            let ready = q.list(&JobFilter::new().status(Status::Queued).queue("gpu").limit(1000)).unwrap().jobs;
            let runnable = ready.iter().any(|j| {
                let key = q.get(&j.id).unwrap().concurrency_key;
                match (key, per_key) {
                    (Some(k), Some(limit)) => by_key.get(&k).copied().unwrap_or(0) < limit,
                    _ => true,
                }
            });
            prev_running = jobs.len();
            prev_by_key = by_key.clone();
            if room && runnable {
                let got = q.claim("probe", 1, &gpu()).unwrap();
                prop_assert_eq!(got.len(), 1, "room and a runnable job, but nothing claimed");
                held.push(got[0].lease());
                prev_running += 1;
                if let Some(k) = q.get(&got[0].id).unwrap().concurrency_key {
                    *prev_by_key.entry(k).or_default() += 1;
                }
            }
        }
    }
}

/// A worker process of the multi-process test: four handlers on `gpu`, each job a few
/// milliseconds, until killed.
#[test]
fn child_limited_worker() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let _pool = WorkerPool::builder(&queue)
        .queues(["gpu"])
        .concurrency(4)
        .poll_interval(Duration::from_millis(20))
        .handler("render", |_: &JobContext| {
            std::thread::sleep(Duration::from_millis(5));
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

fn drain_with_five_processes(
    limits: QueueLimits,
    keys: Option<usize>,
    check: impl Fn(&Queue) -> (i64, i64),
) {
    let fresh = Db::fresh();
    let db = fresh.path();
    let queue = Queue::open(&db).unwrap();
    queue.set_queue_limits("gpu", limits).unwrap();
    let total = 1200;
    queue
        .enqueue_many((0..total).map(|i| match keys {
            Some(k) => job(Some(&format!("customer-{}", i % k))),
            None => job(None),
        }))
        .unwrap();
    let mut children: Vec<_> = (0..5)
        .map(|_| {
            spawn_child(
                "conformance::flow_control::child_limited_worker",
                &[("JOBQ_TEST_DB", db.display().to_string())],
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut samples, mut peak) = (0, (0, 0));
    loop {
        let (running, per_key) = check(&queue);
        peak = (peak.0.max(running), peak.1.max(per_key));
        samples += 1;
        let done = queue
            .stats(&jobq::StatsFilter::new())
            .unwrap()
            .count(Status::Succeeded);
        if done == total as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the queue did not drain: {done} of {total}"
        );
        std::thread::sleep(Duration::from_millis(3));
    }
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    eprintln!(
        "flow control: {samples} samples, peak running {}, peak per key {}",
        peak.0, peak.1
    );
    assert!(samples > 10, "the drain was sampled ({samples} samples)");
}

#[test]
fn five_processes_never_run_more_than_the_queue_limit() {
    drain_with_five_processes(QueueLimits::new().max_running(Some(3)), None, |q| {
        let running = q.queue_info("gpu").unwrap().running;
        assert!(running <= 3, "{running} running, limit 3");
        (running, 0)
    });
}

#[test]
fn five_processes_never_run_more_than_the_per_key_limit() {
    drain_with_five_processes(
        QueueLimits::new().max_running_per_key(Some(1)),
        Some(50),
        |q| {
            let jobs = q
                .list(&JobFilter::new().status(Status::Running).limit(1000))
                .unwrap()
                .jobs;
            let mut by_key: HashMap<String, i64> = HashMap::new();
            for j in &jobs {
                if let Ok(job) = q.get(&j.id) {
                    if let Some(k) = job.concurrency_key {
                        *by_key.entry(k).or_default() += 1;
                    }
                }
            }
            let peak = by_key.values().copied().max().unwrap_or(0);
            assert!(peak <= 1, "a key with {peak} running jobs");
            (jobs.len() as i64, peak)
        },
    );
}

#[test]
fn a_rates_window_ends_exactly_its_length_after_a_claim() {
    let env = Env::new();
    let q = &env.queue;
    q.set_queue_limits(
        "gpu",
        jobq::QueueLimits::new().rate(Some(Rate::new(2, Duration::from_secs(10)).unwrap())),
    )
    .unwrap();
    for _ in 0..4 {
        q.enqueue(job(None)).unwrap();
    }
    assert_eq!(q.claim("w", 5, &gpu()).unwrap().len(), 2);
    env.clock.advance(Duration::from_millis(9_999));
    assert!(
        q.claim("w", 5, &gpu()).unwrap().is_empty(),
        "a millisecond before the end"
    );
    env.clock.advance(Duration::from_millis(1));
    assert_eq!(
        q.claim("w", 5, &gpu()).unwrap().len(),
        2,
        "at the end exactly"
    );
}

//! The worker pool: throughput, exactly-once across processes, crash recovery, limits,
//! retries, panics, timeouts, cancellation, shutdown, wake-ups, inline draining.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobq::{
    EventKind, JobContext, JobError, JobFilter, NewJob, Queue, RetryPolicy, StaleTimeouts, Status,
    WorkerPool, testing,
};
use serde_json::{Value, json};

use crate::common::{Db, child_env, is_child, spawn_child};

fn fresh(retry: RetryPolicy) -> (Db, Queue) {
    let db = Db::fresh();
    let queue = Queue::builder(db.path())
        .retry_policy(retry)
        .open()
        .unwrap();
    (db, queue)
}

fn noop(_: &JobContext) -> Result<Value, JobError> {
    Ok(Value::Null)
}

fn all_jobs(queue: &Queue) -> Vec<jobq::Job> {
    let mut out = Vec::new();
    let mut filter = JobFilter::new().limit(10_000);
    loop {
        let page = queue.list(&filter).unwrap();
        out.extend(page.jobs);
        match page.next {
            Some(n) => filter = JobFilter::new().limit(10_000).after(n),
            None => return out,
        }
    }
}

#[test]
fn ten_thousand_jobs_through_a_pool_of_eight() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    queue
        .enqueue_many((0..10_000).map(|i| NewJob::new("noop").input(json!({ "i": i }))))
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let summary = WorkerPool::builder(&queue)
        .concurrency(8)
        .handler("noop", move |_ctx: &JobContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 10_000);
    assert_eq!(
        (
            summary.processed,
            summary.succeeded,
            summary.failed,
            summary.lost
        ),
        (10_000, 10_000, 0, 0)
    );
    let jobs = all_jobs(&queue);
    assert_eq!(jobs.len(), 10_000);
    assert!(
        jobs.iter()
            .all(|j| j.status == Status::Succeeded && j.attempts == 1)
    );
}

#[test]
fn child_pool_drain() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let out = child_env("JOBQ_TEST_OUT");
    let log = Arc::new(Mutex::new(std::fs::File::create(&out).unwrap()));
    // A barrier across processes: say we are ready, then wait for the parent's go.
    std::fs::write(format!("{out}.ready"), "").unwrap();
    let go = std::path::PathBuf::from(child_env("JOBQ_TEST_GO"));
    while !go.exists() {
        std::thread::sleep(Duration::from_millis(1));
    }
    WorkerPool::builder(&queue)
        .concurrency(4)
        .handler("effect", move |ctx: &JobContext| {
            // The side effect: one line per run of the handler, and a little work.
            writeln!(log.lock().unwrap(), "{}", ctx.id()).unwrap();
            std::thread::sleep(Duration::from_micros(200));
            Ok(json!({"pid": std::process::id()}))
        })
        .run_until_idle()
        .unwrap();
}

#[test]
fn two_pools_in_two_processes_run_each_job_exactly_once() {
    let (dir, queue) = fresh(RetryPolicy::default());
    let ids: Vec<String> = queue
        .enqueue_many((0..5000).map(|_| NewJob::new("effect")))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id.to_string())
        .collect();
    let go = dir.dir.path().join("go");
    let outs: Vec<_> = (0..2)
        .map(|i| dir.dir.path().join(format!("effects-{i}.txt")))
        .collect();
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            spawn_child(
                "conformance::worker::child_pool_drain",
                &[
                    ("JOBQ_TEST_DB", queue.path().display().to_string()),
                    ("JOBQ_TEST_OUT", out.display().to_string()),
                    ("JOBQ_TEST_GO", go.display().to_string()),
                ],
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !outs
        .iter()
        .all(|o| std::path::PathBuf::from(format!("{}.ready", o.display())).exists())
    {
        assert!(Instant::now() < deadline, "the children never got ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&go, "").unwrap();
    for child in children {
        assert!(
            child
                .into_inner()
                .wait_with_output()
                .unwrap()
                .status
                .success()
        );
    }
    let mut runs: HashMap<String, usize> = HashMap::new();
    let mut per_process = Vec::new();
    for out in &outs {
        let text = std::fs::read_to_string(out).unwrap();
        per_process.push(text.lines().count());
        for line in text.lines() {
            *runs.entry(line.to_string()).or_default() += 1;
        }
    }
    assert_eq!(runs.len(), 5000, "every job ran");
    assert!(runs.values().all(|n| *n == 1), "a job ran twice");
    assert!(ids.iter().all(|id| runs.contains_key(id)));
    assert!(
        per_process.iter().all(|n| *n > 0),
        "both processes took work: {per_process:?}"
    );
    let jobs = all_jobs(&queue);
    assert!(
        jobs.iter()
            .all(|j| j.status == Status::Succeeded && j.attempts == 1)
    );
}

#[test]
fn child_pool_hangs() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let log = Arc::new(Mutex::new(
        std::fs::File::create(child_env("JOBQ_TEST_OUT")).unwrap(),
    ));
    let _pool = WorkerPool::builder(&queue)
        .concurrency(3)
        .prefetch(0)
        .heartbeat_interval(Duration::from_millis(100))
        .handler("slow", move |ctx: &JobContext| {
            ctx.set_stage("working").unwrap();
            writeln!(log.lock().unwrap(), "{}", ctx.id()).unwrap();
            std::thread::sleep(Duration::from_secs(600));
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn a_pool_killed_mid_job_has_its_jobs_released_and_completed_by_another() {
    let (dir, queue) = fresh(RetryPolicy::fixed(Duration::ZERO));
    let ids: Vec<_> = queue
        .enqueue_many((0..5).map(|i| NewJob::new("slow").input(json!({ "i": i }))))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    let started_log = dir.dir.path().join("started.txt");
    let mut child = spawn_child(
        "conformance::worker::child_pool_hangs",
        &[
            ("JOBQ_TEST_DB", queue.path().display().to_string()),
            ("JOBQ_TEST_OUT", started_log.display().to_string()),
        ],
    );
    // Wait until its three handlers are mid-job.
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&started_log).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            Instant::now() < deadline,
            "the child never started its jobs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let victims: Vec<String> = std::fs::read_to_string(&started_log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    // SIGKILL: no chance to release anything.
    child.kill().unwrap();
    child.wait().unwrap();
    for id in &victims {
        let job = queue.get(&id.parse().unwrap()).unwrap();
        assert_eq!(
            (job.status, job.stage.as_deref()),
            (Status::Running, Some("working"))
        );
    }

    let completions = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&completions);
    let pool = WorkerPool::builder(&queue)
        .concurrency(2)
        .heartbeat_interval(Duration::from_millis(100))
        .stale_timeouts(StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(1)))
        .maintenance_interval(Some(Duration::from_millis(200)))
        .poll_interval(Duration::from_millis(50))
        .handler("slow", move |ctx: &JobContext| {
            seen.lock().unwrap().push(ctx.id().clone());
            Ok(json!({"attempt": ctx.attempt()}))
        })
        .start()
        .unwrap();
    for id in &ids {
        let job = queue.wait(id, Duration::from_secs(30)).unwrap();
        assert_eq!(job.status, Status::Succeeded);
    }
    pool.shutdown();

    let completions = completions.lock().unwrap().clone();
    assert_eq!(
        completions.len(),
        5,
        "each job completed once, none twice: {completions:?}"
    );
    for id in &victims {
        let job = queue.get(&id.parse().unwrap()).unwrap();
        assert_eq!(job.attempts, 2);
        assert_eq!(job.errors.len(), 1);
        assert_eq!(job.errors[0].code.as_deref(), Some("HEARTBEAT_TIMEOUT"));
        assert_eq!(job.output, Some(json!({"attempt": 2})));
    }
}

#[test]
fn no_more_than_n_handlers_run_at_once() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    queue
        .enqueue_many((0..40).map(|_| NewJob::new("busy")))
        .unwrap();
    let now = Arc::new(AtomicUsize::new(0));
    let max = Arc::new(AtomicUsize::new(0));
    let (n, m) = (Arc::clone(&now), Arc::clone(&max));
    let summary = WorkerPool::builder(&queue)
        .concurrency(3)
        .handler("busy", move |_ctx: &JobContext| {
            let running = n.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(running, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(15));
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 40);
    assert_eq!(
        max.load(Ordering::SeqCst),
        3,
        "the limit was reached and never passed"
    );
}

#[test]
fn with_no_prefetch_running_in_the_database_never_exceeds_the_concurrency() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    queue
        .enqueue_many((0..12).map(|_| NewJob::new("busy")))
        .unwrap();
    let observer = queue.clone();
    let max_running = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&max_running);
    WorkerPool::builder(&queue)
        .concurrency(2)
        .prefetch(0)
        .handler("busy", move |_ctx: &JobContext| {
            let running = observer
                .list(&JobFilter::new().status(Status::Running))
                .unwrap()
                .jobs
                .len();
            seen.fetch_max(running, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(10));
            Ok(Value::Null)
        })
        .run_until_idle()
        .unwrap();
    assert!(
        max_running.load(Ordering::SeqCst) <= 2,
        "{}",
        max_running.load(Ordering::SeqCst)
    );
}

#[test]
fn failures_retry_with_backoff_then_land_in_the_dead_letter() {
    let (_dir, queue) = fresh(RetryPolicy::fixed(Duration::from_millis(20)));
    let id = queue
        .enqueue(NewJob::new("flaky").max_attempts(3))
        .unwrap()
        .job_id;
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&attempts);
    let pool = WorkerPool::builder(&queue)
        .poll_interval(Duration::from_millis(20))
        .handler(
            "flaky",
            move |ctx: &JobContext| -> Result<Value, JobError> {
                seen.lock().unwrap().push((ctx.attempt(), Instant::now()));
                Err(
                    JobError::retryable(format!("upstream 503 on attempt {}", ctx.attempt()))
                        .code("UPSTREAM"),
                )
            },
        )
        .start()
        .unwrap();
    let job = queue.wait(&id, Duration::from_secs(20)).unwrap();
    let summary = pool.shutdown();
    assert_eq!(job.status, Status::Failed);
    assert_eq!(job.attempts, 3);
    assert_eq!(
        job.errors.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(job.last_error.as_deref(), Some("upstream 503 on attempt 3"));
    let attempts = attempts.lock().unwrap();
    assert_eq!(
        attempts.iter().map(|a| a.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for pair in attempts.windows(2) {
        // The queue's clock counts whole milliseconds: allow the 1 ms it truncates.
        assert!(
            pair[1].1 - pair[0].1 >= Duration::from_millis(19),
            "each retry waited for its 20 ms backoff: {:?}",
            pair[1].1 - pair[0].1
        );
    }
    assert_eq!((summary.retried, summary.failed), (2, 1));
}

#[test]
fn a_permanent_error_fails_at_once_and_a_kind_policy_sets_the_backoff() {
    let (_dir, queue) = fresh(RetryPolicy::fixed(Duration::ZERO));
    let permanent = queue.enqueue(NewJob::new("strict")).unwrap().job_id;
    let patient = queue.enqueue(NewJob::new("patient")).unwrap().job_id;
    let summary = WorkerPool::builder(&queue)
        .handler("strict", |_: &JobContext| -> Result<Value, JobError> {
            Err(JobError::permanent("bad input").code("BAD_INPUT"))
        })
        .handler("patient", |_: &JobContext| -> Result<Value, JobError> {
            Err(JobError::retryable("later"))
        })
        .retry_policy("patient", RetryPolicy::fixed(Duration::from_secs(3600)))
        .run_until_idle()
        .unwrap();
    let job = queue.get(&permanent).unwrap();
    assert_eq!(
        (job.status, job.attempts, job.error_code.as_deref()),
        (Status::Failed, 1, Some("BAD_INPUT"))
    );
    let job = queue.get(&patient).unwrap();
    assert_eq!(job.status, Status::Retry);
    let wait = job.run_after.as_millis() - job.updated_at.as_millis();
    assert_eq!(wait, 3_600_000, "the kind's policy chose the delay");
    assert_eq!((summary.failed, summary.retried), (1, 1));
}

#[test]
fn a_panicking_handler_fails_its_job_and_the_pool_keeps_its_slots() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let boom = queue
        .enqueue(NewJob::new("boom").max_attempts(1))
        .unwrap()
        .job_id;
    queue
        .enqueue_many((0..20).map(|_| NewJob::new("fine")))
        .unwrap();
    let summary = WorkerPool::builder(&queue)
        .concurrency(1)
        .handler("boom", |_: &JobContext| -> Result<Value, JobError> {
            panic!("index out of bounds: the len is 3")
        })
        .handler("fine", noop)
        .run_until_idle()
        .unwrap();
    let job = queue.get(&boom).unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (Status::Failed, Some("PANIC"))
    );
    assert!(job.last_error.unwrap().contains("index out of bounds"));
    assert_eq!((summary.succeeded, summary.failed), (20, 1));
}

#[test]
fn a_job_past_its_timeout_fails_with_timeout_and_frees_its_slot() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let hung = queue
        .enqueue(NewJob::new("hang").max_attempts(1).priority(1))
        .unwrap()
        .job_id;
    let after = queue.enqueue(NewJob::new("quick")).unwrap().job_id;
    let late_results = Arc::new(AtomicUsize::new(0));
    let late = Arc::clone(&late_results);
    let started = Instant::now();
    let pool = WorkerPool::builder(&queue)
        .concurrency(1)
        .prefetch(0)
        .handler("hang", move |_: &JobContext| {
            std::thread::sleep(Duration::from_secs(3));
            late.fetch_add(1, Ordering::SeqCst);
            Ok(json!("too late"))
        })
        .job_timeout("hang", Duration::from_millis(200))
        .handler("quick", noop)
        .start()
        .unwrap();
    let quick = queue.wait(&after, Duration::from_secs(10)).unwrap();
    // The only slot was held by the hung handler: the quick job ran on its replacement.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the slot was freed before the hung handler returned"
    );
    assert_eq!(quick.status, Status::Succeeded);
    let job = queue.get(&hung).unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (Status::Failed, Some("TIMEOUT"))
    );
    // Let the abandoned handler finish: its result must be refused.
    std::thread::sleep(Duration::from_millis(3200).saturating_sub(started.elapsed()));
    let summary = pool.shutdown();
    assert_eq!(late_results.load(Ordering::SeqCst), 1);
    let job = queue.get(&hung).unwrap();
    assert_eq!(
        (job.status, job.output),
        (Status::Failed, None),
        "the late result was not applied"
    );
    assert_eq!((summary.failed, summary.succeeded), (1, 1));
}

#[test]
fn a_running_job_cancelled_by_an_admin_stops_its_handler_cooperatively() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let id = queue.enqueue(NewJob::new("long")).unwrap().job_id;
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (stopped_tx, stopped_rx) = crossbeam_channel::bounded(1);
    let pool = WorkerPool::builder(&queue)
        .handler("long", move |ctx: &JobContext| -> Result<Value, JobError> {
            started_tx.send(()).unwrap();
            let begin = Instant::now();
            while !ctx.is_cancelled() {
                assert!(
                    begin.elapsed() < Duration::from_secs(20),
                    "never told of the cancel"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            stopped_tx.send(begin.elapsed()).unwrap();
            Err(JobError::retryable("cancelled"))
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(queue.cancel(&id).unwrap(), Status::Running);
    stopped_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let summary = pool.shutdown();
    let job = queue.get(&id).unwrap();
    assert_eq!(job.status, Status::Cancelled);
    assert!(
        job.errors.is_empty(),
        "the handler's late failure was refused"
    );
    assert_eq!(summary.lost, 1);
}

#[test]
fn graceful_shutdown_finishes_running_jobs_and_releases_the_rest_unharmed() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let ids: Vec<_> = queue
        .enqueue_many((0..6).map(|_| NewJob::new("slow")))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    let (started_tx, started_rx) = crossbeam_channel::unbounded();
    let pool = WorkerPool::builder(&queue)
        .concurrency(1)
        .prefetch(5)
        .handler("slow", move |ctx: &JobContext| {
            started_tx.send(ctx.id().clone()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    let first = started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    // All six are claimed: one running, five prefetched.
    let summary = pool.shutdown();
    assert_eq!((summary.succeeded, summary.released), (1, 5));
    for id in &ids {
        let job = queue.get(id).unwrap();
        if *id == first {
            assert_eq!(
                job.status,
                Status::Succeeded,
                "the running job finished within the grace period"
            );
        } else {
            assert_eq!(
                (job.status, job.attempts, job.locked_by.is_some()),
                (Status::Queued, 0, true)
            );
            assert!(job.errors.is_empty());
        }
    }
    assert!(
        started_rx.try_recv().is_err(),
        "nothing new started after the shutdown began"
    );
}

#[test]
fn a_handler_outliving_the_grace_period_has_its_job_released() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let id = queue.enqueue(NewJob::new("stuck")).unwrap().job_id;
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let pool = WorkerPool::builder(&queue)
        .shutdown_grace(Duration::from_millis(100))
        .handler("stuck", move |_: &JobContext| {
            started_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let began = Instant::now();
    let summary = pool.shutdown();
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "shutdown did not wait for the stuck handler"
    );
    assert_eq!(summary.released, 1);
    let job = queue.get(&id).unwrap();
    assert_eq!((job.status, job.attempts), (Status::Queued, 0));
}

#[test]
fn an_enqueue_in_this_process_wakes_an_idle_pool_long_before_its_poll_interval() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let (ran_tx, ran_rx) = crossbeam_channel::bounded(10);
    let pool = WorkerPool::builder(&queue)
        .poll_interval(Duration::from_secs(30))
        .handler("ping", move |_: &JobContext| {
            ran_tx.send(Instant::now()).unwrap();
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let sent = Instant::now();
        queue.enqueue(NewJob::new("ping")).unwrap();
        let ran = ran_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            ran - sent < Duration::from_secs(3),
            "picked up after {:?}",
            ran - sent
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.shutdown();
}

#[test]
fn child_enqueue_one() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    queue
        .enqueue(NewJob::new("ping").input(json!({"from": "another process"})))
        .unwrap();
}

#[test]
fn an_enqueue_in_another_process_is_noticed_within_the_poll_interval() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let (ran_tx, ran_rx) = crossbeam_channel::bounded(1);
    let pool = WorkerPool::builder(&queue)
        .poll_interval(Duration::from_millis(200))
        .handler("ping", move |ctx: &JobContext| {
            ran_tx.send(ctx.input::<Value>()?).unwrap();
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    let child = spawn_child(
        "conformance::worker::child_enqueue_one",
        &[("JOBQ_TEST_DB", queue.path().display().to_string())],
    );
    assert!(
        child
            .into_inner()
            .wait_with_output()
            .unwrap()
            .status
            .success()
    );
    let input = ran_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(input, json!({"from": "another process"}));
    pool.shutdown();
}

#[test]
fn a_limit_stops_the_pool_after_n_jobs() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    queue
        .enqueue_many((0..20).map(|_| NewJob::new("noop")))
        .unwrap();
    let summary = WorkerPool::builder(&queue)
        .concurrency(3)
        .limit(5)
        .handler("noop", noop)
        .start()
        .unwrap()
        .wait();
    assert_eq!(summary.succeeded, 5);
    assert_eq!(
        queue
            .list(&JobFilter::new().status(Status::Queued).limit(100))
            .unwrap()
            .jobs
            .len(),
        15
    );
}

#[test]
fn a_pool_claims_only_its_kinds_and_queues() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let mine = queue
        .enqueue(NewJob::new("mine").queue("q1"))
        .unwrap()
        .job_id;
    let other_kind = queue
        .enqueue(NewJob::new("theirs").queue("q1"))
        .unwrap()
        .job_id;
    let other_queue = queue
        .enqueue(NewJob::new("mine").queue("q2"))
        .unwrap()
        .job_id;
    let summary = WorkerPool::builder(&queue)
        .queues(["q1"])
        .handler("mine", noop)
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 1);
    assert_eq!(queue.get(&mine).unwrap().status, Status::Succeeded);
    assert_eq!(queue.get(&other_kind).unwrap().status, Status::Queued);
    assert_eq!(queue.get(&other_queue).unwrap().status, Status::Queued);
    // A fallback handler takes every kind.
    let summary = WorkerPool::builder(&queue)
        .queues(["q1", "q2"])
        .fallback_handler(noop)
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 2);
}

#[test]
fn handlers_report_stage_progress_and_cost_while_running() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let id = queue
        .enqueue(NewJob::new("render").cost_cents(100))
        .unwrap()
        .job_id;
    let observer = queue.clone();
    let seen = Arc::new(Mutex::new(None));
    let seen_in = Arc::clone(&seen);
    WorkerPool::builder(&queue)
        .handler("render", move |ctx: &JobContext| {
            ctx.set_progress_and_stage(0.25, "scene_1")?;
            ctx.add_cost(40)?;
            let job = observer.get(ctx.id()).unwrap();
            *seen_in.lock().unwrap() = Some((job.stage.clone(), job.progress, job.cost_cents));
            assert!(ctx.set_progress(1.5).is_err());
            Ok(json!({"frames": 240}))
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(
        seen.lock().unwrap().clone(),
        Some((Some("scene_1".into()), 0.25, 140))
    );
    let job = queue.get(&id).unwrap();
    assert_eq!(
        (job.status, job.cost_cents, job.output),
        (Status::Succeeded, 140, Some(json!({"frames": 240})))
    );
}

#[test]
fn subscribers_see_each_state_change_and_wait_returns_the_finished_job() {
    let (_dir, queue) = fresh(RetryPolicy::fixed(Duration::ZERO));
    let events = queue.subscribe();
    let id = queue
        .enqueue(NewJob::new("twice").max_attempts(2))
        .unwrap()
        .job_id;
    let pool = WorkerPool::builder(&queue)
        .handler("twice", |ctx: &JobContext| {
            if ctx.attempt() == 1 {
                Err(JobError::retryable("first try fails"))
            } else {
                Ok(json!("ok"))
            }
        })
        .start()
        .unwrap();
    let job = queue.wait(&id, Duration::from_secs(10)).unwrap();
    pool.shutdown();
    assert_eq!((job.status, job.attempts), (Status::Succeeded, 2));
    let kinds: Vec<EventKind> = events
        .try_iter()
        .filter(|e| e.job_id == id)
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::Enqueued,
            EventKind::Claimed,
            EventKind::Retrying,
            EventKind::Claimed,
            EventKind::Succeeded
        ]
    );
    let err = queue
        .wait(
            &queue.enqueue(NewJob::new("never")).unwrap().job_id,
            Duration::from_millis(100),
        )
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
}

#[test]
fn drain_inline_runs_handlers_on_the_calling_thread_and_assert_enqueued_matches_inputs() {
    let (_dir, queue) = fresh(RetryPolicy::fixed(Duration::ZERO));
    queue
        .enqueue(NewJob::new("welcome").input(json!({"user": 1, "locale": "fr"})))
        .unwrap();
    queue
        .enqueue(NewJob::new("welcome").input(json!({"user": 2})))
        .unwrap();
    queue.enqueue(NewJob::new("flaky").max_attempts(2)).unwrap();
    testing::assert_enqueued(&queue, "welcome", &json!({"user": 1}));
    testing::refute_enqueued(&queue, "welcome", &json!({"user": 3}));
    let caller = std::thread::current().id();
    let outcomes = WorkerPool::builder(&queue)
        .handler("welcome", move |ctx: &JobContext| {
            assert_eq!(std::thread::current().id(), caller);
            let input: Value = ctx.input()?;
            Ok(json!({"greeted": input["user"]}))
        })
        .handler("flaky", |_: &JobContext| -> Result<Value, JobError> {
            Err(JobError::retryable("nope"))
        })
        .drain_inline()
        .unwrap();
    let summary: Vec<(String, u32, Status)> = outcomes
        .iter()
        .map(|o| (o.kind.clone(), o.attempt, o.status))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("welcome".into(), 1, Status::Succeeded),
            ("welcome".into(), 1, Status::Succeeded),
            ("flaky".into(), 1, Status::Retry),
            ("flaky".into(), 2, Status::Failed),
        ]
    );
    assert_eq!(outcomes[0].result, Ok(json!({"greeted": 1})));
}

#[test]
fn a_pool_without_handlers_or_with_a_too_slow_heartbeat_is_refused() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let err = WorkerPool::builder(&queue).start().unwrap_err();
    assert!(
        matches!(
            err,
            jobq::Error::InvalidInput {
                field: "handlers",
                ..
            }
        ),
        "{err}"
    );
    let err = WorkerPool::builder(&queue)
        .handler("k", noop)
        .heartbeat_interval(Duration::from_secs(90))
        .start()
        .unwrap_err();
    assert!(
        matches!(
            err,
            jobq::Error::InvalidInput {
                field: "heartbeat_interval",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_job_retried_while_its_cancelled_handler_still_runs_records_only_the_new_run() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    let id = queue.enqueue(NewJob::new("sticky")).unwrap().job_id;
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started_rx) = crossbeam_channel::unbounded::<u32>();
    let runs = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&runs);
    let pool = WorkerPool::builder(&queue)
        .concurrency(2)
        .prefetch(0)
        .poll_interval(Duration::from_millis(20))
        .handler("sticky", move |ctx: &JobContext| {
            let run = counted.fetch_add(1, Ordering::SeqCst);
            started_tx.send(ctx.job().claim).unwrap();
            if run == 0 {
                // The first run ignores the cancel and finishes late.
                gate_rx.recv().unwrap();
                return Ok(json!("stale"));
            }
            Ok(json!("fresh"))
        })
        .start()
        .unwrap();
    let first_claim = started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    queue.cancel(&id).unwrap();
    queue.retry(&id).unwrap();
    let second_claim = started_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_ne!(first_claim, second_claim);
    let job = queue.wait(&id, Duration::from_secs(10)).unwrap();
    assert_eq!(
        (job.status, job.output.clone()),
        (Status::Succeeded, Some(json!("fresh")))
    );
    gate_tx.send(()).unwrap();
    let summary = pool.shutdown();
    assert_eq!((summary.succeeded, summary.lost), (1, 1));
    assert_eq!(
        queue.get(&id).unwrap().output,
        Some(json!("fresh")),
        "the late run changed nothing"
    );
}

/// A clock that moves on only when the pool's dispatcher reads it: each of its readings is
/// 10 ms after the one before, as if each of its steps took that long.
#[derive(Debug, Clone)]
struct DispatcherTime(Arc<std::sync::atomic::AtomicI64>);

impl jobq::Clock for DispatcherTime {
    fn now_ms(&self) -> i64 {
        if std::thread::current().name() == Some("jobq-dispatcher") {
            self.0.fetch_add(10, Ordering::SeqCst)
        } else {
            self.0.load(Ordering::SeqCst)
        }
    }
}

#[test]
fn a_job_coming_due_between_a_claim_and_the_next_look_is_still_claimed() {
    let db = Db::fresh();
    let clock = DispatcherTime(Arc::new(std::sync::atomic::AtomicI64::new(
        crate::common::T0,
    )));
    let queue = Queue::builder(db.path()).clock(clock).open().unwrap();
    // Due 5 ms after the dispatcher's first claim reads the clock, and before its next
    // reading: the job comes due in the gap between the claim and the look for what is due
    // next.
    let id = queue
        .enqueue(NewJob::new("k").run_after(Duration::from_millis(5)))
        .unwrap()
        .job_id;
    let pool = WorkerPool::builder(&queue)
        // Nothing else would wake the dispatcher: only its own look at what comes due.
        .poll_interval(Duration::from_secs(3600))
        .handler("k", |_: &JobContext| Ok(json!({})))
        .start()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while queue.get(&id).unwrap().status != Status::Succeeded {
        assert!(
            Instant::now() < deadline,
            "the job that came due was never claimed: {:?}",
            queue.get(&id).unwrap().status
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    pool.shutdown();
}

#[test]
fn a_late_success_of_a_run_whose_job_was_claimed_again_is_refused_with_the_refill() {
    let (_db, queue) = fresh(RetryPolicy::fixed(Duration::from_secs(1)));
    let job = queue
        .enqueue(NewJob::new("slow").priority(10))
        .unwrap()
        .job_id;
    let other = queue.enqueue(NewJob::new("slow")).unwrap().job_id;
    let (started_tx, started_rx) = crossbeam_channel::bounded::<()>(1);
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(1);
    let pool = WorkerPool::builder(&queue)
        .worker_id("first")
        .concurrency(1)
        .prefetch(0)
        .poll_interval(Duration::from_millis(20))
        .heartbeat_interval(Duration::from_secs(20))
        .handler("slow", move |ctx: &JobContext| -> Result<Value, JobError> {
            if ctx.attempt() == 1 && ctx.job().priority == 10 {
                let _ = started_tx.send(());
                let _ = gate_rx.recv_timeout(Duration::from_secs(30));
            }
            Ok(json!({"by": "first"}))
        })
        .start()
        .unwrap();
    started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // Taken from the first worker while its handler runs: cancelled, retried and claimed
    // by another worker (its claim counter moves on).
    queue.cancel(&job).unwrap();
    queue.retry(&job).unwrap();
    let second = queue
        .claim("second", 1, &jobq::ClaimFilter::default())
        .unwrap();
    assert_eq!(second[0].id, job);
    // The first handler returns: its success is recorded with the refill of its slot, and
    // must not land on the job the second worker now holds.
    gate_tx.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue.get(&other).unwrap().status != Status::Succeeded {
        assert!(
            Instant::now() < deadline,
            "the refill never ran the other job"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let held = queue.get(&job).unwrap();
    assert_eq!(
        (held.status, held.locked_by.as_deref(), held.output),
        (Status::Running, Some("second"), None),
        "a released worker's late success was applied"
    );
    pool.shutdown();
}

#[test]
fn several_completers_record_each_job_once_and_never_claim_past_the_capacity() {
    let (_dir, queue) = fresh(RetryPolicy::default());
    queue
        .enqueue_many((0..600).map(|i| NewJob::new("work").input(json!({ "i": i }))))
        .unwrap();
    let observer = queue.clone();
    let calls = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let (counted, seen) = (Arc::clone(&calls), Arc::clone(&max_running));
    let summary = WorkerPool::builder(&queue)
        .concurrency(3)
        .prefetch(0)
        .completers(3)
        .handler("work", move |_ctx: &JobContext| {
            counted.fetch_add(1, Ordering::SeqCst);
            if counted.load(Ordering::SeqCst) % 25 == 0 {
                // Without prefetch, the jobs running in the database never pass the
                // handlers, though three completers claim side by side.
                let running = observer
                    .list(&JobFilter::new().status(Status::Running))
                    .unwrap()
                    .jobs
                    .len();
                seen.fetch_max(running, Ordering::SeqCst);
            }
            Ok(Value::Null)
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 600, "each job ran once");
    assert_eq!((summary.succeeded, summary.lost), (600, 0));
    assert!(
        max_running.load(Ordering::SeqCst) <= 3,
        "{} running with 3 handlers",
        max_running.load(Ordering::SeqCst)
    );
    let jobs = all_jobs(&queue);
    assert!(
        jobs.iter()
            .all(|j| j.status == Status::Succeeded && j.attempts == 1)
    );
    // A limit holds across completers claiming side by side.
    queue
        .enqueue_many((0..300).map(|_| NewJob::new("work")))
        .unwrap();
    let summary = WorkerPool::builder(&queue)
        .concurrency(4)
        .completers(3)
        .limit(100)
        .handler("work", noop)
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 100, "the limit, exactly");
    let left = all_jobs(&queue)
        .iter()
        .filter(|j| j.status == Status::Queued)
        .count();
    assert_eq!(left, 200, "nothing claimed past the limit");
    assert!(
        WorkerPool::builder(&queue)
            .completers(0)
            .handler("work", noop)
            .start()
            .is_err(),
        "no completer is refused"
    );
}

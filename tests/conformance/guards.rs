//! Guards the rest of the suite let go untested: each test here fails if its guard is taken
//! out of the source (the lease's worker and claim on every report, the run_after of the
//! claim over several queues, the bounds of prune and of the stale release, and the worker
//! pool's duties: a batch of outcomes, cancellations, refused reports, wake-ups and the
//! owner of a group).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use jobq::{
    ClaimFilter, Error, JobContext, JobError, Lease, NewJob, Queue, StaleTimeouts, Status,
    WorkerPool,
};
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::common::{Db, Env};

/// Waits up to 10 s for `done`, then fails naming `what`.
#[track_caller]
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn every_report_needs_the_same_worker_and_the_same_claim() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("k")).unwrap().job_id;
    let first = q.claim("w1", 1, &ClaimFilter::default()).unwrap()[0].lease();
    env.advance(120);
    assert_eq!(q.release_stale(&StaleTimeouts::default()).unwrap(), 1);
    // The same worker claims it again: the job runs, under claim 2.
    let current = q.claim("w1", 1, &ClaimFilter::default()).unwrap()[0].lease();
    assert_eq!((current.job_id.clone(), current.claim), (id.clone(), 2));
    let impostor = Lease {
        worker: "impostor".into(),
        ..current.clone()
    };
    type Report<'a> = (&'a str, Box<dyn Fn(&Lease) -> jobq::Result<()> + 'a>);
    let reports: Vec<Report<'_>> = vec![
        ("heartbeat", Box::new(|l| q.heartbeat(l))),
        ("set_progress", Box::new(|l| q.set_progress(l, 0.7, None))),
        ("set_stage", Box::new(|l| q.set_stage(l, "forged"))),
        ("add_cost", Box::new(|l| q.add_cost(l, 99))),
        ("release", Box::new(|l| q.release(l))),
        (
            "fail",
            Box::new(|l| q.fail(l, &JobError::permanent("forged")).map(|_| ())),
        ),
        ("complete", Box::new(|l| q.complete(l, json!("forged")))),
    ];
    env.advance(1);
    let before = env.dump();
    for (name, report) in &reports {
        for (who, lease) in [("an old claim", &first), ("another worker", &impostor)] {
            let err = report(lease).unwrap_err();
            assert!(
                matches!(
                    &err,
                    Error::LockLost {
                        status: Status::Running,
                        ..
                    }
                ),
                "{name} with {who}: {err}"
            );
            assert_eq!(env.dump(), before, "{name} with {who} changed the job");
        }
    }
    // The lease that holds it is taken.
    q.set_progress(&current, 0.5, Some("real")).unwrap();
    q.complete(&current, json!("real")).unwrap();
    assert_eq!(q.get(&id).unwrap().output, Some(json!("real")));
}

#[test]
fn the_claim_over_several_queues_waits_for_run_after_too() {
    let env = Env::new();
    let q = &env.queue;
    let later = q
        .enqueue(
            NewJob::new("k")
                .queue("a")
                .run_after(Duration::from_secs(60)),
        )
        .unwrap()
        .job_id;
    let both = ClaimFilter::queues(["a", "b"]);
    assert!(q.claim("w", 10, &both).unwrap().is_empty());
    env.advance(59);
    assert!(q.claim("w", 10, &both).unwrap().is_empty());
    env.advance(1);
    let claimed = q.claim("w", 10, &both).unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, later);
}

#[test]
fn the_stale_release_takes_a_heartbeat_older_than_the_timeout_not_one_as_old() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("k")).unwrap().job_id;
    q.claim("w", 1, &ClaimFilter::default()).unwrap();
    let heartbeat = StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(60));
    let lock = StaleTimeouts::none().lock_timeout(Duration::from_secs(60));
    env.advance(60);
    assert_eq!(
        q.release_stale(&heartbeat).unwrap(),
        0,
        "exactly as old as the timeout"
    );
    assert_eq!(
        q.release_stale(&lock).unwrap(),
        0,
        "held exactly as long as the timeout"
    );
    env.clock.advance(Duration::from_millis(1));
    assert_eq!(q.release_stale(&heartbeat).unwrap(), 1);
    assert_eq!(q.get(&id).unwrap().status, Status::Retry);

    // Claimed again (its second attempt), it now heartbeats.
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    assert_eq!((&lease.job_id, lease.attempt), (&id, 2));
    env.advance(30);
    q.heartbeat(&lease).unwrap();
    env.advance(30);
    env.clock.advance(Duration::from_millis(1));
    // Its heartbeat is fresh, but its lock is 60.001 s old.
    assert_eq!(q.release_stale(&heartbeat).unwrap(), 0);
    assert_eq!(q.release_stale(&lock).unwrap(), 1);
    assert_eq!(
        q.get(&id).unwrap().error_code.as_deref(),
        Some("LOCK_TIMEOUT")
    );
}

#[test]
fn prune_on_the_command_line_keeps_what_finished_within_the_age() {
    let cli = Cli::new();
    let recent = cli.enqueue(&["k"]);
    let out = cli.run(&["worker", "--exec", "echo '{}'", "--once"]);
    assert!(out.status.success());
    assert_eq!(cli.show(&recent)["status"], "succeeded");
    assert!(
        cli.ok(&["prune", "--older-than", "1h"])
            .contains("Pruned 0 jobs")
    );
    assert_eq!(cli.show(&recent)["status"], "succeeded");
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        cli.ok(&["prune", "--older-than", "10ms"])
            .contains("Pruned 1 jobs")
    );
}

fn pool_queue() -> (Db, Queue) {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    (db, queue)
}

#[test]
fn cancelling_a_running_job_reaches_its_handler_at_once_not_at_the_next_heartbeat() {
    let (_dir, queue) = pool_queue();
    let id = queue.enqueue(NewJob::new("long")).unwrap().job_id;
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (began, started) = crossbeam_channel::bounded(1);
    let pool = WorkerPool::builder(&queue)
        .heartbeat_interval(Duration::from_secs(30))
        .handler("long", move |ctx: &JobContext| -> Result<Value, JobError> {
            let _ = began.send(());
            while !ctx.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(Instant::now());
            Err(JobError::retryable("stopped"))
        })
        .start()
        .unwrap();
    // The handler itself has started (`running` in the database may still be a claim
    // waiting for a handler, which a cancel drops unrun).
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never started");
    let asked = Instant::now();
    queue.cancel(&id).unwrap();
    let stopped = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never learned of the cancel");
    assert!(stopped - asked < Duration::from_secs(5));
    pool.shutdown();
}

#[test]
fn a_refused_report_tells_the_handler_its_job_is_gone() {
    let (dir, queue) = pool_queue();
    queue.enqueue(NewJob::new("long")).unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    let (began, started) = crossbeam_channel::bounded(1);
    let pool = WorkerPool::builder(&queue)
        .heartbeat_interval(Duration::from_secs(30))
        .maintenance_interval(None)
        .handler("long", move |ctx: &JobContext| -> Result<Value, JobError> {
            let _ = began.send(());
            // Reports progress until one is refused, then says whether the context knows.
            while ctx.set_progress(0.5).is_ok() {
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = tx.send(ctx.is_cancelled());
            Err(JobError::retryable("gone"))
        })
        .start()
        .unwrap();
    // The handler itself has started (not only the claim).
    started
        .recv_timeout(Duration::from_secs(10))
        .expect("the handler never started");
    // Another process releases it: no cancel reaches this process; only the refused report
    // tells the handler.
    let other = Queue::open(dir.path()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let released = other
        .release_stale(&StaleTimeouts::none().lock_timeout(Duration::from_millis(1)))
        .unwrap();
    assert_eq!(released, 1);
    let told = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        told,
        "the refused report did not cancel the handler's context"
    );
    pool.shutdown();
}

#[test]
fn a_job_cancelled_while_it_waits_for_a_handler_never_runs() {
    let (_dir, queue) = pool_queue();
    let first = queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let second = queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&ran);
    let pool = WorkerPool::builder(&queue)
        .concurrency(1)
        .prefetch(1)
        .handler("k", move |ctx: &JobContext| -> Result<Value, JobError> {
            seen.lock().unwrap().push(ctx.id().clone());
            let _ = gate_rx.recv();
            Ok(json!({}))
        })
        .start()
        .unwrap();
    eventually(
        "the first job to run and the second to wait, claimed",
        || queue.get(&second).unwrap().status == Status::Running && ran.lock().unwrap().len() == 1,
    );
    assert_eq!(*ran.lock().unwrap(), vec![first.clone()]);
    queue.cancel(&second).unwrap();
    gate_tx.send(()).unwrap();
    eventually("the first job to finish", || {
        queue.get(&first).unwrap().status == Status::Succeeded
    });
    let summary = pool.shutdown();
    drop(gate_tx);
    assert_eq!(*ran.lock().unwrap(), vec![first], "the cancelled job ran");
    assert_eq!(queue.get(&second).unwrap().status, Status::Cancelled);
    assert_eq!(summary.attempts, 1);
}

#[test]
fn a_manual_retry_and_a_job_coming_due_wake_an_idle_pool() {
    let (_dir, queue) = pool_queue();
    let flaky = queue
        .enqueue(
            NewJob::new("k")
                .max_attempts(1)
                .input(json!({"fail": true})),
        )
        .unwrap()
        .job_id;
    let runs = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&runs);
    let pool = WorkerPool::builder(&queue)
        // Only a wake-up can get a job run in time.
        .poll_interval(Duration::from_secs(3600))
        .handler("k", move |ctx: &JobContext| -> Result<Value, JobError> {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let input: Value = ctx.input()?;
            if input["fail"] == true && n == 0 {
                return Err(JobError::permanent("first run fails"));
            }
            Ok(json!({}))
        })
        .start()
        .unwrap();
    eventually("the first run to fail", || {
        queue.get(&flaky).unwrap().status == Status::Failed
    });
    queue.retry(&flaky).unwrap();
    eventually("the retried job to run", || {
        queue.get(&flaky).unwrap().status == Status::Succeeded
    });
    let scheduled = queue
        .enqueue(NewJob::new("k").run_after(Duration::from_millis(300)))
        .unwrap()
        .job_id;
    eventually("the scheduled job to run once due", || {
        queue.get(&scheduled).unwrap().status == Status::Succeeded
    });
    pool.shutdown();
}

#[test]
fn a_scoped_handle_cannot_delete_another_owners_group() {
    let env = Env::new();
    let bobs = env.queue.scoped("bob");
    let group = bobs.create_group("bob's", None).unwrap();
    bobs.enqueue(NewJob::new("k").group(&group.id)).unwrap();
    let before = env.dump();
    let err = env
        .queue
        .scoped("alice")
        .delete_group(&group.id)
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert_eq!(env.dump(), before);
    assert_eq!(bobs.delete_group(&group.id).unwrap(), 1);
}

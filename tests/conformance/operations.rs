//! One engine operation at a time, at its edges, in the manner of River's driver tests:
//! what the behavioural modules reach only through a worker pool or a clock — the claim's
//! order and limit, a report and the claim after it, renewing many leases at once, releasing
//! stale leases and pruning at volume (past a chunk), racing schedule fires. Each test calls
//! the thinnest public call over the operation, on the engine `crate::ENGINE` names.

use std::time::Duration;

use jobq::{
    CatchUp, ClaimFilter, JobFilter, ManualClock, NewJob, NewSchedule, Queue, StaleTimeouts, Status,
};

use crate::common::Db;

const T0: i64 = 1_800_000_000_000;

fn open(db: &Db, clock: &ManualClock) -> Queue {
    Queue::builder(db.path())
        .clock(clock.clone())
        .open()
        .unwrap()
}

fn default_queue() -> ClaimFilter {
    ClaimFilter::queues(["default"])
}

fn count(queue: &Queue, status: Status) -> usize {
    queue
        .list(&JobFilter::new().status(status).limit(10_000))
        .unwrap()
        .jobs
        .len()
}

#[test]
fn claim_takes_ready_jobs_by_priority_then_age_up_to_its_limit() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    let low = queue.enqueue(NewJob::new("k").priority(0)).unwrap().job_id;
    clock.advance(Duration::from_millis(1));
    let high = queue.enqueue(NewJob::new("k").priority(5)).unwrap().job_id;
    clock.advance(Duration::from_millis(1));
    let low_later = queue.enqueue(NewJob::new("k").priority(0)).unwrap().job_id;
    let later = NewJob::new("k")
        .priority(9)
        .run_after(Duration::from_secs(60));
    let not_yet = queue.enqueue(later).unwrap().job_id;
    queue
        .enqueue(NewJob::new("k").queue("elsewhere").priority(9))
        .unwrap();

    let first = queue.claim("w1", 2, &default_queue()).unwrap();
    let ids: Vec<_> = first.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, vec![high, low.clone()]);
    assert!(
        first
            .iter()
            .all(|j| j.attempt == 1 && j.claim == 1 && j.worker == "w1")
    );
    let second = queue.claim("w2", 10, &default_queue()).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, low_later);
    assert!(queue.claim("w3", 10, &default_queue()).unwrap().is_empty());

    clock.advance(Duration::from_secs(61));
    let due = queue.claim("w3", 10, &default_queue()).unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].id, not_yet);
    assert_eq!(count(&queue, Status::Running), 4);
}

#[test]
fn a_report_and_the_next_claim_see_each_other_and_a_second_report_is_refused() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    let jobs = queue
        .enqueue_many((0..3).map(|i| NewJob::new("k").input(serde_json::json!(i))))
        .unwrap();
    let first = queue.claim("w", 1, &default_queue()).unwrap().remove(0);
    queue.complete(&first.lease(), "done").unwrap();
    let err = queue.complete(&first.lease(), "again").unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    assert!(err.to_string().contains(first.id.as_str()), "{err}");

    // The next claim takes the next job, never the finished one.
    let next = queue.claim("w", 1, &default_queue()).unwrap().remove(0);
    assert_eq!(next.id, jobs[1].job_id);
    // Released and claimed again by the same worker: the new claim has a new number, and
    // the old run's lease is refused although worker and attempt match.
    queue.release(&next.lease()).unwrap();
    let again = queue.claim("w", 1, &default_queue()).unwrap().remove(0);
    assert_eq!((again.id.clone(), again.claim), (next.id.clone(), 2));
    let stale = queue.complete(&next.lease(), "old run").unwrap_err();
    assert!(stale.is_lock_lost(), "{stale}");
    queue.complete(&again.lease(), "new run").unwrap();
    let job = queue.get(&again.id).unwrap();
    assert_eq!(job.status, Status::Succeeded);
    assert_eq!(job.output, Some(serde_json::json!("new run")));
}

#[test]
fn heartbeat_many_renews_only_the_leases_still_held() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    queue
        .enqueue_many((0..4).map(|_| NewJob::new("k")))
        .unwrap();
    assert!(queue.heartbeat_many("w", &[]).unwrap().is_empty());
    let claimed = queue.claim("w", 4, &default_queue()).unwrap();
    let leases: Vec<_> = claimed.iter().map(|j| j.lease()).collect();
    queue.complete(&leases[0], "done").unwrap();
    queue.cancel(&leases[1].job_id).unwrap();
    queue.release(&leases[2]).unwrap();

    clock.advance(Duration::from_secs(30));
    let held = queue.heartbeat_many("w", &leases).unwrap();
    let held_ids: Vec<_> = held.iter().map(|l| l.job_id.clone()).collect();
    assert_eq!(held_ids, vec![leases[3].job_id.clone()]);
    // Another worker's name holds none of them.
    assert!(queue.heartbeat_many("other", &leases).unwrap().is_empty());
    // The renewed heartbeat keeps the job from a stale release 30 s after its claim.
    clock.advance(Duration::from_secs(20));
    let timeouts = StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(40));
    assert_eq!(queue.release_stale(&timeouts).unwrap(), 0);
    clock.advance(Duration::from_secs(30));
    assert_eq!(queue.release_stale(&timeouts).unwrap(), 1);
}

#[test]
fn release_stale_takes_every_stale_lease_at_volume_and_fails_the_last_attempts() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    let n = 1_500;
    queue
        .enqueue_many((0..n).map(|i| NewJob::new("k").max_attempts(if i % 2 == 0 { 1 } else { 3 })))
        .unwrap();
    let claimed = queue.claim("w", n, &default_queue()).unwrap();
    assert_eq!(claimed.len(), n);
    clock.advance(Duration::from_secs(5));
    let fresh = queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let fresh_lease = queue.claim("w2", 1, &default_queue()).unwrap().remove(0);
    assert_eq!(fresh_lease.id, fresh);

    let timeouts = StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(3));
    assert_eq!(queue.release_stale(&timeouts).unwrap(), n);
    assert_eq!(count(&queue, Status::Failed), n / 2);
    assert_eq!(count(&queue, Status::Retry), n / 2);
    assert_eq!(count(&queue, Status::Running), 1);
    assert_eq!(queue.release_stale(&timeouts).unwrap(), 0);
    let err = queue.complete(&claimed[7].lease(), "late").unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    let failed = queue.get(&claimed[0].id).unwrap();
    assert_eq!(failed.error_code.as_deref(), Some("HEARTBEAT_TIMEOUT"));
}

#[test]
fn prune_deletes_past_its_chunk_and_keeps_what_a_waiting_job_reads() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    let n = 4_500; // more than two chunks
    queue
        .enqueue_many((0..n).map(|_| NewJob::new("k")))
        .unwrap();
    for job in queue.claim("w", n, &default_queue()).unwrap() {
        queue.complete(&job.lease(), "done").unwrap();
    }
    let needed = queue.enqueue(NewJob::new("dep")).unwrap().job_id;
    let dep = queue.claim("w", 1, &default_queue()).unwrap().remove(0);
    queue.complete(&dep.lease(), "read me").unwrap();
    let waiting = queue
        .enqueue(
            NewJob::new("later")
                .after(&needed)
                .run_after(Duration::from_secs(3_600)),
        )
        .unwrap()
        .job_id;

    clock.advance(Duration::from_secs(10));
    assert_eq!(
        queue
            .prune(Duration::from_secs(5), &[Status::Succeeded])
            .unwrap(),
        n
    );
    assert_eq!(count(&queue, Status::Succeeded), 1);
    assert_eq!(queue.get(&needed).unwrap().status, Status::Succeeded);
    assert_eq!(queue.get(&waiting).unwrap().status, Status::Queued);
    assert_eq!(queue.prune(Duration::from_secs(5), &[]).unwrap(), 0);
}

#[test]
fn racing_fires_of_a_due_schedule_from_eight_handles_enqueue_each_slot_once() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let setup = open(&db, &clock);
    setup
        .add_schedule(
            NewSchedule::every("tick", Duration::from_secs(60), "tick").catch_up(CatchUp::All),
        )
        .unwrap();
    let handles: Vec<Queue> = (0..8).map(|_| open(&db, &clock)).collect();
    let mut fired = 0;
    for _ in 0..10 {
        clock.advance(Duration::from_secs(150));
        let barrier = std::sync::Barrier::new(handles.len());
        fired += std::thread::scope(|s| {
            let racers: Vec<_> = handles
                .iter()
                .map(|q| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        q.fire_schedules().unwrap()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).sum::<usize>()
        });
    }
    let jobs = setup.list(&JobFilter::new().limit(10_000)).unwrap().jobs;
    assert_eq!(fired, jobs.len(), "the calls' counts and the jobs disagree");
    // 1,500 s of one-minute slots, each once.
    assert_eq!(jobs.len(), 25);
}

#[test]
fn completions_refill_the_slot_with_the_next_job_in_claim_order_of_the_served_kinds() {
    // One handler and no prefetch: after the first claim, every job is claimed by the
    // completer's refill in the statement (or transaction) that records the one before.
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    let mut expected = Vec::new();
    for i in 0..60_i32 {
        let priority = (i * 7) % 5;
        let id = queue
            .enqueue(NewJob::new("served").priority(priority))
            .unwrap()
            .job_id;
        expected.push((-priority, id));
    }
    let other = queue
        .enqueue(NewJob::new("not_served").priority(9))
        .unwrap()
        .job_id;
    let later = queue
        .enqueue(
            NewJob::new("served")
                .priority(9)
                .run_after(Duration::from_secs(3_600)),
        )
        .unwrap()
        .job_id;
    // Claim order: priority first, then age (ids rise with time).
    expected.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.as_str().cmp(b.1.as_str())));
    let expected: Vec<_> = expected.into_iter().map(|(_, id)| id).collect();

    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&started);
    let summary = jobq::WorkerPool::builder(&queue)
        .concurrency(1)
        .prefetch(0)
        .maintenance_interval(None)
        .schedule_interval(None)
        .handler("served", move |ctx: &jobq::JobContext| {
            seen.lock().unwrap().push((ctx.id().clone(), ctx.attempt()));
            Ok(serde_json::Value::Null)
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 60);
    let started = started.lock().unwrap().clone();
    assert!(started.iter().all(|(_, attempt)| *attempt == 1));
    let order: Vec<_> = started.into_iter().map(|(id, _)| id).collect();
    assert_eq!(order, expected, "the refills did not follow claim order");
    assert_eq!(queue.get(&other).unwrap().status, Status::Queued);
    assert_eq!(queue.get(&later).unwrap().status, Status::Queued);
}

//! Rollups and series: every transition of a job is counted by the transaction that makes it,
//! so the rollups agree exactly with the jobs that exist plus those removed — after any mix
//! of claims, outcomes, snoozes, releases, cancels, retries, stale releases, dependency
//! cascades, prunes and deletes; folding minutes into hours keeps every total; a handle
//! scoped to an owner sees only its owner's counts.

use std::collections::BTreeMap;
use std::time::Duration;

use jobq::{
    ClaimFilter, Job, JobError, ManualClock, NewJob, Queue, RetryPolicy, RollupRetention,
    SeriesQuery, StaleTimeouts, StatsFilter, Status,
};

use crate::common::{Db, T0, all_jobs};

const HOUR: Duration = Duration::from_secs(3600);

/// Totals of a series over everything the rollups keep (a year, by the hour).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Totals {
    pub enqueued: i64,
    pub started: i64,
    pub finished: i64,
    pub revived: i64,
    pub succeeded: i64,
}

pub(crate) fn totals(queue: &Queue, q: &str, kind: &str) -> Totals {
    let series = queue
        .series(
            &SeriesQuery::new()
                .window(HOUR * 24 * 365)
                .step(HOUR)
                .queue(q)
                .kind(kind),
        )
        .unwrap();
    let mut t = Totals::default();
    for p in &series.points {
        t.enqueued += p.enqueued;
        t.started += p.started;
        t.finished += p.succeeded + p.failed + p.cancelled;
        t.revived += p.revived;
        t.succeeded += p.succeeded;
    }
    t
}

/// (owner, queue, kind).
type Key = (Option<String>, String, String);

/// What the jobs say the totals must be: each job enqueued once, claimed `claims` times,
/// and — finished entries less revivals — finished once if its status is terminal.
/// `removed` are jobs pruned or deleted since (as they were when removed).
pub(crate) fn assert_rollups_agree(queue: &Queue, removed: &[Job]) {
    let mut expected: BTreeMap<Key, (i64, i64, i64)> = BTreeMap::new();
    for job in all_jobs(queue).iter().chain(removed) {
        let e = expected
            .entry((job.owner.clone(), job.queue.clone(), job.kind.clone()))
            .or_default();
        e.0 += 1;
        e.1 += i64::from(job.claims);
        e.2 += i64::from(job.status.is_terminal());
    }
    // Whole queue and kind, all owners, on the admin handle.
    let mut by_queue_kind: BTreeMap<(String, String), (i64, i64, i64)> = BTreeMap::new();
    for ((_, q, k), (a, b, c)) in &expected {
        let e = by_queue_kind.entry((q.clone(), k.clone())).or_default();
        e.0 += a;
        e.1 += b;
        e.2 += c;
    }
    for ((q, k), (enqueued, claims, terminal)) in &by_queue_kind {
        let t = totals(queue, q, k);
        assert_eq!(
            (t.enqueued, t.started, t.finished - t.revived),
            (*enqueued, *claims, *terminal),
            "rollups of queue {q}, kind {k} (enqueued, started, finished less revived): {t:?}"
        );
    }
    // The counts by status the transactions keep agree with the jobs, whole and by queue.
    let jobs = all_jobs(queue);
    let mut queues: Vec<Option<&str>> = jobs.iter().map(|j| Some(j.queue.as_str())).collect();
    queues.push(None);
    queues.sort_unstable();
    queues.dedup();
    for q in queues {
        let filter = match q {
            Some(q) => StatsFilter::new().queue(q),
            None => StatsFilter::new(),
        };
        let stats = queue.stats(&filter).unwrap();
        for status in [
            Status::Blocked,
            Status::Queued,
            Status::Running,
            Status::Retry,
            Status::Succeeded,
            Status::Failed,
            Status::Cancelled,
        ] {
            let listed = jobs
                .iter()
                .filter(|j| j.status == status && q.is_none_or(|q| j.queue == q))
                .count() as i64;
            assert_eq!(stats.count(status), listed, "{status} jobs of queue {q:?}");
        }
    }
    // Each owner's, on its scoped handle.
    for ((owner, q, k), (enqueued, claims, terminal)) in &expected {
        let Some(owner) = owner else { continue };
        let t = totals(&queue.scoped(owner.clone()), q, k);
        assert_eq!(
            (t.enqueued, t.started, t.finished - t.revived),
            (*enqueued, *claims, *terminal),
            "rollups of owner {owner}, queue {q}, kind {k}: {t:?}"
        );
    }
}

fn open(db: &Db, clock: &ManualClock) -> Queue {
    Queue::builder(db.path())
        .clock(clock.clone())
        .retry_policy(RetryPolicy::fixed(Duration::from_secs(1)))
        .open()
        .unwrap()
}

fn all() -> ClaimFilter {
    ClaimFilter::queues(["a", "b"])
}

#[test]
fn every_transition_is_counted_by_the_transaction_that_makes_it() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    let mut removed = Vec::new();

    // Arrivals in two queues and kinds, with and without owners, one a batch.
    queue
        .enqueue_many((0..6).map(|i| NewJob::new(if i % 2 == 0 { "x" } else { "y" }).queue("a")))
        .unwrap();
    for owner in ["acme", "globex"] {
        queue
            .enqueue_many((0..3).map(|_| NewJob::new("x").queue("b").owner(owner)))
            .unwrap();
    }
    // An idempotent repeat inserts nothing and counts nothing.
    queue
        .enqueue(NewJob::new("x").queue("a").idempotency_key("once"))
        .unwrap();
    queue
        .enqueue(NewJob::new("x").queue("a").idempotency_key("once"))
        .unwrap();
    assert_rollups_agree(&queue, &removed);

    // Claims, then every outcome a worker reports.
    clock.advance(Duration::from_millis(250));
    let claimed = queue.claim("w", 12, &all()).unwrap();
    assert_eq!(claimed.len(), 12);
    clock.advance(Duration::from_millis(300));
    let leases: Vec<_> = claimed.iter().map(|j| j.lease()).collect();
    queue.complete(&leases[0], "done").unwrap();
    queue.complete(&leases[1], "done").unwrap();
    queue
        .fail(&leases[2], &JobError::retryable("boom"))
        .unwrap(); // retry
    queue.fail(&leases[3], &JobError::permanent("bad")).unwrap(); // failed
    queue.snooze(&leases[4], Duration::from_secs(5)).unwrap();
    queue.release(&leases[5]).unwrap();
    queue.cancel(&leases[6].job_id).unwrap(); // a running job cancelled
    assert_rollups_agree(&queue, &removed);

    // A stale release: the rest of the claims time out.
    clock.advance(Duration::from_secs(120));
    let stale = StaleTimeouts::default().heartbeat_timeout(Duration::from_secs(60));
    assert_eq!(queue.release_stale(&stale).unwrap(), 5);
    assert_rollups_agree(&queue, &removed);

    // Admins: a manual retry of the failed job, the dead letter back, a cancel of a queued
    // job, a delete.
    queue.retry(&leases[3].job_id).unwrap();
    let more = queue.claim("w", 20, &all()).unwrap();
    for job in &more {
        queue
            .fail(&job.lease(), &JobError::permanent("again"))
            .unwrap();
    }
    assert!(queue.retry_dead(None, None).unwrap() > 0);
    let queued = all_jobs(&queue)
        .into_iter()
        .find(|j| j.status == Status::Queued)
        .unwrap();
    queue.cancel(&queued.id).unwrap();
    let gone = queue.get(&queued.id).unwrap();
    queue.delete(&queued.id).unwrap();
    removed.push(gone);
    assert_rollups_agree(&queue, &removed);

    // A dependency cascade: the dependency fails, its dependent is cancelled; retried, the
    // dependent is revived.
    let dep = queue
        .enqueue(NewJob::new("parent").queue("a").max_attempts(1))
        .unwrap()
        .job_id;
    let child = queue
        .enqueue(NewJob::new("child").queue("a").after(&dep))
        .unwrap()
        .job_id;
    let parent = queue
        .claim("w", 1, &ClaimFilter::queues(["a"]).kinds(["parent"]))
        .unwrap();
    queue
        .fail(&parent[0].lease(), &JobError::permanent("no"))
        .unwrap();
    assert_eq!(queue.get(&child).unwrap().status, Status::Cancelled);
    assert_rollups_agree(&queue, &removed);
    queue.retry(&dep).unwrap();
    assert_eq!(queue.get(&child).unwrap().status, Status::Blocked);
    assert_rollups_agree(&queue, &removed);

    // Pruning removes jobs, never history.
    clock.advance(HOUR);
    let before: Vec<Job> = all_jobs(&queue)
        .into_iter()
        .filter(|j| j.status.is_terminal())
        .collect();
    let pruned = queue.prune(Duration::from_secs(60), &[]).unwrap();
    assert!(pruned > 0);
    let left: Vec<_> = all_jobs(&queue).into_iter().map(|j| j.id).collect();
    removed.extend(before.into_iter().filter(|j| !left.contains(&j.id)));
    assert_rollups_agree(&queue, &removed);
}

#[test]
fn a_series_shows_each_step_with_counts_and_percentiles() {
    let db = Db::fresh();
    // At the start of a minute.
    let start = T0 - T0.rem_euclid(60_000);
    let clock = ManualClock::new(start);
    let queue = open(&db, &clock);
    queue
        .enqueue_many((0..10).map(|_| NewJob::new("k").queue("a")))
        .unwrap();
    // Claimed 2 s after they were due, run 500 ms each, in the next minute.
    clock.advance(Duration::from_secs(62));
    let claimed = queue.claim("w", 10, &all()).unwrap();
    clock.advance(Duration::from_millis(500));
    for job in &claimed[..9] {
        queue.complete(&job.lease(), ()).unwrap();
    }
    queue
        .fail(&claimed[9].lease(), &JobError::permanent("x"))
        .unwrap();
    clock.advance(Duration::from_secs(60));

    let series = queue
        .series(&SeriesQuery::new().window(Duration::from_secs(300)))
        .unwrap();
    assert_eq!(series.step_s, 60);
    assert_eq!(series.points.len(), 5);
    let times: Vec<i64> = series.points.iter().map(|p| p.t.as_millis()).collect();
    assert_eq!(times[2], start, "oldest first, one point a step: {times:?}");
    assert!(times.windows(2).all(|w| w[1] - w[0] == 60_000));
    let (arrived, ran, idle) = (&series.points[2], &series.points[3], &series.points[4]);
    assert_eq!((arrived.enqueued, arrived.started), (10, 0));
    assert_eq!(
        (ran.started, ran.succeeded, ran.failed, ran.enqueued),
        (10, 9, 1, 0)
    );
    let wait = ran.wait_ms.p50.unwrap();
    assert!((56_234.0..=74_989.0).contains(&wait), "waited 62 s: {wait}");
    let run = ran.run_ms.p95.unwrap();
    assert!((422.0..=562.0).contains(&run), "ran 500 ms: {run}");
    assert_eq!(idle.started, 0);
    assert_eq!(idle.run_ms.p50, None, "an empty step has no percentiles");
    assert!(series.points[0].wait_ms.p99.is_none());

    // Of a queue and a kind: only theirs.
    let other = queue
        .series(
            &SeriesQuery::new()
                .window(Duration::from_secs(300))
                .queue("b"),
        )
        .unwrap();
    assert!(other.points.iter().all(|p| p.enqueued == 0));
    let of_kind = queue
        .series(
            &SeriesQuery::new()
                .window(Duration::from_secs(300))
                .kind("k"),
        )
        .unwrap();
    assert_eq!(of_kind, series);

    // Bad shapes are refused, naming what was wrong.
    let err = queue
        .series(&SeriesQuery::new().step(Duration::from_secs(30)))
        .unwrap_err();
    assert!(err.to_string().contains("step"), "{err}");
    let err = queue
        .series(&SeriesQuery::new().window(Duration::from_secs(86400 * 30)))
        .unwrap_err();
    assert!(err.to_string().contains("points"), "{err}");
}

#[test]
fn folding_minutes_into_hours_keeps_every_total() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    for _ in 0..5 {
        queue
            .enqueue_many((0..4).map(|_| NewJob::new("k").queue("a")))
            .unwrap();
        for job in queue.claim("w", 4, &all()).unwrap() {
            queue.complete(&job.lease(), ()).unwrap();
        }
        clock.advance(Duration::from_secs(20 * 60));
    }
    let before = totals(&queue, "a", "k");
    assert_eq!((before.enqueued, before.succeeded), (20, 20));
    let by_minute = |queue: &Queue| -> i64 {
        queue
            .series(&SeriesQuery::new().window(HOUR * 6))
            .unwrap()
            .points
            .iter()
            .map(|p| p.enqueued)
            .sum()
    };
    assert_eq!(by_minute(&queue), 20);

    // Three days on, minutes kept two days: they fold into hours.
    clock.advance(HOUR * 72);
    let keep = RollupRetention::default().minutes(HOUR * 48);
    assert!(queue.fold_rollups(&keep).unwrap() > 0);
    assert_eq!(
        totals(&queue, "a", "k"),
        before,
        "folding keeps every total"
    );
    let by_hour = queue
        .series(&SeriesQuery::new().window(HOUR * 80).step(HOUR))
        .unwrap();
    assert_eq!(by_hour.points.iter().map(|p| p.enqueued).sum::<i64>(), 20);
    // Folding again changes nothing.
    assert_eq!(queue.fold_rollups(&keep).unwrap(), 0);
    assert_eq!(totals(&queue, "a", "k"), before);

    // Hours past their keep fold into the all-time rows, which no window reaches (the
    // metrics' totals read them).
    let keep = keep.hours(HOUR * 24);
    assert!(queue.fold_rollups(&keep).unwrap() > 0);
    assert_eq!(totals(&queue, "a", "k").enqueued, 0);
}

#[test]
fn an_owner_sees_only_its_own_counts() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    queue
        .enqueue_many((0..3).map(|_| NewJob::new("k").queue("a").owner("acme")))
        .unwrap();
    queue
        .enqueue_many((0..5).map(|_| NewJob::new("k").queue("a").owner("globex")))
        .unwrap();
    queue.enqueue(NewJob::new("k").queue("a")).unwrap();
    let acme = queue.scoped("acme");
    let job = acme.claim("w", 1, &all()).unwrap();
    acme.complete(&job[0].lease(), ()).unwrap();
    assert_eq!(totals(&acme, "a", "k").enqueued, 3);
    assert_eq!(totals(&acme, "a", "k").succeeded, 1);
    assert_eq!(totals(&queue.scoped("globex"), "a", "k").enqueued, 5);
    assert_eq!(totals(&queue.scoped("nobody"), "a", "k").enqueued, 0);
    assert_eq!(totals(&queue, "a", "k").enqueued, 9);
}

#[test]
fn a_range_of_creation_times_lists_the_jobs_created_in_it_page_by_page() {
    let db = Db::fresh();
    let clock = ManualClock::new(T0);
    let queue = open(&db, &clock);
    // Another process whose clock runs ten hours ahead enqueues first: the ids made after
    // its job run ahead of their jobs' creation times (ids only ever rise).
    let ahead = ManualClock::new(T0 + 10 * 3_600_000);
    open(&db, &ahead)
        .enqueue(NewJob::new("k").queue("elsewhere"))
        .unwrap();
    let mut minutes = Vec::new();
    for n in [3, 4, 2] {
        let ids: Vec<_> = queue
            .enqueue_many((0..n).map(|_| NewJob::new("k")))
            .unwrap()
            .into_iter()
            .map(|e| e.job_id)
            .collect();
        minutes.push(ids);
        clock.advance(Duration::from_secs(60));
    }
    let at = |s: i64| Some(jobq::Timestamp::from_millis(T0 + s * 1000));
    let listed = |filter: jobq::JobFilter| -> Vec<jobq::JobId> {
        let mut out = Vec::new();
        let mut filter = filter.queue("default").limit(2);
        loop {
            let page = queue.list(&filter).unwrap();
            assert!(page.jobs.len() <= 2);
            out.extend(page.jobs.into_iter().map(|j| j.id));
            match page.next {
                Some(next) => filter = filter.after(next),
                None => return out,
            }
        }
    };
    let mut second = minutes[1].clone();
    second.reverse();
    assert_eq!(
        listed(jobq::JobFilter::new().created_between(at(60), at(120))),
        second,
        "the second minute's jobs, newest first, over two pages"
    );
    assert_eq!(
        listed(jobq::JobFilter::new().created_between(at(60), None)).len(),
        6
    );
    assert_eq!(
        listed(jobq::JobFilter::new().created_between(None, at(60))).len(),
        3
    );
    assert!(listed(jobq::JobFilter::new().created_between(at(1000), None)).is_empty());
    let err = queue
        .list(&jobq::JobFilter::new().created_between(at(120), at(60)))
        .unwrap_err();
    assert!(err.to_string().contains("created_to"), "{err}");
}

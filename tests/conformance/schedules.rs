//! Schedules: periodic jobs fired once per slot, however many processes take part, with the
//! catch-up rule after downtime; pause, resume, remove; owner-scoped like jobs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jobq::{CatchUp, Clock, Error, JobFilter, NewSchedule, Queue, WorkerPool};
use serde_json::json;

use crate::common::{Db, Env, T0, child_env, is_child, spawn_child};

const MIN: u64 = 60;

fn keys(q: &Queue) -> Vec<String> {
    let mut keys: Vec<String> = q
        .list(&JobFilter::new().limit(10_000))
        .unwrap()
        .jobs
        .into_iter()
        .filter_map(|j| j.idempotency_key)
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_schedule_fires_each_slot_once_with_the_slots_key() {
    let env = Env::new();
    let q = &env.queue;
    let s = q
        .add_schedule(
            NewSchedule::every("tick", Duration::from_secs(MIN), "ping")
                .input(json!({"n": 1}))
                .queue("periodic")
                .priority(3),
        )
        .unwrap();
    assert_eq!(s.next_fire.as_millis(), T0 + 60_000);
    assert_eq!(q.fire_schedules().unwrap(), 0, "not due yet");
    env.advance(MIN);
    assert_eq!(q.fire_schedules().unwrap(), 1);
    assert_eq!(q.fire_schedules().unwrap(), 0, "a slot fires once");
    let jobs = q.list(&JobFilter::new()).unwrap().jobs;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(
        (job.kind.as_str(), job.queue.as_str(), job.priority),
        ("ping", "periodic", 3)
    );
    assert_eq!(job.input, json!({"n": 1}));
    let slot = jobq::Timestamp::from_millis(T0 + 60_000).to_rfc3339();
    assert_eq!(
        job.idempotency_key.as_deref(),
        Some(format!("schedule:tick:{slot}").as_str())
    );
    let s = q.schedule("tick").unwrap();
    assert_eq!(
        (s.last_fire.unwrap().as_millis(), s.next_fire.as_millis()),
        (T0 + 60_000, T0 + 120_000)
    );
    env.advance(MIN);
    assert_eq!(q.fire_schedules().unwrap(), 1);
    assert_eq!(keys(q).len(), 2);
}

#[test]
fn after_downtime_the_catch_up_rule_says_what_missed_slots_enqueue() {
    let env = Env::new();
    let q = &env.queue;
    for (name, catch_up) in [
        ("none", CatchUp::None),
        ("one", CatchUp::One),
        ("all", CatchUp::All),
    ] {
        q.add_schedule(NewSchedule::every(name, Duration::from_secs(MIN), name).catch_up(catch_up))
            .unwrap();
    }
    // Nothing ran for ten minutes and 40 s: slots 1..=10 were missed (the last one 40 s
    // ago: more than half its period late).
    env.advance(10 * MIN + 40);
    q.fire_schedules().unwrap();
    let count = |kind: &str| {
        q.list(&JobFilter::new().kind(kind.to_string()).limit(1000))
            .unwrap()
            .jobs
            .len()
    };
    assert_eq!((count("none"), count("one"), count("all")), (0, 1, 10));
    // From then on each goes on from the next slot.
    for name in ["none", "one", "all"] {
        assert_eq!(
            q.schedule(name).unwrap().next_fire.as_millis(),
            T0 + 11 * 60_000
        );
    }
    // Slot 11, ten seconds ago: on time for all of them.
    env.advance(30);
    q.fire_schedules().unwrap();
    assert_eq!((count("none"), count("one"), count("all")), (1, 2, 11));
    // A cron schedule too: every minute, an hour missed, `all` catches up 60 slots.
    q.add_schedule(NewSchedule::cron("minutely", "* * * * *", "cron").catch_up(CatchUp::All))
        .unwrap();
    env.advance(3600);
    q.fire_schedules().unwrap();
    assert_eq!(count("cron"), 60);
}

#[test]
fn pause_resume_and_remove() {
    let env = Env::new();
    let q = &env.queue;
    q.add_schedule(NewSchedule::every("tick", Duration::from_secs(MIN), "ping"))
        .unwrap();
    assert!(q.pause_schedule("tick").unwrap().paused);
    env.advance(5 * MIN);
    assert_eq!(
        q.fire_schedules().unwrap(),
        0,
        "a paused schedule fires nothing"
    );
    let resumed = q.resume_schedule("tick").unwrap();
    assert!(!resumed.paused);
    assert!(
        resumed.next_fire.as_millis() > q.now().as_millis(),
        "the paused slots are skipped"
    );
    env.advance(MIN);
    assert_eq!(q.fire_schedules().unwrap(), 1);
    q.remove_schedule("tick").unwrap();
    assert!(q.schedules().unwrap().is_empty());
    env.advance(MIN);
    assert_eq!(q.fire_schedules().unwrap(), 0);
    assert_eq!(keys(q).len(), 1, "the jobs it enqueued stay");
    assert!(matches!(
        q.pause_schedule("tick"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn bad_schedules_are_refused_and_change_nothing() {
    let env = Env::new();
    let q = &env.queue;
    q.add_schedule(NewSchedule::every(
        "taken",
        Duration::from_secs(MIN),
        "ping",
    ))
    .unwrap();
    let before = env.dump();
    for (schedule, field) in [
        (NewSchedule::cron("a", "61 * * * *", "k"), "cron"),
        (NewSchedule::cron("a", "0 0 * * * *", "k"), "cron"),
        (
            NewSchedule::cron("a", "@hourly", "k").timezone("Mars/Olympus"),
            "timezone",
        ),
        (NewSchedule::every("a", Duration::ZERO, "k"), "every"),
        (
            NewSchedule::every("a", Duration::from_millis(999), "k"),
            "every",
        ),
        (
            NewSchedule::cron("a", format!("0 0 * * {}", "1,".repeat(300)), "k"),
            "cron",
        ),
        (
            NewSchedule::cron("a", "@hourly", "k").timezone("Europe/".repeat(20)),
            "timezone",
        ),
        (NewSchedule::every("", Duration::from_secs(1), "k"), "name"),
        (NewSchedule::every("a", Duration::from_secs(1), ""), "kind"),
        (
            NewSchedule::every("a", Duration::from_secs(1), "k").max_attempts(0),
            "max_attempts",
        ),
    ] {
        let err = q.add_schedule(schedule).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidInput { field: f, .. } if *f == field),
            "{field}: {err}"
        );
    }
    let err = q
        .add_schedule(NewSchedule::every("taken", Duration::from_secs(5), "other"))
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
    assert_eq!(env.dump(), before);
}

#[test]
fn schedules_are_owner_scoped_like_jobs() {
    let env = Env::new();
    let acme = env.queue.scoped("acme");
    let globex = env.queue.scoped("globex");
    acme.add_schedule(NewSchedule::every(
        "report",
        Duration::from_secs(MIN),
        "report",
    ))
    .unwrap();
    // The same name for another owner is another schedule.
    globex
        .add_schedule(NewSchedule::every(
            "report",
            Duration::from_secs(MIN),
            "report",
        ))
        .unwrap();
    assert_eq!(acme.schedules().unwrap().len(), 1);
    assert_eq!(env.queue.schedules().unwrap().len(), 2);
    assert!(matches!(
        env.queue.pause_schedule("report"),
        Err(Error::InvalidInput { .. })
    ));
    acme.pause_schedule("report").unwrap();
    assert!(!globex.schedule("report").unwrap().paused);
    env.advance(MIN);
    // A scoped handle fires only its owner's schedules, and their jobs are that owner's.
    assert_eq!(globex.fire_schedules().unwrap(), 1);
    assert_eq!(acme.fire_schedules().unwrap(), 0);
    let jobs = env.queue.list(&JobFilter::new()).unwrap().jobs;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].owner.as_deref(), Some("globex"));
    assert!(acme.list(&JobFilter::new()).unwrap().jobs.is_empty());
}

/// A clock every process reads from one file: the test moves time for all of them.
#[derive(Debug)]
struct FileClock(std::path::PathBuf);

impl Clock for FileClock {
    fn now_ms(&self) -> i64 {
        loop {
            if let Ok(text) = std::fs::read_to_string(&self.0) {
                if let Ok(ms) = text.trim().parse() {
                    return ms;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// A process that takes part in firing (a worker pool that runs nothing, on a queue the
/// schedule does not use), until killed.
#[test]
fn child_schedule_firer() {
    if !is_child() {
        return;
    }
    let queue = Queue::builder(child_env("JOBQ_TEST_DB"))
        .clock(FileClock(child_env("JOBQ_TEST_CLOCK").into()))
        .open()
        .unwrap();
    let _pool = WorkerPool::builder(&queue)
        .queues(["elsewhere"])
        .schedule_interval(Some(Duration::from_millis(10)))
        .handler("noop", |_: &jobq::JobContext| Ok(serde_json::Value::Null))
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn five_processes_fire_each_slot_exactly_once() {
    let fresh = Db::fresh();
    let db = fresh.path();
    let clock = fresh.dir.path().join("clock");
    let mut now = T0;
    std::fs::write(&clock, now.to_string()).unwrap();
    let queue = Queue::builder(&db)
        .clock(FileClock(clock.clone()))
        .open()
        .unwrap();
    queue
        .add_schedule(NewSchedule::every("tick", Duration::from_secs(MIN), "tick"))
        .unwrap();
    queue
        .add_schedule(NewSchedule::cron("cron", "* * * * *", "cron"))
        .unwrap();
    let mut children: Vec<_> = (0..5)
        .map(|_| {
            spawn_child(
                "conformance::schedules::child_schedule_firer",
                &[
                    ("JOBQ_TEST_DB", db.display().to_string()),
                    ("JOBQ_TEST_CLOCK", clock.display().to_string()),
                ],
            )
        })
        .collect();
    let count = |kind: &str| {
        queue
            .list(&JobFilter::new().kind(kind.to_string()).limit(1000))
            .unwrap()
            .jobs
            .len()
    };
    const SLOTS: usize = 30;
    for slot in 1..=SLOTS {
        now += 60_000;
        std::fs::write(&clock, now.to_string()).unwrap();
        // Every process sees the slot; wait until it fired (one of them did).
        let deadline = Instant::now() + Duration::from_secs(30);
        while count("tick") < slot || count("cron") < slot {
            assert!(Instant::now() < deadline, "slot {slot} did not fire");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Give the others the time to try it too.
        std::thread::sleep(Duration::from_millis(40));
    }
    for c in &mut children {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let keys: Vec<String> = keys(&queue);
    let distinct: HashSet<&String> = keys.iter().collect();
    assert_eq!(
        keys.len(),
        2 * SLOTS,
        "one job per slot and schedule: {keys:?}"
    );
    assert_eq!(distinct.len(), keys.len());
    assert_eq!((count("tick"), count("cron")), (SLOTS, SLOTS));
}

#[test]
fn catch_up_all_is_bounded_per_schedule_and_firing() {
    let env = Env::new();
    let q = &env.queue;
    q.add_schedule(
        NewSchedule::every("tick", Duration::from_secs(1), "tick").catch_up(CatchUp::All),
    )
    .unwrap();
    // A day without any process: 86,400 slots missed, at most MAX_CATCH_UP fired.
    env.advance(86_400);
    assert_eq!(q.fire_schedules().unwrap(), jobq::MAX_CATCH_UP);
    assert_eq!(
        q.fire_schedules().unwrap(),
        0,
        "the next firing starts after now"
    );
    let keys = keys(q);
    assert_eq!(keys.len(), jobq::MAX_CATCH_UP);
    // The latest ones.
    let last = jobq::Timestamp::from_millis(T0 + 86_400_000).to_rfc3339();
    assert!(keys.contains(&format!("schedule:tick:{last}")), "{keys:?}");
}

#[test]
fn an_owner_has_at_most_its_allowance_of_schedules() {
    let db = Db::fresh();
    let admin = Queue::builder(db.path())
        .max_schedules_per_owner(3)
        .open()
        .unwrap();
    let acme = admin.scoped("acme");
    for i in 0..3 {
        acme.add_schedule(NewSchedule::every(
            format!("s{i}"),
            Duration::from_secs(60),
            "k",
        ))
        .unwrap();
    }
    let before = crate::common::dump(admin.path());
    let err = acme
        .add_schedule(NewSchedule::every("s3", Duration::from_secs(60), "k"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { .. }) && err.to_string().contains("3 schedules"),
        "{err}"
    );
    // Through an admin handle for that owner too.
    assert!(
        admin
            .add_schedule(NewSchedule::every("s3", Duration::from_secs(60), "k").owner("acme"))
            .is_err()
    );
    assert_eq!(crate::common::dump(admin.path()), before);
    // Replacing one of the three is no fourth; another owner and the admin are not counted.
    acme.add_schedule(NewSchedule::every("s0", Duration::from_secs(120), "k").replace(true))
        .unwrap();
    admin
        .scoped("globex")
        .add_schedule(NewSchedule::every("s0", Duration::from_secs(60), "k"))
        .unwrap();
    for i in 0..5 {
        admin
            .add_schedule(NewSchedule::every(
                format!("admin{i}"),
                Duration::from_secs(60),
                "k",
            ))
            .unwrap();
    }
    acme.remove_schedule("s1").unwrap();
    acme.add_schedule(NewSchedule::every("s3", Duration::from_secs(60), "k"))
        .unwrap();
}

#[test]
fn replace_changes_a_schedule_in_place() {
    let env = Env::new();
    let q = &env.queue;
    q.add_schedule(NewSchedule::every(
        "report",
        Duration::from_secs(MIN),
        "report",
    ))
    .unwrap();
    env.advance(MIN);
    assert_eq!(q.fire_schedules().unwrap(), 1);
    q.pause_schedule("report").unwrap();
    let before = env.dump();
    let err = q
        .add_schedule(NewSchedule::cron("report", "0 2 * * *", "summary"))
        .unwrap_err();
    assert!(matches!(err, Error::Duplicate { .. }), "{err}");
    assert_eq!(env.dump(), before, "without replace nothing changes");
    let replaced = q
        .add_schedule(
            NewSchedule::cron("report", "0 2 * * *", "summary")
                .timezone("Europe/Paris")
                .input(json!({"full": true}))
                .replace(true),
        )
        .unwrap();
    assert_eq!(
        (
            replaced.cron.as_deref(),
            replaced.every.as_deref(),
            replaced.kind.as_str(),
            replaced.paused,
            replaced.last_fire.map(|t| t.as_millis())
        ),
        (Some("0 2 * * *"), None, "summary", true, Some(T0 + 60_000))
    );
    assert_eq!(q.schedules().unwrap().len(), 1);
    assert_eq!(q.schedule("report").unwrap(), replaced);
    // Replace with a name not yet taken adds it.
    q.add_schedule(NewSchedule::every("new", Duration::from_secs(MIN), "k").replace(true))
        .unwrap();
    assert_eq!(q.schedules().unwrap().len(), 2);
}

#[test]
fn a_bad_cron_expression_is_explained_in_words() {
    let env = Env::new();
    let q = &env.queue;
    for (expression, words) in [
        ("61 * * * *", "the minute field \"61\" is not valid"),
        ("0 25 * * *", "the hour field \"25\""),
        ("0 0 32 * *", "the day-of-month field \"32\""),
        ("0 0 * 13 *", "the month field \"13\""),
        ("0 0 * * 9", "the day-of-week field \"9\""),
        ("0 0 * * FUN", "the day-of-week field \"FUN\""),
        ("*/0 * * * *", "step cannot be zero"),
        ("0 0 * * * *", "has 6 fields"),
        ("0 0 * * * *", "seconds are not supported"),
        ("* *", "has 2 fields"),
        ("@weekdays", "\"@weekdays\" is not an alias"),
    ] {
        let err = q
            .add_schedule(NewSchedule::cron("x", expression, "k"))
            .unwrap_err();
        let message = err.to_string();
        assert!(message.contains(words), "{expression}: {message}");
    }
    assert!(q.schedules().unwrap().is_empty());
}

#[test]
fn an_admin_reaches_a_schedule_whose_name_two_owners_share_through_its_owner() {
    let env = Env::new();
    for owner in ["acme", "globex"] {
        env.queue
            .scoped(owner)
            .add_schedule(NewSchedule::every("report", Duration::from_secs(MIN), "r"))
            .unwrap();
    }
    let err = env.queue.pause_schedule("report").unwrap_err();
    assert!(
        err.to_string().contains("acme") && err.to_string().contains("globex"),
        "{err}"
    );
    env.queue.scoped("acme").pause_schedule("report").unwrap();
    env.queue
        .scoped("globex")
        .remove_schedule("report")
        .unwrap();
    // Now one owner has it: the admin's name alone reaches it.
    assert!(env.queue.schedule("report").unwrap().paused);
    env.queue.resume_schedule("report").unwrap();
    assert!(!env.queue.schedule("report").unwrap().paused);
}

#[test]
fn a_schedule_fired_by_a_pool_wakes_that_pool_at_once() {
    let env = Env::new();
    let q = &env.queue;
    q.add_schedule(NewSchedule::every("tick", Duration::from_secs(1), "tick"))
        .unwrap();
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&ran);
    // An hour between polls: only the firing's own wake-up can make it claim.
    let pool = WorkerPool::builder(q)
        .poll_interval(Duration::from_secs(3600))
        .schedule_interval(Some(Duration::from_millis(10)))
        .handler("tick", move |_: &jobq::JobContext| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(serde_json::Value::Null)
        })
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    env.advance(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ran.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "the fired job was never run");
        std::thread::sleep(Duration::from_millis(10));
    }
    pool.shutdown();
}

#[test]
fn two_processes_racing_a_schedule_with_different_clocks_fire_each_slot_once() {
    let db = Db::fresh();
    let setup = Queue::builder(db.path())
        .clock(jobq::ManualClock::new(T0))
        .open()
        .unwrap();
    setup
        .add_schedule(
            NewSchedule::every("tick", Duration::from_secs(MIN), "tick").catch_up(CatchUp::All),
        )
        .unwrap();
    // One handle's clock runs two minutes ahead of the other's, as hosts' clocks do.
    let behind_clock = jobq::ManualClock::new(T0);
    let ahead_clock = jobq::ManualClock::new(T0 + 120_000);
    let behind = Queue::builder(db.path())
        .clock(behind_clock.clone())
        .open()
        .unwrap();
    let ahead = Queue::builder(db.path())
        .clock(ahead_clock.clone())
        .open()
        .unwrap();
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for _ in 0..60 {
        behind_clock.advance(Duration::from_secs(180));
        ahead_clock.advance(Duration::from_secs(180));
        let barrier = std::sync::Barrier::new(2);
        std::thread::scope(|s| {
            for q in [&behind, &ahead] {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    q.fire_schedules().unwrap();
                });
            }
        });
        // Each slot's job is deleted once seen: only the moving of `next_fire` keeps a
        // slot from firing twice, not its key.
        for key in keys(&setup) {
            *seen.entry(key).or_default() += 1;
        }
        let jobs = setup.list(&JobFilter::new().limit(10_000)).unwrap().jobs;
        for job in jobs {
            setup.delete(&job.id).unwrap();
        }
    }
    let twice: Vec<&String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(k, _)| k)
        .collect();
    assert!(twice.is_empty(), "slots fired more than once: {twice:?}");
    assert!(seen.len() > 100, "{} slots fired", seen.len());
}

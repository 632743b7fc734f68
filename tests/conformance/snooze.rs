//! Snooze: a job sent back to `queued` for a while without spending its attempt — by the
//! library, by a handler's `JobError::snooze`, and by a command's exit 75 with `@snooze`.

use std::time::Duration;

use jobq::{
    ClaimFilter, Error, EventKind, JobContext, JobError, NewJob, OutcomeKind, Status, Timestamp,
    WorkerPool,
};
use serde_json::Value;

use crate::cli::Cli;
use crate::common::{Env, T0};

#[test]
fn a_snoozed_job_waits_its_delay_and_keeps_its_attempt() {
    let env = Env::new();
    let q = &env.queue;
    let events = q.subscribe();
    let id = q
        .enqueue(NewJob::new("poll").max_attempts(2))
        .unwrap()
        .job_id;
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    q.set_stage(&lease, "waiting for the export").unwrap();
    q.snooze(&lease, Duration::from_secs(90)).unwrap();
    let job = q.get(&id).unwrap();
    assert_eq!(job.status, Status::Queued);
    assert_eq!(job.attempts, 0, "the attempt is not spent");
    assert_eq!(job.run_after, Timestamp::from_millis(T0 + 90_000));
    assert!(job.scheduled && job.stage.is_none() && job.started_at.is_none());
    assert!(job.errors.is_empty(), "a snooze is not a failure");
    let kinds: Vec<EventKind> = events.try_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Snoozed), "{kinds:?}");

    // Not before its time; then claimed as the same first attempt.
    assert!(q.claim("w", 1, &ClaimFilter::default()).unwrap().is_empty());
    env.advance(90);
    let again = q.claim("w", 1, &ClaimFilter::default()).unwrap();
    assert_eq!((again[0].id.clone(), again[0].attempt), (id.clone(), 1));
    // Snoozed again and again, it never uses up its two attempts.
    let mut current = again[0].lease();
    for _ in 0..5 {
        // A snooze of nothing is the shortest snooze there is: a second.
        q.snooze(&current, Duration::ZERO).unwrap();
        assert!(q.claim("w", 1, &ClaimFilter::default()).unwrap().is_empty());
        env.advance(1);
        let next = q.claim("w", 1, &ClaimFilter::default()).unwrap();
        assert_eq!(next[0].attempt, 1);
        current = next[0].lease();
    }
    assert_eq!(q.get(&id).unwrap().attempts, 1, "the attempt running now");
    // A stale lease cannot snooze.
    let err = q.snooze(&lease, Duration::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::LockLost { .. }), "{err}");
}

#[test]
fn a_handler_snoozes_by_returning_jobq_error_snooze() {
    let env = crate::common::Db::fresh();
    let queue = jobq::Queue::open(env.path()).unwrap();
    let id = queue
        .enqueue(NewJob::new("export").max_attempts(1))
        .unwrap()
        .job_id;
    let (tx, rx) = crossbeam_channel::unbounded();
    let before = queue.now().as_millis();
    let summary = WorkerPool::builder(&queue)
        .handler("export", |_: &JobContext| -> Result<Value, JobError> {
            Err(JobError::snooze(Duration::from_secs(3600)))
        })
        .on_outcome(move |o| {
            let _ = tx.send(o.recorded.clone());
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(
        (summary.snoozed, summary.failed, summary.succeeded),
        (1, 0, 0)
    );
    let job = queue.get(&id).unwrap();
    assert_eq!((job.status, job.attempts), (Status::Queued, 0));
    let wait = job.run_after.as_millis() - before;
    assert!((3_600_000..3_660_000).contains(&wait), "{wait}");
    match rx.recv().unwrap() {
        OutcomeKind::Snoozed { until } => assert_eq!(until, job.run_after),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_command_snoozes_with_exit_75_and_its_last_snooze_line() {
    let cli = Cli::new();
    let long = cli.enqueue(&["report", "--max-attempts", "1"]);
    let out = cli.ok(&[
        "worker",
        "--exec",
        "echo '@snooze 10s'; echo '@snooze 2h'; exit 75",
        "--once",
    ]);
    assert!(out.contains("snoozed"), "{out}");
    assert!(out.contains("Jobs snoozed: 1"), "{out}");
    let job = cli.show(&long);
    assert_eq!(job["status"], "queued");
    assert_eq!(job["attempts"], 0);
    let created = jobq::Timestamp::parse_rfc3339("t", job["updated_at"].as_str().unwrap())
        .unwrap()
        .as_millis();
    let run_after = jobq::Timestamp::parse_rfc3339("t", job["run_after"].as_str().unwrap())
        .unwrap()
        .as_millis();
    assert_eq!(
        run_after - created,
        2 * 3600 * 1000,
        "the last @snooze line counts"
    );

    // Without a @snooze line, 30 s.
    let short = cli.enqueue(&["report"]);
    cli.ok(&["worker", "--exec", "exit 75", "--once"]);
    let job = cli.show(&short);
    let updated = jobq::Timestamp::parse_rfc3339("t", job["updated_at"].as_str().unwrap())
        .unwrap()
        .as_millis();
    let run_after = jobq::Timestamp::parse_rfc3339("t", job["run_after"].as_str().unwrap())
        .unwrap()
        .as_millis();
    assert_eq!(
        (job["status"].as_str(), run_after - updated),
        (Some("queued"), 30_000)
    );
}

#[test]
fn a_job_that_snoozes_past_the_limit_fails_for_good_with_snooze_limit() {
    let db = crate::common::Db::fresh();
    let q = jobq::Queue::builder(db.path())
        .max_snoozes(3)
        .open()
        .unwrap();
    let id = q.enqueue(NewJob::new("poll")).unwrap().job_id;
    let summary = WorkerPool::builder(&q)
        .poll_interval(Duration::from_millis(20))
        .handler("poll", |_: &JobContext| -> Result<(), JobError> {
            Err(JobError::snooze(Duration::ZERO))
        })
        .start()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while q.get(&id).unwrap().status != Status::Failed {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            q.get(&id).unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    summary.shutdown();
    let job = q.get(&id).unwrap();
    assert_eq!(
        (job.error_code.as_deref(), job.snoozes, job.attempts),
        (Some("SNOOZE_LIMIT"), 3, 1)
    );
    assert!(job.last_error.unwrap().contains("snoozed 3 times"));
}

#[test]
fn worker_once_takes_a_job_that_snoozes_at_once_only_once_and_exits() {
    let cli = crate::cli::Cli::new();
    let polls = [cli.enqueue(&["poll"]), cli.enqueue(&["poll"])];
    // A slow job keeps the run going past the snoozes' second: the snoozed jobs are ready
    // again meanwhile, and left for the next run.
    let slow = cli.enqueue(&["slow"]);
    let runs = cli.dir.path().join("runs");
    let command = format!(
        "if [ \"$JOBQ_JOB_KIND\" = slow ]; then sleep 3; exit 0; fi; echo \"$JOBQ_JOB_ID\" >> {}; echo '@snooze 0s'; exit 75",
        runs.display()
    );
    let out = cli
        .cmd(&[
            "worker",
            "--exec",
            &command,
            "--once",
            "--concurrency",
            "3",
            "--poll-interval",
            "50ms",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = std::fs::read_to_string(&runs).unwrap();
    for id in &polls {
        assert_eq!(runs.lines().filter(|l| l == id).count(), 1, "{runs}");
        let job = cli.show(id);
        assert_eq!(
            (job["status"].as_str(), job["snoozes"].as_u64()),
            (Some("queued"), Some(1)),
            "{job}"
        );
    }
    assert_eq!(cli.show(&slow)["status"], "succeeded");
}

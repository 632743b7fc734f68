//! The library as applications embed it: handlers returning their own types and errors, per-kind settings in any order, waiting
//! for a job, and what an enqueue says.

use std::fmt;
use std::time::Duration;

use jobq::{Error, JobContext, JobError, NewJob, OutcomeKind, Queue, Status, WorkerPool};
use serde_json::{Value, json};

use crate::common::Db;

fn fresh() -> (Db, Queue) {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    (db, queue)
}

#[derive(serde::Serialize)]
struct Rendered {
    url: String,
    frames: u32,
}

/// An error type in the manner of anyhow's: not a `std::error::Error` itself, but it turns
/// into a boxed one.
struct AnyhowStyle(String);

impl fmt::Display for AnyhowStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<AnyhowStyle> for Box<dyn std::error::Error + Send + Sync> {
    fn from(e: AnyhowStyle) -> Self {
        e.0.into()
    }
}

fn boxed(fail: bool) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        Err("the render farm said no".into())
    } else {
        Ok(240)
    }
}

fn anyhow_style(fail: bool) -> Result<(), AnyhowStyle> {
    if fail {
        Err(AnyhowStyle("quota exhausted".into()))
    } else {
        Ok(())
    }
}

fn render(ctx: &JobContext) -> Result<Rendered, JobError> {
    let input: Value = ctx.input()?;
    let frames = boxed(input["boxed"] == true)?;
    anyhow_style(input["anyhow"] == true)?;
    if input["plain"] == true {
        Err("a plain message")?;
    }
    Ok(Rendered {
        url: "s3://out.mp4".into(),
        frames,
    })
}

#[test]
fn handlers_return_their_own_types_and_question_mark_takes_any_error() {
    let (_dir, queue) = fresh();
    let ok = queue.enqueue(NewJob::new("render")).unwrap().job_id;
    let mut failing = Vec::new();
    for (flag, message) in [
        ("boxed", "the render farm said no"),
        ("anyhow", "quota exhausted"),
        ("plain", "a plain message"),
    ] {
        let id = queue
            .enqueue(
                NewJob::new("render")
                    .input(json!({flag: true}))
                    .max_attempts(1),
            )
            .unwrap()
            .job_id;
        failing.push((id, message));
    }
    let outcomes = WorkerPool::builder(&queue)
        .handler("render", render)
        .drain_inline()
        .unwrap();
    assert_eq!(outcomes.len(), 4);
    let job = queue.get(&ok).unwrap();
    assert_eq!(
        (job.status, job.output),
        (
            Status::Succeeded,
            Some(json!({"url": "s3://out.mp4", "frames": 240}))
        )
    );
    for (id, message) in failing {
        let job = queue.get(&id).unwrap();
        assert_eq!(
            (job.status, job.last_error.as_deref()),
            (Status::Failed, Some(message))
        );
    }
}

#[test]
fn per_kind_settings_apply_whether_given_before_or_after_the_handler() {
    let (_dir, queue) = fresh();
    let slow = queue
        .enqueue(NewJob::new("slow").max_attempts(1))
        .unwrap()
        .job_id;
    let flaky = queue
        .enqueue(NewJob::new("flaky").max_attempts(2))
        .unwrap()
        .job_id;
    let started = std::time::Instant::now();
    let summary = WorkerPool::builder(&queue)
        .poll_interval(Duration::from_millis(20))
        // Settings first, handlers after.
        .job_timeout("slow", Duration::from_millis(200))
        .retry_policy("flaky", jobq::RetryPolicy::fixed(Duration::ZERO))
        .handler("slow", |_: &JobContext| {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        })
        .handler("flaky", |ctx: &JobContext| {
            if ctx.attempt() == 1 {
                return Err(JobError::retryable("first try"));
            }
            Ok(())
        })
        .run_until_idle()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "the timeout set first was dropped"
    );
    assert_eq!(
        queue.get(&slow).unwrap().error_code.as_deref(),
        Some("TIMEOUT")
    );
    // Retried at once by its own policy (the queue's default would wait seconds).
    assert_eq!(queue.get(&flaky).unwrap().status, Status::Succeeded);
    assert_eq!((summary.succeeded, summary.failed), (1, 1));

    // A setting for a kind no handler runs is a mistake, not something to drop silently.
    let err = WorkerPool::builder(&queue)
        .handler("slow", |_: &JobContext| Ok(()))
        .job_timeout("slwo", Duration::from_secs(1))
        .start()
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field: "kind", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("slwo"), "{err}");
    let err = WorkerPool::builder(&queue)
        .handler("slow", |_: &JobContext| Ok(()))
        .default_job_timeout(Duration::ZERO)
        .start()
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::InvalidInput {
                field: "job_timeout",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_wait_past_its_deadline_is_a_timeout_that_names_the_job_and_its_status() {
    let (_dir, queue) = fresh();
    let id = queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let err = queue.wait(&id, Duration::from_millis(50)).unwrap_err();
    assert!(err.is_timeout(), "{err}");
    match &err {
        Error::Timeout { job, status, .. } => assert_eq!((job, *status), (&id, Status::Queued)),
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains(id.as_str()), "{err}");
}

#[test]
fn an_enqueue_says_the_group_the_job_is_in() {
    let (_dir, queue) = fresh();
    let first = queue.create_group("first", None).unwrap();
    let second = queue.create_group("second", None).unwrap();
    let made = queue
        .enqueue(NewJob::new("k").group(&first.id).idempotency_key("once"))
        .unwrap();
    assert_eq!(made.group_id.as_deref(), Some(first.id.as_str()));
    // The key's job exists, in the first group: that is the group it is in.
    let again = queue
        .enqueue(NewJob::new("k").group(&second.id).idempotency_key("once"))
        .unwrap();
    assert!(again.already_existed);
    assert_eq!(again.group_id.as_deref(), Some(first.id.as_str()));
    let plain = queue.enqueue(NewJob::new("k")).unwrap();
    assert_eq!(plain.group_id, None);
}

#[test]
fn the_outcome_callback_tells_each_recorded_outcome_with_the_retry_time() {
    let (_dir, queue) = fresh();
    queue.enqueue(NewJob::new("ok")).unwrap();
    queue.enqueue(NewJob::new("flaky").max_attempts(3)).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    WorkerPool::builder(&queue)
        .handler("ok", |_: &JobContext| Ok(()))
        .handler("flaky", |_: &JobContext| -> Result<(), JobError> {
            Err(JobError::retryable("later").retry_after(Duration::from_secs(3600)))
        })
        .on_outcome(move |o| log.lock().unwrap().push(o.clone()))
        .run_until_idle()
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let now = queue.now().as_millis();
    for o in seen.iter() {
        match (&o.kind[..], &o.recorded) {
            ("ok", OutcomeKind::Succeeded) => {}
            ("flaky", OutcomeKind::Retrying { error, retry_at }) => {
                assert_eq!(error.message(), "later");
                assert!((retry_at.as_millis() - now - 3_600_000).abs() < 60_000);
                assert_eq!((o.attempt, o.max_attempts), (1, 3));
            }
            other => panic!("{other:?}"),
        }
    }
}

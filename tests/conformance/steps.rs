//! Durable steps, sleep and events: a handler that runs again replays its finished steps
//! from storage; a sleep or a wait parks the job (`waiting`, no slot, no attempt); an event
//! wakes every job waiting for it, even one that begins to wait only later.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobq::{
    EventKind, Job, JobContext, JobError, JobFilter, NewJob, Queue, Status, StepKind, WorkerPool,
};
use serde_json::{Value, json};

use crate::common::{Db, Env};

type Counts = Arc<Mutex<BTreeMap<String, usize>>>;

fn count(counts: &Counts, name: &str) {
    *counts.lock().unwrap().entry(name.to_string()).or_default() += 1;
}

fn counted(counts: &Counts, name: &str) -> usize {
    counts.lock().unwrap().get(name).copied().unwrap_or(0)
}

fn drain(queue: &Queue, kind: &str, handler: impl jobq::Handler) -> Vec<jobq::InlineOutcome> {
    WorkerPool::builder(queue)
        .handler(kind, handler)
        .drain_inline()
        .unwrap()
}

fn job(queue: &Queue, id: &jobq::JobId) -> Job {
    queue.get(id).unwrap()
}

#[test]
fn a_job_that_runs_again_replays_its_finished_steps_and_runs_the_rest_once() {
    let env = Env::new();
    let q = &env.queue;
    let id = q
        .enqueue(NewJob::new("campaign").max_attempts(3))
        .unwrap()
        .job_id;
    let effects: Counts = Arc::default();
    let crash_after_upload = Arc::new(AtomicUsize::new(1));
    let handler = {
        let (effects, crash) = (effects.clone(), crash_after_upload.clone());
        move |ctx: &JobContext| -> Result<Value, JobError> {
            let frames: u32 = ctx.step("render", || {
                count(&effects, "render");
                Ok(240)
            })?;
            let url: String = ctx.step("upload", || {
                count(&effects, "upload");
                Ok(format!("s3://b/{frames}.mp4"))
            })?;
            if crash.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(JobError::retryable("the billing API is down"));
            }
            let invoice: u64 = ctx.step("bill", || {
                count(&effects, "bill");
                Ok(7)
            })?;
            Ok(json!({"url": url, "invoice": invoice}))
        }
    };
    drain(q, "campaign", handler.clone());
    let failed = job(q, &id);
    assert_eq!((failed.status, failed.attempts), (Status::Retry, 1));
    let steps = failed.steps.clone().unwrap();
    assert_eq!(
        steps.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["render", "upload"]
    );
    assert_eq!(steps[1].output.as_deref(), Some("\"s3://b/240.mp4\""));
    assert!(
        steps
            .iter()
            .all(|s| s.kind == StepKind::Step && s.ended_at.is_some())
    );

    env.advance(10);
    drain(q, "campaign", handler);
    let done = job(q, &id);
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(
        done.output,
        Some(json!({"url": "s3://b/240.mp4", "invoice": 7}))
    );
    for step in ["render", "upload", "bill"] {
        assert_eq!(counted(&effects, step), 1, "{step} ran once");
    }
    assert_eq!(q.steps(&id).unwrap().len(), 3);
}

#[test]
fn a_step_name_used_twice_in_one_run_fails_the_job_naming_it() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("twice")).unwrap().job_id;
    drain(q, "twice", |ctx: &JobContext| -> Result<Value, JobError> {
        ctx.step("fetch", || Ok(1))?;
        ctx.step("fetch", || Ok(2))?;
        Ok(Value::Null)
    });
    let failed = job(q, &id);
    assert_eq!(
        failed.status,
        Status::Failed,
        "permanent: no retry makes it right"
    );
    assert_eq!(failed.error_code.as_deref(), Some("BAD_STEP"));
    let message = failed.last_error.unwrap();
    assert!(
        message.contains("\"fetch\"") && message.contains("twice"),
        "{message}"
    );
    assert!(message.contains(id.as_str()), "{message}");

    // Names starting with @ are kept for sleeps and waits; empty ones are refused.
    for bad in ["@sleep 1", "", "  "] {
        let id = q
            .enqueue(NewJob::new("bad-name").input(json!({"name": bad})))
            .unwrap()
            .job_id;
        drain(
            q,
            "bad-name",
            |ctx: &JobContext| -> Result<Value, JobError> {
                let name: String = ctx.input::<Value>()?["name"].as_str().unwrap().into();
                ctx.step(&name, || Ok(1))?;
                Ok(Value::Null)
            },
        );
        let failed = job(q, &id);
        assert_eq!(
            (failed.status, failed.error_code.as_deref()),
            (Status::Failed, Some("BAD_STEP"))
        );
        assert!(
            q.steps(&id).unwrap().is_empty(),
            "nothing stored for {bad:?}"
        );
    }
}

#[test]
fn a_sleeping_job_holds_no_slot_spends_no_attempt_and_resumes_at_its_time() {
    let env = Env::new();
    let q = &env.queue;
    let events = q.subscribe();
    let id = q
        .enqueue(NewJob::new("drip").max_attempts(1))
        .unwrap()
        .job_id;
    let effects: Counts = Arc::default();
    let handler = {
        let effects = effects.clone();
        move |ctx: &JobContext| -> Result<Value, JobError> {
            ctx.step("welcome", || {
                count(&effects, "welcome");
                Ok(())
            })?;
            ctx.sleep_for(Duration::from_secs(3600))?;
            ctx.step("follow-up", || {
                count(&effects, "follow-up");
                Ok(())
            })?;
            ctx.sleep_for(Duration::from_secs(60))?;
            Ok(json!("done"))
        }
    };
    let outcomes = drain(q, "drip", handler.clone());
    assert_eq!(outcomes.len(), 1);
    assert_eq!(outcomes[0].status, Status::Waiting);
    let parked = job(q, &id);
    assert_eq!(parked.status, Status::Waiting);
    assert_eq!(parked.attempts, 0, "no attempt spent");
    assert_eq!(parked.waiting_for, None, "a sleep waits for no event");
    assert_eq!(parked.run_after.as_millis(), crate::common::T0 + 3_600_000);
    assert!(parked.locked_by.is_some() || parked.heartbeat_at.is_none());
    assert!(parked.heartbeat_at.is_none(), "no heartbeat while it waits");
    assert!(parked.errors.is_empty(), "a sleep is not a failure");
    let kinds: Vec<EventKind> = events.try_iter().map(|e| e.kind).collect();
    assert!(kinds.contains(&EventKind::Waiting), "{kinds:?}");
    // Counted and listed as waiting; no worker holds it.
    let stats = q.stats(&jobq::StatsFilter::default()).unwrap();
    assert_eq!(
        stats.by_status.get(&Status::Waiting).copied(),
        Some(1),
        "{stats:?}"
    );
    assert_eq!(
        stats.by_status.get(&Status::Running).copied().unwrap_or(0),
        0
    );
    let listed = q
        .list(&JobFilter::default().status(Status::Waiting))
        .unwrap();
    let listed: Vec<&jobq::JobId> = listed.jobs.iter().map(|j| &j.id).collect();
    assert_eq!(listed, [&id]);
    assert_eq!(q.queue_info("default").unwrap().waiting, 1);

    // Not before its time.
    env.advance(3599);
    assert!(drain(q, "drip", handler.clone()).is_empty());
    env.advance(1);
    let outcomes = drain(q, "drip", handler.clone());
    assert_eq!(
        (outcomes.len(), outcomes[0].status),
        (1, Status::Waiting),
        "the second sleep"
    );
    assert_eq!(
        job(q, &id).run_after.as_millis(),
        crate::common::T0 + 3_660_000
    );
    env.advance(60);
    drain(q, "drip", handler);
    let done = job(q, &id);
    assert_eq!((done.status, done.attempts), (Status::Succeeded, 1));
    assert_eq!(
        (counted(&effects, "welcome"), counted(&effects, "follow-up")),
        (1, 1)
    );
    let steps = done.steps.unwrap();
    let kinds: Vec<(&str, StepKind)> = steps.iter().map(|s| (s.name.as_str(), s.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("welcome", StepKind::Step),
            ("@sleep 1", StepKind::Sleep),
            ("follow-up", StepKind::Step),
            ("@sleep 2", StepKind::Sleep)
        ]
    );
    assert!(steps.iter().all(|s| s.ended_at.is_some()));
}

/// A handler that waits for `approved` for a day and returns what it got.
fn approval(ctx: &JobContext) -> Result<Value, JobError> {
    let got = ctx.wait_for_event("approved", Duration::from_secs(86_400))?;
    Ok(json!({"got": got}))
}

#[test]
fn an_event_wakes_the_job_waiting_for_it_and_hands_it_the_payload() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    drain(q, "publish", approval);
    let parked = job(q, &id);
    assert_eq!(parked.status, Status::Waiting);
    assert_eq!(parked.waiting_for.as_deref(), Some("approved"));
    assert_eq!(
        parked.run_after.as_millis(),
        crate::common::T0 + 86_400_000,
        "its timeout"
    );

    env.advance(5);
    let other = q.emit_event("rejected", json!({})).unwrap();
    assert_eq!(other.woken, 0);
    let emitted = q.emit_event("approved", json!({"by": "ann"})).unwrap();
    assert_eq!(emitted.woken, 1);
    let woken = job(q, &id);
    assert_eq!(
        (woken.status, woken.waiting_for.as_deref()),
        (Status::Queued, None)
    );
    assert_eq!(
        woken.run_after.as_millis(),
        crate::common::T0 + 5_000,
        "at once"
    );
    drain(q, "publish", approval);
    let done = job(q, &id);
    assert_eq!(done.status, Status::Succeeded);
    assert_eq!(done.output, Some(json!({"got": {"by": "ann"}})));
    let wait = &done.steps.unwrap()[0];
    assert_eq!((wait.name.as_str(), wait.kind), ("@wait 1", StepKind::Wait));
    assert_eq!(wait.event_id, Some(emitted.id));
    // A second emit of the same name wakes nobody: the job ended.
    assert_eq!(q.emit_event("approved", json!(2)).unwrap().woken, 0);
}

#[test]
fn an_event_emitted_before_the_wait_is_delivered_when_the_job_waits() {
    let env = Env::new();
    let q = &env.queue;
    // Emitted before the job was created: not for it.
    q.emit_event("approved", json!("too early")).unwrap();
    env.advance(1);
    let id = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    env.advance(1);
    let emitted = q.emit_event("approved", json!("in time")).unwrap();
    assert_eq!(emitted.woken, 0, "nobody waits yet");
    env.advance(1);
    let outcomes = drain(q, "publish", approval);
    assert_eq!(
        outcomes[0].status,
        Status::Succeeded,
        "no park: the event is there"
    );
    assert_eq!(job(q, &id).output, Some(json!({"got": "in time"})));
}

#[test]
fn a_wait_that_times_out_resumes_with_none() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    drain(q, "publish", approval);
    env.advance(86_399);
    assert!(drain(q, "publish", approval).is_empty());
    env.advance(1);
    drain(q, "publish", approval);
    let done = job(q, &id);
    assert_eq!(
        (done.status, done.output),
        (Status::Succeeded, Some(json!({"got": null})))
    );
    // An event emitted after the timeout changes nothing stored.
    q.emit_event("approved", json!(1)).unwrap();
    let wait = &q.steps(&id).unwrap()[0];
    assert_eq!((wait.output.as_deref(), wait.event_id), (None, None));
}

#[test]
fn one_event_wakes_five_hundred_waiting_jobs() {
    let env = Env::new();
    let q = &env.queue;
    let jobs: Vec<NewJob> = (0..500)
        .map(|i| NewJob::new("publish").input(json!(i)))
        .collect();
    let ids: Vec<jobq::JobId> = q
        .enqueue_many(jobs)
        .unwrap()
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    let outcomes = WorkerPool::builder(q)
        .handler("publish", approval)
        .concurrency(4)
        .run_until_idle()
        .unwrap();
    assert_eq!(outcomes.succeeded, 0);
    assert_eq!(
        q.stats(&jobq::StatsFilter::default())
            .unwrap()
            .by_status
            .get(&Status::Waiting)
            .copied(),
        Some(500)
    );
    env.advance(1);
    let emitted = q.emit_event("approved", json!("go")).unwrap();
    assert_eq!(emitted.woken, 500);
    let summary = WorkerPool::builder(q)
        .handler("publish", approval)
        .concurrency(4)
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 500);
    for id in &ids {
        assert_eq!(job(q, id).output, Some(json!({"got": "go"})));
    }
}

#[test]
fn events_are_their_owners_own() {
    let env = Env::new();
    let ann = env.queue.scoped("ann");
    let bob = env.queue.scoped("bob");
    let a = ann.enqueue(NewJob::new("publish")).unwrap().job_id;
    let b = bob.enqueue(NewJob::new("publish")).unwrap().job_id;
    drain(&env.queue, "publish", approval);
    assert_eq!(bob.emit_event("approved", json!("bob's")).unwrap().woken, 1);
    assert_eq!(
        job(&env.queue, &a).status,
        Status::Waiting,
        "ann's job waits on"
    );
    assert_eq!(job(&env.queue, &b).status, Status::Queued);
    // An admin's event has no owner: it wakes neither.
    assert_eq!(
        env.queue
            .emit_event("approved", json!("admin"))
            .unwrap()
            .woken,
        0
    );
    drain(&env.queue, "publish", approval);
    assert_eq!(job(&env.queue, &b).output, Some(json!({"got": "bob's"})));
    assert_eq!(job(&env.queue, &a).status, Status::Waiting);
    // An owner's handle cannot read another owner's steps.
    assert!(matches!(ann.steps(&b), Err(jobq::Error::NotFound { .. })));
}

#[test]
fn a_waiting_job_can_be_cancelled_and_is_not_woken_after() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    drain(q, "publish", approval);
    assert_eq!(q.cancel(&id).unwrap(), Status::Waiting);
    assert_eq!(job(q, &id).status, Status::Cancelled);
    assert_eq!(q.emit_event("approved", json!(1)).unwrap().woken, 0);
    assert_eq!(job(q, &id).status, Status::Cancelled);
    // An admin cannot park a job nor move a waiting one but by cancelling it.
    env.advance(1);
    let other = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    drain(q, "publish", approval);
    for to in [Status::Queued, Status::Running, Status::Succeeded] {
        let err = q.transition(&other, to, None).unwrap_err();
        assert!(
            matches!(err, jobq::Error::InvalidTransition { .. }),
            "{err}"
        );
    }
    assert_eq!(job(q, &other).status, Status::Waiting, "unchanged");
}

#[test]
fn a_manual_retry_keeps_the_finished_steps_unless_from_scratch() {
    let env = Env::new();
    let q = &env.queue;
    let id = q
        .enqueue(NewJob::new("flaky").max_attempts(1))
        .unwrap()
        .job_id;
    let effects: Counts = Arc::default();
    let fail = Arc::new(AtomicUsize::new(2));
    let handler = {
        let (effects, fail) = (effects.clone(), fail.clone());
        move |ctx: &JobContext| -> Result<Value, JobError> {
            ctx.step("expensive", || {
                count(&effects, "expensive");
                Ok(1)
            })?;
            if fail.fetch_sub(1, Ordering::SeqCst) > 0 {
                return Err(JobError::retryable("boom"));
            }
            Ok(Value::Null)
        }
    };
    drain(q, "flaky", handler.clone());
    assert_eq!(job(q, &id).status, Status::Failed);
    q.retry(&id).unwrap();
    drain(q, "flaky", handler.clone());
    assert_eq!(job(q, &id).status, Status::Failed);
    assert_eq!(
        counted(&effects, "expensive"),
        1,
        "kept across a manual retry"
    );
    q.retry_from_scratch(&id).unwrap();
    assert!(q.steps(&id).unwrap().is_empty());
    drain(q, "flaky", handler);
    assert_eq!(job(q, &id).status, Status::Succeeded);
    assert_eq!(counted(&effects, "expensive"), 2, "from scratch: run again");
    // A refused retry keeps the steps.
    let err = q.retry_from_scratch(&id).unwrap_err();
    assert!(
        matches!(err, jobq::Error::InvalidTransition { .. }),
        "{err}"
    );
    assert_eq!(q.steps(&id).unwrap().len(), 1);
}

#[test]
fn a_worker_with_one_slot_runs_other_jobs_while_one_sleeps() {
    let env = Env::new();
    let q = &env.queue;
    let sleeper = q
        .enqueue(NewJob::new("sleeper").priority(10))
        .unwrap()
        .job_id;
    let others: Vec<NewJob> = (0..100).map(|_| NewJob::new("quick")).collect();
    q.enqueue_many(others).unwrap();
    let pool = || {
        WorkerPool::builder(q)
            .concurrency(1)
            .handler("sleeper", |ctx: &JobContext| -> Result<Value, JobError> {
                ctx.sleep_for(Duration::from_secs(3600))?;
                Ok(json!("rested"))
            })
            .handler("quick", |_: &JobContext| -> Result<Value, JobError> {
                Ok(Value::Null)
            })
    };
    // The sleeper, first by priority, parks; the one slot then runs the other hundred.
    let summary = pool().run_until_idle().unwrap();
    assert_eq!(summary.succeeded, 100, "the sleeper held no slot");
    assert_eq!((summary.parked, summary.released), (1, 0));
    assert_eq!(job(q, &sleeper).status, Status::Waiting);
    env.advance(3600);
    pool().run_until_idle().unwrap();
    assert_eq!(job(q, &sleeper).output, Some(json!("rested")));
}

#[test]
fn a_thousand_sleeping_jobs_wake_within_a_second_of_their_time() {
    let db = Db::fresh();
    let q = Queue::open(db.path()).unwrap();
    let wake_at = q.now().as_millis() + 6_000;
    let jobs: Vec<NewJob> = (0..1000)
        .map(|_| NewJob::new("nap").input(json!(wake_at)))
        .collect();
    let ids: Vec<jobq::JobId> = q
        .enqueue_many(jobs)
        .unwrap()
        .into_iter()
        .map(|e| e.job_id)
        .collect();
    let handler = |ctx: &JobContext| -> Result<Value, JobError> {
        let at: i64 = ctx.input()?;
        ctx.sleep_until(jobq::Timestamp::from_millis(at))?;
        Ok(Value::Null)
    };
    // Every job parks first (well before its time), then an idle pool waits for them.
    WorkerPool::builder(&q)
        .concurrency(8)
        .handler("nap", handler)
        .run_until_idle()
        .unwrap();
    let waiting = q
        .stats(&jobq::StatsFilter::default())
        .unwrap()
        .count(Status::Waiting);
    assert_eq!(waiting, 1000);
    assert!(
        q.now().as_millis() < wake_at,
        "parking 1,000 jobs took past their time"
    );
    // A pool that may hold them all: waking is taking them (the claim stamps `started_at`),
    // whatever the handlers' pace after that.
    let pool = WorkerPool::builder(&q)
        .concurrency(8)
        .prefetch(1000)
        .poll_interval(Duration::from_secs(30))
        .handler("nap", handler)
        .start()
        .unwrap();
    crate::cli::wait_until("every job to succeed", || {
        q.stats(&jobq::StatsFilter::default())
            .unwrap()
            .count(Status::Succeeded)
            == 1000
    });
    pool.stop_handle().stop();
    pool.wait();
    let late: Vec<i64> = ids
        .iter()
        .map(|id| job(&q, id).started_at.unwrap().as_millis() - wake_at)
        .collect();
    assert!(late.iter().all(|l| *l >= 0), "none before its time");
    let worst = late.iter().copied().max().unwrap();
    assert!(worst < 1000, "the last woke {worst} ms after its time");
}

#[test]
fn a_shell_script_becomes_a_durable_workflow_with_the_exec_commands() {
    use crate::cli::{Cli, JOBQ};
    let cli = Cli::new();
    let log = cli.dir.path().join("effects.log");
    let script = cli.dir.path().join("campaign.sh");
    std::fs::write(
        &script,
        format!(
            r#"set -e
frames=$({JOBQ} step render -- sh -c 'echo render >> {log}; echo 240')
{JOBQ} step upload -- sh -c 'echo upload >> {log}' >/dev/null
{JOBQ} sleep 1s
got=$({JOBQ} wait-event approved --timeout 1h)
{JOBQ} step bill -- sh -c 'echo bill >> {log}' >/dev/null
echo "{{\"frames\": $frames, \"got\": $got}}"
"#,
            log = log.display()
        ),
    )
    .unwrap();
    let id = cli.enqueue(&["campaign"]);
    let command = format!("sh {}", script.display());
    let out = cli.ok(&["worker", "--exec", &command, "--once"]);
    assert!(
        out.contains("parked") && out.contains("Jobs parked: 1"),
        "{out}"
    );
    let job = cli.show(&id);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_i64()),
        (Some("waiting"), Some(0))
    );
    assert!(job.get("waiting_for").is_none(), "a sleep: {job}");
    let listed = cli.json(&["list", "--status", "waiting"]);
    assert_eq!(listed["jobs"][0]["id"], id.as_str(), "{listed}");
    let stats = cli.ok(&["stats"]);
    assert!(stats.contains("waiting    1"), "{stats}");
    let queues = cli.ok(&["queue", "list"]);
    assert!(queues.contains("WAITING"), "{queues}");
    std::thread::sleep(Duration::from_millis(1100));
    cli.ok(&["worker", "--exec", &command, "--once"]);
    let job = cli.show(&id);
    assert_eq!(job["status"], "waiting");
    assert_eq!(job["waiting_for"], "approved");
    let emitted = cli.json(&["event", "emit", "approved", "--payload", r#"{"by": "ann"}"#]);
    assert_eq!(emitted["woken"], 1);
    cli.ok(&["worker", "--exec", &command, "--once"]);
    let job = cli.show(&id);
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output"], json!({"frames": 240, "got": {"by": "ann"}}));
    let effects = std::fs::read_to_string(&log).unwrap();
    assert_eq!(effects, "render\nupload\nbill\n", "each side effect once");
    let names: Vec<&str> = job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["render", "upload", "@sleep 1", "@wait 1", "bill"]);
    let text = cli.ok(&["show", &id]);
    assert!(
        text.contains("steps            5") && text.contains("event approved"),
        "{text}"
    );

    // Outside a handler the commands refuse, saying why.
    let err = cli.refused(1, &["sleep", "1s"]);
    assert!(
        err.contains("JOBQ_JOB_ID") && err.contains("worker --exec"),
        "{err}"
    );
    // A failing step command fails the step with its status, storing nothing.
    let failing = cli.enqueue(&["failing", "--max-attempts", "1"]);
    let command = format!("{JOBQ} step probe -- sh -c 'exit 3'");
    cli.ok(&["worker", "--exec", &command, "--once"]);
    let job = cli.show(&failing);
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("failed"), Some("EXIT_3"))
    );
    assert_eq!(job["steps"], json!([]));
    // retry --from-scratch
    cli.ok(&["retry", &failing, "--from-scratch"]);
    assert_eq!(cli.show(&failing)["status"], "queued");
}

/// A worker process for the SIGKILL test: one five-step job, each step appending its name
/// to the effects file; between steps the handler waits for the test's go-ahead file.
#[test]
fn steps_crash_worker() {
    use std::io::Write;
    if !crate::common::is_child() {
        return;
    }
    let queue = Queue::builder(crate::common::child_env("JOBQ_TEST_DB"))
        .retry_policy(jobq::RetryPolicy::fixed(Duration::from_millis(10)))
        .open()
        .unwrap();
    let effects = crate::common::child_env("JOBQ_TEST_OUT");
    let dir = std::path::PathBuf::from(crate::common::child_env("JOBQ_TEST_DIR"));
    let _pool = WorkerPool::builder(&queue)
        .concurrency(1)
        .poll_interval(Duration::from_millis(50))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_timeouts(jobq::StaleTimeouts::none().heartbeat_timeout(Duration::from_millis(600)))
        .maintenance_interval(Some(Duration::from_millis(100)))
        .handler("five", move |ctx: &JobContext| -> Result<Value, JobError> {
            for n in 1..=5 {
                let name = format!("step{n}");
                ctx.step(&name, || {
                    let mut f = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&effects)
                        .unwrap();
                    f.write_all(format!("{name}\n").as_bytes()).unwrap();
                    f.sync_all().unwrap();
                    Ok(n)
                })?;
                while n < 5 && !dir.join(format!("go{n}")).exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Ok(json!("all five"))
        })
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_worker_killed_between_every_pair_of_steps_repeats_no_step() {
    let db = Db::fresh();
    let q = Queue::open(db.path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let effects = dir.path().join("effects.log");
    let id = q
        .enqueue(NewJob::new("five").max_attempts(10))
        .unwrap()
        .job_id;
    let env = [
        ("JOBQ_TEST_DB", db.path().display().to_string()),
        ("JOBQ_TEST_OUT", effects.display().to_string()),
        ("JOBQ_TEST_DIR", dir.path().display().to_string()),
    ];
    let spawn = || crate::common::spawn_child("conformance::steps::steps_crash_worker", &env);
    for k in 1..=4 {
        let mut worker = spawn();
        crate::cli::wait_until(&format!("step {k} stored"), || {
            q.steps(&id).unwrap().len() == k
        });
        worker.kill().unwrap(); // SIGKILL, between step k and step k + 1
        worker.wait().unwrap();
        std::fs::write(dir.path().join(format!("go{k}")), "").unwrap();
    }
    let _last = spawn();
    crate::cli::wait_until("the job to succeed", || {
        job(&q, &id).status == Status::Succeeded
    });
    let done = job(&q, &id);
    assert_eq!(done.output, Some(json!("all five")));
    assert_eq!(
        std::fs::read_to_string(&effects).unwrap(),
        "step1\nstep2\nstep3\nstep4\nstep5\n",
        "each step's side effect once"
    );
    assert_eq!(done.claims, 5, "one run per worker");
    let stats = q.stats(&jobq::StatsFilter::default()).unwrap();
    assert_eq!(stats.by_status.get(&Status::Succeeded).copied(), Some(1));
    crate::conformance::rollups::assert_rollups_agree(&q, &[]);
}

#[test]
fn an_event_emitted_while_jobs_are_parking_wakes_every_one_of_them() {
    let db = Db::fresh();
    let q = Queue::open(db.path()).unwrap();
    let jobs: Vec<NewJob> = (0..300).map(|_| NewJob::new("publish")).collect();
    q.enqueue_many(jobs).unwrap();
    let pool = WorkerPool::builder(&q)
        .concurrency(4)
        .handler("publish", |ctx: &JobContext| -> Result<Value, JobError> {
            let got = ctx.wait_for_event("go", Duration::from_secs(3600))?;
            Ok(json!({ "got": got }))
        })
        .start()
        .unwrap();
    // Emitted while some jobs are parked, some are between their look and their park, and
    // some have not run yet: every one must end with the payload, none wait an hour.
    crate::cli::wait_until("some jobs to park", || {
        q.stats(&jobq::StatsFilter::default())
            .unwrap()
            .by_status
            .get(&Status::Waiting)
            .copied()
            .unwrap_or(0)
            >= 20
    });
    q.emit_event("go", json!("now")).unwrap();
    crate::cli::wait_until("every job to succeed", || {
        q.stats(&jobq::StatsFilter::default())
            .unwrap()
            .by_status
            .get(&Status::Succeeded)
            .copied()
            == Some(300)
    });
    pool.stop_handle().stop();
    pool.wait();
}

#[test]
fn events_over_http_are_their_token_s_owners_and_a_job_s_page_lists_its_steps() {
    use crate::conformance::http::{Api, Auth};
    let api = Api::start();
    let alice = api.queue.create_token("alice").unwrap();
    let bob = api.queue.create_token("bob").unwrap();
    let job_of = |auth| {
        let answer = api.post("/api/jobs", auth, json!({"kind": "publish"}));
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["job_id"].as_str().unwrap().to_string()
    };
    let alices = job_of(Auth::Token(&alice));
    let bobs = job_of(Auth::Token(&bob));
    WorkerPool::builder(&api.queue)
        .handler("publish", |ctx: &JobContext| -> Result<Value, JobError> {
            ctx.step("render", || Ok(1))?;
            approval(ctx)
        })
        .run_until_idle()
        .unwrap();
    let page = api.get(&format!("/api/jobs/{alices}"), Auth::Token(&alice));
    assert_eq!(page.body["status"], "waiting");
    assert_eq!(page.body["waiting_for"], "approved");
    let steps = page.body["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(
        (steps[0]["name"].as_str(), &steps[0]["output"]),
        (Some("render"), &json!(1))
    );
    assert_eq!(steps[1]["kind"], "wait");
    assert!(
        steps[1]["ended_at"].is_null() && steps[1]["wake_at"].is_string(),
        "{steps:?}"
    );

    // Bob's event wakes Bob's job only.
    let emitted = api.post(
        "/api/events",
        Auth::Token(&bob),
        json!({"name": "approved", "payload": {"ok": true}}),
    );
    assert_eq!(emitted.status, 201, "{emitted:?}");
    assert_eq!(emitted.body["woken"], 1);
    assert!(emitted.body["id"].is_i64());
    let status = |id: &str| api.queue.get(&id.parse().unwrap()).unwrap().status;
    assert_eq!(
        (status(&alices), status(&bobs)),
        (Status::Waiting, Status::Queued)
    );
    // Bad events change nothing.
    api.post("/api/events", Auth::Token(&alice), json!({"payload": 1}))
        .error(400, "invalid_input");
    api.post("/api/events", Auth::Token(&alice), json!({"name": ""}))
        .error(400, "invalid_input");
    api.post(
        "/api/events",
        Auth::Token(&alice),
        json!({"name": "approved", "extra": 1}),
    )
    .error(400, "invalid_input");
    assert_eq!(status(&alices), Status::Waiting);
    api.post("/api/events", Auth::None, json!({"name": "approved"}));
    assert_eq!(status(&alices), Status::Waiting, "no credentials, no event");
    // Alice's own event wakes hers.
    let emitted = api.post(
        "/api/events",
        Auth::Token(&alice),
        json!({"name": "approved"}),
    );
    assert_eq!(emitted.body["woken"], 1);
    assert_eq!(status(&alices), Status::Queued);
    // A retry from scratch over HTTP forgets the steps.
    api.queue.cancel(&alices.parse().unwrap()).unwrap();
    let retried = api.post(
        &format!("/api/jobs/{alices}"),
        Auth::Token(&alice),
        json!({"action": "retry", "from_scratch": true}),
    );
    assert_eq!(retried.status, 200, "{retried:?}");
    assert_eq!(
        api.get(&format!("/api/jobs/{alices}"), Auth::Admin).body["steps"],
        json!([])
    );
}

#[test]
fn events_are_pruned_after_their_retention() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("publish")).unwrap().job_id;
    q.emit_event("approved", json!("old")).unwrap();
    env.advance(3600);
    let pruned = q
        .prune_events(jobq::Timestamp::from_millis(q.now().as_millis() - 1000))
        .unwrap();
    assert_eq!(pruned, 1);
    // Pruned before the job waited: not delivered.
    drain(q, "publish", approval);
    assert_eq!(job(q, &id).status, Status::Waiting);
    // An owner's handle may not prune.
    let err = q.scoped("ann").prune_events(q.now()).unwrap_err();
    assert!(matches!(err, jobq::Error::Forbidden { .. }), "{err}");
    // The maintainer prunes with the pool's retention.
    q.emit_event("other", json!(1)).unwrap();
    env.advance(8 * 86_400);
    WorkerPool::builder(q)
        .handler("publish", approval)
        .maintenance_interval(Some(Duration::from_millis(10)))
        .run_until_idle()
        .unwrap();
    assert_eq!(
        q.prune_events(q.now()).unwrap(),
        0,
        "already pruned by the maintainer"
    );
}

#[test]
fn a_waiting_job_resumes_by_the_claim_s_rules_paused_queues_and_limits_included() {
    let env = Env::new();
    let q = &env.queue;
    let id = q.enqueue(NewJob::new("drip").queue("mail")).unwrap().job_id;
    let handler = |ctx: &JobContext| -> Result<Value, JobError> {
        ctx.sleep_for(Duration::from_secs(60))?;
        Ok(json!("sent"))
    };
    let run = || {
        WorkerPool::builder(q)
            .queues(["mail"])
            .handler("drip", handler)
            .drain_inline()
            .unwrap()
    };
    run();
    assert_eq!(job(q, &id).status, Status::Waiting);
    q.pause_queue("mail").unwrap();
    env.advance(60);
    assert!(run().is_empty(), "a paused queue's waiting job stays");
    q.resume_queue("mail").unwrap();
    q.set_queue_limits("mail", jobq::QueueLimits::new().max_running(Some(0)))
        .unwrap();
    assert!(run().is_empty(), "nor past the queue's running limit");
    q.set_queue_limits("mail", jobq::QueueLimits::new().max_running(None))
        .unwrap();
    run();
    assert_eq!(job(q, &id).output, Some(json!("sent")));
}

//! Dependencies and flows: a job `blocked` until every job it waits for has succeeded,
//! queued in the very transaction of the last success; failures cancel (or release) their
//! dependents; a manual retry brings them back; flows are created whole or not at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jobq::{
    ClaimFilter, Error, Flow, JobContext, JobError, JobId, NewJob, OnDependencyFailure, Queue,
    Status,
};
use serde_json::{Value, json};

use crate::common::{Env, T0};

fn claim_one(q: &Queue, kind: &str) -> jobq::Lease {
    let jobs = q
        .claim("w", 1, &ClaimFilter::default().kinds([kind]))
        .unwrap();
    assert_eq!(jobs.len(), 1, "one {kind} job is ready");
    jobs[0].lease()
}

fn status(q: &Queue, id: &JobId) -> Status {
    q.get(id).unwrap().status
}

#[test]
fn a_dependent_is_queued_by_the_transaction_of_its_last_dependencys_success() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("scene")).unwrap().job_id;
    let b = q.enqueue(NewJob::new("scene")).unwrap().job_id;
    let c = q
        .enqueue(NewJob::new("composite").after(&a).after(&b).after(&a))
        .unwrap();
    assert_eq!(c.status, Status::Blocked);
    let c = c.job_id;
    // Blocked jobs are never claimed.
    assert!(
        q.claim("w", 10, &ClaimFilter::default().kinds(["composite"]))
            .unwrap()
            .is_empty()
    );
    let la = claim_one(q, "scene");
    let lb = claim_one(q, "scene");
    q.complete(&la, json!({"frames": 1})).unwrap();
    assert_eq!(status(q, &c), Status::Blocked, "one dependency still runs");
    env.advance(5);
    q.complete(&lb, json!({"frames": 2})).unwrap();
    // No poller: the completion itself queued it, ready now (not at its enqueue time).
    let job = q.get(&c).unwrap();
    assert_eq!(job.status, Status::Queued);
    assert_eq!(job.run_after.as_millis(), T0 + 5_000);
    let deps = job.dependencies.unwrap();
    assert_eq!(deps.len(), 2, "a dependency named twice counts once");
    assert!(deps.iter().all(|l| l.status == Status::Succeeded));
    let outputs = q.dependency_outputs(&c).unwrap();
    assert_eq!(outputs[a.as_str()], json!({"frames": 1}));
    assert_eq!(outputs[b.as_str()], json!({"frames": 2}));
    let dependents = q.get(&a).unwrap().dependents.unwrap();
    assert_eq!(
        (dependents[0].id.clone(), dependents[0].status),
        (c.clone(), Status::Queued)
    );
    assert_eq!(claim_one(q, "composite").job_id, c);
}

#[test]
fn a_failed_dependency_cancels_its_dependents_and_theirs_and_a_retry_brings_them_back() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let other = q.enqueue(NewJob::new("other")).unwrap().job_id;
    let b = q
        .enqueue(NewJob::new("b").after(&a).after(&other))
        .unwrap()
        .job_id;
    let c = q.enqueue(NewJob::new("c").after(&b)).unwrap().job_id;
    let anyway = q
        .enqueue(
            NewJob::new("report")
                .after(&a)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .unwrap()
        .job_id;

    let la = claim_one(q, "a");
    assert_eq!(
        q.fail(&la, &JobError::permanent("bad input")).unwrap(),
        Status::Failed
    );
    for id in [&b, &c] {
        let job = q.get(id).unwrap();
        assert_eq!(job.status, Status::Cancelled, "{id}");
        assert_eq!(job.error_code.as_deref(), Some("DEPENDENCY_FAILED"));
        assert!(job.completed_at.is_some());
    }
    assert!(
        q.get(&b).unwrap().last_error.unwrap().contains(a.as_str()),
        "the message names the dependency"
    );
    assert_eq!(status(q, &anyway), Status::Queued, "runs anyway");

    // The manual retry of `a` puts the jobs it cancelled back to waiting.
    q.retry(&a).unwrap();
    assert_eq!(status(q, &b), Status::Blocked);
    assert_eq!(status(q, &c), Status::Blocked);
    let b_job = q.get(&b).unwrap();
    assert!(b_job.error_code.is_none() && b_job.completed_at.is_none());
    let la = claim_one(q, "a");
    q.complete(&la, json!(null)).unwrap();
    assert_eq!(status(q, &b), Status::Blocked, "`other` has not run yet");
    let lo = claim_one(q, "other");
    q.complete(&lo, json!(null)).unwrap();
    assert_eq!(status(q, &b), Status::Queued);
    assert_eq!(status(q, &c), Status::Blocked);
    let lb = claim_one(q, "b");
    q.complete(&lb, json!(null)).unwrap();
    assert_eq!(status(q, &c), Status::Queued);
}

#[test]
fn cancelling_a_blocked_job_works_and_cancels_what_waits_for_it() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a")).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    let c = q.enqueue(NewJob::new("c").after(&b)).unwrap().job_id;
    assert_eq!(q.cancel(&b).unwrap(), Status::Blocked);
    assert_eq!(status(q, &b), Status::Cancelled);
    let job = q.get(&c).unwrap();
    assert_eq!(
        (job.status, job.error_code.as_deref()),
        (Status::Cancelled, Some("DEPENDENCY_FAILED"))
    );
    // `a` is untouched and runs; its success changes nothing for cancelled jobs.
    let la = claim_one(q, "a");
    q.complete(&la, json!(null)).unwrap();
    assert_eq!(status(q, &b), Status::Cancelled);
    // A retry of `b` itself: its dependency has succeeded, so it is queued at once.
    q.retry(&b).unwrap();
    assert_eq!(status(q, &b), Status::Queued);
    assert_eq!(status(q, &c), Status::Blocked);
}

#[test]
fn a_job_others_wait_for_cannot_be_deleted_while_they_wait() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a")).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    let before = env.dump();
    let err = q.delete(&a).unwrap_err();
    assert!(
        matches!(err, Error::InvalidTransition { .. }) && err.to_string().contains(b.as_str()),
        "{err}"
    );
    assert_eq!(env.dump(), before, "nothing changed");
    // Once nothing waits (the dependent is cancelled), it can go, and its links with it.
    q.cancel(&b).unwrap();
    q.delete(&a).unwrap();
    assert!(q.get(&b).unwrap().dependencies.unwrap().is_empty());
}

#[test]
fn dependencies_must_exist_and_be_visible_and_a_refusal_changes_nothing() {
    let env = Env::new();
    let q = &env.queue;
    let theirs = q.enqueue(NewJob::new("a").owner("acme")).unwrap().job_id;
    let before = env.dump();
    let missing: JobId = "0190a0b0-0000-7000-8000-000000000000".parse().unwrap();
    let err = q.enqueue(NewJob::new("b").after(&missing)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { field: "after", .. })
            && err.to_string().contains(missing.as_str()),
        "{err}"
    );
    let scoped = q.scoped("globex");
    let err = scoped.enqueue(NewJob::new("b").after(&theirs)).unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { field: "after", .. }),
        "{err}"
    );
    // In a batch: the whole batch is refused.
    let err = q
        .enqueue_many([NewJob::new("x"), NewJob::new("y").after(&missing)])
        .unwrap_err();
    assert!(err.to_string().contains("#1"), "{err}");
    assert_eq!(env.dump(), before, "nothing was written");
}

#[test]
fn a_dependency_already_finished_counts_as_it_ended() {
    let env = Env::new();
    let q = &env.queue;
    let done = q.enqueue(NewJob::new("a")).unwrap().job_id;
    let l = claim_one(q, "a");
    q.complete(&l, json!(1)).unwrap();
    let dead = q.enqueue(NewJob::new("d").max_attempts(1)).unwrap().job_id;
    let l = claim_one(q, "d");
    q.fail(&l, &JobError::permanent("no")).unwrap();

    assert_eq!(
        q.enqueue(NewJob::new("x").after(&done)).unwrap().status,
        Status::Queued
    );
    let cancelled = q.enqueue(NewJob::new("y").after(&dead)).unwrap();
    assert_eq!(cancelled.status, Status::Cancelled);
    let job = q.get(&cancelled.job_id).unwrap();
    assert_eq!(job.error_code.as_deref(), Some("DEPENDENCY_FAILED"));
    let anyway = q
        .enqueue(
            NewJob::new("z")
                .after(&dead)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .unwrap();
    assert_eq!(anyway.status, Status::Queued);
    // Retrying the dead job brings back the job created cancelled.
    q.retry(&dead).unwrap();
    assert_eq!(status(q, &cancelled.job_id), Status::Blocked);
}

#[test]
fn a_stale_release_that_ends_a_job_cancels_its_dependents() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    claim_one(q, "a");
    env.advance(3600);
    let released = q.release_stale(&jobq::StaleTimeouts::default()).unwrap();
    assert_eq!(released, 1);
    assert_eq!(status(q, &a), Status::Failed);
    assert_eq!(status(q, &b), Status::Cancelled);
}

#[test]
fn a_flow_is_created_whole_and_its_jobs_run_after_what_they_wait_for() {
    let env = crate::common::Db::fresh();
    let q = Queue::open(env.path()).unwrap();
    let flow = Flow::new("campaign")
        .metadata(json!({"client": "acme"}))
        .job_after(
            "composite",
            NewJob::new("composite"),
            ["scene-1", "scene-2", "scene-3", "scene-4", "audio"],
        )
        .job("scene-1", NewJob::new("render").input(json!({"scene": 1})))
        .job("scene-2", NewJob::new("render").input(json!({"scene": 2})))
        .job("scene-3", NewJob::new("render").input(json!({"scene": 3})))
        .job("scene-4", NewJob::new("render").input(json!({"scene": 4})))
        .job_after("audio", NewJob::new("mix"), ["voice", "music"])
        .job("voice", NewJob::new("voice"))
        .job("music", NewJob::new("music"));
    let created = q.submit_flow(flow).unwrap();
    assert_eq!(created.jobs.len(), 8);
    let group = q.get_group(&created.group_id).unwrap();
    assert_eq!((group.total, group.stage), (8, "not_started"));
    assert_eq!(group.counts[&Status::Blocked], 2);
    let composite = &created.jobs["composite"];
    assert_eq!(
        q.get(composite).unwrap().group_id.as_deref(),
        Some(created.group_id.as_str())
    );

    let finished: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Value>>> = Arc::default();
    let (f1, f2, s1) = (finished.clone(), finished.clone(), seen.clone());
    let summary = jobq::WorkerPool::builder(&q)
        .concurrency(4)
        .handler(
            "render",
            move |ctx: &JobContext| -> Result<Value, JobError> {
                let input: Value = ctx.input()?;
                f1.lock().unwrap().push(format!("scene-{}", input["scene"]));
                Ok(json!({"frames": input["scene"]}))
            },
        )
        .handler("voice", |_: &JobContext| Ok(json!("voice.wav")))
        .handler("music", |_: &JobContext| Ok(json!("music.wav")))
        .handler("mix", |ctx: &JobContext| -> Result<Value, JobError> {
            let inputs = ctx.dependencies()?;
            assert_eq!(inputs.len(), 2);
            Ok(json!({"tracks": inputs.values().cloned().collect::<Vec<_>>()}))
        })
        .handler(
            "composite",
            move |ctx: &JobContext| -> Result<Value, JobError> {
                // Every dependency has succeeded and its output is there.
                let inputs = ctx.dependencies()?;
                s1.lock().unwrap().extend(inputs);
                f2.lock().unwrap().push("composite".into());
                Ok(json!("final.mp4"))
            },
        )
        .run_until_idle()
        .unwrap();
    assert_eq!((summary.succeeded, summary.failed), (8, 0));
    let finished = finished.lock().unwrap();
    assert_eq!(finished.last().map(String::as_str), Some("composite"));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 5);
    // By their refs.
    let tracks = &seen["audio"]["tracks"];
    let mut tracks: Vec<&str> = tracks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tracks.sort_unstable();
    assert_eq!(tracks, ["music.wav", "voice.wav"]);
    assert!(seen.values().all(|v| !v.is_null()));
    let group = q.get_group(&created.group_id).unwrap();
    assert_eq!((group.stage, group.progress), ("completed", 100.0));
}

#[test]
fn a_flow_with_an_unknown_ref_or_a_cycle_is_refused_naming_it_and_nothing_is_created() {
    let env = Env::new();
    let q = &env.queue;
    let before = env.dump();
    let unknown =
        Flow::new("f")
            .job("a", NewJob::new("a"))
            .job_after("b", NewJob::new("b"), ["a", "nope"]);
    let err = q.submit_flow(unknown).unwrap_err();
    assert!(
        matches!(err, Error::InvalidInput { .. })
            && err.to_string().contains("\"nope\"")
            && err.to_string().contains("\"b\""),
        "{err}"
    );
    let cycle = Flow::new("f")
        .job_after("a", NewJob::new("a"), ["c"])
        .job_after("b", NewJob::new("b"), ["a"])
        .job_after("c", NewJob::new("c"), ["b"])
        .job("d", NewJob::new("d"));
    let err = q.submit_flow(cycle).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("cycle") && ["a", "b", "c"].iter().all(|r| text.contains(r)),
        "{text}"
    );
    let duplicate = Flow::new("f")
        .job("a", NewJob::new("a"))
        .job("a", NewJob::new("b"));
    assert!(q.submit_flow(duplicate).is_err());
    // A job the enqueue refuses, late in the flow: nothing of it is written either.
    let bad = Flow::new("f").job("a", NewJob::new("a")).job_after(
        "b",
        NewJob::new("b").max_attempts(0),
        ["a"],
    );
    let err = q.submit_flow(bad).unwrap_err();
    assert!(err.to_string().contains("\"b\""), "{err}");
    let missing: JobId = "0190a0b0-0000-7000-8000-000000000000".parse().unwrap();
    let outside = Flow::new("f").job("a", NewJob::new("a")).job_after(
        "b",
        NewJob::new("b"),
        [missing.to_string()],
    );
    assert!(q.submit_flow(outside).is_err());
    assert_eq!(env.dump(), before, "nothing was created");
}

#[test]
fn a_flow_may_wait_for_existing_jobs() {
    let env = Env::new();
    let q = &env.queue;
    let upstream = q.enqueue(NewJob::new("fetch")).unwrap().job_id;
    let flow = Flow::new("f").job_after("parse", NewJob::new("parse"), [upstream.to_string()]);
    let created = q.submit_flow(flow).unwrap();
    let parse = &created.jobs["parse"];
    assert_eq!(status(q, parse), Status::Blocked);
    let l = claim_one(q, "fetch");
    q.complete(&l, json!(null)).unwrap();
    assert_eq!(status(q, parse), Status::Queued);
}

#[test]
fn a_job_that_runs_anyway_counts_a_cancelled_dependency_as_ended_and_a_retry_as_waiting_again() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let d = q.enqueue(NewJob::new("d")).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    let c = q
        .enqueue(
            NewJob::new("c")
                .after(&b)
                .after(&d)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .unwrap()
        .job_id;
    let la = claim_one(q, "a");
    q.fail(&la, &JobError::permanent("no")).unwrap();
    // `b` is cancelled with `a`; `c` counts `b` as ended but still waits for `d`.
    assert_eq!(status(q, &b), Status::Cancelled);
    assert_eq!(status(q, &c), Status::Blocked);
    // The retry of `a` brings `b` back, and `c` waits for it again.
    q.retry(&a).unwrap();
    assert_eq!(status(q, &b), Status::Blocked);
    let ld = claim_one(q, "d");
    q.complete(&ld, json!(null)).unwrap();
    assert_eq!(status(q, &c), Status::Blocked, "`b` has not run yet");
    let la = claim_one(q, "a");
    q.complete(&la, json!(null)).unwrap();
    let lb = claim_one(q, "b");
    q.complete(&lb, json!(null)).unwrap();
    assert_eq!(status(q, &c), Status::Queued);
    // And when `d` is what ends badly, `c` runs anyway.
    let d2 = q.enqueue(NewJob::new("d2").max_attempts(1)).unwrap().job_id;
    let c2 = q
        .enqueue(
            NewJob::new("c2")
                .after(&d2)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .unwrap()
        .job_id;
    q.cancel(&d2).unwrap();
    assert_eq!(status(q, &c2), Status::Queued);
    assert!(q.dependency_outputs(&c2).unwrap()[d2.as_str()].is_null());
}

#[test]
fn a_group_a_job_outside_it_waits_for_cannot_be_deleted() {
    let env = Env::new();
    let q = &env.queue;
    let created = q
        .submit_flow(Flow::new("upstream").job("fetch", NewJob::new("fetch")))
        .unwrap();
    let outside = q
        .enqueue(NewJob::new("report").after(&created.jobs["fetch"]))
        .unwrap()
        .job_id;
    let before = env.dump();
    let err = q.delete_group(&created.group_id).unwrap_err();
    assert!(
        matches!(err, Error::InvalidTransition { .. })
            && err.to_string().contains(outside.as_str()),
        "{err}"
    );
    assert_eq!(env.dump(), before);
    q.cancel(&outside).unwrap();
    assert_eq!(q.delete_group(&created.group_id).unwrap(), 1);
    // A flow whose jobs wait only for each other goes whole.
    let inside = q
        .submit_flow(
            Flow::new("self-contained")
                .job("a", NewJob::new("a"))
                .job_after("b", NewJob::new("b"), ["a"]),
        )
        .unwrap();
    assert_eq!(q.delete_group(&inside.group_id).unwrap(), 2);
}

/// `d` waits for `a` and `b`, `e` waits for `d`; `a` and `b` both fail for good: `d` and `e`
/// are cancelled by the first failure.
fn two_failed_dependencies(q: &Queue) -> (JobId, JobId, JobId, JobId) {
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").max_attempts(1)).unwrap().job_id;
    let d = q
        .enqueue(NewJob::new("d").after(&a).after(&b))
        .unwrap()
        .job_id;
    let e = q.enqueue(NewJob::new("e").after(&d)).unwrap().job_id;
    for kind in ["a", "b"] {
        let lease = claim_one(q, kind);
        q.fail(&lease, &JobError::permanent("broken")).unwrap();
    }
    assert_eq!(status(q, &d), Status::Cancelled);
    assert_eq!(status(q, &e), Status::Cancelled);
    (a, b, d, e)
}

#[test]
fn a_retry_of_one_failed_dependency_leaves_a_dependent_cancelled_while_another_has_failed() {
    let env = Env::new();
    let q = &env.queue;
    let (a, b, d, e) = two_failed_dependencies(q);
    // `b` has failed too: `d` would wait for ever. It stays cancelled, and so does `e`.
    q.retry(&a).unwrap();
    assert_eq!(status(q, &d), Status::Cancelled);
    assert_eq!(status(q, &e), Status::Cancelled);
    // The retry of the last failed one brings both back, in order.
    q.retry(&b).unwrap();
    assert_eq!(status(q, &d), Status::Blocked);
    assert_eq!(status(q, &e), Status::Blocked);
    for kind in ["a", "b"] {
        let lease = claim_one(q, kind);
        q.complete(&lease, json!(null)).unwrap();
    }
    assert_eq!(status(q, &d), Status::Queued);
}

#[test]
fn a_retry_of_a_dependent_whose_dependency_failed_is_refused_naming_it() {
    let env = Env::new();
    let q = &env.queue;
    let (a, b, d, e) = two_failed_dependencies(q);
    let before = env.dump();
    for (job, dependency) in [(&d, &a), (&e, &d)] {
        let err = q.retry(job).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidTransition { job: j, .. } if j == job),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(dependency.as_str()) && message.contains("retry"),
            "{message}"
        );
    }
    assert_eq!(env.dump(), before, "a refused retry changes nothing");
    q.retry(&a).unwrap();
    q.retry(&b).unwrap();
    assert_eq!(status(q, &d), Status::Blocked);
}

#[test]
fn health_reports_jobs_blocked_behind_a_failed_dependency() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let d = q.enqueue(NewJob::new("d").after(&a)).unwrap().job_id;
    let thresholds = jobq::HealthThresholds::default();
    assert!(
        q.health(&thresholds)
            .unwrap()
            .1
            .iter()
            .all(|r| r.check != "blocked_behind_failure")
    );
    // What an older jobq left behind: a dependent still blocked behind a failed job.
    let lease = claim_one(q, "a");
    q.fail(&lease, &JobError::permanent("broken")).unwrap();
    crate::common::execute(
        &env.path(),
        &format!(
            "UPDATE jobq_jobs SET status = 'blocked', error_code = NULL, completed_at = NULL WHERE id = '{d}'"
        ),
    );
    let (health, reasons) = q.health(&thresholds).unwrap();
    let reason = reasons
        .iter()
        .find(|r| r.check == "blocked_behind_failure")
        .unwrap_or_else(|| panic!("{reasons:?}"));
    assert_eq!(health, jobq::Health::Unhealthy);
    assert!(
        reason
            .message
            .contains("1 job is blocked behind a dependency that failed"),
        "{}",
        reason.message
    );
}

#[test]
fn a_cascade_names_its_root_at_every_level() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    let c = q.enqueue(NewJob::new("c").after(&b)).unwrap().job_id;
    let d = q.enqueue(NewJob::new("d").after(&c)).unwrap().job_id;
    let lease = claim_one(q, "a");
    q.fail(&lease, &JobError::permanent("broken")).unwrap();
    for id in [&b, &c, &d] {
        let job = q.get(id).unwrap();
        assert_eq!(
            (job.status, job.last_error.as_deref()),
            (
                Status::Cancelled,
                Some(format!("dependency {a} failed").as_str())
            ),
            "{id}"
        );
    }
}

#[test]
fn an_admins_move_to_succeeded_releases_the_dependents() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a")).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b").after(&a)).unwrap().job_id;
    q.transition(&a, Status::Running, None).unwrap();
    assert_eq!(status(q, &b), Status::Blocked);
    q.transition(&a, Status::Succeeded, None).unwrap();
    assert_eq!(status(q, &b), Status::Queued);
    assert_eq!(claim_one(q, "b").job_id, b);
}

#[test]
fn a_flow_cannot_pass_the_bound_on_dependencies_through_its_refs() {
    let env = Env::new();
    let q = &env.queue;
    let outside = q.enqueue(NewJob::new("outside")).unwrap().job_id;
    let n = jobq::MAX_DEPENDENCIES;
    let mut flow = Flow::new("wide");
    let mut after: Vec<String> = vec![outside.to_string()];
    for i in 0..n {
        flow = flow.job(format!("part-{i}"), NewJob::new("part"));
        after.push(format!("part-{i}"));
    }
    let before = env.dump();
    let err = q
        .submit_flow(
            flow.clone()
                .job_after("join", NewJob::new("join"), after.clone()),
        )
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidInput { field: "after", .. })
            && err.to_string().contains("\"join\"")
            && err.to_string().contains("10000"),
        "{err}"
    );
    assert_eq!(env.dump(), before, "nothing was created");
    // At the bound it is accepted.
    after.pop();
    let created = q
        .submit_flow(flow.job_after("join", NewJob::new("join"), after))
        .unwrap();
    assert_eq!(
        q.get(&created.jobs["join"])
            .unwrap()
            .dependencies
            .unwrap()
            .len(),
        n
    );
}

#[test]
fn a_flows_refs_are_stored_and_name_its_jobs_everywhere() {
    let env = Env::new();
    let q = &env.queue;
    let outside = q.enqueue(NewJob::new("outside")).unwrap().job_id;
    let created = q
        .submit_flow(
            Flow::new("campaign")
                .job("scene-1", NewJob::new("render"))
                .job("voice", NewJob::new("voice"))
                .job_after(
                    "composite",
                    NewJob::new("composite"),
                    [
                        "scene-1".to_string(),
                        "voice".to_string(),
                        outside.to_string(),
                    ],
                ),
        )
        .unwrap();
    let composite = q.get(&created.jobs["composite"]).unwrap();
    assert_eq!(composite.flow_ref.as_deref(), Some("composite"));
    let mut refs: Vec<Option<String>> = composite
        .dependencies
        .unwrap()
        .into_iter()
        .map(|l| l.flow_ref)
        .collect();
    refs.sort();
    assert_eq!(refs, [None, Some("scene-1".into()), Some("voice".into())]);
    let json = serde_json::to_value(q.get(&created.jobs["voice"]).unwrap()).unwrap();
    assert_eq!(json["ref"], "voice");
    assert_eq!(json["dependents"][0]["ref"], "composite");
    // Outputs by ref (by id for the job outside the flow).
    for (kind, output) in [
        ("render", json!({"frames": 24})),
        ("voice", json!("v.wav")),
        ("outside", json!(1)),
    ] {
        let lease = claim_one(q, kind);
        q.complete(&lease, output).unwrap();
    }
    let outputs = q.dependency_outputs(&created.jobs["composite"]).unwrap();
    assert_eq!(outputs["scene-1"], json!({"frames": 24}));
    assert_eq!(outputs["voice"], json!("v.wav"));
    assert_eq!(outputs[outside.as_str()], json!(1));
    // The flow's page names them.
    let view = q.flow_view(&created.group_id).unwrap();
    let named: Vec<(Option<&str>, usize)> = view
        .jobs
        .iter()
        .map(|n| (n.flow_ref.as_deref(), n.level))
        .collect();
    assert_eq!(
        named,
        [
            (Some("scene-1"), 0),
            (Some("voice"), 0),
            (Some("composite"), 1)
        ]
    );
    // A handler reads one by ref or by id.
    let summary = jobq::WorkerPool::builder(q)
        .handler("composite", |ctx: &JobContext| -> Result<Value, JobError> {
            let scene: Value = ctx.dependency_output("scene-1")?;
            let voice: String =
                ctx.dependency_output(ctx.dependencies()?.keys().find(|k| *k == "voice").unwrap())?;
            Ok(json!({"scene": scene, "voice": voice}))
        })
        .run_until_idle()
        .unwrap();
    assert_eq!(summary.succeeded, 1);
    assert_eq!(
        q.get(&created.jobs["composite"]).unwrap().output.unwrap(),
        json!({"scene": {"frames": 24}, "voice": "v.wav"})
    );
}

#[test]
fn a_flow_sent_again_with_its_key_returns_the_first() {
    let env = Env::new();
    let q = &env.queue;
    let flow = || {
        Flow::new("nightly")
            .key("nightly-2026-01-01")
            .job("a", NewJob::new("a"))
            .job_after("b", NewJob::new("b"), ["a"])
    };
    let first = q.submit_flow(flow()).unwrap();
    assert!(!first.already_existed);
    let before = env.dump();
    let again = q.submit_flow(flow()).unwrap();
    assert!(again.already_existed);
    assert_eq!(
        (&again.group_id, &again.jobs),
        (&first.group_id, &first.jobs)
    );
    assert_eq!(env.dump(), before, "no empty duplicate group, nothing else");
    // Keys are per owner.
    let other = q.scoped("acme").submit_flow(flow()).unwrap();
    assert!(!other.already_existed);
    assert_ne!(other.group_id, first.group_id);
    // Racing submits of one key make one flow.
    let key = "race";
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    q.submit_flow(Flow::new("race").key(key).job("x", NewJob::new("x")))
                        .unwrap()
                        .group_id
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(
        q.list(&jobq::JobFilter::new().kind("x".to_string()))
            .unwrap()
            .jobs
            .len(),
        1
    );
}

#[test]
fn a_retry_of_a_failed_dependency_counts_it_again_for_a_dependent_that_runs_anyway() {
    let env = Env::new();
    let q = &env.queue;
    let a = q.enqueue(NewJob::new("a").max_attempts(1)).unwrap().job_id;
    let b = q.enqueue(NewJob::new("b")).unwrap().job_id;
    let report = q
        .enqueue(
            NewJob::new("report")
                .after(&a)
                .after(&b)
                .on_dependency_failure(OnDependencyFailure::Run),
        )
        .unwrap()
        .job_id;
    let lease = claim_one(q, "a");
    q.fail(&lease, &JobError::permanent("broken")).unwrap();
    assert_eq!(status(q, &report), Status::Blocked, "b has not run");
    // `a` is retried: the report waits for it again.
    q.retry(&a).unwrap();
    let lease = claim_one(q, "b");
    q.complete(&lease, json!(null)).unwrap();
    assert_eq!(status(q, &report), Status::Blocked, "a runs again first");
    let lease = claim_one(q, "a");
    q.complete(&lease, json!(null)).unwrap();
    assert_eq!(status(q, &report), Status::Queued);
}

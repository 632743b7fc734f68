//! Bad input: every refusal is a typed error that names what was wrong, and the database
//! is byte-for-byte unchanged afterwards.

use jobq::{ClaimFilter, Error, JobId, NewJob, Status};
use serde_json::json;

use crate::common::Env;

/// A queue holding one job of each common status, and its running job's lease.
fn populated() -> (Env, jobq::Lease, JobId) {
    let env = Env::new();
    let group = env.queue.create_group("g", None).unwrap();
    env.queue
        .enqueue(NewJob::new("a").group(&group.id).owner("o"))
        .unwrap();
    let running = env.queue.enqueue(NewJob::new("b")).unwrap().job_id;
    env.queue.enqueue(NewJob::new("c").priority(-5)).unwrap();
    let claimed = env
        .queue
        .claim("w", 1, &ClaimFilter::queues(["default"]).kinds(["b"]))
        .unwrap();
    assert_eq!(claimed[0].id, running);
    (env, claimed[0].lease(), running)
}

fn assert_invalid(err: Error, field: &str) {
    match &err {
        Error::InvalidInput { field: f, reason } => {
            assert_eq!(*f, field, "{err}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected InvalidInput({field}), got {other:?}"),
    }
}

#[test]
fn invalid_enqueues_are_refused_by_field_and_change_nothing() {
    let (env, _, _) = populated();
    let before = env.dump();
    let cases: Vec<(NewJob, &str)> = vec![
        (NewJob::new("k").input_json("{\"unterminated\": "), "input"),
        (NewJob::new("k").input_json(""), "input"),
        (NewJob::new(""), "kind"),
        (NewJob::new("   "), "kind"),
        (NewJob::new("x".repeat(201)), "kind"),
        (NewJob::new("k").queue(""), "queue"),
        (NewJob::new("k").max_attempts(0), "max_attempts"),
        (NewJob::new("k").cost_cents(-1), "cost_cents"),
        (NewJob::new("k").idempotency_key(""), "idempotency_key"),
        (NewJob::new("k").owner(""), "owner"),
    ];
    for (job, field) in cases {
        assert_invalid(env.queue.enqueue(job).unwrap_err(), field);
    }
    assert!(
        env.queue
            .enqueue(NewJob::new("k").group("missing"))
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(env.dump(), before);
}

#[test]
fn progress_outside_zero_to_one_is_refused_and_changes_nothing() {
    let (env, lease, _) = populated();
    let before = env.dump();
    for p in [-0.01, 1.01, 2.0, f64::NAN, f64::INFINITY, -f64::INFINITY] {
        let err = env
            .queue
            .set_progress(&lease, p, Some("stage"))
            .unwrap_err();
        assert_invalid(err, "progress");
    }
    assert_invalid(env.queue.set_stage(&lease, "").unwrap_err(), "stage");
    assert_invalid(env.queue.add_cost(&lease, -3).unwrap_err(), "cost_cents");
    assert_invalid(
        env.queue
            .complete_with_cost(&lease, json!(1), -3)
            .unwrap_err(),
        "cost_cents",
    );
    assert_eq!(env.dump(), before);
    env.queue.set_progress(&lease, 1.0, None).unwrap();
    env.queue.set_progress(&lease, 0.0, None).unwrap();
}

#[test]
fn unknown_status_names_are_refused() {
    for name in ["pending", "QUEUEDX", "", "succeed", "done"] {
        assert_invalid(name.parse::<Status>().unwrap_err(), "status");
    }
    assert_eq!("Cancelled".parse::<Status>().unwrap(), Status::Cancelled);
}

#[test]
fn malformed_and_missing_ids_are_typed_errors_that_change_nothing() {
    let (env, _, _) = populated();
    let before = env.dump();
    assert_invalid(JobId::parse("not-a-uuid").unwrap_err(), "id");
    assert_invalid(JobId::parse("").unwrap_err(), "id");
    let missing = JobId::parse("01900000-0000-7000-8000-000000000000").unwrap();
    assert!(env.queue.get(&missing).unwrap_err().is_not_found());
    for result in [
        env.queue.cancel(&missing),
        env.queue.retry(&missing),
        env.queue.delete(&missing),
        env.queue.transition(&missing, Status::Running, None),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::NotFound { what: "job", id } if id == missing.as_str()),
            "{err}"
        );
        assert!(err.to_string().contains(missing.as_str()));
    }
    let lease = jobq::Lease {
        job_id: missing.clone(),
        worker: "w".into(),
        attempt: 1,
        claim: 1,
    };
    assert!(
        env.queue
            .complete(&lease, json!(1))
            .unwrap_err()
            .is_not_found()
    );
    assert!(env.queue.heartbeat(&lease).unwrap_err().is_not_found());
    assert!(env.queue.get_group("nope").unwrap_err().is_not_found());
    assert!(env.queue.delete_group("nope").unwrap_err().is_not_found());
    assert_eq!(env.dump(), before);
}

#[test]
fn bad_list_and_group_arguments_are_refused() {
    let (env, _, _) = populated();
    assert_invalid(
        env.queue
            .list(&jobq::JobFilter::new().limit(0))
            .unwrap_err(),
        "limit",
    );
    assert_invalid(
        env.queue
            .list(&jobq::JobFilter::new().limit(10_001))
            .unwrap_err(),
        "limit",
    );
    assert_invalid(
        env.queue
            .list(&jobq::JobFilter::new().after("garbage"))
            .unwrap_err(),
        "after",
    );
    let before = env.dump();
    assert_invalid(env.queue.create_group("", None).unwrap_err(), "name");
    assert_invalid(
        env.queue
            .create_group("g", Some(json!([1, 2])))
            .unwrap_err(),
        "metadata",
    );
    assert_invalid(env.queue.create_owner("", None).unwrap_err(), "owner");
    assert_invalid(
        env.queue.create_owner("x", Some(-1)).unwrap_err(),
        "budget_cents",
    );
    assert_eq!(env.dump(), before);
}

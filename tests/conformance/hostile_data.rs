//! Data that no input can break: costs at and past their bound, times in the past and far
//! ahead, groups deleted from under a running job, integers past 64 bits, control
//! characters in stored values, and the views' plans.

use std::time::Duration;

use jobq::{
    ClaimFilter, CostGrouping, Error, HealthThresholds, MAX_COST_CENTS, NewJob, StatsFilter,
    Timestamp,
};
use serde_json::json;

use crate::cli::Cli;
use crate::common::{Engine, Env, T0, dump, engine};
use crate::http::{Api, Auth};

#[track_caller]
fn invalid(err: Error, field: &str) {
    match err {
        Error::InvalidInput { field: f, .. } => assert_eq!(f, field),
        other => panic!("expected invalid {field}, got {other}"),
    }
}

#[test]
fn costs_are_bounded_and_no_sum_of_them_overflows() {
    let env = Env::new();
    let q = &env.queue;
    let before = env.dump();
    invalid(
        q.enqueue(NewJob::new("k").cost_cents(i64::MAX))
            .unwrap_err(),
        "cost_cents",
    );
    invalid(
        q.enqueue(NewJob::new("k").cost_cents(MAX_COST_CENTS + 1))
            .unwrap_err(),
        "cost_cents",
    );
    invalid(
        q.enqueue(NewJob::new("k").cost_cents(-1)).unwrap_err(),
        "cost_cents",
    );
    // Two jobs within the bound cannot wrap a budget's sum around.
    q.set_budget("ada", Some(100)).unwrap();
    let before_budget = env.dump();
    let err = q
        .enqueue_many([
            NewJob::new("k").owner("ada").cost_cents(MAX_COST_CENTS),
            NewJob::new("k").owner("ada").cost_cents(MAX_COST_CENTS),
        ])
        .unwrap_err();
    assert!(matches!(err, Error::BudgetExceeded { .. }), "{err}");
    let err = q
        .enqueue_many([
            NewJob::new("k").owner("ada").cost_cents(i64::MAX),
            NewJob::new("k").owner("ada").cost_cents(i64::MAX),
        ])
        .unwrap_err();
    invalid(err, "cost_cents");
    assert_eq!(env.dump(), before_budget);
    assert_ne!(before, before_budget);

    // A job at the bound cannot be pushed past it while it runs; it stays readable.
    let id = q
        .enqueue(NewJob::new("k").cost_cents(MAX_COST_CENTS))
        .unwrap()
        .job_id;
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    let held = env.dump();
    invalid(q.add_cost(&lease, 1).unwrap_err(), "cost_cents");
    invalid(q.add_cost(&lease, i64::MAX).unwrap_err(), "cost_cents");
    invalid(
        q.complete_with_cost(&lease, json!({}), 1).unwrap_err(),
        "cost_cents",
    );
    assert_eq!(env.dump(), held, "a refused cost changed nothing");
    q.complete(&lease, json!({})).unwrap();
    assert_eq!(q.get(&id).unwrap().cost_cents, MAX_COST_CENTS);

    // Rows that an older jobq on SQLite let overflow (a REAL) or pass the bound still read,
    // and the sums over them are exact or saturate, never fail. (PostgreSQL's schema never
    // had such rows: its CHECK bounds every cost.)
    if engine() == Engine::Sqlite {
        let conn = env.conn();
        conn.execute(
            "UPDATE jobq_jobs SET cost_cents = 9.3e18 WHERE id = ?1",
            [id.as_str()],
        )
        .unwrap();
        for _ in 0..3 {
            let other = q.enqueue(NewJob::new("k")).unwrap().job_id;
            conn.execute(
                "UPDATE jobq_jobs SET cost_cents = 4000000000000000000 WHERE id = ?1",
                [other.as_str()],
            )
            .unwrap();
        }
        assert_eq!(q.get(&id).unwrap().cost_cents, MAX_COST_CENTS);
        assert_eq!(q.list(&jobq::JobFilter::new()).unwrap().jobs.len(), 4);
        let costs = q.costs(CostGrouping::Status).unwrap();
        let queued = costs
            .iter()
            .find(|r| r.key.as_deref() == Some("queued"))
            .unwrap();
        assert_eq!((queued.count, queued.total_cost_cents), (3, i64::MAX));
    }
    q.costs(CostGrouping::Owner).unwrap();
    q.costs(CostGrouping::Group).unwrap();
}

#[test]
fn a_run_after_in_the_past_means_now() {
    let env = Env::new();
    let q = &env.queue;
    let older = q.enqueue(NewJob::new("k")).unwrap().job_id;
    env.advance(1);
    let from_1970 = q
        .enqueue(NewJob::new("k").run_at(Timestamp::from_millis(0)))
        .unwrap()
        .job_id;
    assert_eq!(q.get(&from_1970).unwrap().run_after.as_millis(), T0 + 1000);
    // It cannot jump ahead of the older job of its priority...
    let claimed = q.claim("w", 1, &ClaimFilter::default()).unwrap();
    assert_eq!(claimed[0].id, older);
    // ...nor look as if it had waited since 1970.
    let overview = q
        .overview(&StatsFilter::new(), &HealthThresholds::default())
        .unwrap();
    assert_eq!(
        overview.health,
        jobq::Health::Healthy,
        "{:?}",
        overview.reasons
    );
}

#[test]
fn queue_wait_is_measured_from_when_the_job_became_ready() {
    let env = Env::new();
    let q = &env.queue;
    q.enqueue(NewJob::new("k").run_after(Duration::from_secs(600)))
        .unwrap();
    env.advance(600);
    let lease = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    env.advance(2);
    q.complete(&lease, json!({})).unwrap();
    let timing = q.timing(&jobq::TimingFilter::new()).unwrap();
    assert_eq!(timing.len(), 1);
    assert_eq!(
        (timing[0].wait_p50_seconds, timing[0].p50_seconds),
        (0.0, 2.0),
        "waited from its run_after, not from its creation 600 s earlier"
    );
    let view = env.sql_f64("SELECT p50_wait_seconds FROM jobq_timing_stats");
    assert_eq!(view, 0.0);
}

#[test]
fn run_after_is_capped_the_same_however_it_is_given() {
    let env = Env::new();
    let q = &env.queue;
    let before = env.dump();
    let past_max = jobq::MAX_DURATION + Duration::from_secs(1);
    invalid(
        q.enqueue(NewJob::new("k").run_after(past_max)).unwrap_err(),
        "run_after",
    );
    invalid(
        q.enqueue(NewJob::new("k").run_after(Duration::MAX))
            .unwrap_err(),
        "run_after",
    );
    let far = Timestamp::from_millis(T0 + past_max.as_millis() as i64);
    invalid(
        q.enqueue(NewJob::new("k").run_at(far)).unwrap_err(),
        "run_after",
    );
    invalid(
        q.enqueue(NewJob::new("k").run_at(Timestamp::from_millis(i64::MAX)))
            .unwrap_err(),
        "run_after",
    );
    assert_eq!(env.dump(), before);
    let id = q
        .enqueue(NewJob::new("k").run_after(jobq::MAX_DURATION))
        .unwrap()
        .job_id;
    let shown = q.get(&id).unwrap().run_after.to_rfc3339();
    assert!(shown.starts_with("2125-"), "{shown}");

    // Over HTTP, seconds, durations and times meet the same bound.
    let api = Api::start();
    let before = dump(api.queue.path());
    for run_after in [
        json!(18_446_744_073_709_551_615u64),
        json!(past_max.as_secs()),
        json!("36501d"),
        json!("9999-12-31T00:00:00Z"),
        json!(-5),
        json!(1.5),
    ] {
        let answer = api.post(
            "/api/jobs",
            Auth::Admin,
            json!({"kind": "k", "run_after": run_after}),
        );
        assert_eq!(answer.status, 400, "{run_after}: {}", answer.text);
        assert_eq!(answer.body["error"]["code"], "invalid_input");
    }
    assert_eq!(dump(api.queue.path()), before);
    for run_after in [json!(60), json!("5m"), json!("2020-01-01T00:00:00Z")] {
        let answer = api.post(
            "/api/jobs",
            Auth::Admin,
            json!({"kind": "k", "run_after": run_after}),
        );
        assert_eq!(answer.status, 201, "{run_after}: {}", answer.text);
    }
}

#[test]
fn a_group_with_a_running_job_cannot_be_deleted() {
    let env = Env::new();
    let q = &env.queue;
    let group = q.create_group("campaign", None).unwrap();
    q.enqueue(NewJob::new("scene").group(&group.id)).unwrap();
    q.enqueue(NewJob::new("scene").group(&group.id)).unwrap();
    let running = q.claim("w", 1, &ClaimFilter::default()).unwrap()[0]
        .id
        .clone();
    let before = env.dump();
    let err = q.delete_group(&group.id).unwrap_err();
    match &err {
        Error::InvalidTransition { job, .. } => assert_eq!(job, &running),
        other => panic!("expected InvalidTransition, got {other}"),
    }
    assert!(err.to_string().contains("cancel"), "{err}");
    assert_eq!(env.dump(), before, "nothing was deleted");
    // Cancelled first, it goes, with its jobs.
    q.cancel(&running).unwrap();
    assert_eq!(q.delete_group(&group.id).unwrap(), 2);

    let api = Api::start();
    let group = api.queue.create_group("campaign", None).unwrap();
    api.queue
        .enqueue(NewJob::new("scene").group(&group.id))
        .unwrap();
    api.queue.claim("w", 1, &ClaimFilter::default()).unwrap();
    let answer = api.delete(&format!("/api/groups/{}", group.id), Auth::Admin);
    assert_eq!(answer.status, 409, "{}", answer.text);
    assert_eq!(api.queue.get_group(&group.id).unwrap().total, 1);
}

#[test]
fn integers_past_64_bits_long_external_ids_and_a_zero_job_timeout_are_refused() {
    let env = Env::new();
    let q = &env.queue;
    let before = env.dump();
    for input in [
        r#"{"n": 99999999999999999999}"#,
        r#"[9223372036854775808]"#,
        r#"{"deep": {"list": [1, 2, -9223372036854775809]}}"#,
    ] {
        invalid(
            q.enqueue(NewJob::new("k").input_json(input)).unwrap_err(),
            "input",
        );
    }
    invalid(
        q.enqueue(NewJob::new("k").external_id("x".repeat(501)))
            .unwrap_err(),
        "external_id",
    );
    assert_eq!(env.dump(), before);
    let id = q
        .enqueue(NewJob::new("k").input_json(r#"{"n": 9223372036854775807, "f": 1e300}"#))
        .unwrap()
        .job_id;
    assert_eq!(q.get(&id).unwrap().input["n"], json!(i64::MAX));

    let api = Api::start();
    let answer = api.post(
        "/api/jobs",
        Auth::Admin,
        serde_json::from_str(r#"{"kind": "k", "input": {"n": 1}}"#).unwrap(),
    );
    assert_eq!(answer.status, 201);
    let raw = api
        .agent
        .post(&api.url("/api/jobs"))
        .header("X-Admin-Key", crate::http::KEY)
        .header("Content-Type", "application/json")
        .send(r#"{"kind": "k", "input": {"n": 99999999999999999999}}"#)
        .unwrap();
    assert_eq!(raw.status().as_u16(), 400);
    assert_eq!(api.queue.stats(&StatsFilter::new()).unwrap().total, 1);

    let cli = Cli::new();
    let stderr = cli.refused(
        1,
        &["enqueue", "k", "--input", r#"{"n": 99999999999999999999}"#],
    );
    assert!(stderr.contains("64 bits"), "{stderr}");
    let stderr = cli.refused(
        1,
        &["worker", "--exec", "true", "--once", "--job-timeout", "0s"],
    );
    assert!(stderr.contains("timeout"), "{stderr}");
    assert_eq!(cli.json(&["list"])["jobs"].as_array().unwrap().len(), 0);
}

#[test]
fn the_command_line_prints_stored_control_characters_as_escapes() {
    let cli = Cli::new();
    let queue = jobq::Queue::open(cli.db()).unwrap();
    let evil = "x\u{1b}]0;pwned\u{7}\u{1b}[2J\r\nFORGED ROW\u{202e}";
    let group = queue.create_group_for(evil, None, Some(evil)).unwrap();
    let id = queue
        .enqueue(NewJob::new(evil).queue(evil).group(&group.id))
        .unwrap()
        .job_id;
    let lease = queue.claim("w", 1, &ClaimFilter::queues([evil])).unwrap()[0].lease();
    queue.set_stage(&lease, evil).unwrap();
    let failed = queue
        .enqueue(NewJob::new(evil).queue(evil).max_attempts(1))
        .unwrap()
        .job_id;
    let lease2 = queue.claim("w", 1, &ClaimFilter::queues([evil])).unwrap()[0].lease();
    queue
        .fail(&lease2, &jobq::JobError::permanent(evil).code(evil))
        .unwrap();
    for args in [
        vec!["list"],
        vec!["show", id.as_str()],
        vec!["show", failed.as_str()],
        vec!["running"],
        vec!["dead"],
        vec!["stages"],
        vec!["costs", "--by", "owner"],
        vec!["costs", "--by", "group"],
        vec!["timing", "--by-kind"],
        vec!["group", "show", group.id.as_str()],
    ] {
        let out = cli.ok(&args);
        for bad in ['\u{1b}', '\u{7}', '\r', '\u{202e}'] {
            assert!(
                !out.contains(bad),
                "jobq {args:?} printed {bad:?}:\n{out:?}"
            );
        }
        assert!(
            !out.lines().any(|l| l.starts_with("FORGED")),
            "jobq {args:?} printed a forged line:\n{out}"
        );
    }
    let listed = cli.ok(&["list"]);
    assert!(listed.contains("\\u{1b}]0;pwned\\u{7}"), "{listed}");
}

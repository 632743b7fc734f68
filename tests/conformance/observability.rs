//! Stats, health, timings, stages, the running monitor, the dead letter, costs and the
//! Prometheus text: every figure checked against values computed by hand on known jobs.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jobq::{
    ClaimFilter, CostGrouping, Health, HealthThresholds, JobError, NewJob, Queue, StatsFilter,
    Status, TimingFilter,
};
use serde_json::json;

use crate::common::{Env, T0, child_output, close, is_child, spawn_child, sql_rows};

/// The known jobs, built with a manual clock:
/// - 4 `scene` jobs of queue `video`, owner alice, succeeded: waits 1, 2, 3, 4 s; runs 1, 2, 3, 10 s;
///   costs 100, 200, 300, 400.
/// - 2 `music` jobs of queue `audio`, owner bob, failed for good: waits 5, 6 s; runs 4, 6 s;
///   stage `mixing`; costs 50, 50.
/// - 1 `scene` job cancelled before it started (owner alice, cost 1000: not spent).
/// - 1 `ingest` job running: stage `llm_analysis`, progress 0.45, last heartbeat 5 s ago,
///   started 20 s ago.
/// - 2 `ingest` jobs queued, 1 `ingest` job waiting for a retry.
fn known() -> Env {
    let env = Env::new();
    let q = &env.queue;
    let claim = |queue: &str| {
        q.claim("w1", 1, &ClaimFilter::queues([queue]))
            .unwrap()
            .remove(0)
            .lease()
    };
    for (i, (run, cost)) in [(1, 100), (2, 200), (3, 300), (10, 400)]
        .into_iter()
        .enumerate()
    {
        q.enqueue(
            NewJob::new("scene")
                .queue("video")
                .owner("alice")
                .cost_cents(cost),
        )
        .unwrap();
        env.advance(i as u64 + 1); // wait 1, 2, 3, 4 s
        let lease = claim("video");
        env.advance(run);
        q.complete(&lease, json!({"ok": true})).unwrap();
    }
    for (wait, run) in [(5, 4), (6, 6)] {
        q.enqueue(
            NewJob::new("music")
                .queue("audio")
                .owner("bob")
                .max_attempts(1)
                .cost_cents(50),
        )
        .unwrap();
        env.advance(wait);
        let lease = claim("audio");
        q.set_stage(&lease, "mixing").unwrap();
        env.advance(run);
        q.fail(
            &lease,
            &JobError::retryable("model overloaded").code("UPSTREAM_503"),
        )
        .unwrap();
    }
    let cancelled = q
        .enqueue(
            NewJob::new("scene")
                .queue("video")
                .owner("alice")
                .cost_cents(1000),
        )
        .unwrap();
    q.cancel(&cancelled.job_id).unwrap();
    q.enqueue(NewJob::new("ingest")).unwrap();
    let running = claim("default");
    q.set_progress(&running, 0.45, Some("llm_analysis"))
        .unwrap();
    env.advance(15);
    q.heartbeat(&running).unwrap();
    env.advance(5);
    q.enqueue_many([NewJob::new("ingest"), NewJob::new("ingest")])
        .unwrap();
    q.enqueue(NewJob::new("ingest").priority(9)).unwrap();
    let retrying = claim("default");
    q.fail(
        &retrying,
        &JobError::retryable("flaky").retry_after(Duration::from_secs(3600)),
    )
    .unwrap();
    env
}

#[test]
fn counts_and_summary_are_exact() {
    let env = known();
    let stats = env.queue.stats(&StatsFilter::new()).unwrap();
    let want: BTreeMap<Status, i64> = [
        (Status::Blocked, 0),
        (Status::Queued, 2),
        (Status::Running, 1),
        (Status::Retry, 1),
        (Status::Succeeded, 4),
        (Status::Failed, 2),
        (Status::Cancelled, 1),
        (Status::Waiting, 0),
    ]
    .into_iter()
    .collect();
    assert_eq!(stats.by_status, want);
    assert_eq!(stats.total, 11);
    let summary = stats.summary();
    assert_eq!(
        (
            summary.running,
            summary.pending,
            summary.failed,
            summary.has_dead_letter
        ),
        (1, 3, 2, true)
    );

    let video = env.queue.stats(&StatsFilter::new().queue("video")).unwrap();
    assert_eq!(
        (
            video.count(Status::Succeeded),
            video.count(Status::Cancelled),
            video.total
        ),
        (4, 1, 5)
    );
    let alice = env.queue.stats(&StatsFilter::new().owner("alice")).unwrap();
    assert_eq!(alice.total, 5);
    let scoped = env.queue.scoped("bob").stats(&StatsFilter::new()).unwrap();
    assert_eq!((scoped.count(Status::Failed), scoped.total), (2, 2));
    assert_eq!(
        env.queue
            .scoped("bob")
            .stats(&StatsFilter::new().owner("alice"))
            .unwrap()
            .total,
        0
    );
}

#[test]
fn timings_are_exact_nearest_rank_percentiles() {
    let env = known();
    let timing = env.queue.timing(&TimingFilter::new()).unwrap();
    let row = |status| timing.iter().find(|t| t.status == status).unwrap();
    let s = row(Status::Succeeded);
    assert_eq!(
        (
            s.count,
            s.avg_seconds,
            s.p50_seconds,
            s.p95_seconds,
            s.max_seconds
        ),
        (4, 4.0, 2.0, 10.0, 10.0)
    );
    assert_eq!(
        (
            s.wait_avg_seconds,
            s.wait_p50_seconds,
            s.wait_p95_seconds,
            s.wait_max_seconds
        ),
        (2.5, 2.0, 4.0, 4.0)
    );
    let f = row(Status::Failed);
    assert_eq!(
        (
            f.count,
            f.avg_seconds,
            f.p50_seconds,
            f.p95_seconds,
            f.max_seconds
        ),
        (2, 5.0, 4.0, 6.0, 6.0)
    );
    assert_eq!(
        (f.wait_avg_seconds, f.wait_p50_seconds, f.wait_p95_seconds),
        (5.5, 5.0, 6.0)
    );
    assert!(
        timing.iter().all(|t| t.status != Status::Cancelled),
        "never started: not timed"
    );

    // By kind, and over a window that only holds the last jobs to finish.
    let by_kind = env.queue.timing(&TimingFilter::new().by_kind()).unwrap();
    assert_eq!(
        by_kind
            .iter()
            .map(|t| (t.status, t.kind.clone().unwrap(), t.count))
            .collect::<Vec<_>>(),
        vec![
            (Status::Failed, "music".into(), 2),
            (Status::Succeeded, "scene".into(), 4),
        ]
    );
    // The second music job failed 20 s before the end, the first 32 s before: a 30 s window
    // holds the second only.
    let recent = env
        .queue
        .timing(&TimingFilter::new().within(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(
        recent
            .iter()
            .map(|t| (t.status, t.count))
            .collect::<Vec<_>>(),
        vec![(Status::Failed, 1)]
    );
    assert_eq!(recent[0].avg_seconds, 6.0);
}

#[test]
fn stages_running_monitor_dead_letter_and_costs_are_exact() {
    let env = known();
    let stages: HashMap<(Option<String>, Status), i64> = env
        .queue
        .stage_distribution()
        .unwrap()
        .into_iter()
        .map(|s| ((s.stage, s.status), s.count))
        .collect();
    assert_eq!(stages.len(), 6, "{stages:?}");
    assert_eq!(stages[&(Some("succeeded".into()), Status::Succeeded)], 4);
    assert_eq!(stages[&(Some("mixing".into()), Status::Failed)], 2);
    assert_eq!(stages[&(Some("llm_analysis".into()), Status::Running)], 1);
    assert_eq!(stages[&(None, Status::Queued)], 2);
    assert_eq!(stages[&(None, Status::Cancelled)], 1);
    // A job that failed before its handler named a stage shows the status it went to.
    assert_eq!(stages[&(Some("retry".into()), Status::Retry)], 1);

    let running = env.queue.running_jobs().unwrap();
    assert_eq!(running.len(), 1);
    let r = &running[0];
    assert_eq!(
        (
            r.kind.as_str(),
            r.stage.as_deref(),
            r.progress,
            r.worker.as_deref()
        ),
        ("ingest", Some("llm_analysis"), 0.45, Some("w1"))
    );
    assert_eq!(
        (r.running_seconds, r.heartbeat_age_seconds, r.attempt),
        (20.0, 5.0, 1)
    );

    let dead = env.queue.dead_letter(10).unwrap();
    assert_eq!(dead.len(), 2);
    assert!(dead[0].failed_at > dead[1].failed_at, "newest first");
    for d in &dead {
        assert_eq!(
            (d.kind.as_str(), d.attempts, d.error_code.as_deref()),
            ("music", 1, Some("UPSTREAM_503"))
        );
        assert_eq!(
            (d.last_error.as_deref(), d.stage.as_deref()),
            (Some("model overloaded"), Some("mixing"))
        );
    }

    let by_status: HashMap<String, (i64, i64, f64)> = env
        .queue
        .costs(CostGrouping::Status)
        .unwrap()
        .into_iter()
        .map(|c| {
            (
                c.key.unwrap(),
                (c.count, c.total_cost_cents, c.avg_cost_cents),
            )
        })
        .collect();
    assert_eq!(by_status["succeeded"], (4, 1000, 250.0));
    assert_eq!(by_status["failed"], (2, 100, 50.0));
    assert_eq!(by_status["cancelled"], (1, 1000, 1000.0));
    assert_eq!(by_status["queued"], (2, 0, 0.0));

    env.queue.set_budget("alice", Some(1500)).unwrap();
    let by_owner = env.queue.costs(CostGrouping::Owner).unwrap();
    let alice = by_owner
        .iter()
        .find(|c| c.key.as_deref() == Some("alice"))
        .unwrap();
    // The job cancelled before it started is counted in the total but not spent.
    assert_eq!(
        (
            alice.count,
            alice.total_cost_cents,
            alice.spent_cents,
            alice.budget_cents,
            alice.remaining_cents
        ),
        (5, 2000, Some(1000), Some(1500), Some(500))
    );
    let none = by_owner.iter().find(|c| c.key.is_none()).unwrap();
    assert_eq!((none.count, none.spent_cents), (4, None));
    let bob_only = env.queue.scoped("bob").costs(CostGrouping::Status).unwrap();
    assert_eq!(bob_only.iter().map(|c| c.count).sum::<i64>(), 2);
}

#[test]
fn the_sql_views_and_the_library_agree() {
    let env = known();
    let db = env.path();
    let timing = env.queue.timing(&TimingFilter::new()).unwrap();
    let rows = sql_rows(
        &db,
        "SELECT status, count, avg_duration_seconds, p50_seconds, p95_seconds, max_seconds, avg_wait_seconds, p50_wait_seconds, p95_wait_seconds FROM jobq_timing_stats",
    );
    assert_eq!(rows.len(), timing.len());
    for row in rows {
        let lib = timing.iter().find(|t| t.status.as_str() == row[0]).unwrap();
        assert_eq!(row[1], json!(lib.count));
        let want = [
            lib.avg_seconds,
            lib.p50_seconds,
            lib.p95_seconds,
            lib.max_seconds,
            lib.wait_avg_seconds,
            lib.wait_p50_seconds,
            lib.wait_p95_seconds,
        ];
        for (got, want) in row[2..].iter().zip(want) {
            assert!(close(got, want), "{row:?} against {lib:?}");
        }
    }
    for row in sql_rows(
        &db,
        "SELECT queue, blocked, queued, running, retry, succeeded, failed, cancelled, waiting, total FROM jobq_queue_stats",
    ) {
        let queue = row[0].as_str().unwrap();
        let lib = env.queue.stats(&StatsFilter::new().queue(queue)).unwrap();
        // The view's columns follow the state machine, as Status::ALL does.
        let counts: Vec<serde_json::Value> = Status::ALL
            .into_iter()
            .map(|s| json!(lib.count(s)))
            .chain([json!(lib.total)])
            .collect();
        assert_eq!(row[1..], counts[..], "queue {queue}");
    }
    let dead_ids: Vec<serde_json::Value> = env
        .queue
        .dead_letter(10)
        .unwrap()
        .into_iter()
        .map(|d| json!(d.id.to_string()))
        .collect();
    let view_dead: Vec<serde_json::Value> = sql_rows(&db, "SELECT id FROM jobq_dead_letter_jobs")
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(view_dead, dead_ids);
    let mut lib_stages: Vec<serde_json::Value> = env
        .queue
        .stage_distribution()
        .unwrap()
        .into_iter()
        .map(|s| json!([s.stage, s.status.to_string(), s.count]))
        .collect();
    let mut view_stages: Vec<serde_json::Value> = sql_rows(
        &db,
        "SELECT stage, status, count FROM jobq_stage_distribution",
    )
    .into_iter()
    .map(serde_json::Value::from)
    .collect();
    let key = |v: &serde_json::Value| v.to_string();
    lib_stages.sort_by_key(key);
    view_stages.sort_by_key(key);
    assert_eq!(lib_stages, view_stages);
    let summary: Vec<serde_json::Value> = sql_rows(
        &db,
        "SELECT owner, status, count, total_cost_cents FROM jobq_job_summary WHERE owner = 'alice' ORDER BY status",
    )
    .into_iter()
    .map(serde_json::Value::from)
    .collect();
    let alice: Vec<serde_json::Value> = env
        .queue
        .scoped("alice")
        .costs(CostGrouping::Status)
        .unwrap()
        .into_iter()
        .map(|c| json!(["alice", c.key.unwrap(), c.count, c.total_cost_cents]))
        .collect();
    assert_eq!(summary, alice);
}

#[test]
fn health_moves_from_healthy_to_degraded_to_unhealthy_and_says_why() {
    let env = Env::new();
    let q = &env.queue;
    let t = HealthThresholds::default();
    let checks = |q: &Queue| {
        let (health, reasons) = q.health(&t).unwrap();
        (
            health,
            reasons
                .iter()
                .map(|r| (r.check, r.level))
                .collect::<Vec<_>>(),
        )
    };
    let finish = |n: usize, fail: bool| {
        q.enqueue_many((0..n).map(|_| NewJob::new("k").max_attempts(1)))
            .unwrap();
        for job in q.claim("w", n, &ClaimFilter::default()).unwrap() {
            if fail {
                q.fail(&job.lease(), &JobError::permanent("x")).unwrap();
            } else {
                q.complete(&job.lease(), json!(null)).unwrap();
            }
        }
    };
    assert_eq!(checks(q), (Health::Healthy, vec![]));
    finish(30, false);
    assert_eq!(checks(q), (Health::Healthy, vec![]));

    // One job in the dead letter (and a failure rate of 1 in 31, under 10%).
    finish(1, true);
    assert_eq!(
        checks(q),
        (Health::Degraded, vec![("dead_letter", Health::Degraded)])
    );

    // A worker stops heartbeating while another is alive: degraded.
    q.enqueue_many([NewJob::new("k").queue("s"), NewJob::new("k").queue("s")])
        .unwrap();
    let dead_worker = q
        .claim("dead", 1, &ClaimFilter::queues(["s"]))
        .unwrap()
        .remove(0)
        .lease();
    env.advance(61);
    let alive = q
        .claim("alive", 1, &ClaimFilter::queues(["s"]))
        .unwrap()
        .remove(0)
        .lease();
    let (health, reasons) = q.health(&t).unwrap();
    assert_eq!(health, Health::Degraded);
    let stale = reasons
        .iter()
        .find(|r| r.check == "stale_heartbeats")
        .unwrap();
    assert_eq!(stale.level, Health::Degraded);
    assert!(
        stale.message.starts_with("1 of 2 running jobs"),
        "{}",
        stale.message
    );
    // Every running job stale: no worker is alive.
    env.advance(61);
    let (health, reasons) = q.health(&t).unwrap();
    assert_eq!(health, Health::Unhealthy);
    assert!(
        reasons
            .iter()
            .any(|r| r.check == "stale_heartbeats" && r.level == Health::Unhealthy)
    );
    q.heartbeat(&alive).unwrap();
    q.complete(&alive, json!(null)).unwrap();
    q.cancel(&dead_worker.job_id).unwrap();

    // A ready job waiting 6 minutes: degraded; 31 minutes: unhealthy.
    q.enqueue(NewJob::new("k").queue("nobody-serves-this"))
        .unwrap();
    env.advance(360);
    let (health, reasons) = q.health(&t).unwrap();
    assert_eq!(health, Health::Degraded);
    assert!(reasons.iter().any(|r| r.check == "queue_wait"
        && r.level == Health::Degraded
        && r.message.contains("360 s")));
    env.advance(25 * 60);
    let (health, reasons) = q.health(&t).unwrap();
    assert_eq!(health, Health::Unhealthy);
    assert!(
        reasons
            .iter()
            .any(|r| r.check == "queue_wait" && r.level == Health::Unhealthy)
    );

    // Within a fresh 15 minute window: 6 failures of 10 is over 50%.
    let env = Env::new();
    let q = &env.queue;
    q.enqueue_many((0..10).map(|_| NewJob::new("k").max_attempts(1)))
        .unwrap();
    for (i, job) in q
        .claim("w", 10, &ClaimFilter::default())
        .unwrap()
        .into_iter()
        .enumerate()
    {
        if i < 6 {
            q.fail(&job.lease(), &JobError::permanent("x")).unwrap();
        } else {
            q.complete(&job.lease(), json!(null)).unwrap();
        }
    }
    let (health, reasons) = q.health(&t).unwrap();
    assert_eq!(health, Health::Unhealthy);
    let rate = reasons.iter().find(|r| r.check == "failure_rate").unwrap();
    assert_eq!(rate.level, Health::Unhealthy);
    assert!(
        rate.message.starts_with("60% of the 10 jobs"),
        "{}",
        rate.message
    );
    // Once the window has passed, only the dead letter remains.
    env.advance(16 * 60);
    assert_eq!(q.health(&t).unwrap().0, Health::Degraded);
}

#[test]
fn the_overview_is_the_stats_document() {
    let env = known();
    let overview = env
        .queue
        .overview(&StatsFilter::new(), &HealthThresholds::default())
        .unwrap();
    let doc = serde_json::to_value(&overview).unwrap();
    assert_eq!(doc["stats"]["by_status"]["succeeded"], 4);
    assert_eq!(doc["stats"]["total"], 11);
    assert_eq!(
        doc["summary"],
        json!({"running": 1, "pending": 3, "failed": 2, "has_dead_letter": true})
    );
    assert_eq!(doc["health"], "degraded");
    assert_eq!(doc["reasons"][0]["check"], "dead_letter");
    let _ = T0;
}

/// A strict check of the Prometheus text exposition format 0.0.4.
fn check_exposition(text: &str) -> HashMap<String, f64> {
    fn valid_name(n: &str) -> bool {
        let mut chars = n.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helped: Vec<String> = Vec::new();
    let mut samples = HashMap::new();
    assert!(text.ends_with('\n'), "the text ends with a newline");
    for line in text.lines() {
        assert!(!line.is_empty(), "no blank lines");
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a name and a text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(!helped.contains(&name.to_string()), "HELP twice for {name}");
            helped.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "TYPE twice for {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment {line}");
        // name{label="value",...} value
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                Some(
                    l.strip_suffix('}')
                        .unwrap_or_else(|| panic!("unclosed labels in {line}")),
                ),
            ),
            None => (series, None),
        };
        assert!(valid_name(name), "{line}");
        if let Some(labels) = labels {
            let mut rest = labels;
            while !rest.is_empty() {
                let (key, after) = rest
                    .split_once("=\"")
                    .unwrap_or_else(|| panic!("bad label in {line}"));
                assert!(valid_name(key) && !key.starts_with("__"), "{line}");
                let mut end = None;
                let mut escaped = false;
                for (i, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, '\\' | '"' | 'n') => escaped = false,
                        (true, _) => panic!("bad escape in {line}"),
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(i);
                            break;
                        }
                        (false, '\n') => panic!("raw newline in {line}"),
                        _ => {}
                    }
                }
                let end = end.unwrap_or_else(|| panic!("unterminated label value in {line}"));
                rest = &after[end + 1..];
                rest = rest.strip_prefix(',').unwrap_or(rest);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        assert!(
            types.contains_key(family),
            "sample of undeclared family: {line}"
        );
        samples.insert(series.to_string(), v);
    }
    samples
}

#[test]
fn metrics_are_valid_prometheus_text_with_the_known_figures() {
    let env = known();
    env.queue
        .enqueue(NewJob::new("odd").queue("we\"ird\\queue"))
        .unwrap();
    let text = env.queue.metrics().unwrap();
    let samples = check_exposition(&text);
    assert_eq!(samples["jobq_jobs{status=\"succeeded\"}"], 4.0);
    assert_eq!(samples["jobq_jobs{status=\"queued\"}"], 3.0);
    assert_eq!(
        samples["jobq_queue_jobs{queue=\"default\",status=\"queued\"}"],
        2.0
    );
    assert_eq!(
        samples["jobq_queue_jobs{queue=\"default\",status=\"retry\"}"],
        1.0
    );
    assert_eq!(
        samples["jobq_queue_jobs{queue=\"default\",status=\"running\"}"],
        1.0
    );
    assert_eq!(
        samples["jobq_queue_jobs{queue=\"we\\\"ird\\\\queue\",status=\"queued\"}"],
        1.0
    );
    assert_eq!(samples["jobq_running_jobs"], 1.0);
    assert_eq!(samples["jobq_dead_letter_jobs"], 2.0);
    assert_eq!(samples["jobq_health{state=\"degraded\"}"], 1.0);
    // True counters and histograms by queue and kind, from the rollups.
    assert_eq!(
        samples["jobq_jobs_finished_total{queue=\"video\",kind=\"scene\",status=\"succeeded\"}"],
        4.0
    );
    assert_eq!(
        samples["jobq_jobs_finished_total{queue=\"audio\",kind=\"music\",status=\"failed\"}"],
        2.0
    );
    assert_eq!(
        samples["jobq_job_transitions_total{queue=\"video\",kind=\"scene\",transition=\"started\"}"],
        4.0
    );
    // Runs of 1, 2, 3 and 10 s: 2 within 2.371 s, 3 within 5.623 s, all 4 within 10 s.
    assert_eq!(
        samples["jobq_attempt_run_seconds_bucket{queue=\"video\",kind=\"scene\",le=\"2.371\"}"],
        2.0
    );
    assert_eq!(
        samples["jobq_attempt_run_seconds_bucket{queue=\"video\",kind=\"scene\",le=\"5.623\"}"],
        3.0
    );
    assert_eq!(
        samples["jobq_attempt_run_seconds_bucket{queue=\"video\",kind=\"scene\",le=\"10\"}"],
        4.0
    );
    assert_eq!(
        samples["jobq_claim_wait_seconds_count{queue=\"audio\",kind=\"music\"}"],
        2.0
    );
    // Waits of 5 and 6 s: one within 5.623 s, both within 10 s.
    assert_eq!(
        samples["jobq_claim_wait_seconds_bucket{queue=\"audio\",kind=\"music\",le=\"5.623\"}"],
        1.0
    );
    assert_eq!(
        samples["jobq_claim_wait_seconds_bucket{queue=\"audio\",kind=\"music\",le=\"10\"}"],
        2.0
    );
    // Pruning lowers the gauges, never the counters.
    let before =
        samples["jobq_jobs_finished_total{queue=\"video\",kind=\"scene\",status=\"succeeded\"}"];
    env.advance(3600);
    assert!(env.queue.prune(Duration::from_secs(60), &[]).unwrap() >= 4);
    let after = check_exposition(&env.queue.metrics().unwrap());
    assert_eq!(
        after["jobq_jobs_finished_total{queue=\"video\",kind=\"scene\",status=\"succeeded\"}"],
        before
    );
    assert_eq!(after["jobq_jobs{status=\"succeeded\"}"], 0.0);
    // Every histogram's buckets are cumulative.
    let mut last: HashMap<String, f64> = HashMap::new();
    for line in text.lines().filter(|l| l.contains("_bucket{")) {
        let (series, v) = line.rsplit_once(' ').unwrap();
        let key = series.split(",le=").next().unwrap().to_string();
        let v: f64 = v.parse().unwrap();
        assert!(
            v >= *last.get(&key).unwrap_or(&0.0),
            "not cumulative: {line}"
        );
        last.insert(key, v);
    }
    assert!(matches!(
        env.queue.scoped("alice").metrics().unwrap_err(),
        jobq::Error::Forbidden { .. }
    ));
}

/// Captures the events jobq emits through `tracing`, with their fields.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<HashMap<String, String>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields<'a>(&'a mut HashMap<String, String>);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.insert(
                    field.name().to_string(),
                    format!("{value:?}").trim_matches('"').to_string(),
                );
            }
        }
        let mut fields = HashMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(fields);
    }
}

/// In a process of its own: a subscriber set for one thread misses events now and then
/// while other tests register tracing's callsites at the same moment; a global one in a
/// child process sees them all.
#[test]
fn the_engine_reports_claims_successes_retries_failures_and_releases_through_tracing() {
    let child = spawn_child("conformance::observability::child_tracing_events", &[]);
    assert!(child_output(child).contains("TRACING EVENTS CHECKED"));
}

#[test]
fn child_tracing_events() {
    if !is_child() {
        return;
    }
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let env = Env::new();
    let (flaky, ok) = {
        let q = &env.queue;
        let flaky = q
            .enqueue(NewJob::new("flaky").max_attempts(2))
            .unwrap()
            .job_id;
        jobq::WorkerPool::builder(q)
            .handler(
                "flaky",
                |ctx: &jobq::JobContext| -> Result<serde_json::Value, JobError> {
                    if ctx.attempt() == 1 {
                        Err(JobError::retryable("first try"))
                    } else {
                        Err(JobError::permanent("second try"))
                    }
                },
            )
            .retry_policy("flaky", jobq::RetryPolicy::fixed(Duration::ZERO))
            .drain_inline()
            .unwrap();
        let ok = q.enqueue(NewJob::new("fine")).unwrap().job_id;
        let summary = jobq::WorkerPool::builder(q)
            .handler("fine", |_: &jobq::JobContext| Ok(json!(1)))
            .run_until_idle()
            .unwrap();
        assert_eq!(summary.succeeded, 1);
        q.enqueue(NewJob::new("stuck")).unwrap();
        q.claim("dead-worker", 1, &ClaimFilter::default()).unwrap();
        env.advance(3600);
        q.release_stale(&jobq::StaleTimeouts::default()).unwrap();
        (flaky, ok)
    };
    let events = captured.0.lock().unwrap().clone();
    let find = |message: &str| {
        events
            .iter()
            .filter(|e| e.get("message").is_some_and(|m| m == message))
            .cloned()
            .collect::<Vec<_>>()
    };
    let claimed = find("jobq: claimed");
    assert!(claimed.len() >= 4, "{claimed:?}");
    assert!(
        claimed.iter().all(|e| e.contains_key("job_id")
            && e.contains_key("kind")
            && e.contains_key("attempt"))
    );
    let retried = find("jobq: attempt failed, will retry");
    assert_eq!(retried.len(), 1);
    assert_eq!(
        (retried[0]["kind"].as_str(), retried[0]["attempt"].as_str()),
        ("flaky", "1")
    );
    let failed = find("jobq: job failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["attempt"], "2");
    assert_eq!(failed[0]["job_id"], flaky.to_string());
    for event in retried.iter().chain(&failed) {
        assert!(
            event
                .get("duration_ms")
                .is_some_and(|d| d.parse::<f64>().is_ok()),
            "a failed attempt says how long its handler ran: {event:?}"
        );
    }
    let succeeded = find("jobq: job succeeded");
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0]["kind"], "fine");
    assert_eq!(succeeded[0]["job_id"], ok.to_string());
    assert!(
        succeeded[0]["duration_ms"].parse::<f64>().is_ok(),
        "{:?}",
        succeeded[0]
    );
    let released = find("jobq: released stale job");
    assert_eq!(released.len(), 1);
    assert_eq!(
        (released[0]["code"].as_str(), released[0]["worker"].as_str()),
        ("HEARTBEAT_TIMEOUT", "dead-worker")
    );
    println!("TRACING EVENTS CHECKED");
}

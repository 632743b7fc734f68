//! `jobq worker --exec CMD --protocol jsonl`: warm handler processes, one per slot, taking
//! jobs and answering as JSON lines; replaced when they exit, break the protocol, time out
//! or have run their share of jobs.

use std::collections::HashSet;
use std::process::Stdio;

use serde_json::{Value, json};

use crate::cli::{Cli, wait_until};

/// A child in Python: for each job line, answers by the job's input: `{"do": "ok"}` (the
/// default: its pid and the job), `"fail"`, `"permanent"`, `"later"` (retry after 1 s),
/// `"snooze"`, `"exit"` (dies mid-job), `"garbage"` (breaks the protocol), `"hang"`,
/// `"report"` (progress, stage and cost, then waits for a file).
const CHILD: &str = r#"
import json, os, sys, time
for line in sys.stdin:
    job = json.loads(line)
    do = (job["input"] or {}).get("do", "ok") if isinstance(job["input"], dict) else "ok"
    def say(**answer):
        answer["id"] = job["id"]
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    if do == "ok":
        say(ok={"pid": os.getpid(), "kind": job["kind"], "attempt": job["attempt"],
                "dependencies": job.get("dependencies")})
    elif do == "fail":
        print("about to fail", file=sys.stderr)
        say(error={"message": "upstream said 503", "code": "UPSTREAM"})
    elif do == "permanent":
        say(error={"message": "bad input", "code": "BAD_INPUT", "permanent": True})
    elif do == "later":
        say(error={"message": "rate limited", "retry_after": "1s"})
    elif do == "snooze":
        say(snooze="5m")
    elif do == "exit":
        print("out of memory, say", file=sys.stderr)
        os._exit(3)
    elif do == "garbage":
        print("a stray print")
        sys.stdout.flush()
    elif do == "hang":
        time.sleep(300)
    elif do == "report":
        say(progress=0.4, stage="thinking", cost_cents=7)
        while not os.path.exists(job["input"]["gate"]):
            time.sleep(0.02)
        say(ok=True)
"#;

fn child(cli: &Cli) -> String {
    let path = cli.dir.path().join("child.py");
    std::fs::write(&path, CHILD).unwrap();
    format!("python3 {}", path.display())
}

fn worker(cli: &Cli, extra: &[&str]) -> std::process::Output {
    let command = child(cli);
    let mut args = vec![
        "worker",
        "--exec",
        &command,
        "--protocol",
        "jsonl",
        "--once",
    ];
    args.extend_from_slice(extra);
    cli.run(&args)
}

#[test]
fn warm_children_run_many_jobs_each_and_answer_as_json_lines() {
    let cli = Cli::new();
    let ids: Vec<String> = (0..12).map(|_| cli.enqueue(&["echo"])).collect();
    let out = worker(&cli, &["--concurrency", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut pids = HashSet::new();
    for id in &ids {
        let job = cli.show(id);
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(
            (
                job["output"]["kind"].as_str(),
                job["output"]["attempt"].as_u64()
            ),
            (Some("echo"), Some(1))
        );
        pids.insert(job["output"]["pid"].as_u64().unwrap());
    }
    assert!(
        pids.len() <= 2,
        "one process per slot, not per job: {pids:?}"
    );
}

#[test]
fn each_outcome_of_the_protocol() {
    let cli = Cli::new();
    let fail = cli.enqueue(&["k", "--input", r#"{"do": "fail"}"#, "--max-attempts", "3"]);
    let permanent = cli.enqueue(&["k", "--input", r#"{"do": "permanent"}"#]);
    let later = cli.enqueue(&["k", "--input", r#"{"do": "later"}"#]);
    let snooze = cli.enqueue(&["k", "--input", r#"{"do": "snooze"}"#]);
    let out = worker(&cli, &["--concurrency", "1"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("about to fail"),
        "the child's stderr reaches the worker's: {stderr}"
    );
    let job = cli.show(&fail);
    assert_eq!(
        (
            job["status"].as_str(),
            job["error_code"].as_str(),
            job["last_error"].as_str()
        ),
        (Some("retry"), Some("UPSTREAM"), Some("upstream said 503"))
    );
    let job = cli.show(&permanent);
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("failed"), Some("BAD_INPUT"))
    );
    let job = cli.show(&later);
    let delay = job["run_after"].as_str().unwrap() > job["updated_at"].as_str().unwrap();
    assert!(job["status"] == "retry" && delay, "{job}");
    let job = cli.show(&snooze);
    assert_eq!(
        (
            job["status"].as_str(),
            job["snoozes"].as_u64(),
            job["attempts"].as_u64()
        ),
        (Some("queued"), Some(1), Some(0))
    );
}

#[test]
fn a_child_that_dies_or_breaks_the_protocol_fails_its_job_and_is_replaced() {
    let cli = Cli::new();
    let exits = cli.enqueue(&["k", "--input", r#"{"do": "exit"}"#, "--priority", "9"]);
    let garbage = cli.enqueue(&["k", "--input", r#"{"do": "garbage"}"#, "--priority", "8"]);
    let fine = cli.enqueue(&["k", "--priority", "1"]);
    let out = worker(&cli, &["--concurrency", "1"]);
    assert!(out.status.success());
    let job = cli.show(&exits);
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("retry"), Some("CHILD_EXITED")),
        "{job}"
    );
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("out of memory, say"),
        "{job}"
    );
    let job = cli.show(&garbage);
    assert_eq!(job["error_code"], "PROTOCOL", "{job}");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("a stray print"),
        "{job}"
    );
    // A new child ran the last one.
    assert_eq!(cli.show(&fine)["status"], "succeeded");
}

#[test]
fn a_child_is_replaced_after_its_share_of_jobs() {
    let cli = Cli::new();
    let ids: Vec<String> = (0..6).map(|_| cli.enqueue(&["k"])).collect();
    let out = worker(&cli, &["--concurrency", "1", "--max-jobs-per-child", "2"]);
    assert!(out.status.success());
    let pids: Vec<u64> = ids
        .iter()
        .map(|id| cli.show(id)["output"]["pid"].as_u64().unwrap())
        .collect();
    let distinct: HashSet<&u64> = pids.iter().collect();
    assert_eq!(distinct.len(), 3, "two jobs a child: {pids:?}");
    let err = cli.refused(
        1,
        &["worker", "--exec", "true", "--max-jobs-per-child", "2"],
    );
    assert!(err.contains("--protocol jsonl"), "{err}");
}

#[test]
fn a_child_past_the_timeout_is_killed_and_reports_apply_while_it_runs() {
    let cli = Cli::new();
    let hang = cli.enqueue(&["k", "--input", r#"{"do": "hang"}"#, "--max-attempts", "1"]);
    let out = worker(&cli, &["--job-timeout", "1s"]);
    assert!(out.status.success());
    assert_eq!(cli.show(&hang)["error_code"], "TIMEOUT");
    let gate = cli.dir.path().join("gate");
    let input = json!({"do": "report", "gate": gate}).to_string();
    let report = cli.enqueue(&["k", "--input", &input]);
    let command = child(&cli);
    let worker = cli
        .cmd(&[
            "worker",
            "--exec",
            &command,
            "--protocol",
            "jsonl",
            "--once",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the report to apply", || {
        let job = cli.show(&report);
        job["progress"].as_f64() == Some(0.4)
            && job["stage"] == "thinking"
            && job["cost_cents"] == 7
    });
    std::fs::write(&gate, "").unwrap();
    assert!(worker.wait_with_output().unwrap().status.success());
    assert_eq!(cli.show(&report)["output"], Value::Bool(true));
}

#[test]
fn a_job_line_carries_its_dependencies_by_ref() {
    let cli = Cli::new();
    let file = cli.dir.path().join("flow.json");
    std::fs::write(
        &file,
        r#"{"jobs": [{"ref": "a", "kind": "a"}, {"ref": "b", "kind": "b", "after": ["a"]}]}"#,
    )
    .unwrap();
    let created = cli.json(&["flow", "submit", file.to_str().unwrap()]);
    for _ in 0..2 {
        assert!(worker(&cli, &[]).status.success());
    }
    let b = cli.show(created["jobs"]["b"].as_str().unwrap());
    assert_eq!(b["output"]["dependencies"]["a"]["kind"], "a", "{b}");
}

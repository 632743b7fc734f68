//! The `jobq` binary, run as users run it: JSON shapes, exit codes, bad input, the worker
//! --exec protocol with real processes, crash recovery, and the demo.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Db, dump};

pub const JOBQ: &str = env!("CARGO_BIN_EXE_jobq");

/// The binary on a fresh database of the engine under test, run in a temp folder.
pub struct Cli {
    pub dir: tempfile::TempDir,
    store: Db,
}

impl Cli {
    pub fn new() -> Cli {
        let cli = Cli {
            dir: tempfile::tempdir().unwrap(),
            store: Db::fresh(),
        };
        cli.ok(&["init"]);
        cli
    }

    /// The database: a file path or a URL.
    pub fn db(&self) -> PathBuf {
        self.store.path()
    }

    /// `jobq worker --exec` on a command that runs `secs` seconds then succeeds, returned
    /// once the command itself has started (`running` in the table is only the claim), with
    /// its stdout piped.
    pub fn exec_worker_running(&self, secs: u32) -> std::process::Child {
        let started = self.dir.path().join("started");
        let command = format!("touch {}; sleep {secs}; echo '{{}}'", started.display());
        let worker = self
            .cmd(&["worker", "--exec", &command])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        wait_until("the command to start", || started.exists());
        worker
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(JOBQ);
        cmd.arg("--db")
            .arg(self.db())
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "jobq {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command with --json; returns the one document it printed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("jobq {args:?} printed no single JSON document ({e}):\n{text}")
        })
    }

    /// Runs a command that must be refused with `code`; returns stderr.
    pub fn refused(&self, code: i32, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "jobq {args:?}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    pub fn enqueue(&self, args: &[&str]) -> String {
        let mut all = vec!["enqueue"];
        all.extend_from_slice(args);
        self.json(&all)["job_id"].as_str().unwrap().to_string()
    }

    pub fn show(&self, id: &str) -> Value {
        self.json(&["show", id])
    }
}

#[test]
fn init_enqueue_list_and_show_print_their_documents() {
    let cli = Cli::new();
    let init = cli.json(&["init"]);
    assert_eq!(init["schema_version"], json!(jobq::schema_version()));
    let out = cli.json(&[
        "enqueue",
        "ingest",
        "--input",
        r#"{"s3_key":"videos/a.mp4"}"#,
        "--queue",
        "media",
        "--priority",
        "-3",
        "--max-attempts",
        "2",
        "--key",
        "a.mp4",
        "--owner",
        "alice",
        "--cost-cents",
        "40",
        "--external-id",
        "rep_1",
        "--run-after",
        "1h",
    ]);
    assert_eq!(
        (out["status"].as_str(), out["already_existed"].as_bool()),
        (Some("queued"), Some(false))
    );
    let id = out["job_id"].as_str().unwrap().to_string();
    let again = cli.json(&["enqueue", "ingest", "--key", "a.mp4", "--owner", "alice"]);
    assert_eq!(
        (again["job_id"].as_str(), again["already_existed"].as_bool()),
        (Some(id.as_str()), Some(true))
    );
    // Plain output is the bare id.
    let plain = cli.ok(&["enqueue", "other"]);
    assert_eq!(plain.trim().len(), 36);

    let job = cli.show(&id);
    assert_eq!(job["id"], json!(id));
    for (field, want) in [
        ("kind", json!("ingest")),
        ("queue", json!("media")),
        ("status", json!("queued")),
        ("priority", json!(-3)),
        ("attempts", json!(0)),
        ("max_attempts", json!(2)),
        ("input", json!({"s3_key": "videos/a.mp4"})),
        ("idempotency_key", json!("a.mp4")),
        ("owner", json!("alice")),
        ("cost_cents", json!(40)),
        ("external_id", json!("rep_1")),
        ("errors", json!([])),
        ("output", Value::Null),
    ] {
        assert_eq!(job[field], want, "{field}");
    }
    assert!(
        job["created_at"].as_str().unwrap().ends_with('Z'),
        "RFC 3339 UTC"
    );

    let list = cli.json(&["list"]);
    assert_eq!(list["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(list["jobs"][0]["kind"], "other", "newest first");
    assert_eq!(list["next"], Value::Null);
    let filtered = cli.json(&[
        "list", "--queue", "media", "--owner", "alice", "--kind", "ingest", "--status", "queued",
    ]);
    assert_eq!(filtered["jobs"].as_array().unwrap().len(), 1);
    let page = cli.json(&["list", "--limit", "1"]);
    let next = page["next"].as_str().unwrap();
    let rest = cli.json(&["list", "--limit", "1", "--after", next]);
    assert_eq!(rest["jobs"][0]["id"], json!(id));
    assert!(cli.ok(&["list"]).contains("ingest"));
    assert!(cli.ok(&["show", &id]).contains("videos/a.mp4"));
}

#[test]
fn admin_actions_and_refused_transitions() {
    let cli = Cli::new();
    let id = cli.enqueue(&["k"]);
    let done = cli.json(&["cancel", &id]);
    assert_eq!(
        (done["success"].as_bool(), done["previous_status"].as_str()),
        (Some(true), Some("queued"))
    );
    let before = dump(&cli.db());
    let err = cli.refused(1, &["cancel", &id]);
    assert!(
        err.starts_with("jobq: ")
            && err.contains(&id)
            && err.contains("cancelled")
            && err.contains("cancel"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert_eq!(dump(&cli.db()), before);
    assert!(cli.ok(&["retry", &id]).contains("queued again"));
    assert_eq!(cli.show(&id)["status"], "queued");
    let deleted = cli.json(&["delete", &id]);
    assert_eq!(deleted["success"], true);
    let err = cli.refused(1, &["show", &id]);
    assert!(err.contains("not found"), "{err}");
    let err = cli.refused(1, &["retry", "01900000-0000-7000-8000-000000000000"]);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn observability_commands_print_their_documents() {
    let cli = Cli::new();
    let group = cli.json(&[
        "group",
        "create",
        "campaign",
        "--owner",
        "acme",
        "--metadata",
        r#"{"brand":"acme"}"#,
    ]);
    let group_id = group["id"].as_str().unwrap().to_string();
    for _ in 0..3 {
        cli.enqueue(&["scene", "--group", &group_id, "--cost-cents", "100"]);
    }
    cli.enqueue(&["fails", "--max-attempts", "1"]);
    let worker = cli.run(&["worker", "--exec", "if [ \"$JOBQ_JOB_KIND\" = fails ]; then echo broken >&2; exit 3; fi; echo '@progress 0.5 rendering'; echo '{\"ok\":true}'", "--once", "--concurrency", "2"]);
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );

    let stats = cli.json(&["stats"]);
    assert_eq!(
        stats["stats"]["by_status"],
        json!({"blocked": 0, "queued": 0, "running": 0, "retry": 0, "succeeded": 3, "failed": 1, "cancelled": 0, "waiting": 0})
    );
    assert_eq!(stats["stats"]["total"], 4);
    assert_eq!(stats["health"], "degraded");
    assert_eq!(
        stats["summary"],
        json!({"running": 0, "pending": 0, "failed": 1, "has_dead_letter": true})
    );
    let plain = cli.ok(&["stats"]);
    assert!(
        plain.contains("health: degraded") && plain.contains("succeeded  3"),
        "{plain}"
    );

    // Over time, from the rollups the worker's transactions kept.
    let series = cli.json(&["stats", "--series", "--window", "5m"]);
    assert_eq!(series["step_s"], 60);
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 5);
    let sum = |field: &str| -> i64 { points.iter().map(|p| p[field].as_i64().unwrap()).sum() };
    assert_eq!(
        (
            sum("enqueued"),
            sum("started"),
            sum("succeeded"),
            sum("failed")
        ),
        (4, 4, 3, 1)
    );
    // By the hour (two of them, so that an hour turning during the test changes nothing).
    let of_kind = cli.json(&[
        "stats", "--series", "--kind", "fails", "--step", "1h", "--window", "2h",
    ]);
    let kind_sum = |field: &str| -> i64 {
        of_kind["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[field].as_i64().unwrap())
            .sum()
    };
    assert_eq!((kind_sum("failed"), kind_sum("succeeded")), (1, 0));
    let plain = cli.ok(&["stats", "--series", "--window", "3m"]);
    assert!(
        plain.contains("SUCCEEDED") && plain.lines().count() == 4,
        "{plain}"
    );
    assert_eq!(cli.json(&["running"])["running"], json!([]));
    assert!(cli.ok(&["running"]).contains("Running jobs: 0"));
    let dead = cli.json(&["dead"]);
    assert_eq!(dead["dead"][0]["kind"], "fails");
    assert_eq!(dead["dead"][0]["error_code"], "EXIT_3");
    assert_eq!(dead["dead"][0]["last_error"], "broken");
    let timing = cli.json(&["timing"]);
    let rows = timing["timing"].as_array().unwrap();
    let succeeded = rows.iter().find(|r| r["status"] == "succeeded").unwrap();
    assert_eq!(succeeded["count"], 3);
    for field in ["avg_seconds", "p50_seconds", "p95_seconds", "max_seconds"] {
        assert!(succeeded[field].as_f64().unwrap() >= 0.0, "{field}");
    }
    assert!(cli.json(&["timing", "--by-kind", "--since", "1h"])["timing"][0]["kind"].is_string());
    let stages = cli.json(&["stages"]);
    assert!(
        stages["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "succeeded" && s["count"] == 3)
    );
    let costs = cli.json(&["costs"]);
    let by_status: HashMap<String, i64> = costs["costs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_string(),
                c["total_cost_cents"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(by_status["succeeded"], 300);
    let by_owner = cli.json(&["costs", "--by", "owner"]);
    assert!(
        by_owner["costs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["owner"] == "acme" && c["total_cost_cents"] == 300)
    );
    assert!(
        cli.json(&["costs", "--by", "group"])["costs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["group"] == json!(group_id))
    );

    let shown = cli.json(&["group", "show", &group_id]);
    assert_eq!(
        (
            shown["stage"].as_str(),
            shown["progress"].as_f64(),
            shown["total"].as_i64()
        ),
        (Some("completed"), Some(100.0), Some(3))
    );
    assert_eq!(shown["counts"]["succeeded"], 3);
    let deleted = cli.json(&["group", "delete", &group_id]);
    assert_eq!(deleted["jobs_deleted"], 3);
    assert!(
        cli.refused(1, &["group", "show", &group_id])
            .contains("not found")
    );

    let token = cli.ok(&["token", "create", "--owner", "acme"]);
    assert!(token.trim().starts_with("jobq_"));
    assert!(
        cli.json(&["token", "create", "--owner", "acme"])["token"]
            .as_str()
            .unwrap()
            .starts_with("jobq_")
    );

    assert_eq!(
        cli.ok(&["prune", "--older-than", "0s", "--status", "failed"])
            .trim(),
        "Pruned 1 jobs"
    );
    assert_eq!(cli.json(&["prune", "--older-than", "7d"])["pruned"], 0);
}

#[test]
fn bad_input_is_refused_with_a_clear_message_and_changes_nothing() {
    let cli = Cli::new();
    let id = cli.enqueue(&["k"]);
    let before = dump(&cli.db());
    for (code, args, says) in [
        (
            1,
            vec!["enqueue", "k", "--input", "{not json"],
            "not valid JSON",
        ),
        (1, vec!["enqueue", "", "--input", "{}"], "kind"),
        (
            1,
            vec!["enqueue", "k", "--max-attempts", "-1"],
            "max_attempts",
        ),
        (
            1,
            vec!["enqueue", "k", "--max-attempts", "0"],
            "max_attempts",
        ),
        (1, vec!["enqueue", "k", "--cost-cents", "-5"], "cost_cents"),
        (
            1,
            vec!["enqueue", "k", "--group", "no-such-group"],
            "not found",
        ),
        (1, vec!["list", "--status", "bogus"], "unknown status"),
        (1, vec!["list", "--limit", "0"], "limit"),
        (
            1,
            vec!["prune", "--older-than", "1d", "--status", "running"],
            "never pruned",
        ),
        (1, vec!["show", "garbage"], "not found"),
        (
            1,
            vec!["group", "create", "g", "--metadata", "[1,"],
            "not valid JSON",
        ),
        (
            2,
            vec!["enqueue", "k", "--run-after", "5 minutes"],
            "5 minutes",
        ),
        (2, vec!["release-stale", "--heartbeat-timeout", "-1s"], "-1"),
        (2, vec!["prune", "--older-than", "soon"], "older-than"),
        (2, vec!["enqueue", "k", "--priority", "high"], "priority"),
        (2, vec!["no-such-command"], "no-such-command"),
        (2, vec!["costs", "--by", "planet"], "planet"),
        (2, vec!["enqueue"], "KIND"),
    ] {
        let err = cli.refused(code, &args);
        assert!(
            err.contains(says),
            "jobq {args:?} should say {says:?}: {err}"
        );
        if code == 1 {
            assert!(
                err.starts_with("jobq: ") && err.trim().lines().count() == 1,
                "one line: {err}"
            );
        }
        assert_eq!(
            dump(&cli.db()),
            before,
            "jobq {args:?} changed the database"
        );
    }
    let _ = id;
    // $JOBQ_DB is the default.
    let out = Command::new(JOBQ)
        .args(["--json", "list"])
        .env("JOBQ_DB", cli.db())
        .current_dir(cli.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["jobs"].as_array().unwrap().len(), 1);
}

#[test]
fn three_exec_workers_drain_two_thousand_jobs_each_once() {
    let cli = Cli::new();
    let queue = jobq::Queue::open(cli.db()).unwrap();
    queue
        .enqueue_many((0..2000).map(|i| jobq::NewJob::new("count").input(json!({ "i": i }))))
        .unwrap();
    let effects = cli.dir.path().join("effects.log");
    let command = format!(
        "echo \"$JOBQ_JOB_ID $JOBQ_ATTEMPT\" >> {}",
        effects.display()
    );
    let workers: Vec<Child> = (0..3)
        .map(|_| {
            cli.cmd(&[
                "worker",
                "--exec",
                &command,
                "--concurrency",
                "4",
                "--once",
                "--poll-interval",
                "100ms",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let mut processed = 0;
    for w in workers {
        let out = w.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains("Worker ID: ") && text.contains("Concurrency: 4"),
            "{text}"
        );
        let line = text
            .lines()
            .find(|l| l.starts_with("Jobs processed: "))
            .unwrap();
        processed += line
            .trim_start_matches("Jobs processed: ")
            .parse::<u64>()
            .unwrap();
        assert!(text.contains("Jobs failed: 0"), "{text}");
    }
    assert_eq!(processed, 2000);
    let log = std::fs::read_to_string(&effects).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in log.lines() {
        let (id, attempt) = line.split_once(' ').unwrap();
        assert_eq!(attempt, "1");
        *runs.entry(id).or_default() += 1;
    }
    assert_eq!(runs.len(), 2000, "every job ran");
    assert!(
        runs.values().all(|n| *n == 1),
        "a command ran twice for a job"
    );
    let stats = queue.stats(&jobq::StatsFilter::new()).unwrap();
    assert_eq!(stats.count(jobq::Status::Succeeded), 2000);
    let jobs = queue
        .list(&jobq::JobFilter::new().limit(2000))
        .unwrap()
        .jobs;
    assert!(
        jobs.iter()
            .all(|j| j.attempts == 1 && j.output == Some(json!({"stdout": ""})))
    );
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_exec_protocol_reports_while_running_and_passes_input_and_environment() {
    let cli = Cli::new();
    let id = cli.enqueue(&["render", "--input", r#"{"scene": 7}"#]);
    let gate = cli.dir.path().join("gate");
    let seen = cli.dir.path().join("seen.json");
    let command = format!(
        "cat > {seen}; echo \"{{\\\"env\\\": [\\\"$JOBQ_JOB_ID\\\", \\\"$JOBQ_JOB_KIND\\\", \\\"$JOBQ_ATTEMPT\\\", \\\"$JOBQ_DB\\\"]}}\" > {seen}.env; \
         echo '@stage generating'; echo '@progress 0.45 rendering'; echo '@cost 25'; \
         while [ ! -e {gate} ]; do sleep 0.05; done; echo '@progress 1'; echo '{{\"frames\": 240}}'",
        seen = seen.display(),
        gate = gate.display()
    );
    let worker = cli
        .cmd(&[
            "worker",
            "--exec",
            &command,
            "--once",
            "--heartbeat-interval",
            "200ms",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the progress report", || {
        let job = cli.show(&id);
        job["progress"] == json!(0.45)
            && job["stage"] == "rendering"
            && job["cost_cents"] == 25
            && job["status"] == "running"
    });
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(&seen).unwrap()).unwrap(),
        json!({"scene": 7})
    );
    let env: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{}.env", seen.display())).unwrap())
            .unwrap();
    assert_eq!(
        env["env"],
        json!([id, "render", "1", cli.db().display().to_string()])
    );
    std::fs::write(&gate, "").unwrap();
    assert!(worker.wait_with_output().unwrap().status.success());
    let job = cli.show(&id);
    assert_eq!(
        (
            job["status"].as_str(),
            job["output"].clone(),
            job["progress"].as_f64()
        ),
        (Some("succeeded"), json!({"frames": 240}), Some(1.0))
    );
}

#[test]
fn exit_65_fails_at_once_and_other_exits_retry_until_max_attempts() {
    let cli = Cli::new();
    let permanent = cli.enqueue(&["bad", "--max-attempts", "5"]);
    let flaky = cli.enqueue(&["flaky", "--max-attempts", "3"]);
    let command = "if [ \"$JOBQ_JOB_KIND\" = bad ]; then echo 'corrupt input' >&2; exit 65; fi; echo \"attempt $JOBQ_ATTEMPT failed\" >&2; exit 1";
    // 1 run of `bad` + 3 of `flaky`, with a 10 ms backoff.
    let out = cli.run(&[
        "worker",
        "--exec",
        command,
        "--limit",
        "4",
        "--retry-base",
        "10ms",
        "--retry-max",
        "20ms",
        "--poll-interval",
        "20ms",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // Two jobs, four attempts: both jobs failed for good, two attempts were retried.
    assert!(
        text.contains("Jobs processed: 2")
            && text.contains("Jobs succeeded: 0")
            && text.contains("Jobs failed: 2")
            && text.contains("Attempts: 4")
            && text.contains("Attempts retried: 2"),
        "{text}"
    );
    let job = cli.show(&permanent);
    assert_eq!(
        (
            job["status"].as_str(),
            job["attempts"].as_u64(),
            job["error_code"].as_str()
        ),
        (Some("failed"), Some(1), Some("EXIT_65"))
    );
    assert_eq!(job["last_error"], "corrupt input");
    let job = cli.show(&flaky);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("failed"), Some(3))
    );
    let errors = job["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "one entry per attempt");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], json!(i + 1));
        assert_eq!(e["code"], "EXIT_1");
        assert_eq!(e["message"], json!(format!("attempt {} failed", i + 1)));
    }
    assert!(cli.ok(&["show", &flaky]).contains("3 failed attempt(s)"));
}

pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[test]
fn a_hung_command_is_killed_at_the_job_timeout_with_its_children() {
    let cli = Cli::new();
    let id = cli.enqueue(&["hang", "--max-attempts", "1"]);
    let pids = cli.dir.path().join("pids");
    let command = format!("sleep 300 & echo $! > {}; sleep 300", pids.display());
    let started = Instant::now();
    let out = cli.run(&[
        "worker",
        "--exec",
        &command,
        "--once",
        "--job-timeout",
        "1s",
    ]);
    assert!(out.status.success());
    assert!(started.elapsed() < Duration::from_secs(60));
    let job = cli.show(&id);
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("failed"), Some("TIMEOUT"))
    );
    let child: i32 = std::fs::read_to_string(&pids)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the background child to be killed", || !alive(child));
}

#[test]
fn a_worker_killed_mid_job_is_released_by_release_stale_and_finished_by_another() {
    let cli = Cli::new();
    let id = cli.enqueue(&["slow"]);
    let mut worker = cli
        .cmd(&[
            "worker",
            "--exec",
            "sleep 60",
            "--heartbeat-interval",
            "200ms",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the job to run", || cli.show(&id)["status"] == "running");
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    // The heartbeat is fresh at first: nothing to release.
    assert_eq!(
        cli.ok(&["release-stale", "--heartbeat-timeout", "5s"])
            .trim(),
        "Released 0 stale jobs"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        cli.ok(&["release-stale", "--heartbeat-timeout", "1s"])
            .trim(),
        "Released 1 stale jobs"
    );
    let job = cli.show(&id);
    assert_eq!(
        (
            job["status"].as_str(),
            job["error_code"].as_str(),
            job["stage"].as_str()
        ),
        (
            Some("retry"),
            Some("HEARTBEAT_TIMEOUT"),
            Some("released_stale")
        )
    );
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("worker timed out")
    );
    let out = cli.run(&["worker", "--exec", "echo '{\"done\": true}'", "--once"]);
    assert!(out.status.success());
    let job = cli.show(&id);
    assert_eq!(
        (
            job["status"].as_str(),
            job["attempts"].as_u64(),
            job["output"].clone()
        ),
        (Some("succeeded"), Some(2), json!({"done": true}))
    );
    assert_eq!(job["errors"][0]["code"], "HEARTBEAT_TIMEOUT");
}

#[test]
fn sigterm_lets_the_running_job_finish_and_prints_the_summary() {
    let cli = Cli::new();
    let id = cli.enqueue(&["slowish"]);
    // The command itself must have started: a job claimed and not yet started is released
    // at SIGTERM, as the contract says.
    let worker = cli.exec_worker_running(1);
    // SAFETY: sending SIGTERM to our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Jobs processed: 1") && text.contains("Jobs succeeded: 1"),
        "{text}"
    );
    assert_eq!(cli.show(&id)["status"], "succeeded");
}

#[test]
fn admin_actions_take_many_ids_and_retry_takes_the_whole_dead_letter() {
    let cli = Cli::new();
    let a = cli.enqueue(&["k"]);
    let b = cli.enqueue(&["k"]);
    let c = cli.enqueue(&["k"]);
    let out = cli.ok(&["cancel", &a, &b]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(cli.show(&a)["status"], "cancelled");
    assert_eq!(cli.show(&b)["status"], "cancelled");
    // A refused id is named; the others are still done; the exit says something was refused.
    let err = cli.refused(1, &["cancel", &a, &c, "not-an-id"]);
    assert!(err.contains(&a) && err.contains("not-an-id"), "{err}");
    assert_eq!(cli.show(&c)["status"], "cancelled");
    let doc = {
        let out = cli.run(&["--json", "retry", &a, &b, &c]);
        assert!(out.status.success());
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let results = doc["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["success"] == true), "{doc}");
    let deleted = cli.ok(&["delete", &a, &b]);
    assert_eq!(deleted.lines().count(), 2);

    // The dead letter in bulk, by kind and queue.
    let cli = Cli::new();
    let mut dead = Vec::new();
    for (kind, queue) in [("mail", "default"), ("mail", "bulk"), ("render", "default")] {
        dead.push(cli.enqueue(&[kind, "--queue", queue, "--max-attempts", "1"]));
    }
    let out = cli.run(&[
        "worker", "--exec", "exit 65", "--once", "--queue", "default", "--queue", "bulk",
    ]);
    assert!(out.status.success());
    assert!(dead.iter().all(|id| cli.show(id)["status"] == "failed"));
    let retried = cli.json(&["retry", "--all-dead", "--kind", "mail", "--queue", "bulk"]);
    assert_eq!(retried["retried"], 1);
    assert_eq!(cli.show(&dead[1])["status"], "queued");
    assert_eq!(cli.show(&dead[0])["status"], "failed");
    assert!(cli.ok(&["retry", "--all-dead"]).contains("2 jobs"));
    assert!(dead.iter().all(|id| cli.show(id)["status"] == "queued"));
    assert_eq!(cli.show(&dead[0])["attempts"], 0);
    cli.refused(2, &["retry", "--all-dead", &dead[0]]);
    cli.refused(2, &["retry"]);
}

#[test]
fn owner_budget_sets_and_clears_a_spending_limit() {
    let cli = Cli::new();
    let owner = cli.json(&["owner", "budget", "acme", "150"]);
    assert_eq!(
        (owner["id"].as_str(), owner["budget_cents"].as_i64()),
        (Some("acme"), Some(150))
    );
    cli.enqueue(&["gen", "--owner", "acme", "--cost-cents", "100"]);
    let err = cli.refused(
        1,
        &["enqueue", "gen", "--owner", "acme", "--cost-cents", "100"],
    );
    assert!(err.contains("budget"), "{err}");
    assert!(
        cli.ok(&["owner", "budget", "acme", "none"])
            .contains("no budget")
    );
    cli.enqueue(&["gen", "--owner", "acme", "--cost-cents", "100"]);
    let before = dump(&cli.db());
    for bad in ["-5", "lots", "1.5"] {
        cli.refused(1, &["owner", "budget", "acme", bad]);
    }
    assert_eq!(dump(&cli.db()), before);
}

#[test]
fn dependencies_flows_and_windows_from_the_command_line() {
    let cli = Cli::new();
    let a = cli.enqueue(&["fetch"]);
    let b = cli.enqueue(&["parse", "--after", &a, "--on-dependency-failure", "run"]);
    let shown = cli.show(&b);
    assert_eq!(shown["status"], "blocked");
    assert_eq!(shown["dependencies"][0]["id"], a.as_str());
    let text = cli.ok(&["show", &a]);
    assert!(text.contains("dependents") && text.contains(&b), "{text}");
    // A missing dependency: refused, exit 1, naming it.
    let ghost = "0190a0b0-0000-7000-8000-000000000000";
    let err = cli.refused(1, &["enqueue", "x", "--after", ghost]);
    assert!(err.contains(ghost), "{err}");
    // Windows need a key: a usage error.
    cli.refused(2, &["enqueue", "x", "--unique-while-active"]);
    let json = cli.json(&["enqueue", "x", "--key", "k", "--unique-for", "10m"]);
    let again = cli.json(&["enqueue", "x", "--key", "k", "--unique-for", "10m"]);
    assert_eq!(json["job_id"], again["job_id"]);
    assert_eq!(again["already_existed"], true);

    // flow submit: from a file, and from standard input.
    let file = cli.dir.path().join("flow.json");
    std::fs::write(
        &file,
        r#"{"group": {"name": "campaign"}, "jobs": [
            {"ref": "scene-1", "kind": "render"}, {"ref": "scene-2", "kind": "render"},
            {"ref": "composite", "kind": "composite", "after": ["scene-1", "scene-2"]}]}"#,
    )
    .unwrap();
    let created = cli.json(&["flow", "submit", file.to_str().unwrap()]);
    let composite = created["jobs"]["composite"].as_str().unwrap();
    assert_eq!(cli.show(composite)["status"], "blocked");
    let group = cli.json(&["group", "show", created["group_id"].as_str().unwrap()]);
    assert_eq!(group["total"], 3);
    let text = cli.ok(&["flow", "submit", file.to_str().unwrap()]);
    assert!(
        text.starts_with("group ") && text.contains("composite"),
        "{text}"
    );

    let before = crate::common::dump(&cli.db());
    let mut child = cli
        .cmd(&["flow", "submit", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"jobs": [{"ref": "a", "kind": "a", "after": ["b"]}, {"ref": "b", "kind": "b", "after": ["a"]}]}"#,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cycle"), "{stderr}");
    assert_eq!(
        crate::common::dump(&cli.db()),
        before,
        "nothing was created"
    );
    let stats = cli.ok(&["stats"]);
    assert!(stats.contains("blocked"), "{stats}");
}

#[test]
fn schedules_from_the_command_line() {
    let cli = Cli::new();
    let added = cli.json(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "@daily",
        "report",
        "--input",
        r#"{"full":true}"#,
        "--timezone",
        "Europe/Paris",
        "--catch-up",
        "none",
    ]);
    assert_eq!(added["cron"], "@daily");
    assert_eq!(added["catch_up"], "none");
    cli.ok(&["schedule", "add", "tick", "--every", "5m", "ping"]);
    // A rule is required, and only one.
    cli.refused(2, &["schedule", "add", "x", "ping"]);
    cli.refused(
        2,
        &[
            "schedule", "add", "x", "--cron", "@daily", "--every", "1m", "ping",
        ],
    );
    let err = cli.refused(1, &["schedule", "add", "x", "--cron", "99 * * * *", "ping"]);
    assert!(err.contains("cron"), "{err}");
    let err = cli.refused(1, &["schedule", "add", "tick", "--every", "1m", "ping"]);
    assert!(err.contains("already exists"), "{err}");
    let text = cli.ok(&["schedule", "list"]);
    for needle in [
        "NEXT FIRE",
        "LAST FIRE",
        "nightly",
        "@daily",
        "every 5m",
        "report",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let paused = cli.json(&["schedule", "pause", "tick"]);
    assert_eq!(paused["paused"], true);
    let list = cli.json(&["schedule", "list"]);
    assert_eq!(list["schedules"].as_array().unwrap().len(), 2);
    assert_eq!(cli.json(&["schedule", "resume", "tick"])["paused"], false);
    cli.ok(&["schedule", "remove", "tick"]);
    cli.refused(1, &["schedule", "remove", "tick"]);
    assert_eq!(
        cli.json(&["schedule", "list"])["schedules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn queues_from_the_command_line() {
    let cli = Cli::new();
    cli.enqueue(&[
        "render",
        "--queue",
        "gpu",
        "--concurrency-key",
        "customer-1",
    ]);
    cli.enqueue(&[
        "render",
        "--queue",
        "gpu",
        "--concurrency-key",
        "customer-1",
    ]);
    let set = cli.json(&[
        "queue",
        "set",
        "gpu",
        "--max-running",
        "2",
        "--max-running-per-key",
        "1",
        "--rate",
        "10/1s",
    ]);
    assert_eq!(
        (set["max_running"].as_u64(), set["rate"].as_str()),
        (Some(2), Some("10/1s"))
    );
    cli.ok(&["queue", "pause", "gpu"]);
    let text = cli.ok(&["queue", "list"]);
    for needle in [
        "QUEUE",
        "READY",
        "BLOCKED",
        "PAUSED",
        "MAX RUNNING",
        "gpu",
        "yes",
        "10/1s",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    // Paused: a worker claims nothing from it.
    let out = cli.run(&["worker", "--exec", "cat", "--queue", "gpu", "--once"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("Jobs processed: 0"));
    cli.ok(&["queue", "resume", "gpu"]);
    // One key, limit 1 per key: the two jobs run one after the other, both done.
    let out = cli.run(&["worker", "--exec", "cat", "--queue", "gpu", "--once"]);
    assert!(out.status.success());
    let list = cli.json(&["queue", "list"]);
    let gpu = &list["queues"][0];
    assert_eq!(
        (gpu["name"].as_str(), gpu["paused"].as_bool()),
        (Some("gpu"), Some(false))
    );
    cli.ok(&[
        "queue",
        "set",
        "gpu",
        "--max-running",
        "none",
        "--rate",
        "none",
    ]);
    let err = cli.refused(1, &["queue", "set", "gpu", "--rate", "lots"]);
    assert!(err.contains("rate"), "{err}");
    cli.refused(1, &["queue", "set", "gpu", "--max-running", "-3"]);
}

#[test]
fn schedules_are_replaced_run_and_named_by_owner_on_the_command_line() {
    let cli = Cli::new();
    for owner in ["acme", "globex"] {
        cli.ok(&[
            "schedule", "add", "nightly", "--every", "1h", "report", "--owner", owner,
        ]);
    }
    let err = cli.refused(1, &["schedule", "pause", "nightly"]);
    assert!(err.contains("acme") && err.contains("--owner"), "{err}");
    let paused = cli.json(&["schedule", "pause", "nightly", "--owner", "acme"]);
    assert_eq!(
        (paused["owner"].as_str(), paused["paused"].as_bool()),
        (Some("acme"), Some(true))
    );
    assert_eq!(
        cli.json(&["schedule", "resume", "nightly", "--owner", "acme"])["paused"],
        false
    );
    let err = cli.refused(
        1,
        &[
            "schedule",
            "add",
            "nightly",
            "--cron",
            "0 3 * * *",
            "summary",
            "--owner",
            "acme",
        ],
    );
    assert!(err.contains("already exists"), "{err}");
    let replaced = cli.json(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 3 * * *",
        "summary",
        "--owner",
        "acme",
        "--replace",
    ]);
    assert_eq!(
        (replaced["cron"].as_str(), replaced["kind"].as_str()),
        (Some("0 3 * * *"), Some("summary"))
    );
    let ran = cli.json(&["schedule", "run", "nightly", "--owner", "acme"]);
    let job = cli.show(ran["job_id"].as_str().unwrap());
    assert_eq!(
        (job["kind"].as_str(), job["owner"].as_str()),
        (Some("summary"), Some("acme"))
    );
    cli.ok(&["schedule", "remove", "nightly", "--owner", "globex"]);
    // One left: its name alone reaches it now.
    cli.ok(&["schedule", "remove", "nightly"]);
    let err = cli.refused(1, &["schedule", "add", "x", "--every", "500ms", "k"]);
    assert!(err.contains("at least 1s"), "{err}");
    let err = cli.refused(1, &["schedule", "add", "x", "--cron", "0 25 * * *", "k"]);
    assert!(err.contains("the hour field"), "{err}");
}

#[test]
fn top_shows_each_queue_and_refreshes_in_place_until_q() {
    let cli = Cli::new();
    for _ in 0..3 {
        cli.enqueue(&["render", "--queue", "video"]);
    }
    cli.enqueue(&["mail", "--queue", "email", "--max-attempts", "1"]);
    cli.enqueue(&["report", "--queue", "idle"]);
    let worker = cli.run(&[
        "worker",
        "--exec",
        "if [ \"$JOBQ_JOB_KIND\" = mail ]; then exit 3; fi; echo '{}'",
        "--once",
        "--queue",
        "video",
        "--queue",
        "email",
    ]);
    assert!(
        worker.status.success(),
        "{}",
        String::from_utf8_lossy(&worker.stderr)
    );

    // One view as text.
    // Three minutes: the worker's run and this view may fall in different minutes.
    let once = cli.ok(&["top", "--once", "--window", "3m"]);
    let row = |name: &str| -> Vec<String> {
        once.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} line in\n{once}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert!(once.lines().any(|l| l.starts_with("QUEUE")), "{once}");
    // QUEUE READY RUNNING RETRY DONE/S FAILED RUN-P95 WAIT-P95 FINISHED
    // 3 jobs in 180 s.
    assert_eq!(row("video")[1..6], ["0", "0", "0", "0.02", "0"], "{once}");
    assert!(row("video")[6].ends_with("ms"), "a run p95: {once}");
    assert_eq!(row("email")[5], "1", "one failure: {once}");
    assert_eq!(row("idle")[1..3], ["1", "0"], "{once}");
    assert_eq!(row("all")[1], "1", "{once}");
    assert_eq!(row("all")[4], "0.02", "4 finished in 3 minutes: {once}");
    assert!(
        cli.refused(1, &["top", "--window", "10s"])
            .contains("--window")
    );

    // Live, on a terminal (a pseudo-terminal from `script`): it draws on the alternate
    // screen, refreshes, and quits on q.
    let command = format!(
        "stty rows 30 cols 140; {JOBQ} --db '{}' top --interval 200ms",
        cli.db().display()
    );
    let mut live = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm-256color")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = live.stdout.take().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let reader = {
        let seen = std::sync::Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        })
    };
    // Each draw ends by hiding the cursor; after the first, only what changed is redrawn.
    let drawn = || {
        let screen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        screen.contains("QUEUE") && screen.matches("\u{1b}[?25l").count() >= 3
    };
    wait_until("jobq top to draw and refresh", drawn);
    std::io::Write::write_all(live.stdin.as_mut().unwrap(), b"q").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = live.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "jobq top did not quit on q");
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    let screen = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
    assert!(status.success(), "jobq top: {status}\n{screen}");
    assert!(
        screen.contains("\u{1b}[?1049h"),
        "the alternate screen is entered"
    );
    assert!(screen.contains("\u{1b}[?1049l"), "and left on the way out");
    assert!(
        screen.contains("video") && screen.contains("idle"),
        "{screen}"
    );
}

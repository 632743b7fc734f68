//! What only the SQLite engine has: the caller's own rusqlite transaction, the file and its
//! lock, its pragmas, views read with rusqlite, and the demo (which stays on SQLite). The
//! behavioural tests of the other modules run on both engines.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use jobq::{NewJob, Queue};
use rusqlite::TransactionBehavior;
use serde_json::json;

use crate::cli::JOBQ;
use crate::common::Env;

#[test]
fn a_transactional_enqueue_exists_only_if_the_caller_commits() {
    let env = Env::new();
    let mut conn = env.conn();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        .unwrap();

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO orders (item) VALUES ('book')", [])
        .unwrap();
    let rolled_back = env
        .queue
        .enqueue_tx(&tx, NewJob::new("ship").input(json!({"order": 1})))
        .unwrap();
    tx.rollback().unwrap();
    assert!(
        env.queue
            .get(&rolled_back.job_id)
            .unwrap_err()
            .is_not_found()
    );
    let orders: i64 = conn
        .query_row("SELECT count(*) FROM orders", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orders, 0);

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO orders (item) VALUES ('lamp')", [])
        .unwrap();
    let committed = env
        .queue
        .enqueue_tx(&tx, NewJob::new("ship").input(json!({"order": 2})))
        .unwrap();
    // Not visible to others before the commit.
    assert!(env.queue.get(&committed.job_id).unwrap_err().is_not_found());
    tx.commit().unwrap();
    env.queue.notify();
    assert_eq!(
        env.queue.get(&committed.job_id).unwrap().input,
        json!({"order": 2})
    ); // Counted in the rollups by the caller's transaction, once: the rolled-back one not.
    crate::conformance::rollups::assert_rollups_agree(&env.queue, &[]);
}

#[test]
fn a_locked_database_is_waited_on_then_reported_as_busy() {
    let env = Env::new();
    let path = env.path();
    let patient = Queue::builder(&path)
        .busy_timeout(Duration::from_secs(5))
        .open()
        .unwrap();
    let impatient = Queue::builder(&path)
        .busy_timeout(Duration::from_millis(100))
        .open()
        .unwrap();

    // Another connection holds the write lock for 600 ms.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let mut conn = rusqlite::Connection::open(&path).unwrap();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        tx.commit().unwrap();
    });
    locked_rx.recv().unwrap();
    let before = env.dump();
    let err = impatient.enqueue(NewJob::new("k")).unwrap_err();
    assert!(err.is_busy(), "{err:?}");
    assert!(
        err.to_string().contains("busy") && err.to_string().contains("100ms"),
        "{err}"
    );
    assert_eq!(env.dump(), before);
    // The patient handle waits for the lock and succeeds.
    let started = std::time::Instant::now();
    patient.enqueue(NewJob::new("k")).unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "it waited for the lock"
    );
    holder.join().unwrap();
}

#[test]
fn the_demo_runs_and_leaves_succeeded_failed_and_deduplicated_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(JOBQ)
        .arg("demo")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "already_existed: true",
        "Dead letter: 1 job(s)",
        "Timing",
        "Costs",
        "jobq --db jobq-demo.db list",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from the demo's output:\n{text}"
        );
    }
    assert!(
        text.contains("campaign") && text.contains("jobs finished"),
        "plain progress lines when not a terminal"
    );
    let db: &Path = &dir.path().join("jobq-demo.db");
    let queue = jobq::Queue::open(db).unwrap();
    let stats = queue.stats(&jobq::StatsFilter::new()).unwrap();
    assert!(stats.count(jobq::Status::Succeeded) >= 15, "{stats:?}");
    assert_eq!(stats.count(jobq::Status::Failed), 1);
    assert_eq!(
        stats.count(jobq::Status::Queued)
            + stats.count(jobq::Status::Running)
            + stats.count(jobq::Status::Retry),
        0
    );
    // The campaign is a flow: the composite ran after its six parts, and read them.
    let jobs = queue.list(&jobq::JobFilter::new().limit(100)).unwrap().jobs;
    let composite = jobs.iter().find(|j| j.kind == "composite").unwrap();
    let composite = queue.get(&composite.id).unwrap();
    let parts = composite.dependencies.clone().unwrap();
    assert_eq!(parts.len(), 6);
    let last_part = parts
        .iter()
        .map(|p| queue.get(&p.id).unwrap().completed_at.unwrap())
        .max()
        .unwrap();
    assert!(composite.started_at.unwrap() >= last_part);
    assert_eq!(
        composite.output.as_ref().unwrap()["sources"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    assert!(
        text.contains("The flow") && text.contains("after its last part succeeded"),
        "{text}"
    );
    let ad03 = jobq::testing::enqueued(&queue, "ingest", &json!({"s3_key": "videos/ad-03.mp4"}));
    assert_eq!(ad03.len(), 1, "the repeated key made one job");
    assert!(
        queue
            .list(&jobq::JobFilter::new().limit(100))
            .unwrap()
            .jobs
            .iter()
            .any(|j| !j.errors.is_empty() && j.status == jobq::Status::Succeeded),
        "a transient failure was retried"
    );
}

#[test]
fn the_demos_log_lines_never_tear_its_progress_bars() {
    // `script` gives the demo a terminal, so that it draws its bars.
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipping: util-linux `script` is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("script")
        .args([
            "-qfec",
            &format!("stty cols 200 rows 50; {JOBQ} demo"),
            "/dev/null",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "jobq=info")
        .output()
        .unwrap();
    assert!(out.status.success());
    let raw = String::from_utf8_lossy(&out.stdout);
    let lines = screen_lines(&raw);
    assert!(
        lines.iter().any(|l| l.contains("campaign [")),
        "no progress bars were drawn: {raw:?}"
    );
    let logs: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN "))
        .collect();
    assert!(logs.len() >= 3, "too few log lines to judge: {logs:?}");
    for line in logs {
        assert!(
            !line.contains("campaign [")
                && !line.contains("queue [")
                && !line.contains("jobs finished"),
            "a log line shares its line with a progress bar: {line:?}"
        );
    }
}

/// The visible text of each terminal line of a capture: what follows the last carriage
/// return, without escape sequences.
fn screen_lines(raw: &str) -> Vec<String> {
    raw.split('\n')
        .map(|segment| {
            let visible = segment
                .trim_end_matches('\r')
                .rsplit('\r')
                .next()
                .unwrap_or("");
            let mut out = String::new();
            let mut chars = visible.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    // CSI: ESC [ parameters final-letter.
                    if chars.peek() == Some(&'[') {
                        chars.next();
                        for c in chars.by_ref() {
                            if c.is_ascii_alphabetic() {
                                break;
                            }
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        })
        .collect()
}

#[test]
fn an_application_enqueues_in_its_own_transaction_with_jobqs_rusqlite() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path().join("q.db")).unwrap();
    let mut conn = jobq::rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    conn.execute_batch("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        .unwrap();
    let tx: jobq::rusqlite::Transaction<'_> = conn
        .transaction_with_behavior(jobq::rusqlite::TransactionBehavior::Immediate)
        .unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (1)", [])
        .unwrap();
    let job = queue.enqueue_tx(&tx, NewJob::new("ship")).unwrap();
    tx.rollback().unwrap();
    assert!(queue.get(&job.job_id).unwrap_err().is_not_found());
    let tx = conn.transaction().unwrap();
    let job = queue.enqueue_tx(&tx, NewJob::new("ship")).unwrap();
    tx.commit().unwrap();
    assert_eq!(queue.get(&job.job_id).unwrap().kind, "ship");
}

#[test]
fn a_missing_folder_or_file_is_refused_and_a_read_creates_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere/q.db");
    let out = Command::new(JOBQ)
        .arg("--db")
        .arg(&missing)
        .args(["enqueue", "k"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
    let typo = dir.path().join("typo.db");
    let out = Command::new(JOBQ)
        .arg("--db")
        .arg(&typo)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!typo.exists(), "a read command does not create the file");
}

#[test]
fn a_flow_submitted_in_the_callers_transaction_exists_only_if_it_commits() {
    let env = Env::new();
    let mut conn = env.conn();
    let flow = || {
        jobq::Flow::new("order")
            .job("pick", NewJob::new("pick"))
            .job_after("ship", NewJob::new("ship"), ["pick"])
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let dropped = env.queue.submit_flow_tx(&tx, flow()).unwrap();
    tx.rollback().unwrap();
    assert!(
        env.queue
            .get_group(&dropped.group_id)
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        env.queue
            .get(&dropped.jobs["ship"])
            .unwrap_err()
            .is_not_found()
    );

    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let kept = env.queue.submit_flow_tx(&tx, flow()).unwrap();
    tx.commit().unwrap();
    crate::conformance::rollups::assert_rollups_agree(&env.queue, &[]);
    env.queue.notify();
    let ship = env.queue.get(&kept.jobs["ship"]).unwrap();
    assert_eq!(ship.status, jobq::Status::Blocked);
    assert_eq!(ship.dependencies.unwrap()[0].id, kept.jobs["pick"]);
    assert_eq!(env.queue.get_group(&kept.group_id).unwrap().total, 2);
}

fn file_reason(queue: &jobq::Queue) -> Option<(jobq::Health, String)> {
    let (health, reasons) = queue.health(&jobq::HealthThresholds::default()).unwrap();
    reasons
        .into_iter()
        .find(|r| r.check == "database_file")
        .map(|r| (health, r.message))
}

#[test]
fn a_database_file_deleted_or_replaced_under_a_process_makes_it_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jobs.db");
    let queue = jobq::Queue::open(&path).unwrap();
    queue.enqueue(jobq::NewJob::new("k")).unwrap();
    assert_eq!(file_reason(&queue), None);

    // Deleted (with its WAL): the process writes on into a file no one else sees.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let (health, message) = file_reason(&queue).expect("a reason");
    assert_eq!(health, jobq::Health::Unhealthy);
    assert!(message.contains("was deleted"), "{message}");

    // Replaced: another database now at the path.
    let other = jobq::Queue::open(dir.path().join("other.db")).unwrap();
    drop(other);
    std::fs::rename(dir.path().join("other.db"), &path).unwrap();
    let (_, message) = file_reason(&queue).expect("a reason");
    assert!(message.contains("was replaced"), "{message}");
    // A process that opens the path now sees a healthy file of its own.
    assert_eq!(file_reason(&jobq::Queue::open(&path).unwrap()), None);
}

#[test]
fn jobq_serve_says_so_when_its_file_is_deleted() {
    let cli = crate::cli::Cli::new();
    let mut serve = cli
        .cmd(&["serve", "--addr", "127.0.0.1:0", "--insecure-no-auth"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(serve.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    std::fs::remove_file(cli.db()).unwrap();
    let stats: serde_json::Value = ureq::get(&format!("http://{addr}/api/stats"))
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    // Nothing made a new, empty database at the path (a split brain of its own).
    assert!(
        !cli.db().exists(),
        "a new file appeared at {}",
        cli.db().display()
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    assert_eq!(stats["health"], "unhealthy", "{stats}");
    let reasons = stats["reasons"].to_string();
    assert!(reasons.contains("was deleted"), "{reasons}");
}

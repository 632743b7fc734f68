//! `jobq worker --exec` under the faults and loads that probing found: killed with SIGKILL,
//! interrupted by GNU timeout, commands that flood stdout or stderr, and the summary it
//! prints at the end.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::{Cli, JOBQ, wait_until};

fn file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Waits for a child, watching the most memory it holds (`VmHWM`, which only grows and
/// starts again at exec, unlike `ru_maxrss`, which keeps what the forked test binary held),
/// and returns whether it succeeded and that peak in bytes.
fn wait_with_peak_rss(mut child: std::process::Child) -> (bool, u64) {
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.success(), peak);
        }
        let kb = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        if let Some(kb) = kb {
            peak = peak.max(kb * 1024);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn sigkill_of_the_worker_ends_every_process_its_jobs_started() {
    let cli = Cli::new();
    let id = cli.enqueue(&["grow"]);
    let grows = cli.dir.path().join("grows");
    // The handler script forks a child of its own, which appends to a file forever.
    let command = format!(
        "(while :; do echo x >> {}; sleep 0.05; done) & sleep 300",
        grows.display()
    );
    let mut worker = cli
        .cmd(&["worker", "--exec", &command])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the handler's child to write", || file_len(&grows) > 0);
    assert_eq!(cli.show(&id)["status"], "running");
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    // Whatever was on its way to the file has landed by now.
    std::thread::sleep(Duration::from_millis(500));
    let after_kill = file_len(&grows);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        file_len(&grows),
        after_kill,
        "a process the job started still runs after its worker was killed"
    );
}

#[test]
fn sigint_twice_from_gnu_timeout_lets_the_job_finish_and_leaves_nothing_running() {
    let cli = Cli::new();
    let first = cli.enqueue(&["slow"]);
    let second = cli.enqueue(&["slow"]);
    // GNU timeout signals the worker, then its own process group: two SIGINTs at once.
    let out = Command::new("timeout")
        .args(["-s", "INT", "1", JOBQ, "--db"])
        .arg(cli.db())
        .args([
            "worker",
            "--exec",
            "sleep 2; echo '{\"slept\": 2}'",
            "--concurrency",
            "1",
        ])
        .current_dir(cli.dir.path())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        cli.show(&first)["status"],
        "succeeded",
        "{stdout}\n{stderr}"
    );
    assert_eq!(cli.show(&second)["status"], "queued");
    let running = cli.json(&["list", "--status", "running"]);
    assert_eq!(running["jobs"].as_array().unwrap().len(), 0);
    assert!(
        stdout.contains(&format!("Job {first} succeeded")),
        "{stdout}"
    );
    assert!(stdout.contains("Jobs processed: 1"), "{stdout}");
    assert!(stdout.contains("Jobs succeeded: 1"), "{stdout}");
    assert!(stdout.contains("Jobs failed: 0"), "{stdout}");
    assert!(!stdout.contains("CANCELLED"), "{stdout}");
}

#[test]
fn a_second_signal_a_moment_after_the_first_is_not_an_exit_at_once() {
    let cli = Cli::new();
    let id = cli.enqueue(&["slow"]);
    let worker = cli.exec_worker_running(2);
    for _ in 0..2 {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(worker.id() as i32, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = worker.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {stdout}", out.status);
    assert_eq!(cli.show(&id)["status"], "succeeded", "{stdout}");
    assert!(stdout.contains("Jobs succeeded: 1"), "{stdout}");
}

#[test]
fn a_second_signal_later_releases_the_running_job_at_once_and_says_so() {
    let cli = Cli::new();
    let id = cli.enqueue(&["long"]);
    let worker = cli.exec_worker_running(60);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(1500));
    let asked = Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(worker.id() as i32, libc::SIGTERM) };
    let out = worker.wait_with_output().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "the grace period was waited out"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let job = cli.show(&id);
    assert_eq!(
        (job["status"].as_str(), job["attempts"].as_u64()),
        (Some("queued"), Some(0)),
        "released without spending its attempt: {stdout}"
    );
    assert!(stdout.contains(&format!("Job {id} released")), "{stdout}");
    assert!(stdout.contains("Jobs released: 1"), "{stdout}");
    assert!(stdout.contains("Jobs failed: 0"), "{stdout}");
    assert!(!stdout.contains("CANCELLED"), "{stdout}");
}

#[test]
fn a_command_writing_70_mb_to_stderr_still_succeeds() {
    let cli = Cli::new();
    let id = cli.enqueue(&["noisy"]);
    let out = cli.run(&[
        "worker",
        "--exec",
        "head -c 70000000 /dev/zero | tr '\\0' e >&2; echo 'the end' >&2; echo '{\"ok\": true}'",
        "--once",
    ]);
    assert!(out.status.success());
    let job = cli.show(&id);
    assert_eq!(
        (
            job["status"].as_str(),
            job["output"].clone(),
            job["error_code"].as_str()
        ),
        (Some("succeeded"), serde_json::json!({"ok": true}), None)
    );

    // A failing one keeps the tail of its stderr as the message, however much came before.
    let id = cli.enqueue(&["noisy", "--max-attempts", "1"]);
    let out = cli.run(&[
        "worker",
        "--exec",
        "head -c 70000000 /dev/zero | tr '\\0' e >&2; echo >&2; echo 'the real reason' >&2; exit 3",
        "--once",
    ]);
    assert!(out.status.success());
    let job = cli.show(&id);
    assert_eq!(job["error_code"], "EXIT_3");
    let message = job["last_error"].as_str().unwrap();
    assert!(
        message.ends_with("the real reason"),
        "{}",
        &message[message.len().saturating_sub(200)..]
    );
    assert!(message.len() < 100_000, "kept {} bytes", message.len());
}

#[test]
fn a_100_mb_line_on_stdout_costs_the_worker_only_its_bounded_buffer() {
    let cli = Cli::new();
    let id = cli.enqueue(&["flood"]);
    let worker = cli
        .cmd(&[
            "worker",
            "--exec",
            "head -c 100000000 /dev/zero | tr '\\0' a; echo",
            "--once",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (succeeded, peak) = wait_with_peak_rss(worker);
    eprintln!(
        "a 100 MB stdout line: worker peak RSS {} MB",
        peak / 1_000_000
    );
    assert!(succeeded);
    assert!(
        peak < 64_000_000,
        "the worker held {} MB for a 100 MB line",
        peak / 1_000_000
    );
    let job = cli.show(&id);
    assert_eq!(job["status"], "succeeded");
    let kept = job["output"]["stdout"].as_str().unwrap();
    assert!(kept.len() <= 1 << 20, "kept {} bytes", kept.len());
    assert!(kept.starts_with("aaaa"));
}

#[test]
fn the_summary_counts_jobs_and_attempts_apart_and_prints_each_outcome_once() {
    let cli = Cli::new();
    let ok = cli.enqueue(&["ok"]);
    let flaky = cli.enqueue(&["flaky", "--max-attempts", "3"]);
    let bad = cli.enqueue(&["bad", "--max-attempts", "5"]);
    let command = "case $JOBQ_JOB_KIND in \
        ok) echo '{}';; \
        flaky) if [ $JOBQ_ATTEMPT = 1 ]; then echo 'not yet' >&2; exit 1; fi; echo '{}';; \
        bad) echo 'corrupt' >&2; exit 65;; \
        esac";
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
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (line, want) in [
        ("Jobs processed: ", 3),
        ("Jobs succeeded: ", 2),
        ("Jobs failed: ", 1),
        ("Attempts: ", 4),
        ("Attempts retried: ", 1),
        ("Jobs released: ", 0),
    ] {
        assert!(
            stdout.contains(&format!("{line}{want}")),
            "expected {line}{want} in:\n{stdout}"
        );
    }
    assert_eq!(cli.show(&ok)["status"], "succeeded");
    assert_eq!(cli.show(&flaky)["status"], "succeeded");
    assert_eq!(cli.show(&bad)["status"], "failed");
    // A failure that will be retried says when; a final one says it is final.
    let retried: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(&flaky) && l.contains("EXIT_1"))
        .collect();
    assert_eq!(retried.len(), 1, "{stdout}");
    assert!(
        retried[0].contains("retry") && retried[0].contains("attempt 1/3"),
        "{}",
        retried[0]
    );
    let time = retried[0].rsplit(' ').next().unwrap();
    assert!(
        jobq::Timestamp::parse_rfc3339("t", time).is_ok(),
        "no next run time in {}",
        retried[0]
    );
    // Each outcome once, in one format: the dead-lettered job appears once when it starts
    // and once when it ends, across stdout and stderr.
    let mentions = stdout
        .lines()
        .chain(stderr.lines())
        .filter(|l| l.contains(&bad))
        .count();
    assert_eq!(mentions, 2, "{stdout}\n---\n{stderr}");
    let final_line = stdout
        .lines()
        .find(|l| l.contains(&bad) && l.contains("EXIT_65"))
        .unwrap();
    assert!(final_line.contains("dead letter"), "{final_line}");
}

#[test]
fn a_command_reads_its_dependencies_outputs_from_the_file_the_worker_names() {
    let cli = Cli::new();
    let file = cli.dir.path().join("flow.json");
    std::fs::write(
        &file,
        r#"{"jobs": [{"ref": "a", "kind": "a", "input": {"n": 1}},
                     {"ref": "b", "kind": "b", "input": {"n": 2}},
                     {"ref": "sum", "kind": "sum", "after": ["a", "b"]}]}"#,
    )
    .unwrap();
    let created = cli.json(&["flow", "submit", file.to_str().unwrap()]);
    // The leaves echo their input; the fan-in job prints the file it is given (and its
    // name, to check that it is gone afterwards); no other job is given one.
    let command = r#"if [ "$JOBQ_JOB_KIND" = sum ]; then cat "$JOBQ_DEPENDENCIES_FILE"; echo "$JOBQ_DEPENDENCIES_FILE" >&2; exit 0; fi; test -z "$JOBQ_DEPENDENCIES_FILE" || exit 3; cat"#;
    let out = cli.run(&["worker", "--exec", command, "--once", "--concurrency", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--once` ran what was ready; the fan-in became ready as the leaves finished.
    let out = cli.run(&["worker", "--exec", command, "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sum = cli.show(created["jobs"]["sum"].as_str().unwrap());
    assert_eq!(sum["status"], "succeeded", "{sum}");
    // By their refs.
    assert_eq!(sum["output"]["a"], serde_json::json!({"n": 1}));
    assert_eq!(sum["output"]["b"], serde_json::json!({"n": 2}));
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .contains(created["jobs"]["sum"].as_str().unwrap())
        })
        .collect();
    assert!(leftovers.is_empty(), "the file is removed: {leftovers:?}");
}

/// The pids a handler recorded, one a line, in order.
fn pids_in(path: &std::path::Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_command_cancelled_then_retried_and_claimed_again_by_the_same_worker_is_killed() {
    let cli = Cli::new();
    let id = cli.enqueue(&["long"]);
    let pids = cli.dir.path().join("pids");
    // Each run records its pid, then runs for long.
    let command = format!("echo $$ >> {}; sleep 40", pids.display());
    let mut worker = cli
        .cmd(&[
            "worker",
            "--exec",
            &command,
            "--concurrency",
            "2",
            "--poll-interval",
            "50ms",
            "--heartbeat-interval",
            "1s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the first run to start", || pids_in(&pids).len() == 1);
    // Cancelled and retried from another process at once: the same worker claims the job
    // again (attempt 1 again) before its heartbeat can tell the first run it lost it.
    cli.ok(&["cancel", &id]);
    cli.ok(&["retry", &id]);
    wait_until("the second run to start", || pids_in(&pids).len() == 2);
    let first = pids_in(&pids)[0];
    wait_until("the cancelled run to be killed", || {
        !crate::cli::alive(first)
    });
    assert!(crate::cli::alive(pids_in(&pids)[1]), "the new run lives on");
    assert_eq!(cli.show(&id)["status"], "running");
    worker.kill().unwrap();
    worker.wait().unwrap();
}

/// A process as `/proc` shows it: pid, parent, name (`comm`) and command line.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    parent: i32,
    name: String,
    command_line: String,
}

fn processes() -> Vec<Proc> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if fields.first() == Some(&"Z") {
            continue; // a zombie has ended
        }
        let command_line = std::fs::read(entry.path().join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        all.push(Proc {
            pid,
            parent: fields.get(1).and_then(|p| p.parse().ok()).unwrap_or(0),
            name: stat[open + 1..close].to_string(),
            command_line,
        });
    }
    all
}

/// Kills with SIGKILL every process whose command line holds `pattern`, one after the
/// other with nothing between, as `pkill -9 -f` does; returns their pids.
fn kill_by_command_line(pattern: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let victims: Vec<i32> = processes()
        .into_iter()
        .filter(|p| p.pid != me && p.command_line.contains(pattern))
        .map(|p| p.pid)
        .collect();
    for pid in &victims {
        // SAFETY: signalling processes of this test.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    victims
}

/// The reaper of a worker process: its child that is not a command's `sh`.
fn reaper_of(worker: i32) -> Option<Proc> {
    processes()
        .into_iter()
        .find(|p| p.parent == worker && p.name != "sh")
}

/// A worker whose job starts a background child that appends to `grows` for ever.
fn worker_with_a_growing_job(cli: &Cli, grows: &std::path::Path) -> std::process::Child {
    cli.enqueue(&["grow"]);
    let command = format!(
        "(while :; do echo x >> {}; sleep 0.05; done) & sleep 300",
        grows.display()
    );
    let worker = cli
        .cmd(&["worker", "--exec", &command])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the handler's child to write", || file_len(grows) > 0);
    worker
}

/// Whether the file stops growing: nothing the job started still runs.
fn stops_growing(grows: &std::path::Path) -> bool {
    std::thread::sleep(Duration::from_millis(500));
    let before = file_len(grows);
    std::thread::sleep(Duration::from_millis(1000));
    file_len(grows) == before
}

#[test]
fn the_reaper_has_a_name_of_its_own_and_a_kill_by_the_workers_name_leaves_it_to_do_its_work() {
    let cli = Cli::new();
    let grows = cli.dir.path().join("grows");
    let mut worker = worker_with_a_growing_job(&cli, &grows);
    let reaper = reaper_of(worker.id() as i32).expect("a reaper process");
    assert_eq!(reaper.name, "jobq-reaper", "{reaper:?}");
    assert_eq!(
        reaper.command_line.trim_end(),
        format!("jobq-reaper {}", worker.id()),
        "{reaper:?}"
    );
    // What `pkill -9 -f` does with a pattern that names this worker: its database.
    let killed = kill_by_command_line(&cli.db().display().to_string());
    assert_eq!(killed, vec![worker.id() as i32], "only the worker matches");
    worker.wait().unwrap();
    assert!(
        stops_growing(&grows),
        "a process the job started still runs after its worker was killed by name"
    );
    wait_until("the reaper to exit", || !crate::cli::alive(reaper.pid));
}

#[test]
fn a_reaper_that_dies_alone_is_replaced_and_the_next_one_kills_the_jobs_when_the_worker_dies() {
    let cli = Cli::new();
    let grows = cli.dir.path().join("grows");
    let mut worker = worker_with_a_growing_job(&cli, &grows);
    let pid = worker.id() as i32;
    let first = reaper_of(pid).expect("a reaper process");
    // SAFETY: signalling the test's own grandchild.
    unsafe { libc::kill(first.pid, libc::SIGKILL) };
    wait_until("another reaper to take its place", || {
        reaper_of(pid).is_some_and(|r| r.pid != first.pid)
    });
    assert!(!stops_growing(&grows), "the job runs on meanwhile");
    worker.kill().unwrap(); // SIGKILL
    worker.wait().unwrap();
    assert!(
        stops_growing(&grows),
        "a process the job started still runs after its worker was killed"
    );
}

#[test]
fn the_jobs_die_whichever_of_the_worker_and_the_reaper_dies_first() {
    for reaper_first in [true, false] {
        let cli = Cli::new();
        let grows = cli.dir.path().join("grows");
        let mut worker = worker_with_a_growing_job(&cli, &grows);
        let reaper = reaper_of(worker.id() as i32).expect("a reaper process");
        let kill_reaper = || {
            // SAFETY: signalling the test's own grandchild.
            unsafe { libc::kill(reaper.pid, libc::SIGKILL) };
        };
        if reaper_first {
            kill_reaper();
            std::thread::sleep(Duration::from_millis(100));
            worker.kill().unwrap();
        } else {
            worker.kill().unwrap();
            std::thread::sleep(Duration::from_millis(100));
            kill_reaper();
        }
        worker.wait().unwrap();
        assert!(
            stops_growing(&grows),
            "a process the job started still runs (reaper killed first: {reaper_first})"
        );
    }
}

#[test]
fn a_python_traceback_gives_its_last_line_as_the_message_and_keeps_the_rest() {
    let cli = Cli::new();
    let id = cli.enqueue(&["py", "--max-attempts", "1"]);
    let script = cli.dir.path().join("handler.py");
    std::fs::write(
        &script,
        "import json, sys\njob = json.load(sys.stdin)\ndef check(job):\n    raise ValueError('bad input: ' + str(job))\ncheck(job)\n",
    )
    .unwrap();
    let command = format!("python3 {}", script.display());
    let out = cli.run(&["worker", "--exec", &command, "--once"]);
    assert!(out.status.success());
    let job = cli.show(&id);
    assert_eq!(job["last_error"], "ValueError: bad input: {}", "{job}");
    let detail = job["errors"][0]["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("Traceback (most recent call last):"),
        "{detail}"
    );
    assert!(detail.contains("in check"), "{detail}");
    let shown = cli.ok(&["show", &id]);
    assert!(
        shown.contains("| Traceback (most recent call last):"),
        "{shown}"
    );
}

#[test]
fn a_command_that_cannot_run_fails_at_once_saying_so() {
    let cli = Cli::new();
    let missing = cli.enqueue(&["missing", "--max-attempts", "5"]);
    let out = cli.run(&["worker", "--exec", "no-such-command-jobq-test", "--once"]);
    assert!(out.status.success());
    let job = cli.show(&missing);
    assert_eq!(
        (
            job["status"].as_str(),
            job["attempts"].as_u64(),
            job["error_code"].as_str()
        ),
        (Some("failed"), Some(1), Some("EXIT_127")),
        "{job}"
    );
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("was not found"),
        "{job}"
    );
    let not_executable = cli.dir.path().join("script.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").unwrap();
    let id = cli.enqueue(&["noexec", "--max-attempts", "5"]);
    let out = cli.run(&[
        "worker",
        "--exec",
        not_executable.to_str().unwrap(),
        "--once",
    ]);
    assert!(out.status.success());
    let job = cli.show(&id);
    assert_eq!(
        (job["status"].as_str(), job["error_code"].as_str()),
        (Some("failed"), Some("EXIT_126")),
        "{job}"
    );
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be run"),
        "{job}"
    );
}

#[test]
fn a_python_handlers_progress_shows_while_it_runs_without_a_flush() {
    let cli = Cli::new();
    let id = cli.enqueue(&["py"]);
    let gate = cli.dir.path().join("gate");
    let script = cli.dir.path().join("handler.py");
    std::fs::write(
        &script,
        format!(
            "import os, time\nprint('@progress 0.4 thinking')\nwhile not os.path.exists({:?}):\n    time.sleep(0.02)\nprint('{{\"done\": true}}')\n",
            gate.display().to_string()
        ),
    )
    .unwrap();
    let command = format!("python3 {}", script.display());
    let worker = cli
        .cmd(&["worker", "--exec", &command, "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the progress to show while the handler runs", || {
        let job = cli.show(&id);
        job["progress"].as_f64() == Some(0.4) && job["status"] == "running"
    });
    std::fs::write(&gate, "").unwrap();
    let out = worker.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(cli.show(&id)["output"], serde_json::json!({"done": true}));
}

#[test]
fn plain_text_output_is_kept_and_told_once() {
    let cli = Cli::new();
    let first = cli.enqueue(&["k"]);
    cli.enqueue(&["k"]);
    let out = cli
        .cmd(&[
            "worker",
            "--exec",
            "echo hello from a stray print",
            "--once",
        ])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        cli.show(&first)["output"],
        serde_json::json!({"stdout": "hello from a stray print"})
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("neither report lines").count(),
        1,
        "told once: {stderr}"
    );
}

#[test]
fn a_once_run_that_found_nothing_says_where_the_ready_jobs_are() {
    let cli = Cli::new();
    cli.enqueue(&["mail", "--queue", "mail"]);
    cli.enqueue(&["mail", "--queue", "mail"]);
    cli.enqueue(&["video", "--queue", "video"]);
    cli.enqueue(&["later", "--run-after", "1h"]);
    let out = cli.run(&["worker", "--exec", "true", "--once"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Jobs processed: 0"), "{stdout}");
    assert!(stdout.contains("No job was ready in default."), "{stdout}");
    assert!(
        stdout.contains("Ready in other queues: mail (2 ready), video (1 ready)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Queue default has 1 scheduled for later."),
        "{stdout}"
    );
    cli.ok(&["queue", "pause", "mail"]);
    let out = cli.run(&["worker", "--exec", "true", "--once", "--queue", "mail"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Queue mail is paused with 2 ready"),
        "{stdout}"
    );
}

//! Helpers shared by the integration tests: fresh queues on temp files, a manual clock,
//! a dump of every row to prove that refused requests changed nothing, and child processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use jobq::{ManualClock, Queue, RetryPolicy};
use rusqlite::Connection;
use tempfile::TempDir;

/// 2026-01-01T00:00:00Z: tests with a manual clock start here.
pub const T0: i64 = 1_767_225_600_000;

pub struct Env {
    pub dir: TempDir,
    pub queue: Queue,
    pub clock: ManualClock,
}

impl Env {
    /// A queue on a fresh file with a manual clock at `T0` and a fixed 10 s retry delay.
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let queue = Queue::builder(dir.path().join("jobs.db"))
            .clock(clock.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_secs(10)))
            .open()
            .unwrap();
        Env { dir, queue, clock }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("jobs.db")
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Every row of every jobq table, as text: equal dumps mean nothing changed.
    pub fn dump(&self) -> String {
        dump(&self.path())
    }

    pub fn conn(&self) -> Connection {
        Connection::open(self.path()).unwrap()
    }
}

pub fn dump(path: &Path) -> String {
    let conn = Connection::open(path).unwrap();
    let mut out = String::new();
    for table in ["jobq_jobs", "jobq_groups", "jobq_owners", "jobq_tokens"] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let vals: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                Ok(vals.join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(table);
            out.push(':');
            out.push_str(&row.unwrap());
            out.push('\n');
        }
    }
    out
}

/// Every row of a query (a view, usually), each as its column values.
pub fn rows(conn: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// Runs one test function of this binary in a child process, with extra environment.
/// The function must return at once unless `JOBQ_TEST_CHILD` is set.
pub fn spawn_child(test_name: &str, env: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("JOBQ_TEST_CHILD", "1")
        .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits for a child started by [`spawn_child`], checks that it succeeded, and returns what
/// it printed.
pub fn child_output(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the child failed: {text}");
    text
}

/// The rest of the first line after `marker` in what a successful child printed (the test
/// harness may have printed the test's name before it on the same line).
pub fn child_report(child: Child, marker: &str) -> String {
    let text = child_output(child);
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("no {marker:?} in what the child printed: {text}"))
}

pub fn is_child() -> bool {
    std::env::var_os("JOBQ_TEST_CHILD").is_some()
}

pub fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

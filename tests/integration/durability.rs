//! Durability and damage: acknowledged jobs survive a SIGKILL of the writer; a read-only file
//! system and a full disk give clear, typed errors, no panic, and leave a good file good.
//!
//! The file-system tests mount a small tmpfs, which needs root (CAP_SYS_ADMIN): without it
//! they say that they skip. A file that is not SQLite and a truncated file are covered in
//! `open.rs`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use jobq::{Durability, Error, JobFilter, NewJob, Queue, Status};
use serde_json::json;

use crate::common::{child_env, is_child, spawn_child};

#[test]
fn child_full_durability_writer() {
    if !is_child() {
        return;
    }
    let queue = Queue::builder(child_env("JOBQ_TEST_DB"))
        .durability(Durability::Full)
        .open()
        .unwrap();
    use std::io::Write;
    let stdout = std::io::stdout();
    for i in 0.. {
        let out = queue
            .enqueue(NewJob::new("precious").input(json!({ "i": i })))
            .unwrap();
        // Acknowledged: the enqueue returned.
        let mut lock = stdout.lock();
        writeln!(lock, "ACK {}", out.job_id).unwrap();
        lock.flush().unwrap();
    }
}

#[test]
fn jobs_acknowledged_before_a_sigkill_are_all_there_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("full.db");
    drop(Queue::open(&db).unwrap());
    let mut child = spawn_child(
        "durability::child_full_durability_writer",
        &[("JOBQ_TEST_DB", db.display().to_string())],
    );
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| l.split_once("ACK ").map(|(_, id)| id.to_string()))
            .collect::<Vec<String>>()
    });
    // Let it write for a while, then kill it mid-stream.
    std::thread::sleep(Duration::from_millis(800));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let acked = reader.join().unwrap();
    assert!(
        acked.len() > 10,
        "the writer acknowledged only {} jobs",
        acked.len()
    );
    let queue = Queue::open(&db).unwrap();
    for id in &acked {
        let job = queue
            .get(&id.parse().unwrap())
            .unwrap_or_else(|e| panic!("acknowledged job {id} lost: {e}"));
        assert_eq!(job.status, Status::Queued);
    }
    let check: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    eprintln!(
        "durability: {} jobs acknowledged before the SIGKILL, all found after reopening",
        acked.len()
    );
}

/// A small tmpfs on a fresh temporary folder, unmounted on drop (before the folder goes).
struct Mount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// `None`, after saying which test is skipped, when this process may not mount.
    fn tmpfs(size: &str, test: &str) -> Option<Mount> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipping {test}: mounting a tmpfs needs root (CAP_SYS_ADMIN)");
        }
        ok.then_some(Mount { path, _dir: dir })
    }

    fn remount(&self, options: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// How many jobs the queue lists.
fn count(queue: &Queue) -> usize {
    queue
        .list(&JobFilter::new().limit(10_000))
        .unwrap()
        .jobs
        .len()
}

#[test]
fn a_database_on_a_read_only_file_system_is_a_clear_error_and_stays_intact() {
    let Some(mount) = Mount::tmpfs("8m", "the read-only file system test") else {
        return;
    };
    let db = mount.path.join("jobs.db");
    {
        let queue = Queue::open(&db).unwrap();
        queue
            .enqueue_many((0..50).map(|i| NewJob::new("k").input(json!({ "i": i }))))
            .unwrap();
    }
    let before = std::fs::read(&db).unwrap();
    mount.remount("ro");
    let err = Queue::open(&db).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert!(
        err.to_string().contains("read-only") || err.to_string().contains("readonly"),
        "{err}"
    );
    // A new file cannot be made there either.
    let err = Queue::open(mount.path.join("new.db")).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        before,
        "the file was not touched"
    );
    mount.remount("rw");
    assert_eq!(count(&Queue::open(&db).unwrap()), 50);
}

#[test]
fn a_full_disk_refuses_writes_with_disk_full_and_the_file_stays_good() {
    let Some(mount) = Mount::tmpfs("2m", "the full disk test") else {
        return;
    };
    let db = mount.path.join("jobs.db");
    let queue = Queue::open(&db).unwrap();
    let mut acknowledged = Vec::new();
    let padding = "x".repeat(2000);
    let started = Instant::now();
    let err = loop {
        match queue.enqueue(NewJob::new("big").input(json!({ "pad": padding }))) {
            Ok(out) => acknowledged.push(out.job_id),
            Err(e) => break e,
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the disk never filled"
        );
    };
    assert!(matches!(err, Error::DiskFull(_)), "{err:?}");
    assert!(err.to_string().contains("full"), "{err}");
    // Still readable, still consistent, nothing acknowledged lost.
    assert_eq!(count(&queue), acknowledged.len());
    drop(queue);
    let check: String = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    // Deleting is a write too: refused the same way, and nothing changes.
    let queue = Queue::open(&db).unwrap();
    assert!(matches!(
        queue.delete(&acknowledged[0]),
        Err(Error::DiskFull(_))
    ));
    assert_eq!(count(&queue), acknowledged.len());
    // Once there is room again, writes work again.
    mount.remount("size=8m");
    queue.enqueue(NewJob::new("small")).unwrap();
    queue.delete(&acknowledged[0]).unwrap();
    assert_eq!(count(&queue), acknowledged.len());
    eprintln!(
        "full disk: {} jobs acknowledged before the disk filled, all intact",
        acknowledged.len()
    );
}

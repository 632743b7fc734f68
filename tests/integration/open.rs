//! Opening files: fresh, reopened, foreign, too new, not SQLite, missing folder.

use jobq::{Error, NewJob, Queue};
use rusqlite::Connection;

fn bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let content = b"these are my notes, not a database\n".repeat(200);
    std::fs::write(&path, &content).unwrap();
    let err = Queue::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotJobqDatabase { .. }), "{err}");
    assert!(err.to_string().contains("not a SQLite database"), "{err}");
    assert_eq!(bytes(&path), content);
    assert!(!dir.path().join("notes.txt-wal").exists());
}

#[test]
fn a_sqlite_file_of_another_application_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers (name) VALUES ('ada');")
            .unwrap();
    }
    let before = bytes(&path);
    let err = Queue::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotJobqDatabase { .. }), "{err}");
    assert!(err.to_string().contains("allow_foreign_tables"), "{err}");
    assert_eq!(bytes(&path), before);

    // Asked to, jobq moves in beside the application's tables.
    let queue = Queue::builder(&path)
        .allow_foreign_tables(true)
        .open()
        .unwrap();
    queue.enqueue(NewJob::new("k")).unwrap();
    let conn = Connection::open(&path).unwrap();
    let name: String = conn
        .query_row("SELECT name FROM customers", [], |r| r.get(0))
        .unwrap();
    assert_eq!(name, "ada");
    drop(queue);
    // And a plain open accepts it from then on.
    Queue::open(&path).unwrap();
}

#[test]
fn a_file_from_a_newer_jobq_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    drop(Queue::open(&path).unwrap());
    Connection::open(&path)
        .unwrap()
        .execute(
            "INSERT INTO jobq_migrations (version, applied_at) VALUES (999, 0)",
            [],
        )
        .unwrap();
    let before = bytes(&path);
    let err = Queue::open(&path).unwrap_err();
    match &err {
        Error::SchemaTooNew {
            found, supported, ..
        } => assert_eq!((*found, *supported), (999, jobq::schema_version())),
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    assert!(err.to_string().contains("upgrade jobq"), "{err}");
    assert_eq!(bytes(&path), before);
}

#[test]
fn a_missing_folder_or_a_folder_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = Queue::open(dir.path().join("missing/sub/q.db")).unwrap_err();
    assert!(
        matches!(err, Error::Open { .. }) && err.to_string().contains("does not exist"),
        "{err}"
    );
    let err = Queue::open(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Open { .. }), "{err}");
}

#[test]
fn a_truncated_database_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    {
        let queue = Queue::open(&path).unwrap();
        queue
            .enqueue_many((0..2000).map(|i| {
                NewJob::new("k").input(serde_json::json!({"i": i, "pad": "x".repeat(200)}))
            }))
            .unwrap();
    }
    // Fold the WAL into the main file, then cut the file in the middle of a page.
    Connection::open(&path)
        .unwrap()
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let full = bytes(&path);
    assert!(full.len() > 100_000);
    std::fs::write(&path, &full[..full.len() / 2 + 1000]).unwrap();
    let cut = bytes(&path);
    let outcome = Queue::open(&path).and_then(|q| {
        q.list(&jobq::JobFilter::new().limit(10_000))
            .map(|p| p.jobs.len())
    });
    match outcome {
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt(_) | Error::Database(_) | Error::Open { .. }
            ),
            "{e}"
        ),
        Ok(n) => panic!("a truncated file listed {n} jobs without error"),
    }
    assert_eq!(
        bytes(&path).len(),
        cut.len(),
        "the damaged file was not rewritten"
    );
}

#[test]
fn eight_threads_opening_one_fresh_file_at_once_all_succeed() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let barrier = std::sync::Barrier::new(8);
        let outcomes: Vec<Result<(), String>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        Queue::open(&path)
                            .and_then(|q| q.enqueue(NewJob::new("k")).map(|_| ()))
                            .map_err(|e| e.to_string())
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for outcome in outcomes {
            assert_eq!(outcome, Ok(()), "round {round}");
        }
        let queue = Queue::open(&path).unwrap();
        assert_eq!(queue.stats(&jobq::StatsFilter::new()).unwrap().total, 8);
    }
}

#[test]
fn eight_processes_opening_one_fresh_file_at_once_all_succeed() {
    let jobq = env!("CARGO_BIN_EXE_jobq");
    for round in 0..15 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let children: Vec<std::process::Child> = (0..8)
            .map(|_| {
                std::process::Command::new(jobq)
                    .arg("--db")
                    .arg(&path)
                    .args(["enqueue", "k"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let queue = Queue::open(&path).unwrap();
        assert_eq!(queue.stats(&jobq::StatsFilter::new()).unwrap().total, 8);
    }
}

/// The schema of jobq's first release, as a file made then holds it: migration 1, with its
/// version in `PRAGMA user_version`.
fn first_release_file(path: &std::path::Path) {
    let schema = include_str!("../../schema.sql");
    let start = schema.find("-- migration 1").unwrap();
    let end = schema.find("-- migration 2").unwrap();
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(&schema[start..end]).unwrap();
    conn.execute_batch(
        "PRAGMA user_version = 1;
         INSERT INTO jobq_jobs (id_key, id, kind, run_after, cost_cents, created_at, updated_at)
         VALUES (28672, '00000000-0000-7000-8000-000000000001', 'old', 0, 5, 1000, 1000);",
    )
    .unwrap();
}

#[test]
fn a_file_versioned_in_user_version_is_upgraded_and_gives_user_version_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    first_release_file(&path);
    let queue = Queue::open(&path).unwrap();
    let old = queue
        .get(&"00000000-0000-7000-8000-000000000001".parse().unwrap())
        .unwrap();
    // Its run_after (1970, before its creation) now reads as its creation.
    assert_eq!(
        (old.kind.as_str(), old.run_after.as_millis(), old.cost_cents),
        ("old", 1000, 5)
    );
    let conn = Connection::open(&path).unwrap();
    let versions: Vec<i64> = conn
        .prepare("SELECT version FROM jobq_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(versions, (1..=jobq::schema_version()).collect::<Vec<_>>());
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(user_version, 0);
    // The application may now use user_version for its own migrations.
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(queue);
    let queue = Queue::open(&path).unwrap();
    queue.enqueue(NewJob::new("new")).unwrap();
    let user_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(user_version, 7, "jobq left the application's version alone");
}

#[test]
fn jobq_init_adds_jobq_to_an_application_database_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE orders (id INTEGER PRIMARY KEY); INSERT INTO orders VALUES (1);
             PRAGMA user_version = 12;",
        )
        .unwrap();
    }
    let before = bytes(&path);
    let jobq = env!("CARGO_BIN_EXE_jobq");
    let out = std::process::Command::new(jobq)
        .arg("--db")
        .arg(&path)
        .arg("init")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--allow-foreign-tables"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(bytes(&path), before, "refused untouched");
    let out = std::process::Command::new(jobq)
        .arg("--db")
        .arg(&path)
        .args(["init", "--allow-foreign-tables"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // From then on every command opens it, and the application's own rows and version stay.
    let out = std::process::Command::new(jobq)
        .arg("--db")
        .arg(&path)
        .args(["enqueue", "ship_order"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let conn = Connection::open(&path).unwrap();
    let (orders, version): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM orders), (SELECT user_version FROM pragma_user_version)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((orders, version), (1, 12));
}

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
        .pragma_update(None, "user_version", 999)
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

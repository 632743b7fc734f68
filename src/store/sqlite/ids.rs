//! Job ids and their row keys, allocated inside the write transaction that inserts them.
//!
//! A job's id is a UUID v7 whose first 64 bits are its row key (`id_key`): 48 bits of
//! milliseconds, the version (7) and a 12-bit counter. Keys are taken after the largest key
//! in the file, read in the same transaction that inserts the job, which holds the write
//! lock: no other connection, thread or process can take the same key, so no enqueue ever
//! collides or has to draw again. Keys (and so ids) increase in commit order, and never run
//! behind the clock: a new millisecond starts at its own first key.

use rusqlite::Connection;

use super::WriteTx;
use crate::error::Result;
use crate::job::ids_after;

/// `n` new job ids, in increasing order, after every key in the file and no earlier than
/// `now_ms`, for a transaction on any connection (the caller's, in `enqueue_tx`). Call it
/// inside the transaction that inserts them, once that transaction holds the write lock
/// (or will take it before its snapshot can go stale: start it `IMMEDIATE`).
pub(crate) fn allocate(conn: &Connection, now_ms: i64, n: usize) -> Result<Vec<String>> {
    let largest: Option<i64> = conn
        .prepare_cached("SELECT max(id_key) FROM jobq_jobs")?
        .query_row([], |r| r.get(0))?;
    Ok(ids_after(largest, now_ms, n))
}

/// [`allocate`] in a transaction of jobq's writer, which usually knows the largest key
/// without asking the file.
pub(crate) fn allocate_in(tx: &WriteTx<'_, '_>, now_ms: i64, n: usize) -> Result<Vec<String>> {
    let ids = ids_after(tx.largest_key()?, now_ms, n);
    if let Some(last) = ids.last() {
        tx.inserted_key(crate::job::key_of(last));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ids::{first_key_of, id_of};
    use crate::job::key_of;

    #[test]
    fn every_id_is_a_v7_uuid_whose_first_64_bits_are_its_key() {
        for key in [first_key_of(0), first_key_of(1_767_225_600_000) + 4095] {
            let id = id_of(key);
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(key_of(&id), key, "{id}");
        }
    }

    #[test]
    fn ids_follow_the_largest_key_in_the_file_and_never_fall_behind_the_clock() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        let now = 1_767_225_600_000;
        let keys = |ids: Vec<String>| ids.iter().map(|id| key_of(id)).collect::<Vec<_>>();
        // An empty file: the clock's millisecond.
        assert_eq!(
            keys(allocate(&conn, now, 2).unwrap()),
            vec![first_key_of(now), first_key_of(now) + 1]
        );
        // Another writer's key in the same millisecond: the next one after it.
        let theirs = first_key_of(now) + 4095;
        conn.execute(
            "INSERT INTO jobq_jobs (id_key, id, kind, run_after, created_at, updated_at)
             VALUES (?1, ?2, 'theirs', 0, 0, 0)",
            rusqlite::params![theirs, id_of(theirs)],
        )
        .unwrap();
        assert_eq!(
            keys(allocate(&conn, now, 2).unwrap()),
            vec![first_key_of(now + 1), first_key_of(now + 1) + 1]
        );
        // A later millisecond starts at its own first key.
        assert_eq!(
            keys(allocate(&conn, now + 10, 1).unwrap()),
            vec![first_key_of(now + 10)]
        );
    }

    #[test]
    fn the_writer_knows_the_largest_key_until_another_connection_commits() {
        let dir = tempfile::tempdir().unwrap();
        let clock = crate::ManualClock::new(1_767_225_600_000);
        let queue = crate::Queue::builder(dir.path().join("q.db"))
            .clock(clock.clone())
            .open()
            .unwrap();
        let key = |e: crate::Enqueued| key_of(e.job_id.as_str());
        let first = key(queue.enqueue(crate::NewJob::new("k")).unwrap());
        assert_eq!(first, first_key_of(1_767_225_600_000));
        // The writer's own commits, jobs or not, keep what it knows.
        queue.claim("w", 1, &crate::ClaimFilter::default()).unwrap();
        assert_eq!(
            key(queue.enqueue(crate::NewJob::new("k")).unwrap()),
            first + 1
        );
        // Another connection's job far ahead: the next key comes after it.
        let theirs = first_key_of(1_767_225_700_000);
        let other = rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
        other
            .execute(
                "INSERT INTO jobq_jobs (id_key, id, kind, run_after, created_at, updated_at)
                 VALUES (?1, ?2, 'theirs', 0, 0, 0)",
                rusqlite::params![theirs, id_of(theirs)],
            )
            .unwrap();
        assert_eq!(
            key(queue.enqueue(crate::NewJob::new("k")).unwrap()),
            theirs + 1
        );
        let batch = queue
            .enqueue_many((0..3).map(|_| crate::NewJob::new("k")))
            .unwrap();
        let keys: Vec<i64> = batch.into_iter().map(key).collect();
        assert_eq!(keys, vec![theirs + 2, theirs + 3, theirs + 4]);
    }

    #[test]
    fn the_largest_key_is_one_seek() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.sqlite().unwrap().connect().unwrap();
        let plan: String = conn
            .query_row(
                "EXPLAIN QUERY PLAN SELECT max(id_key) FROM jobq_jobs",
                [],
                |r| r.get(3),
            )
            .unwrap();
        assert_eq!(plan, "SEARCH jobq_jobs");
    }
}

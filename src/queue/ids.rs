//! Job ids and their row keys, allocated inside the write transaction that inserts them.
//!
//! A job's id is a UUID v7 whose first 64 bits are its row key (`id_key`): 48 bits of
//! milliseconds, the version (7) and a 12-bit counter. Keys are taken after the largest key
//! in the file, read in the same transaction that inserts the job, which holds the write
//! lock: no other connection, thread or process can take the same key, so no enqueue ever
//! collides or has to draw again. Keys (and so ids) increase in commit order, and never run
//! behind the clock: a new millisecond starts at its own first key.

use rusqlite::Connection;

use crate::error::Result;

const VERSION_BITS: i64 = 0x7000;
const COUNTER_MASK: i64 = 0x0fff;

/// The first row key of millisecond `ms`.
fn first_key_of(ms: i64) -> i64 {
    (ms << 16) | VERSION_BITS
}

/// The row key after `key`: the next count in its millisecond, or the first key of the next
/// millisecond once the 12-bit counter is spent (or `key` is not a v7 key).
fn key_after(key: i64) -> i64 {
    let is_v7 = key & 0xf000 == VERSION_BITS;
    if is_v7 && key & COUNTER_MASK < COUNTER_MASK {
        key + 1
    } else {
        first_key_of((key >> 16) + 1)
    }
}

/// The UUID v7 text whose first 64 bits are `key`; the last 64 are random.
fn id_of(key: i64) -> String {
    let random = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[8..]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let low = (random & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let id = uuid::Uuid::from_u64_pair(key as u64, low);
    id.hyphenated().to_string()
}

/// `n` new job ids, in increasing order, after every key in the file and no earlier than
/// `now_ms`. Call it inside the transaction that inserts them, once that transaction holds
/// the write lock (or will take it before its snapshot can go stale: jobq's own writes use
/// `BEGIN IMMEDIATE`).
pub(crate) fn allocate(conn: &Connection, now_ms: i64, n: usize) -> Result<Vec<String>> {
    let largest: Option<i64> = conn
        .prepare_cached("SELECT max(id_key) FROM jobq_jobs")?
        .query_row([], |r| r.get(0))?;
    let mut key = first_key_of(now_ms.max(0));
    if let Some(largest) = largest.filter(|l| *l >= key) {
        key = key_after(largest);
    }
    Ok((0..n)
        .map(|_| {
            let id = id_of(key);
            key = key_after(key);
            id
        })
        .collect())
}

/// A UUID v7 of `now_ms`, for the ids that are not row keys (groups).
pub(crate) fn uuid_v7(now_ms: i64) -> String {
    let random = *uuid::Uuid::new_v4().as_bytes();
    let mut bytes = [0u8; 10];
    bytes.copy_from_slice(&random[6..]);
    uuid::Builder::from_unix_timestamp_millis(now_ms.max(0) as u64, &bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::key_of;

    #[test]
    fn keys_count_within_a_millisecond_then_move_to_the_next() {
        let k = first_key_of(1_700_000_000_000);
        assert_eq!(key_after(k), k + 1);
        assert_eq!(key_after(k | COUNTER_MASK), first_key_of(1_700_000_000_001));
        // A key that is not v7 (no jobq key is) still has a successor past it.
        let odd = (1_700_000_000_000 << 16) | 0x8123;
        assert_eq!(key_after(odd), first_key_of(1_700_000_000_001));
    }

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
        let conn = queue.store().connect().unwrap();
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
    fn the_largest_key_is_one_seek() {
        let dir = tempfile::tempdir().unwrap();
        let queue = crate::Queue::open(dir.path().join("q.db")).unwrap();
        let conn = queue.store().connect().unwrap();
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

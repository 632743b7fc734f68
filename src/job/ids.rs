//! Job ids: UUID v7s whose first 64 bits are the job's row key — 48 bits of milliseconds,
//! the version (7) and a 12-bit counter — so that ids increase with the keys they are
//! allocated after, and never run behind the clock. Each engine decides which key comes
//! last (SQLite reads it in the inserting transaction; PostgreSQL keeps one per process).

const VERSION_BITS: i64 = 0x7000;

const COUNTER_MASK: i64 = 0x0fff;

/// The first row key of millisecond `ms`.
pub(crate) fn first_key_of(ms: i64) -> i64 {
    (ms << 16) | VERSION_BITS
}

/// The row key after `key`: the next count in its millisecond, or the first key of the next
/// millisecond once the 12-bit counter is spent (or `key` is not a v7 key).
pub(crate) fn key_after(key: i64) -> i64 {
    let is_v7 = key & 0xf000 == VERSION_BITS;
    if is_v7 && key & COUNTER_MASK < COUNTER_MASK {
        key + 1
    } else {
        first_key_of((key >> 16) + 1)
    }
}

/// The UUID v7 text whose first 64 bits are `key`; the last 64 are random.
pub(crate) fn id_of(key: i64) -> String {
    let random = u64::from_le_bytes(
        uuid::Uuid::new_v4().as_bytes()[8..]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let low = (random & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let id = uuid::Uuid::from_u64_pair(key as u64, low);
    id.hyphenated().to_string()
}

/// `n` ids after the key `largest`, and no earlier than `now_ms`.
pub(crate) fn ids_after(largest: Option<i64>, now_ms: i64, n: usize) -> Vec<String> {
    let mut key = first_key_of(now_ms.max(0));
    if let Some(largest) = largest.filter(|l| *l >= key) {
        key = key_after(largest);
    }
    (0..n)
        .map(|_| {
            let id = id_of(key);
            key = key_after(key);
            id
        })
        .collect()
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

    #[test]
    fn keys_count_within_a_millisecond_then_move_to_the_next() {
        let k = first_key_of(1_700_000_000_000);
        assert_eq!(key_after(k), k + 1);
        assert_eq!(key_after(k | COUNTER_MASK), first_key_of(1_700_000_000_001));
        // A key that is not v7 (no jobq key is) still has a successor past it.
        let odd = (1_700_000_000_000 << 16) | 0x8123;
        assert_eq!(key_after(odd), first_key_of(1_700_000_000_001));
    }
}

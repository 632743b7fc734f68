//! Randomness for spreading things out (retries, back-offs, worker ids): not for secrets.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// SplitMix64 over a shared counter seeded from the OS: fast, lock-free, and plenty for
/// spreading retries (this is not for secrets).
pub(crate) fn random_u64() -> u64 {
    static STATE: OnceLock<AtomicU64> = OnceLock::new();
    let state = STATE.get_or_init(|| {
        let seed = uuid::Uuid::new_v4().as_u64_pair();
        AtomicU64::new(seed.0 ^ seed.1)
    });
    let mut z = state
        .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

//! What the benches share.

use std::path::PathBuf;

/// Where a bench keeps a fixture database it builds once: under `target/tmp/bench-fixtures`,
/// named after the schema it was built with (its version and a hash of `schema.sql`), so
/// a change to the schema builds a new one instead of reusing a stale file.
pub fn fixture_path(stem: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let schema = include_str!("../../schema.sql");
    let hash = schema.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    dir.join(format!("{stem}-v{}-{hash:016x}.db", jobq::schema_version()))
}

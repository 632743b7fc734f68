//! SQLite connections: how they open (never creating a file that went away), their
//! pragmas and busy waits, the file's identity, and the background checkpointer.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, select};

use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

use super::StoreOptions;

thread_local! {
    /// The busy timeout of the operation this thread runs, and when its current wait for a
    /// lock began. SQLite calls the busy handler on the thread that runs the statement.
    static BUSY: Cell<(Duration, Option<Instant>)> = const { Cell::new((Duration::from_secs(5), None)) };
}

/// Which file a path named when the queue opened it: its absolute path, and (on Unix) its
/// device and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileIdentity {
    pub(super) path: PathBuf,
    pub(super) id: Option<(u64, u64)>,
}

impl FileIdentity {
    pub(super) fn of(path: &Path) -> Option<FileIdentity> {
        let path = std::fs::canonicalize(path).ok()?;
        let id = file_id(&std::fs::metadata(&path).ok()?);
        Some(FileIdentity { path, id })
    }
}

#[cfg(unix)]
pub(super) fn file_id(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

/// WAL pages after which the writer checkpoints by itself, should the background
/// checkpointer fall behind (or a write load never pause long enough for it to finish).
pub(super) const WAL_BACKSTOP_PAGES: i64 = 10_000;

/// How often the background checkpointer looks for new commits.
pub(super) const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

pub(super) const OPEN_FLAGS: OpenFlags = OpenFlags::SQLITE_OPEN_READ_WRITE
    .union(OpenFlags::SQLITE_OPEN_CREATE)
    .union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

/// The flags of every connection after the first: the file exists by then, and if it was
/// deleted since, a new connection must fail rather than make an empty database at the
/// path (which readers would then read while the writer writes to the old file).
pub(super) const REOPEN_FLAGS: OpenFlags =
    OpenFlags::SQLITE_OPEN_READ_WRITE.union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

/// The data version of a connection's main database: it moves on with every commit, the
/// connection's own and those of others (`SQLITE_FCNTL_DATA_VERSION`, a call that runs no
/// statement).
pub(super) fn data_version(conn: &Connection) -> u32 {
    let mut version: u32 = 0;
    // SAFETY: the handle is a live connection we hold; the file control writes one u32
    // through the pointer we pass, to a local that outlives the call.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_DATA_VERSION,
            (&mut version as *mut u32).cast(),
        );
    }
    version
}

/// Starts the thread that checkpoints the WAL whenever this process has committed since its
/// last look. PASSIVE checkpoints never block writers or readers; a checkpoint that cannot
/// finish (a reader holds an old snapshot) simply does what it can. Without a thread (the OS
/// refused one), the writer's autocheckpoint does the work.
pub(super) fn spawn_checkpointer(
    path: &Path,
    opts: &StoreOptions,
    commits: Arc<AtomicU64>,
) -> Option<(Sender<()>, JoinHandle<()>)> {
    let conn = Connection::open_with_flags(path, REOPEN_FLAGS).ok()?;
    conn.busy_timeout(opts.busy_timeout).ok()?;
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("jobq-checkpointer".into())
        .spawn(move || {
            let mut seen = 0;
            loop {
                select! {
                    recv(stop_rx) -> _ => return,
                    default(CHECKPOINT_INTERVAL) => {}
                }
                let now = commits.load(Ordering::Relaxed);
                if now == seen {
                    continue;
                }
                seen = now;
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::debug!(error = %e, "jobq: background checkpoint failed");
                }
            }
        })
        .ok()?;
    Some((stop_tx, thread))
}

pub(super) fn set_busy_timeout(timeout: Duration) {
    BUSY.set((timeout, None));
}

/// The busy handler of every jobq connection: a few yields, then short sleeps with jitter
/// (50 µs growing to 1 ms), until the busy timeout has passed.
pub(super) fn busy_wait(tries: i32) -> bool {
    let (timeout, since) = BUSY.get();
    let now = Instant::now();
    let since = if tries == 0 {
        now
    } else {
        since.unwrap_or(now)
    };
    BUSY.set((timeout, Some(since)));
    if now.duration_since(since) >= timeout {
        return false;
    }
    if tries < 4 {
        std::thread::yield_now();
    } else {
        let base = 50u64 * u64::from((tries as u32 - 3).min(20));
        let jitter = crate::random::random_u64() % 50;
        std::thread::sleep(Duration::from_micros(base + jitter));
    }
    true
}

/// Applies jobq's pragmas to a connection and reads each one back: a pragma that did not
/// take (a misspelt name is silently ignored by SQLite) is an error, not a surprise later.
/// How many prepared statements each connection keeps.
const STATEMENT_CACHE: usize = 128;

pub(super) fn configure(conn: &Connection, opts: &StoreOptions) -> Result<()> {
    conn.busy_handler(Some(busy_wait))?;
    // Room for every statement a connection runs (rusqlite keeps 16 by default): the writer
    // runs more than that, and one pushed out is parsed again at its next use.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    set_busy_timeout(opts.busy_timeout);
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Open {
            path: conn.path().unwrap_or_default().into(),
            reason: format!("could not switch to WAL mode (journal_mode is {mode})"),
        });
    }
    let checks: [(&str, i64); 4] = [
        ("synchronous", opts.durability.pragma_value()),
        ("foreign_keys", 1),
        ("journal_size_limit", 64 << 20),
        ("cache_size", -8192),
    ];
    for (name, want) in checks {
        conn.pragma_update(None, name, want)?;
        let got: i64 = conn.pragma_query_value(None, name, |r| r.get(0))?;
        if got != want {
            return Err(Error::Open {
                path: conn.path().unwrap_or_default().into(),
                reason: format!("the pragma {name} = {want} did not take (it reads {got})"),
            });
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn file_id(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

//! The database file: opening, pragmas, the connection pool and transactions.
//!
//! Reads go through an r2d2 pool, so listing and stats never wait for writers (WAL lets
//! readers and one writer work at once). Writes in this process go through one connection
//! behind a mutex: in-process writers queue on the mutex in order instead of spinning in
//! SQLite's busy handler, which sleeps in growing steps and lets one thread win every race.
//! Writers in other processes are still waited on through `busy_timeout`.
//!
//! Waiting for a lock held by another process uses jobq's own busy handler rather than
//! SQLite's: SQLite's sleeps 1, 2, 5, 10 … ms between tries, and a process that commits in
//! a loop takes the lock again long before a sleeping one wakes — it can starve the others
//! for as long as it has work. jobq's handler yields, then polls in short jittered sleeps,
//! and still gives up after the busy timeout.
//!
//! Checkpoints (copying the WAL back into the database file, and syncing it) run on a
//! background thread of their own, so a committing writer never waits for an fsync in
//! `synchronous=NORMAL` mode. The writer's own autocheckpoint stays on at a high mark as a
//! backstop: under a write load that never pauses, it is what lets the WAL start over.

use crate::store::Engine;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::error::{Error, Result};
use connection::{
    FileIdentity, OPEN_FLAGS, REOPEN_FLAGS, WAL_BACKSTOP_PAGES, busy_wait, configure, data_version,
    file_id, set_busy_timeout, spawn_checkpointer,
};

pub(crate) mod changes;
mod connection;
pub(crate) mod deps;
pub(crate) mod ids;
pub(crate) mod jobs;
pub(crate) mod queues;
pub(crate) mod rollups;
pub(crate) mod rows;
pub(crate) mod schedules;
pub(crate) mod schema;
pub(crate) mod stats;
pub(crate) mod steps;
pub(crate) mod tenants;
pub(crate) mod workers;

/// How much of a commit survives a crash. See the README's Guarantees section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=NORMAL`: a committed enqueue survives the crash of any process, but the
    /// last commits before a power loss or OS crash may be lost (the database stays
    /// consistent). What every SQLite queue we know uses. The default.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is synced to disk before it returns, so it also
    /// survives a power loss. Costs a sync per transaction (batching amortizes it).
    Full,
}

impl Durability {
    fn pragma_value(self) -> i64 {
        match self {
            Durability::Normal => 1,
            Durability::Full => 2,
        }
    }
}

/// Settings for opening a database file.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    pub durability: Durability,
    pub busy_timeout: Duration,
    pub pool_size: u32,
    pub allow_foreign_tables: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            durability: Durability::Normal,
            busy_timeout: Duration::from_secs(5),
            pool_size: 4,
            allow_foreign_tables: false,
        }
    }
}

pub(crate) struct Sqlite {
    path: PathBuf,
    /// The path as text, for messages.
    location: String,
    opts: StoreOptions,
    pool: r2d2::Pool<SqliteConnectionManager>,
    writer: Mutex<Writer>,
    commits: Arc<AtomicU64>,
    checkpointer: Option<(Sender<()>, JoinHandle<()>)>,
    /// Whether the writer's last look at flow control found a controlled queue.
    pub(crate) any_controlled: std::sync::atomic::AtomicBool,
    /// The file as it was opened, to notice it deleted or replaced under this process.
    file: Option<FileIdentity>,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite")
            .field("path", &self.path)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Sqlite {
    /// Opens (creating if needed) and migrates the database at `path`; `now` stamps the
    /// migrations it applies.
    ///
    /// Nothing is written to the file until it is known to be a jobq database (or an empty
    /// one), so opening the wrong file leaves it untouched. Many threads and processes may
    /// open one fresh file at once: each step that meets another's lock waits for it, up
    /// to the busy timeout, and the file is inspected and migrated in whole transactions.
    pub(crate) fn open(path: &Path, opts: StoreOptions, now: i64) -> Result<Sqlite> {
        let open_err = |reason: String| Error::Open {
            path: path.to_path_buf(),
            reason,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(open_err(format!(
                    "folder {} does not exist",
                    parent.display()
                )));
            }
        }
        if path.is_dir() {
            return Err(open_err("it is a folder".into()));
        }
        let mut conn =
            Connection::open_with_flags(path, OPEN_FLAGS).map_err(|e| open_err(e.to_string()))?;
        conn.busy_timeout(opts.busy_timeout)
            .map_err(|e| open_err(e.to_string()))?;
        conn.busy_handler(Some(busy_wait))
            .map_err(|e| open_err(e.to_string()))?;
        set_busy_timeout(opts.busy_timeout);
        if conn.is_readonly("main").unwrap_or(false) {
            return Err(open_err("the file is read-only".into()));
        }
        // SQLite answers "busy" at once, without its busy handler, where waiting could
        // deadlock (two connections setting up one fresh file): such a step is tried again
        // until the busy timeout has passed.
        let deadline = Instant::now() + opts.busy_timeout;
        let patiently = |step: &mut dyn FnMut() -> Result<()>| loop {
            match step() {
                Err(e) if e.is_busy() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(
                        200 + crate::random::random_u64() % 800,
                    ));
                }
                Err(Error::Busy { .. }) => {
                    return Err(Error::Busy {
                        timeout: opts.busy_timeout,
                        context: format!("open {}", path.display()),
                    });
                }
                other => return other,
            }
        };
        // Read-only inspection first: refuse foreign or newer files before any write.
        let mut state = None;
        patiently(&mut || {
            state = Some(schema::inspect(&conn, path, opts.allow_foreign_tables)?);
            Ok(())
        })?;
        let state = state.unwrap_or(schema::FileState::Fresh);
        patiently(&mut || {
            configure(&conn, &opts).map_err(|e| match e {
                Error::Database(inner) => open_err(inner.to_string()),
                other => other,
            })
        })?;
        patiently(&mut || schema::migrate(&mut conn, path, state, now))?;
        let tally = Arc::new(Mutex::new(crate::model::Tally::default()));
        rollups::install(&conn, &tally)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_BACKSTOP_PAGES)?;
        let backstop: i64 = conn.pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))?;
        if backstop != WAL_BACKSTOP_PAGES {
            return Err(open_err(format!(
                "wal_autocheckpoint did not take (it reads {backstop})"
            )));
        }

        let init_opts = opts.clone();
        let manager = SqliteConnectionManager::file(path)
            .with_flags(REOPEN_FLAGS)
            .with_init(move |c| {
                c.busy_timeout(init_opts.busy_timeout)?;
                configure(c, &init_opts).map_err(|e| {
                    rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                        Some(e.to_string()),
                    )
                })
            });
        // No idle timeout and no max lifetime: r2d2 then schedules no reaper, whose recurring
        // job would keep the pool's helper threads alive after the queue is dropped.
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(1))
            .min_idle(Some(0))
            .idle_timeout(None)
            .max_lifetime(None)
            .connection_timeout(opts.busy_timeout.max(Duration::from_secs(1)))
            .build(manager)
            .map_err(|e| open_err(e.to_string()))?;
        let commits = Arc::new(AtomicU64::new(0));
        let checkpointer = spawn_checkpointer(path, &opts, Arc::clone(&commits));
        Ok(Sqlite {
            path: path.to_path_buf(),
            location: path.display().to_string(),
            opts,
            pool,
            writer: Mutex::new(Writer {
                controls: RefCell::new(None),
                conn,
                keys: Cell::new(KeyCache::default()),
                tally,
            }),
            commits,
            checkpointer,
            any_controlled: std::sync::atomic::AtomicBool::new(false),
            file: FileIdentity::of(path),
        })
    }

    /// What is wrong with the database file under this process, if anything: deleted, or
    /// replaced by another file (its path names another inode). Either way this process
    /// goes on writing to a file that other processes no longer open: a split brain.
    pub(crate) fn file_problem(&self) -> Option<String> {
        let opened = self.file.as_ref()?;
        match std::fs::metadata(&opened.path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
                "the database file {} was deleted while this process had it open: what it writes goes to a file no other process sees (restart it)",
                opened.path.display()
            )),
            Err(_) => None,
            Ok(now) if opened.id.is_some() && file_id(&now) != opened.id => Some(format!(
                "the database file {} was replaced by another file while this process had it open: what it writes goes to the old file, which no other process sees (restart it)",
                opened.path.display()
            )),
            Ok(_) => None,
        }
    }

    /// A new connection of its own, with the same pragmas (for long-lived readers such as
    /// a dispatcher watching `PRAGMA data_version`).
    pub(crate) fn connect(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(&self.path, REOPEN_FLAGS)?;
        conn.busy_timeout(self.opts.busy_timeout)?;
        configure(&conn, &self.opts)?;
        Ok(conn)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer connection and commits.
    /// An error from `f` rolls everything back.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&WriteTx<'_, '_>) -> Result<T>) -> Result<T> {
        set_busy_timeout(self.opts.busy_timeout);
        let mut writer = self.lock_writer();
        let Writer {
            conn,
            keys,
            controls,
            tally,
        } = &mut *writer;
        let out = {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| self.fix(e.into(), "begin a write transaction"))?;
            // Holding the write lock, the connection has seen every commit before this one:
            // if none came from another connection since its own last, what it knew of the
            // largest key still holds.
            let mut cache = keys.get();
            let others_committed = data_version(&tx) != cache.version;
            cache.known &= !others_committed;
            keys.set(cache);
            if others_committed {
                *controls.borrow_mut() = None;
            }
            let tx = WriteTx {
                tx,
                keys,
                controls,
                any_controlled: &self.any_controlled,
            };
            let done = f(&tx).and_then(|out| {
                rollups::flush(&tx, tally)?;
                tx.tx.commit()?;
                Ok(out)
            });
            match done {
                Ok(out) => out,
                Err(e) => {
                    rollups::forget(tally);
                    keys.set(KeyCache::default());
                    *controls.borrow_mut() = None;
                    return Err(self.fix(e, "write"));
                }
            }
        };
        let mut cache = keys.get();
        cache.version = data_version(conn);
        keys.set(cache);
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(out)
    }

    /// Runs `f` on a pooled connection inside one read transaction (one snapshot).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        set_busy_timeout(self.opts.busy_timeout);
        let mut conn = match self.pool.try_get() {
            Some(conn) => conn,
            // A new connection opens whatever is at the path now: with the file deleted or
            // replaced, not this process's database. The writer's connection still reads
            // the file this process writes to (and the health check says what happened).
            None if self.file_problem().is_some() => {
                return Self::read_on(&mut self.lock_writer().conn, f, |e, c| self.fix(e, c));
            }
            None => self.pool.get()?,
        };
        Self::read_on(&mut conn, f, |e, c| self.fix(e, c))
    }

    /// Runs `f` in one read transaction on `conn`.
    fn read_on<T>(
        conn: &mut Connection,
        f: impl FnOnce(&Connection) -> Result<T>,
        fix: impl Fn(Error, &str) -> Error,
    ) -> Result<T> {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Deferred)
            .map_err(|e| fix(e.into(), "begin a read transaction"))?;
        let out = f(&tx).map_err(|e| fix(e, "read"))?;
        tx.finish()
            .map_err(|e| fix(e.into(), "end a read transaction"))?;
        Ok(out)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // A panic inside a write rolled its transaction back when the guard dropped, so the
        // connection is sound even if the mutex is poisoned.
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives a busy error its timeout and what was being done.
    fn fix(&self, err: Error, context: &str) -> Error {
        match err {
            Error::Busy { .. } => Error::Busy {
                timeout: self.opts.busy_timeout,
                context: format!("{context} on {}", self.path.display()),
            },
            other => other,
        }
    }
}

/// The writer connection, and what it knows of the largest job key.
struct Writer {
    conn: Connection,
    keys: Cell<KeyCache>,
    /// The queues with flow control, as of the writer's last look: valid while no other
    /// connection commits (as the key cache) and the writer does not change them.
    controls: RefCell<Option<Controls>>,
    /// What the transaction under way adds to the rollups (see `rollups`).
    tally: Arc<Mutex<crate::model::Tally>>,
}

/// The queues under flow control, by name (queues without any are not in it).
pub(crate) type Controls = Arc<std::collections::HashMap<String, crate::model::QueueControl>>;

/// What the writer connection knows of the largest row key in `jobq_jobs`: when `known`, no
/// key is larger than `largest` as of the connection's data version `version` (which any
/// commit, its own or another connection's, moves on). It spares a job insert the query of
/// the largest key while no other connection has committed since this one last did.
#[derive(Debug, Clone, Copy, Default)]
struct KeyCache {
    known: bool,
    version: u32,
    largest: Option<i64>,
}

/// A write transaction on the writer connection: the transaction itself (it derefs to it)
/// and what the writer knows of the largest job key.
pub(crate) struct WriteTx<'t, 'k> {
    tx: Transaction<'t>,
    keys: &'k Cell<KeyCache>,
    controls: &'k RefCell<Option<Controls>>,
    any_controlled: &'k std::sync::atomic::AtomicBool,
}

impl<'t> std::ops::Deref for WriteTx<'t, '_> {
    type Target = Transaction<'t>;

    fn deref(&self) -> &Transaction<'t> {
        &self.tx
    }
}

impl WriteTx<'_, '_> {
    /// The largest job key in the file (`None` for no job), read in this transaction, which
    /// holds the write lock, or known from the writer's last commits when no other
    /// connection committed since.
    pub(crate) fn largest_key(&self) -> Result<Option<i64>> {
        let cache = self.keys.get();
        if cache.known {
            return Ok(cache.largest);
        }
        let largest: Option<i64> = self
            .tx
            .prepare_cached("SELECT max(id_key) FROM jobq_jobs")?
            .query_row([], |r| r.get(0))?;
        self.keys.set(KeyCache {
            known: true,
            largest,
            ..cache
        });
        Ok(largest)
    }

    /// The queues under flow control, read in this transaction or known from the writer's
    /// last look while no other connection committed since.
    pub(crate) fn controls(&self) -> Result<Controls> {
        if let Some(known) = self.controls.borrow().as_ref() {
            return Ok(Arc::clone(known));
        }
        let read: Controls = Arc::new(
            queues::controls(&self.tx)?
                .into_iter()
                .filter(crate::model::QueueControl::is_controlled)
                .map(|c| (c.name.clone(), c))
                .collect(),
        );
        *self.controls.borrow_mut() = Some(Arc::clone(&read));
        self.any_controlled
            .store(!read.is_empty(), Ordering::Relaxed);
        Ok(read)
    }

    /// This transaction changes flow control: read it again next time.
    pub(crate) fn forget_controls(&self) {
        *self.controls.borrow_mut() = None;
    }

    /// Records that this transaction inserted a job with the key `key`.
    pub(crate) fn inserted_key(&self, key: i64) {
        let mut cache = self.keys.get();
        cache.largest = Some(cache.largest.map_or(key, |l| l.max(key)));
        self.keys.set(cache);
    }
}

impl Drop for Sqlite {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpointer.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Engine for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn durability(&self) -> Durability {
        self.opts.durability
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_reads_back_the_pragmas() {
        let dir = tempfile::tempdir().unwrap();
        let opts = StoreOptions {
            durability: Durability::Full,
            busy_timeout: Duration::from_millis(1234),
            ..StoreOptions::default()
        };
        let store = Sqlite::open(&dir.path().join("q.db"), opts, 0).unwrap();
        let check = |c: &Connection| {
            let mode: String = c
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            let sync: i64 = c
                .pragma_query_value(None, "synchronous", |r| r.get(0))
                .unwrap();
            let fk: i64 = c
                .pragma_query_value(None, "foreign_keys", |r| r.get(0))
                .unwrap();
            assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
        };
        check(&store.lock_writer().conn);
        check(&store.pool.get().unwrap());
        check(&store.connect().unwrap());
    }

    #[test]
    fn every_connection_waits_out_the_busy_timeout_then_reports_busy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let opts = StoreOptions {
            busy_timeout: Duration::from_millis(200),
            ..StoreOptions::default()
        };
        let store = Sqlite::open(&path, opts, 0).unwrap();
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let check = |c: &Connection| {
            set_busy_timeout(Duration::from_millis(200));
            let started = Instant::now();
            let err = c.execute_batch("BEGIN IMMEDIATE").unwrap_err();
            assert_eq!(
                err.sqlite_error_code(),
                Some(rusqlite::ErrorCode::DatabaseBusy)
            );
            assert!(
                started.elapsed() >= Duration::from_millis(190),
                "gave up after {:?}",
                started.elapsed()
            );
        };
        check(&store.lock_writer().conn);
        check(&store.pool.get().unwrap());
        check(&store.connect().unwrap());
        holder.execute_batch("COMMIT").unwrap();
        store.write(|_| Ok(())).unwrap();
    }

    #[test]
    fn a_missing_folder_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            Sqlite::open(&dir.path().join("nope/q.db"), StoreOptions::default(), 0).unwrap_err();
        assert!(matches!(err, Error::Open { .. }), "{err}");
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}

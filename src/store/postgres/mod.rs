//! The PostgreSQL engine: for workers on many hosts sharing one queue.
//!
//! Connections come from an r2d2 pool (`r2d2_postgres`), each with its own cache of
//! prepared statements, so that a statement costs one round trip. A statement that stands
//! alone runs in autocommit; an operation of several statements runs in one transaction.
//! Claims take rows with `FOR UPDATE SKIP LOCKED` inside one `UPDATE … RETURNING`; a trigger
//! notifies the channel `jobq` when jobs become ready, and idle pools `LISTEN` to it on a
//! connection of their own. Every time written or compared comes from the queue's clock,
//! which on PostgreSQL is the server's (see [`clock`]), never from `now()` in SQL.

use crate::store::Durability;
use crate::store::Engine;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};
use r2d2::ManageConnection;
use r2d2_postgres::PostgresConnectionManager;

use crate::clock::Clock;
use crate::error::{DatabaseError, Error, Result};

mod changes;
pub(crate) mod clock;
pub(crate) mod deps;
pub(crate) mod ids;
pub(crate) mod jobs;
pub(crate) mod queues;
pub(crate) mod rollups;
pub(crate) mod rows;
mod schedules;
pub(crate) mod schema;
mod stats;
pub(crate) mod steps;
pub(crate) mod tenants;
mod workers;

pub(crate) use clock::ServerClock;

/// The URL without its password, for messages and logs.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// A pooled connection, its prepared statements, and when it last answered.
pub(crate) struct Conn {
    client: Client,
    statements: HashMap<&'static str, Statement>,
    used: Instant,
}

/// A connection idle longer than this is checked (one empty query) before the pool hands
/// it out: after a server restart or a cut connection, the dead ones are dropped there
/// instead of failing a request. A connection in steady use is handed out unchecked.
const CHECK_IF_IDLE_FOR: Duration = Duration::from_millis(500);

impl Conn {
    /// The statement for `sql`, prepared once per connection.
    fn prepared(&mut self, sql: &'static str) -> Result<Statement> {
        self.used = Instant::now();
        if let Some(statement) = self.statements.get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).map_err(from_pg)?;
        self.statements.insert(sql, statement.clone());
        Ok(statement)
    }

    pub(crate) fn query(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query(&statement, params).map_err(from_pg)
    }

    pub(crate) fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let statement = self.prepared(sql)?;
        self.client.query_opt(&statement, params).map_err(from_pg)
    }

    pub(crate) fn query_one(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Row> {
        let statement = self.prepared(sql)?;
        self.client.query_one(&statement, params).map_err(from_pg)
    }

    pub(crate) fn execute(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64> {
        let statement = self.prepared(sql)?;
        self.client.execute(&statement, params).map_err(from_pg)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.used = Instant::now();
        self.client.batch_execute(sql).map_err(from_pg)
    }
}

/// What runs SQL: a pooled connection (its statements prepared once), or an application's
/// own client or transaction (for an enqueue inside it).
pub(crate) trait Sql {
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>>;
    fn query_all(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>>;
    fn query_one(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Row> {
        self.query_opt(sql, params)?
            .ok_or_else(|| Error::invalid("query", "it returned no row"))
    }
}

impl Sql for Conn {
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        Conn::query_opt(self, sql, params)
    }

    fn query_all(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        Conn::query(self, sql, params)
    }
}

/// An application's client or transaction.
pub(crate) struct Foreign<'a, C>(pub &'a mut C);

impl<C: postgres::GenericClient> Sql for Foreign<'_, C> {
    fn query_opt(
        &mut self,
        sql: &'static str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        self.0.query_opt(sql, params).map_err(from_pg)
    }

    fn query_all(&mut self, sql: &'static str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>> {
        self.0.query(sql, params).map_err(from_pg)
    }
}

/// `r2d2_postgres`'s manager, with a statement cache on each connection.
#[derive(Debug)]
struct Manager(PostgresConnectionManager<NoTls>);

/// Why a connection could not be made, in the server's own words: what the driver's
/// error says alone ("db error") names nothing.
#[derive(Debug)]
pub(crate) struct ConnectError(String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl From<postgres::Error> for ConnectError {
    fn from(e: postgres::Error) -> ConnectError {
        ConnectError(describe(&e))
    }
}

/// A driver's error with what caused it: the server's message, code and hint for an error
/// the server sent (a wrong password, a missing database or role, too many connections),
/// else the chain of causes (a refused connection, a timeout).
pub(crate) fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(": ");
            text.push_str(detail);
        }
        if let Some(hint) = db.hint() {
            text.push_str(" — ");
            text.push_str(hint);
        }
        return text;
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = ConnectError;

    fn connect(&self) -> std::result::Result<Conn, ConnectError> {
        let mut client = self.0.connect()?;
        // jobq's statements are short: compiling them costs more than it saves.
        client.batch_execute("SET jit = off")?;
        Ok(Conn {
            client,
            statements: HashMap::new(),
            used: Instant::now(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> std::result::Result<(), ConnectError> {
        if conn.used.elapsed() < CHECK_IF_IDLE_FOR {
            return Ok(());
        }
        self.0.is_valid(&mut conn.client)?;
        conn.used = Instant::now();
        Ok(())
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        self.0.has_broken(&mut conn.client)
    }
}

/// Settings of the PostgreSQL engine.
#[derive(Debug, Clone)]
pub(crate) struct PgOptions {
    /// How long to wait for a connection (from the pool, or to the server).
    pub connect_timeout: Duration,
    /// The most pooled connections.
    pub pool_size: u32,
}

pub(crate) struct Postgres {
    config: postgres::Config,
    location: String,
    opts: PgOptions,
    pool: r2d2::Pool<Manager>,
    clock: ServerClock,
    /// Dropped with the engine: the thread that follows the server's clock ends.
    _clock_thread: crossbeam_channel::Sender<()>,
    /// The queues under flow control, as last read (at most a second ago), and when.
    pub(crate) controlled:
        std::sync::Mutex<(Option<Instant>, Arc<std::collections::HashSet<String>>)>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// How many times an operation is tried again after a serialization failure or a deadlock
/// (each a conflict the server resolved by aborting one side) before it gives up as busy.
const CONFLICT_RETRIES: u32 = 8;

impl Postgres {
    /// Connects to the server of `url` and brings its schema up to date.
    pub(crate) fn open(url: &str, opts: PgOptions) -> Result<Postgres> {
        let location = redact(url);
        let open_err = |reason: String| Error::Open {
            path: location.clone().into(),
            reason,
        };
        let mut config = postgres::Config::from_str(url.trim())
            .map_err(|e| open_err(format!("not a valid URL: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name("jobq");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(opts.connect_timeout);
        }
        let manager = Manager(PostgresConnectionManager::new(config.clone(), NoTls));
        // The first connection is made here, not through the pool: a server that refuses
        // it (a wrong password, no such database or role, too many connections) is
        // reported at once in its own words, not after the pool's timeout.
        let mut conn = manager
            .connect()
            .map_err(|e| open_err(format!("cannot connect: {e}")))?;
        // No idle timeout and no max lifetime: r2d2 then schedules no reaper thread. Broken
        // connections are noticed when they are given back (or, idle, when taken), and
        // dropped.
        let pool = r2d2::Pool::builder()
            .max_size(opts.pool_size.max(2))
            .min_idle(Some(0))
            .idle_timeout(None)
            .max_lifetime(None)
            .test_on_check_out(true)
            .connection_timeout(opts.connect_timeout.max(Duration::from_secs(1)))
            .build_unchecked(manager);
        let clock = ServerClock::measure(&mut conn).map_err(|e| open_err(e.to_string()))?;
        tracing::debug!(
            database = location,
            offset_ms = clock.offset_ms(),
            "jobq: the server's clock is this far ahead of this host's"
        );
        schema::migrate(&mut conn, &location, clock.now_ms())?;
        drop(conn);
        let clock_pool = pool.clone();
        let clock_thread = clock.keep_measuring(move || clock_pool.get().ok());
        Ok(Postgres {
            config,
            location,
            opts,
            pool,
            clock,
            _clock_thread: clock_thread,
            controlled: std::sync::Mutex::new((None, Arc::default())),
        })
    }

    /// The server's clock, as seen from this host.
    pub(crate) fn clock(&self) -> ServerClock {
        self.clock.clone()
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<Manager>> {
        self.pool.get().map_err(|e| Error::Unavailable {
            reason: format!(
                "no connection to {} within {:?}: {e}",
                self.location, self.opts.connect_timeout
            ),
        })
    }

    /// Runs `f` on a pooled connection, each statement in autocommit, trying again after a
    /// conflict the server aborted.
    pub(crate) fn run<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.retrying(|| {
            let mut conn = self.conn()?;
            f(&mut conn)
        })
    }

    /// Runs a read on a pooled connection; a connection found dead (the server restarted or
    /// cut it) is dropped and the read runs again on a fresh one, since a read changes
    /// nothing.
    pub(crate) fn read<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            match self.run(&mut f) {
                Err(Error::Unavailable { .. }) if tries < self.opts.pool_size.max(2) => tries += 1,
                other => return other,
            }
        }
    }

    /// Runs `f` in one transaction (one snapshot, all or nothing) on a pooled connection.
    pub(crate) fn transaction<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.retrying(|| {
            let mut conn = self.conn()?;
            conn.batch("BEGIN")?;
            match f(&mut conn) {
                Ok(out) => {
                    conn.batch("COMMIT")?;
                    Ok(out)
                }
                Err(e) => {
                    // A broken connection rolls back by itself, on the server.
                    let _ = conn.batch("ROLLBACK");
                    Err(e)
                }
            }
        })
    }

    /// Runs `f` in one read-only snapshot (`REPEATABLE READ`), for figures that must agree;
    /// as [`Postgres::read`], again on a fresh connection when one was found dead.
    pub(crate) fn snapshot<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T>) -> Result<T> {
        self.read(|conn| {
            conn.batch("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?;
            let out = f(conn);
            let _ = conn.batch(if out.is_ok() { "COMMIT" } else { "ROLLBACK" });
            out
        })
    }

    /// Runs `attempt` again while it fails with a serialization failure or a deadlock.
    fn retrying<T>(&self, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let started = Instant::now();
        let mut tries = 0;
        loop {
            match attempt() {
                Err(Error::Busy { context, .. }) if tries < CONFLICT_RETRIES => {
                    tries += 1;
                    tracing::debug!(tries, context, "jobq: conflict on PostgreSQL; trying again");
                    std::thread::sleep(Duration::from_millis(
                        (crate::random::random_u64() % 5) + u64::from(tries),
                    ));
                }
                Err(Error::Busy { context, .. }) => {
                    return Err(Error::Busy {
                        timeout: started.elapsed(),
                        context,
                    });
                }
                other => return other,
            }
        }
    }
}

/// A PostgreSQL error as jobq's: conflicts are busy, a lost server is unavailable, a full
/// disk is a full disk, the rest a database error with its SQLSTATE.
pub(crate) fn from_pg(err: postgres::Error) -> Error {
    if let Some(db) = err.as_db_error() {
        let code = db.code();
        let context = format!("{}: {}", code.code(), db.message());
        if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::LOCK_NOT_AVAILABLE
        {
            return Error::Busy {
                timeout: Duration::ZERO,
                context,
            };
        }
        if *code == SqlState::DISK_FULL {
            return Error::DiskFull(context);
        }
        if *code == SqlState::DATA_CORRUPTED || *code == SqlState::INDEX_CORRUPTED {
            return Error::Corrupt(context);
        }
        if code.code().starts_with("08")
            || code.code().starts_with("57P")
            || *code == SqlState::TOO_MANY_CONNECTIONS
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            return Error::Unavailable { reason: context };
        }
        if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE {
            return Error::invalid(
                "text",
                format!("{} (text may not contain NUL characters)", db.message()),
            );
        }
        let code = code.code().to_string();
        let mut message = format!("{} (SQLSTATE {code})", db.message());
        if let Some(detail) = db.detail() {
            message.push_str(": ");
            message.push_str(detail);
        }
        return Error::Database(
            DatabaseError::new("postgres", Some(code), err).with_message(message),
        );
    }
    if err.is_closed() || std::error::Error::source(&err).is_some_and(|s| s.is::<std::io::Error>())
    {
        return Error::Unavailable {
            reason: err.to_string(),
        };
    }
    Error::Database(DatabaseError::new("postgres", None, err))
}

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Error {
        from_pg(err)
    }
}

impl Engine for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn location(&self) -> &str {
        &self.location
    }

    fn durability(&self) -> Durability {
        // What survives is the server's to say (`synchronous_commit`, `fsync`).
        Durability::Full
    }
}

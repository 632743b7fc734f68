//! Helpers shared by the integration tests: fresh queues on a fresh database of the
//! engine under test, a manual clock, a dump of every row to prove that refused requests
//! changed nothing, and child processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use jobq::{ManualClock, Queue, RetryPolicy};
use rusqlite::Connection;
use tempfile::TempDir;

/// 2026-01-01T00:00:00Z: tests with a manual clock start here.
pub const T0: i64 = 1_767_225_600_000;

/// The engine a test binary runs its tests on (`crate::ENGINE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The engine under test.
pub fn engine() -> Engine {
    crate::ENGINE
}

/// A fresh, empty database of the engine under test, with a temp folder for anything else
/// a test needs: a SQLite file in the folder, or a new database on the test server
/// (dropped with this).
pub struct Db {
    pub dir: TempDir,
    location: String,
}

impl Db {
    pub fn fresh() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let location = match engine() {
            Engine::Sqlite => dir.path().join("jobs.db").display().to_string(),
            Engine::Postgres => match crate::cluster::server() {
                Some(server) => server.fresh_database(),
                None => crate::cluster::skip_or_fail(),
            },
        };
        Db { dir, location }
    }

    /// The file path or the URL: what `Queue::open` and `--db` take.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.location)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if engine() == Engine::Postgres {
            if let Some(server) = crate::cluster::server() {
                server.drop_database(&self.location);
            }
        }
    }
}

pub struct Env {
    pub queue: Queue,
    pub clock: ManualClock,
    pub db: Db,
}

impl Env {
    /// A queue on a fresh database with a manual clock at `T0` and a fixed 10 s retry delay.
    pub fn new() -> Env {
        let db = Db::fresh();
        let clock = ManualClock::new(T0);
        let queue = Queue::builder(db.path())
            .clock(clock.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_secs(10)))
            .open()
            .unwrap();
        Env { queue, clock, db }
    }

    /// A temp folder of the test's own.
    pub fn dir(&self) -> &Path {
        self.db.dir.path()
    }

    /// The database: the file path or the URL.
    pub fn path(&self) -> PathBuf {
        self.db.path()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    /// Every row of every jobq table, as text: equal dumps mean nothing changed.
    pub fn dump(&self) -> String {
        dump(&self.path())
    }

    /// The number a query of one row and column answers, on either engine.
    pub fn sql_f64(&self, sql: &str) -> f64 {
        match engine() {
            Engine::Sqlite => self.conn().query_row(sql, [], |r| r.get(0)).unwrap(),
            Engine::Postgres => self
                .pg()
                .query_one(&format!("SELECT ({sql})::float8"), &[])
                .unwrap()
                .get(0),
        }
    }

    /// A client of the PostgreSQL database (tests of what only PostgreSQL has).
    pub fn pg(&self) -> postgres::Client {
        assert_eq!(
            engine(),
            Engine::Postgres,
            "a PostgreSQL client for a SQLite file"
        );
        postgres::Client::connect(self.db.location(), postgres::NoTls).unwrap()
    }

    /// A connection to the SQLite file (tests of what only SQLite has).
    pub fn conn(&self) -> Connection {
        assert_eq!(
            engine(),
            Engine::Sqlite,
            "a SQLite connection to a PostgreSQL database"
        );
        Connection::open(self.path()).unwrap()
    }
}

/// Every row of every jobq table of the database at `path` (a file or a URL), as text.
pub fn dump(path: &Path) -> String {
    let location = path.display().to_string();
    if jobq::is_postgres_url(&location) {
        return dump_postgres(&location);
    }
    let conn = Connection::open(path).unwrap();
    let mut out = String::new();
    for table in [
        "jobq_jobs",
        "jobq_groups",
        "jobq_owners",
        "jobq_tokens",
        "jobq_dependencies",
        "jobq_job_options",
    ] {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM {table} ORDER BY 1, 2"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let vals: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                Ok(vals.join("|"))
            })
            .unwrap();
        for row in rows {
            out.push_str(table);
            out.push(':');
            out.push_str(&row.unwrap());
            out.push('\n');
        }
    }
    out
}

/// Every row of a query (a view, usually), each as its column values.
pub fn rows(conn: &Connection, sql: &str) -> Vec<Vec<rusqlite::types::Value>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// A child process that is killed (and reaped) when dropped, so that a test that fails
/// half-way leaves no process of its own running.
pub struct Spawned(Option<Child>);

impl Spawned {
    /// The child, no longer killed when dropped.
    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("a child")
    }
}

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a child")
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a child")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // A child already reaped is not signalled again (its pid may be another's).
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs one test function of this binary in a child process, with extra environment.
/// The function must return at once unless `JOBQ_TEST_CHILD` is set. The child is killed
/// if the handle is dropped first (a failing test).
pub fn spawn_child(test_name: &str, env: &[(&str, String)]) -> Spawned {
    assert_test_exists(test_name);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env("JOBQ_TEST_CHILD", "1")
        .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    Spawned(Some(cmd.spawn().unwrap()))
}

/// Refuses a child test name that names no test of this binary: the child would run
/// nothing and succeed, and the test that spawned it could not fail.
fn assert_test_exists(test_name: &str) {
    static KNOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut known = KNOWN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if known.iter().any(|k| k == test_name) {
        return;
    }
    let listed = Command::new(std::env::current_exe().unwrap())
        .args([test_name, "--exact", "--list"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listing.lines().any(|l| l == format!("{test_name}: test")),
        "no test {test_name} in this binary for a child to run:\n{listing}"
    );
    known.push(test_name.to_string());
}

/// Waits for a child started by [`spawn_child`], checks that it succeeded, and returns what
/// it printed.
pub fn child_output(child: Spawned) -> String {
    let out = child.into_inner().wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "the child failed: {text}");
    text
}

/// The rest of the first line after `marker` in what a successful child printed (the test
/// harness may have printed the test's name before it on the same line).
pub fn child_report(child: Spawned, marker: &str) -> String {
    let text = child_output(child);
    text.lines()
        .find_map(|l| l.split_once(marker).map(|(_, rest)| rest.to_string()))
        .unwrap_or_else(|| panic!("no {marker:?} in what the child printed: {text}"))
}

pub fn is_child() -> bool {
    std::env::var_os("JOBQ_TEST_CHILD").is_some()
}

pub fn child_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"))
}

fn dump_postgres(url: &str) -> String {
    let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut out = String::new();
    for table in [
        "jobq_jobs",
        "jobq_groups",
        "jobq_owners",
        "jobq_tokens",
        "jobq_dependencies",
        "jobq_job_options",
    ] {
        let sql = format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY 1");
        for row in client.query(&sql, &[]).unwrap() {
            out.push_str(table);
            out.push(':');
            out.push_str(&row.get::<_, String>(0));
            out.push('\n');
        }
    }
    out
}

/// "ok" when the database is sound: SQLite's `integrity_check`; on PostgreSQL, amcheck's
/// checks of the jobs table and every index of it.
pub fn integrity(path: &Path) -> String {
    let location = path.display().to_string();
    if !jobq::is_postgres_url(&location) {
        return Connection::open(path)
            .unwrap()
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
    }
    let mut client = postgres::Client::connect(&location, postgres::NoTls).unwrap();
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck")
        .unwrap();
    let heap = client
        .query("SELECT msg FROM verify_heapam('jobq_jobs')", &[])
        .unwrap();
    if let Some(problem) = heap.first() {
        return problem.get(0);
    }
    client
        .query(
            "SELECT bt_index_check(i.indexrelid, true) FROM pg_index i
             WHERE i.indrelid = 'jobq_jobs'::regclass",
            &[],
        )
        .unwrap();
    "ok".into()
}

/// Runs SQL that both dialects read the same way on the database at `path`.
pub fn execute(path: &Path, sql: &str) {
    let location = path.display().to_string();
    if jobq::is_postgres_url(&location) {
        let mut client = postgres::Client::connect(&location, postgres::NoTls).unwrap();
        client.batch_execute(sql).unwrap();
    } else {
        Connection::open(path).unwrap().execute_batch(sql).unwrap();
    }
}

/// The rows of a query (a view, usually) on either engine, each column as JSON: integers,
/// reals, text and null as such (PostgreSQL's `numeric` as a JSON number).
pub fn sql_rows(path: &Path, sql: &str) -> Vec<Vec<serde_json::Value>> {
    use serde_json::Value;
    let location = path.display().to_string();
    if jobq::is_postgres_url(&location) {
        use postgres::types::Type;
        let mut client = postgres::Client::connect(&location, postgres::NoTls).unwrap();
        // Numeric columns read as float8, the rest as their type.
        let columns: Vec<(String, Type)> = client
            .prepare(sql)
            .unwrap()
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect();
        let list: Vec<String> = columns
            .iter()
            .map(|(name, ty)| match *ty {
                Type::NUMERIC => format!("\"{name}\"::float8"),
                _ => format!("\"{name}\""),
            })
            .collect();
        let wrapped = format!("SELECT {} FROM ({sql}) AS t", list.join(", "));
        return client
            .query(&wrapped, &[])
            .unwrap()
            .iter()
            .map(|r| {
                (0..columns.len())
                    .map(|i| match *r.columns()[i].type_() {
                        Type::INT8 => r.get::<_, Option<i64>>(i).map_or(Value::Null, Value::from),
                        Type::INT4 => r.get::<_, Option<i32>>(i).map_or(Value::Null, Value::from),
                        Type::FLOAT8 => r.get::<_, Option<f64>>(i).map_or(Value::Null, Value::from),
                        Type::UUID => r
                            .get::<_, Option<uuid::Uuid>>(i)
                            .map_or(Value::Null, |u| Value::from(u.to_string())),
                        _ => r
                            .get::<_, Option<String>>(i)
                            .map_or(Value::Null, Value::from),
                    })
                    .collect()
            })
            .collect();
    }
    let conn = Connection::open(path).unwrap();
    rows(&conn, sql)
        .into_iter()
        .map(|row| {
            row.into_iter()
                .map(|v| match v {
                    rusqlite::types::Value::Null => Value::Null,
                    rusqlite::types::Value::Integer(i) => Value::from(i),
                    rusqlite::types::Value::Real(f) => Value::from(f),
                    rusqlite::types::Value::Text(t) => Value::from(t),
                    rusqlite::types::Value::Blob(b) => Value::from(format!("{b:?}")),
                })
                .collect()
        })
        .collect()
}

/// Two numbers from SQL equal to within float rounding (PostgreSQL computes some in
/// `numeric`).
pub fn close(a: &serde_json::Value, b: f64) -> bool {
    a.as_f64()
        .is_some_and(|a| (a - b).abs() <= 1e-9 * b.abs().max(1.0))
}

/// Every job of the queue, page by page (newest first).
pub fn all_jobs(queue: &jobq::Queue) -> Vec<jobq::Job> {
    let mut all = Vec::new();
    let mut filter = jobq::JobFilter::new().limit(10_000);
    loop {
        let page = queue.list(&filter).unwrap();
        all.extend(page.jobs);
        match page.next {
            Some(n) => filter = jobq::JobFilter::new().limit(10_000).after(n),
            None => return all,
        }
    }
}

/// A number below `below` from the clock's nanoseconds: jitter for chaos loops.
pub fn random(below: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    (nanos ^ (nanos >> 7)) % below
}

/// Worker processes of a chaos test: each runs the child test `test` on the database `db`
/// and logs its runs to a file of its own in `dir` (`JOBQ_TEST_OUT`); a random one is
/// SIGKILLed and replaced while the drain makes progress.
pub struct ChaosWorkers {
    test: &'static str,
    db: PathBuf,
    dir: PathBuf,
    workers: Vec<Spawned>,
    /// Every worker's log, the replaced ones' too.
    pub logs: Vec<PathBuf>,
    pub kills: usize,
    done_at_kill: i64,
}

impl ChaosWorkers {
    pub fn start(test: &'static str, db: &Path, dir: &Path, n: usize) -> ChaosWorkers {
        let mut chaos = ChaosWorkers {
            test,
            db: db.to_path_buf(),
            dir: dir.to_path_buf(),
            workers: Vec::new(),
            logs: Vec::new(),
            kills: 0,
            done_at_kill: -1,
        };
        chaos.workers = (0..n).map(|_| chaos.spawn()).collect();
        chaos
    }

    fn spawn(&mut self) -> Spawned {
        let log = self.dir.join(format!("worker-{}.log", self.logs.len()));
        self.logs.push(log.clone());
        let env = [
            ("JOBQ_TEST_DB", self.db.display().to_string()),
            ("JOBQ_TEST_OUT", log.display().to_string()),
        ];
        spawn_child(self.test, &env)
    }

    /// SIGKILLs a random worker and starts another in its place, but only once some job
    /// finished (`done`) since the last kill: on a loaded machine a worker may need longer
    /// than the kill cadence to start and finish anything, and killing it anyway would
    /// stall the drain however correct the queue is.
    pub fn kill_one_after_progress(&mut self, done: i64) {
        if done <= self.done_at_kill {
            return;
        }
        self.done_at_kill = done;
        let victim = random(self.workers.len() as u64) as usize;
        self.workers[victim].kill().unwrap(); // SIGKILL
        self.workers[victim].wait().unwrap();
        self.kills += 1;
        self.workers[victim] = self.spawn();
    }

    /// Kills every worker and waits for each.
    pub fn stop(&mut self) {
        for mut w in self.workers.drain(..) {
            w.kill().unwrap();
            w.wait().unwrap();
        }
    }
}

//! The PostgreSQL server of the conformance suite: the server `JOBQ_TEST_POSTGRES_URL`
//! names, or else a throwaway cluster made with the server binaries on this machine
//! (`initdb` and `pg_ctl`, Debian's or any on the PATH) in a temporary folder, started once
//! per test process and stopped when it exits. Each test gets a fresh database on it.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the suite's databases are made.
pub struct Server {
    /// A URL of the server without a database name at its end (`postgres://user@host:port`)
    /// and with its query, if any, kept apart.
    base: String,
    query: String,
    /// The cluster this process started, to stop at exit.
    own: Option<OwnCluster>,
}

struct OwnCluster {
    pg_ctl: PathBuf,
    data: PathBuf,
    folder: PathBuf,
    as_postgres: bool,
}

static SERVER: OnceLock<Option<Server>> = OnceLock::new();

/// The server, or `None` when there is none to be had (no URL and no binaries).
pub fn server() -> Option<&'static Server> {
    SERVER.get_or_init(find_or_start).as_ref()
}

/// Says plainly that the PostgreSQL half is skipped (once), or fails when `.ci/run` asked
/// for it with `JOBQ_REQUIRE_POSTGRES=1`.
pub fn skip_or_fail() -> ! {
    let why = "the PostgreSQL half of the conformance suite is SKIPPED: no PostgreSQL server \
               binaries (initdb and pg_ctl) were found and JOBQ_TEST_POSTGRES_URL is not set";
    if std::env::var_os("JOBQ_REQUIRE_POSTGRES").is_some_and(|v| v != "0") {
        panic!("{why}, and JOBQ_REQUIRE_POSTGRES is set");
    }
    // Straight to the terminal: the test harness captures what tests print.
    let _ = writeln!(std::io::stderr(), "\njobq: {why}.\n");
    std::process::exit(0);
}

impl Server {
    /// A URL of a fresh, empty database on the server.
    pub fn fresh_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "jobq_t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        self.admin(&format!("CREATE DATABASE {name}"));
        format!("{}/{name}{}", self.base, self.query)
    }

    /// Drops a database made by [`Server::fresh_database`], whoever is still connected.
    pub fn drop_database(&self, url: &str) {
        if let Some(name) = url
            .trim_end_matches(&self.query)
            .rsplit('/')
            .next()
            .filter(|n| n.starts_with("jobq_t"))
        {
            self.admin(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }

    /// Runs SQL on the `postgres` database.
    pub fn admin(&self, sql: &str) {
        let url = format!("{}/postgres{}", self.base, self.query);
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test server {url}: {e}"));
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Restarts the server this process started (`pg_ctl restart -m fast`), for the fault
    /// tests; `None` when the server is someone else's.
    pub fn restart(&self) -> Option<()> {
        let own = self.own.as_ref()?;
        let status = own
            .command(&own.pg_ctl)
            .args(["restart", "-m", "fast", "-w", "-D"])
            .arg(&own.data)
            .args(["-l"])
            .arg(own.folder.join("log"))
            .stdout(Stdio::null())
            .status()
            .expect("pg_ctl restart");
        assert!(status.success(), "pg_ctl restart failed");
        Some(())
    }
}

impl OwnCluster {
    /// A command run as the `postgres` user when this process is root (which `initdb` and
    /// `postgres` refuse to run as).
    fn command(&self, program: &Path) -> Command {
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            Command::new(program)
        }
    }
}

/// A cluster of its own for one test (one that restarts its server), stopped when dropped;
/// `None` without server binaries.
pub fn private_server() -> Option<Server> {
    let (initdb, pg_ctl) = binaries()?;
    static N: AtomicU64 = AtomicU64::new(0);
    Some(start(
        &initdb,
        &pg_ctl,
        &format!("private-{}", N.fetch_add(1, Ordering::Relaxed)),
    ))
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = self
            .command(&self.pg_ctl)
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

fn find_or_start() -> Option<Server> {
    if let Ok(url) = std::env::var("JOBQ_TEST_POSTGRES_URL") {
        return Some(server_of_url(&url));
    }
    let (initdb, pg_ctl) = binaries()?;
    let server = start(&initdb, &pg_ctl, "shared");
    // SAFETY: registering a plain extern "C" function with no arguments.
    unsafe { libc::atexit(stop_at_exit) };
    Some(server)
}

/// Splits `postgres://user@host:port/db?query` into its base and query.
fn server_of_url(url: &str) -> Server {
    let (rest, query) = match url.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (url, String::new()),
    };
    let after_scheme = rest.find("://").map_or(0, |i| i + 3);
    let base = match rest[after_scheme..].find('/') {
        Some(i) => rest[..after_scheme + i].to_string(),
        None => rest.to_string(),
    };
    Server {
        base,
        query,
        own: None,
    }
}

/// `initdb` and `pg_ctl`: on the PATH, or in Debian's `/usr/lib/postgresql/*/bin`.
fn binaries() -> Option<(PathBuf, PathBuf)> {
    let mut folders: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Ok(versions) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut found: Vec<PathBuf> = versions.flatten().map(|v| v.path().join("bin")).collect();
        found.sort();
        folders.extend(found.into_iter().rev());
    }
    folders.into_iter().find_map(|folder| {
        let initdb = folder.join("initdb");
        let pg_ctl = folder.join("pg_ctl");
        (initdb.is_file() && pg_ctl.is_file()).then_some((initdb, pg_ctl))
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(initdb: &Path, pg_ctl: &Path, name: &str) -> Server {
    let folder = std::env::temp_dir().join(format!("jobq-test-pg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("a folder for the test cluster");
    // SAFETY: geteuid has no preconditions.
    let as_postgres = unsafe { libc::geteuid() } == 0;
    if as_postgres {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&folder)
            .status()
            .expect("chown");
        assert!(
            status.success(),
            "cannot give the test cluster's folder to postgres"
        );
    }
    let own = OwnCluster {
        pg_ctl: pg_ctl.to_path_buf(),
        data: folder.join("data"),
        folder: folder.clone(),
        as_postgres,
    };
    let out = own
        .command(initdb)
        .args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
            "-D",
        ])
        .arg(&own.data)
        .output()
        .expect("initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // Durable enough for process crashes and server restarts (the WAL is written at each
    // commit); fsync is off, since no test pulls the power.
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400 \
         -c shared_buffers=64MB",
        folder.display()
    );
    let status = own
        .command(pg_ctl)
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(&own.data)
        .args(["-l"])
        .arg(folder.join("log"))
        .args(["-o", &options])
        .stdout(Stdio::null())
        .status()
        .expect("pg_ctl start");
    assert!(
        status.success(),
        "pg_ctl start failed: {}",
        std::fs::read_to_string(folder.join("log")).unwrap_or_default()
    );
    Server {
        base: format!("postgres://postgres@127.0.0.1:{port}"),
        query: String::new(),
        own: Some(own),
    }
}

extern "C" fn stop_at_exit() {
    if let Some(Some(Server { own: Some(own), .. })) = SERVER.get() {
        // A static is never dropped: stop it as a drop would.
        let _ = own
            .command(&own.pg_ctl)
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(&own.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&own.folder);
    }
}

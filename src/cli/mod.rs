//! The `jobq` command line: a thin shell over the library. It parses, calls and prints.
//! The binary's `main` calls [`run`], and so does the Python package's `jobq` command.
//!
//! Exit codes: 0 done; 1 refused (not found, invalid transition, bad input, budget
//! exceeded), with a one-line reason on stderr; 2 usage error.

mod bench;
mod bench_pg;
mod bench_raw;
mod bench_size;
mod bench_steps;
mod demo;
mod jobs;
mod observe;
mod output;
mod queues;
mod schedules;
mod serve;
mod steps;
mod tenants;
mod top;
#[cfg(unix)]
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::{JobId, Queue};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use jobs::{BulkArgs, EnqueueArgs, ListArgs, PruneArgs, ReleaseStaleArgs, RetryArgs};
use observe::{CostBy, StatsArgs, TimingArgs};
use output::print_json;
use queues::QueueCommand;
use schedules::ScheduleCommand;
use serve::ServeArgs;
use tenants::{FlowCommand, GroupCommand, OwnerCommand, TokenCommand};

/// A durable job queue in one SQLite file.
#[derive(Parser, Debug)]
#[command(name = "jobq", version, about, long_about = None, propagate_version = true)]
struct Cli {
    /// The database file.
    #[arg(
        long,
        global = true,
        env = "JOBQ_DB",
        default_value = "jobq.db",
        value_name = "PATH"
    )]
    db: PathBuf,

    /// Print exactly one JSON document on stdout instead of a table.
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create or upgrade the database file and print its schema version.
    Init {
        /// Add jobq's tables to a SQLite file that already holds an application's own tables
        /// (so that the application can enqueue in its own transactions).
        #[arg(long)]
        allow_foreign_tables: bool,
    },
    /// Add a job; prints its id.
    Enqueue(EnqueueArgs),
    /// List jobs, newest first.
    List(ListArgs),
    /// Show one job with every field and its errors history.
    Show { id: String },
    /// Cancel queued, retrying or running jobs (or --all that match).
    Cancel(BulkArgs),
    /// Put failed or cancelled jobs back in the queue (or the whole dead letter, or --all
    /// that match).
    Retry(RetryArgs),
    /// Delete jobs that are not running (or --all that match).
    Delete(BulkArgs),
    /// Counts by status, health and summary.
    Stats(StatsArgs),
    /// Running jobs with stage, progress, running time and heartbeat age.
    Running,
    /// Live worker processes on every host: id, host, pid, queues, kinds, started, last
    /// seen, running jobs.
    Workers,
    /// The dead letter: failed jobs with their last error.
    Dead {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Run time and queue wait per status: count, average, p50, p95, max.
    Timing(TimingArgs),
    /// A live view of the queues: ready, running, done per second, failures, p95s and a
    /// sparkline each, refreshed in place until q.
    Top(top::TopArgs),
    /// Count of jobs per stage and status.
    Stages,
    /// Count, total and average cost per status, owner or group.
    Costs {
        /// How to group.
        #[arg(long, value_enum, default_value_t = CostBy::Status)]
        by: CostBy,
    },
    /// Release running jobs whose worker stopped heartbeating (or held the lock too long).
    ReleaseStale(ReleaseStaleArgs),
    /// Delete finished jobs older than an age.
    Prune(PruneArgs),
    /// Create, show or delete a group of jobs.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Submit a flow: jobs that wait for each other, created in one transaction.
    #[command(subcommand)]
    Flow(FlowCommand),
    /// Periodic jobs: add, list, pause, resume and remove schedules.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Queues: list them with their counts and limits; pause, resume, set limits.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Create an API token for an owner.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Set or clear an owner's budget.
    #[command(subcommand)]
    Owner(OwnerCommand),
    /// Run jobs with a shell command.
    #[cfg(unix)]
    Worker(worker::WorkerArgs),
    /// Serve the HTTP API and the dashboard.
    Serve(ServeArgs),
    /// The showcase, on its own fresh file jobq-demo.db in the current folder.
    Demo,
    /// Run the standard throughput workloads on a fresh temporary file (with a postgres://
    /// --db, in scratch schemas of that database).
    Bench(bench::BenchArgs),
    /// Inside a handler of `worker --exec`: runs a command once per job, printing its
    /// stdout (stored, then replayed when the job runs again).
    Step(steps::StepArgs),
    /// Inside a handler of `worker --exec`: parks the job for a while (exit 75 until the
    /// time has come, then 0).
    Sleep(steps::SleepArgs),
    /// Inside a handler of `worker --exec`: waits for an event (exit 75 until it is there
    /// or the timeout passed; then 0, printing its payload).
    WaitEvent(steps::WaitEventArgs),
    /// Events that wake waiting jobs.
    #[command(subcommand)]
    Event(steps::EventCommand),
}

fn duration(text: &str) -> Result<Duration, String> {
    crate::parse_duration(text).map_err(|e| match e {
        crate::Error::InvalidInput { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// A refusal: the one line printed on stderr, exit code 1.
struct Refused(String);

impl From<crate::Error> for Refused {
    fn from(e: crate::Error) -> Self {
        Refused(e.to_string())
    }
}

type Done = Result<(), Refused>;

impl Command {
    /// `jobq worker`, which runs handlers as processes (on Unix only).
    fn is_worker(&self) -> bool {
        #[cfg(unix)]
        if let Command::Worker(_) = self {
            return true;
        }
        false
    }
}

/// Runs the command line `args` (the program's name first, as `std::env::args_os` gives
/// them) and returns the exit code: 0 done, 1 refused (the reason printed on stderr), 2 a
/// usage error (`--help` and `--version` print and return 0).
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    ExitCode::from(exit_code(args))
}

/// [`run`], with the exit code as a number (for a host that exits by itself, such as the
/// Python package's `jobq` command).
pub fn exit_code<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    // The worker and the demo print each job's outcome themselves.
    let reports_outcomes = cli.command.is_worker() || matches!(cli.command, Command::Demo);
    init_tracing(if reports_outcomes {
        "jobq=warn,jobq::outcome=off"
    } else {
        "jobq=warn"
    });
    #[cfg(unix)]
    if !(cli.command.is_worker() || matches!(cli.command, Command::Serve(_))) {
        // Short commands end quietly when their reader does (`jobq list | head`), as Unix
        // tools do. The long-running ones ignore a closed stdout instead and go on.
        // SAFETY: restoring the default action of a signal, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let db = cli.db.clone();
    let cli = match cli.command {
        Command::Step(args) => return steps::step(&db, args),
        Command::Sleep(args) => return steps::sleep(&db, args),
        Command::WaitEvent(args) => return steps::wait_event(&db, args),
        command => Cli { command, ..cli },
    };
    match command(cli) {
        Ok(()) => 0,
        Err(Refused(message)) => {
            let line = message.replace('\n', " ");
            eprintln!("jobq: {}", output::clean(&line));
            1
        }
    }
}

/// Events from `RUST_LOG` (e.g. `RUST_LOG=jobq=debug`); by default (`default`) jobq's
/// warnings and errors (a failed heartbeat, a job dead-lettered, a handler that panicked).
/// They go to stderr, around any progress bars on the screen.
fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Opens a file that must exist already (commands that only read or change jobs). A
/// PostgreSQL database is opened as it is (the server says whether it exists).
fn open_existing(path: &Path) -> Result<Queue, Refused> {
    let url = path.to_str().is_some_and(crate::is_postgres_url);
    if !url && !path.exists() {
        return Err(Refused(format!(
            "{} does not exist (create it with `jobq --db {} init`)",
            path.display(),
            path.display()
        )));
    }
    Ok(Queue::open(path)?)
}

fn job_id(text: &str) -> Result<JobId, Refused> {
    JobId::parse(text).map_err(|_| Refused(format!("job {text} not found (not a job id)")))
}

fn json_arg(field: &'static str, text: &str) -> Result<Value, Refused> {
    Ok(crate::parse_json(field, text)?)
}

fn command(cli: Cli) -> Done {
    let db = cli.db.as_path();
    let json = cli.json;
    match cli.command {
        Command::Init {
            allow_foreign_tables,
        } => init(db, json, allow_foreign_tables),
        Command::Enqueue(args) => jobs::enqueue(db, json, args),
        Command::List(args) => jobs::list(db, json, args),
        Command::Show { id } => jobs::show(db, json, &id),
        Command::Cancel(args) => jobs::cancel(db, json, args),
        Command::Retry(args) => jobs::retry(db, json, args),
        Command::Delete(args) => jobs::delete(db, json, args),
        Command::ReleaseStale(args) => jobs::release_stale(db, json, args),
        Command::Prune(args) => jobs::prune(db, json, args),
        Command::Stats(args) => observe::stats(db, json, args),
        Command::Running => observe::running(db, json),
        Command::Workers => observe::workers(db, json),
        Command::Dead { limit } => observe::dead(db, json, limit),
        Command::Timing(args) => observe::timing(db, json, args),
        Command::Top(args) => top::top(db, args),
        Command::Stages => observe::stages(db, json),
        Command::Costs { by } => observe::costs(db, json, by),
        Command::Group(cmd) => tenants::group(db, json, cmd),
        Command::Flow(FlowCommand::Submit { file }) => tenants::flow_submit(db, json, &file),
        Command::Token(TokenCommand::Create { owner }) => tenants::create_token(db, json, &owner),
        Command::Owner(OwnerCommand::Budget { id, cents }) => {
            tenants::set_budget(db, json, &id, &cents)
        }
        Command::Schedule(cmd) => schedules::schedule(db, json, cmd),
        Command::Queue(cmd) => queues::queue_command(db, json, cmd),
        #[cfg(unix)]
        Command::Worker(args) => worker::run(db, json, args),
        Command::Serve(args) => serve::run(db, args),
        Command::Demo => demo::run(json),
        Command::Bench(args) => bench::run(db, json, args),
        Command::Event(cmd) => steps::event(db, json, cmd),
        Command::Step(_) | Command::Sleep(_) | Command::WaitEvent(_) => {
            Err(Refused("run inside a handler".into()))
        }
    }
}

/// `jobq init`: creates or upgrades the file and prints its schema version.
fn init(db: &Path, json: bool, allow_foreign_tables: bool) -> Done {
    let queue = Queue::builder(db)
        .allow_foreign_tables(allow_foreign_tables)
        .open()?;
    let version = crate::schema_version();
    if json {
        print_json(
            &json!({"db": queue.location(), "engine": queue.engine_name(), "schema_version": version}),
        );
    } else {
        println!("{} is ready (schema version {version})", queue.location());
    }
    Ok(())
}

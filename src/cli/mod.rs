//! The `jobq` command line: a thin shell over the library. It parses, calls and prints.
//! The binary's `main` calls [`run`], and so does the Python package's `jobq` command.
//!
//! Exit codes: 0 done; 1 refused (not found, invalid transition, bad input, budget
//! exceeded), with a one-line reason on stderr; 2 usage error.

mod bench;
mod bench_pg;
mod demo;
mod output;
mod worker;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::{
    CostGrouping, HealthThresholds, JobFilter, JobId, NewJob, OnDependencyFailure, Queue,
    StaleTimeouts, StatsFilter, Status, TimingFilter,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use output::{Table, clean, fmt_opt, fmt_secs, jobs, print_json, say};

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
    /// Count of jobs per stage and status.
    Stages,
    /// Count, total and average cost per status, owner or group.
    Costs {
        /// How to group.
        #[arg(long, value_enum, default_value_t = CostBy::Status)]
        by: CostBy,
    },
    /// Release running jobs whose worker stopped heartbeating (or held the lock too long).
    ReleaseStale {
        /// Release jobs claimed longer ago than this, heartbeat or not.
        #[arg(long, value_parser = duration)]
        lock_timeout: Option<Duration>,
        /// Release jobs whose last heartbeat is older than this.
        #[arg(long, value_parser = duration)]
        heartbeat_timeout: Option<Duration>,
    },
    /// Delete finished jobs older than an age.
    Prune {
        /// Only jobs that finished longer ago than this.
        #[arg(long, value_parser = duration)]
        older_than: Duration,
        /// Only these statuses (succeeded, failed, cancelled); all three when absent.
        #[arg(long = "status")]
        statuses: Vec<String>,
    },
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
    Worker(worker::WorkerArgs),
    /// Serve the HTTP API and the dashboard.
    Serve(ServeArgs),
    /// The showcase, on its own fresh file jobq-demo.db in the current folder.
    Demo,
    /// Run the standard throughput workloads on a fresh temporary file (with a postgres://
    /// --db, in scratch schemas of that database).
    Bench(bench::BenchArgs),
}

#[derive(Args, Debug)]
struct EnqueueArgs {
    /// The job's kind (which handler runs it).
    kind: String,
    /// The input, as JSON.
    #[arg(long)]
    input: Option<String>,
    /// The queue.
    #[arg(long, default_value = "default")]
    queue: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// Not claimable before this delay has passed.
    #[arg(long, value_parser = duration)]
    run_after: Option<Duration>,
    /// Attempts allowed before the dead letter.
    #[arg(long, allow_negative_numbers = true)]
    max_attempts: Option<i64>,
    /// Idempotency key: a second enqueue with it returns the first job.
    #[arg(long)]
    key: Option<String>,
    /// The key holds only this long after the first job's creation.
    #[arg(long, value_parser = duration, requires = "key", conflicts_with = "unique_while_active")]
    unique_for: Option<Duration>,
    /// The key holds only while its job has not ended.
    #[arg(long, requires = "key")]
    unique_while_active: bool,
    /// Wait for this job (repeat for more): blocked until every one has succeeded.
    #[arg(long = "after", value_name = "ID")]
    after: Vec<String>,
    /// What a failed or cancelled dependency does to this job.
    #[arg(long, value_enum, default_value_t = DependencyFailure::Cancel)]
    on_dependency_failure: DependencyFailure,
    /// Its concurrency key, for its queue's per-key running limit.
    #[arg(long)]
    concurrency_key: Option<String>,
    /// The group the job belongs to.
    #[arg(long)]
    group: Option<String>,
    /// The owner.
    #[arg(long)]
    owner: Option<String>,
    /// The cost known up front, in cents.
    #[arg(long, allow_negative_numbers = true)]
    cost_cents: Option<i64>,
    /// An id at an outside service.
    #[arg(long)]
    external_id: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum DependencyFailure {
    /// Cancel it (error code DEPENDENCY_FAILED).
    Cancel,
    /// Run it anyway once every dependency has ended.
    Run,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("every").args(["all"])))]
struct BulkArgs {
    /// The jobs.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    ids: Vec<String>,
    /// Every job that matches --status, --queue and --kind (every job, without them).
    #[arg(long)]
    all: bool,
    /// With --all: only jobs of this status (or `scheduled`).
    #[arg(long, requires = "every")]
    status: Option<String>,
    /// With --all: only jobs of this queue.
    #[arg(long, requires = "every")]
    queue: Option<String>,
    /// With --all: only jobs of this kind.
    #[arg(long, requires = "every")]
    kind: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("every").args(["all", "all_dead"])))]
struct RetryArgs {
    /// The jobs to retry.
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["all_dead", "all"],
        conflicts_with_all = ["all_dead", "all"]
    )]
    ids: Vec<String>,
    /// Every failed job (the dead letter), or only those of --kind and --queue.
    #[arg(long, conflicts_with = "all")]
    all_dead: bool,
    /// Every job that matches --status, --queue and --kind.
    #[arg(long)]
    all: bool,
    /// With --all: only jobs of this status (or `scheduled`).
    #[arg(long, requires = "all")]
    status: Option<String>,
    /// With --all or --all-dead: only jobs of this kind.
    #[arg(long, requires = "every")]
    kind: Option<String>,
    /// With --all or --all-dead: only jobs of this queue.
    #[arg(long, requires = "every")]
    queue: Option<String>,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    kind: Option<String>,
    #[arg(long)]
    group: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    /// At most this many (1 to 10,000).
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// The page after this cursor (the `next` of the previous page).
    #[arg(long)]
    after: Option<String>,
    /// Only the jobs this finds: an id or its start, an idempotency key, an external id.
    #[arg(long)]
    search: Option<String>,
}

#[derive(Args, Debug)]
struct StatsArgs {
    #[arg(long)]
    queue: Option<String>,
    #[arg(long)]
    owner: Option<String>,
    #[arg(long)]
    group: Option<String>,
}

#[derive(Args, Debug)]
struct TimingArgs {
    /// Only jobs that finished within this window.
    #[arg(long, value_parser = duration)]
    since: Option<Duration>,
    /// One row per status and kind.
    #[arg(long)]
    by_kind: bool,
    #[arg(long)]
    queue: Option<String>,
}

#[derive(Subcommand, Debug)]
enum QueueCommand {
    /// Every queue: counts (ready, scheduled, blocked, running, retry), paused, limits.
    List,
    /// Pause a queue: no process claims from it until resumed; running jobs finish.
    Pause { queue: String },
    /// Resume a paused queue.
    Resume { queue: String },
    /// Set limits that hold across every process and host (`none` clears one).
    Set {
        queue: String,
        /// Running jobs of the queue, at most.
        #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
        max_running: Option<String>,
        /// Running jobs per concurrency key, at most.
        #[arg(long, value_name = "N|none", allow_hyphen_values = true)]
        max_running_per_key: Option<String>,
        /// Claims per time window, at most: N/DUR (e.g. 100/1m).
        #[arg(long, value_name = "N/DUR|none")]
        rate: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ScheduleCommand {
    /// Add a schedule: a job of KIND at each time of a cron expression, or every DUR.
    Add(ScheduleAddArgs),
    /// Every schedule: name, rule, kind, next and last fire, paused or not.
    List,
    /// Remove a schedule (the jobs it enqueued stay).
    Remove(ScheduleName),
    /// Pause a schedule: it fires nothing until resumed.
    Pause(ScheduleName),
    /// Resume a paused schedule from its next slot.
    Resume(ScheduleName),
    /// Enqueue one of the schedule's jobs now (its slots are unchanged); prints the job id.
    Run(ScheduleName),
}

#[derive(Args, Debug)]
struct ScheduleName {
    /// The schedule's name.
    name: String,
    /// Its owner: needed when several owners have a schedule of that name.
    #[arg(long)]
    owner: Option<String>,
}

impl ScheduleName {
    /// A handle on `db` that reaches the schedule: scoped to its owner, when given.
    fn queue(&self, db: &Path) -> Result<Queue, Refused> {
        let queue = open_existing(db)?;
        Ok(match &self.owner {
            Some(owner) => queue.scoped(owner.clone()),
            None => queue,
        })
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("rule").required(true).args(["cron", "every"])))]
struct ScheduleAddArgs {
    /// Its name, unique per owner.
    name: String,
    /// A 5-field cron expression, or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long)]
    cron: Option<String>,
    /// A fixed interval, e.g. 5m.
    #[arg(long, value_parser = duration)]
    every: Option<Duration>,
    /// The kind of its jobs.
    kind: String,
    /// The input of its jobs, as JSON.
    #[arg(long)]
    input: Option<String>,
    /// The queue of its jobs.
    #[arg(long)]
    queue: Option<String>,
    /// The priority of its jobs.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    priority: i32,
    /// The attempts of its jobs.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// The time zone a cron expression is read in.
    #[arg(long, default_value = "UTC")]
    timezone: String,
    /// What a start after missed slots enqueues.
    #[arg(long, value_enum, default_value_t = CatchUpArg::One)]
    catch_up: CatchUpArg,
    /// The owner of the schedule and its jobs.
    #[arg(long)]
    owner: Option<String>,
    /// Change the schedule of that name in place (it stays paused or not, and keeps when
    /// it last fired) instead of refusing a name already taken.
    #[arg(long)]
    replace: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum CatchUpArg {
    /// Nothing for missed slots.
    None,
    /// The last missed slot.
    One,
    /// Every missed slot (the latest 100 at most).
    All,
}

#[derive(Subcommand, Debug)]
enum FlowCommand {
    /// Create a whole flow from the JSON of `POST /api/flows` (a file, or - for standard
    /// input); prints the group id and each ref's job id.
    Submit {
        #[arg(value_name = "FILE|-")]
        file: String,
    },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a group; prints its id.
    Create {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// Metadata, as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Show a group's stage, progress (0-100) and counts by status.
    Show { id: String },
    /// Delete a group and all its jobs.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token for an owner and print it (it cannot be shown again).
    Create {
        #[arg(long)]
        owner: String,
    },
}

#[derive(Subcommand, Debug)]
enum OwnerCommand {
    /// Set an owner's spending limit in cents (`none` removes it), creating the owner if
    /// needed; enqueues that would pass it are refused.
    Budget {
        /// The owner.
        id: String,
        /// The budget in cents, or `none`.
        #[arg(value_name = "CENTS|none", allow_negative_numbers = true)]
        cents: String,
    },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// The admin key (X-Admin-Key).
    #[arg(long, env = "JOBQ_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Serve without any key. Only on a loopback address, answering only loopback host
    /// names (and those of --allow-host).
    #[arg(long)]
    insecure_no_auth: bool,
    /// A host name a server without a key answers besides localhost (repeatable).
    #[arg(long, value_name = "NAME")]
    allow_host: Vec<String>,
    /// An origin (http://host:port) whose pages may send requests besides the dashboard's
    /// own (repeatable).
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// The most schedules one owner may have.
    #[arg(long, env = "JOBQ_MAX_SCHEDULES_PER_OWNER", default_value_t = crate::DEFAULT_MAX_SCHEDULES_PER_OWNER)]
    max_schedules_per_owner: usize,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum CostBy {
    Status,
    Owner,
    Group,
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

type Outcome = Result<(), Refused>;

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
    let reports_outcomes = matches!(cli.command, Command::Worker(_) | Command::Demo);
    init_tracing(if reports_outcomes {
        "jobq=warn,jobq::outcome=off"
    } else {
        "jobq=warn"
    });
    if !matches!(cli.command, Command::Worker(_) | Command::Serve(_)) {
        // Short commands end quietly when their reader does (`jobq list | head`), as Unix
        // tools do. The long-running ones ignore a closed stdout instead and go on.
        // SAFETY: restoring the default action of a signal, before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
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

fn command(cli: Cli) -> Outcome {
    let db = cli.db.as_path();
    let json = cli.json;
    match cli.command {
        Command::Init {
            allow_foreign_tables,
        } => {
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
        }
        Command::Enqueue(args) => enqueue(db, json, args)?,
        Command::List(args) => list(db, json, args)?,
        Command::Show { id } => {
            let queue = open_existing(db)?;
            let job = queue.get(&job_id(&id)?)?;
            if json {
                print_json(&job);
            } else {
                output::print_job(&job);
            }
        }
        Command::Cancel(args) if args.all => bulk_matching(
            db,
            json,
            crate::BulkAction::Cancel,
            (args.status, args.queue, args.kind),
        )?,
        Command::Cancel(args) => {
            admin_action(db, json, &args.ids, "cancelled", |q, id| q.cancel(id))?
        }
        Command::Retry(args) if args.all => bulk_matching(
            db,
            json,
            crate::BulkAction::Retry,
            (args.status, args.queue, args.kind),
        )?,
        Command::Retry(args) if args.all_dead => {
            let queue = open_existing(db)?;
            let retried = queue.retry_dead(args.kind.as_deref(), args.queue.as_deref())?;
            if json {
                print_json(&json!({"success": true, "retried": retried}));
            } else {
                println!("{} from the dead letter queued again", jobs(retried));
            }
        }
        Command::Retry(args) => {
            admin_action(db, json, &args.ids, "queued again", |q, id| q.retry(id))?
        }
        Command::Delete(args) if args.all => bulk_matching(
            db,
            json,
            crate::BulkAction::Delete,
            (args.status, args.queue, args.kind),
        )?,
        Command::Delete(args) => {
            admin_action(db, json, &args.ids, "deleted", |q, id| q.delete(id))?
        }
        Command::Stats(args) => stats(db, json, args)?,
        Command::Running => running(db, json)?,
        Command::Workers => workers(db, json)?,
        Command::Dead { limit } => dead(db, json, limit)?,
        Command::Timing(args) => timing(db, json, args)?,
        Command::Stages => stages(db, json)?,
        Command::Costs { by } => costs(db, json, by)?,
        Command::ReleaseStale {
            lock_timeout,
            heartbeat_timeout,
        } => {
            let queue = open_existing(db)?;
            let mut timeouts = StaleTimeouts::none();
            if let Some(t) = lock_timeout {
                timeouts = timeouts.lock_timeout(t);
            }
            if let Some(t) = heartbeat_timeout {
                timeouts = timeouts.heartbeat_timeout(t);
            }
            if lock_timeout.is_none() && heartbeat_timeout.is_none() {
                timeouts = StaleTimeouts::default();
            }
            let released = queue.release_stale(&timeouts)?;
            if json {
                print_json(&json!({ "released": released }));
            } else {
                println!("Released {released} stale jobs");
            }
        }
        Command::Prune {
            older_than,
            statuses,
        } => {
            let queue = open_existing(db)?;
            let statuses = statuses
                .iter()
                .map(|s| s.parse::<Status>())
                .collect::<Result<Vec<_>, _>>()?;
            let pruned = queue.prune(older_than, &statuses)?;
            if json {
                print_json(&json!({ "pruned": pruned }));
            } else {
                println!("Pruned {pruned} jobs");
            }
        }
        Command::Group(cmd) => group(db, json, cmd)?,
        Command::Flow(FlowCommand::Submit { file }) => flow_submit(db, json, &file)?,
        Command::Schedule(cmd) => schedule(db, json, cmd)?,
        Command::Queue(cmd) => queue_command(db, json, cmd)?,
        Command::Token(TokenCommand::Create { owner }) => {
            let queue = Queue::open(db)?;
            let token = queue.create_token(&owner)?;
            if json {
                print_json(&json!({ "owner": owner, "token": token }));
            } else {
                println!("{token}");
            }
        }
        Command::Owner(OwnerCommand::Budget { id, cents }) => {
            let budget = match cents.trim() {
                "none" => None,
                text => Some(text.parse::<i64>().map_err(|_| {
                    Refused(format!(
                        "invalid budget: {text:?} is not a whole number of cents or `none`"
                    ))
                })?),
            };
            let queue = Queue::open(db)?;
            let owner = queue.set_budget(&id, budget)?;
            if json {
                print_json(&owner);
            } else {
                match owner.budget_cents {
                    Some(b) => println!(
                        "Owner {}: budget {b} cents, {} spent",
                        clean(&owner.id),
                        owner.spent_cents
                    ),
                    None => println!(
                        "Owner {}: no budget, {} cents spent",
                        clean(&owner.id),
                        owner.spent_cents
                    ),
                }
            }
        }
        Command::Worker(args) => worker::run(db, json, args)?,
        Command::Serve(args) => serve(db, args)?,
        Command::Demo => demo::run(json)?,
        Command::Bench(args) => bench::run(db, json, args)?,
    }
    Ok(())
}

fn enqueue(db: &Path, json: bool, a: EnqueueArgs) -> Outcome {
    let mut job = NewJob::new(a.kind).queue(a.queue).priority(a.priority);
    if let Some(input) = &a.input {
        job = job.input(json_arg("input", input)?);
    }
    if let Some(delay) = a.run_after {
        job = job.run_after(delay);
    }
    if let Some(n) = a.max_attempts {
        let n = u32::try_from(n)
            .map_err(|_| Refused(format!("invalid max_attempts: {n} must be at least 1")))?;
        job = job.max_attempts(n);
    }
    if let Some(key) = a.key {
        job = job.idempotency_key(key);
    }
    if let Some(window) = a.unique_for {
        job = job.unique_for(window);
    }
    if a.unique_while_active {
        job = job.unique_while_active();
    }
    for id in &a.after {
        job = job.after(&job_id(id)?);
    }
    if let DependencyFailure::Run = a.on_dependency_failure {
        job = job.on_dependency_failure(OnDependencyFailure::Run);
    }
    if let Some(key) = a.concurrency_key {
        job = job.concurrency_key(key);
    }
    if let Some(group) = a.group {
        job = job.group(group);
    }
    if let Some(owner) = a.owner {
        job = job.owner(owner);
    }
    if let Some(cents) = a.cost_cents {
        job = job.cost_cents(cents);
    }
    if let Some(id) = a.external_id {
        job = job.external_id(id);
    }
    let queue = Queue::open(db)?;
    let out = queue.enqueue(job)?;
    if json {
        print_json(&out);
    } else if out.already_existed {
        println!("{} (already existed, {})", out.job_id, out.status);
    } else {
        println!("{}", out.job_id);
    }
    Ok(())
}

/// `N` or `none` (`Some(None)`); absent: `None`.
fn limit_arg(field: &str, value: Option<String>) -> Result<Option<Option<u32>>, Refused> {
    match value.as_deref().map(str::trim) {
        None => Ok(None),
        Some("none") => Ok(Some(None)),
        Some(n) => n.parse::<u32>().map(|n| Some(Some(n))).map_err(|_| {
            Refused(format!(
                "invalid {field}: {n:?} is not a whole number or none"
            ))
        }),
    }
}

fn queue_command(db: &Path, json: bool, cmd: QueueCommand) -> Outcome {
    let show = |q: &crate::QueueInfo| {
        if json {
            print_json(q);
        } else {
            println!(
                "{}: {}, max running {}, per key {}, rate {}",
                clean(&q.name),
                if q.paused { "paused" } else { "active" },
                q.max_running.map_or_else(|| "-".into(), |n| n.to_string()),
                q.max_running_per_key
                    .map_or_else(|| "-".into(), |n| n.to_string()),
                q.rate.map_or_else(|| "-".into(), |r| r.to_string()),
            );
        }
    };
    match cmd {
        QueueCommand::List => {
            let queue = open_existing(db)?;
            let list = queue.queues()?;
            if json {
                print_json(&json!({ "queues": list }));
                return Ok(());
            }
            let mut table = Table::new([
                "QUEUE",
                "READY",
                "SCHEDULED",
                "BLOCKED",
                "RUNNING",
                "RETRY",
                "PAUSED",
                "MAX RUNNING",
                "PER KEY",
                "RATE",
            ]);
            for q in &list {
                let opt = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
                table.row([
                    clean(&q.name).into_owned(),
                    q.ready.to_string(),
                    q.scheduled.to_string(),
                    q.blocked.to_string(),
                    q.running.to_string(),
                    q.retry.to_string(),
                    if q.paused { "yes" } else { "no" }.into(),
                    opt(q.max_running),
                    opt(q.max_running_per_key),
                    q.rate.map_or_else(|| "-".into(), |r| r.to_string()),
                ]);
            }
            table.print();
        }
        QueueCommand::Pause { queue: name } => show(&Queue::open(db)?.pause_queue(&name)?),
        QueueCommand::Resume { queue: name } => show(&Queue::open(db)?.resume_queue(&name)?),
        QueueCommand::Set {
            queue: name,
            max_running,
            max_running_per_key,
            rate,
        } => {
            let mut limits = crate::QueueLimits::new();
            if let Some(v) = limit_arg("max_running", max_running)? {
                limits = limits.max_running(v);
            }
            if let Some(v) = limit_arg("max_running_per_key", max_running_per_key)? {
                limits = limits.max_running_per_key(v);
            }
            match rate.as_deref().map(str::trim) {
                None => {}
                Some("none") => limits = limits.rate(None),
                Some(r) => limits = limits.rate(Some(r.parse()?)),
            }
            show(&Queue::open(db)?.set_queue_limits(&name, limits)?);
        }
    }
    Ok(())
}

fn schedule(db: &Path, json: bool, cmd: ScheduleCommand) -> Outcome {
    let show = |s: &crate::Schedule| {
        if json {
            print_json(s);
        } else {
            println!(
                "{}  {}  next {}",
                clean(&s.name),
                clean(&s.rule()),
                s.next_fire.to_rfc3339()
            );
        }
    };
    match cmd {
        ScheduleCommand::Add(a) => {
            let rule = match (a.cron, a.every) {
                (Some(cron), _) => crate::Rule::Cron(cron),
                (None, Some(every)) => crate::Rule::Every(every),
                (None, None) => return Err(Refused("give --cron or --every".into())),
            };
            let mut s = crate::NewSchedule::new(a.name, rule, a.kind)
                .priority(a.priority)
                .timezone(a.timezone)
                .catch_up(match a.catch_up {
                    CatchUpArg::None => crate::CatchUp::None,
                    CatchUpArg::One => crate::CatchUp::One,
                    CatchUpArg::All => crate::CatchUp::All,
                });
            if let Some(input) = &a.input {
                s = s.input(json_arg("input", input)?);
            }
            if let Some(q) = a.queue {
                s = s.queue(q);
            }
            if let Some(n) = a.max_attempts {
                s = s.max_attempts(n);
            }
            if let Some(o) = a.owner {
                s = s.owner(o);
            }
            s = s.replace(a.replace);
            let queue = Queue::open(db)?;
            show(&queue.add_schedule(s)?);
        }
        ScheduleCommand::List => {
            let queue = open_existing(db)?;
            let list = queue.schedules()?;
            if json {
                print_json(&json!({ "schedules": list }));
                return Ok(());
            }
            let mut table = Table::new([
                "NAME",
                "RULE",
                "KIND",
                "NEXT FIRE",
                "LAST FIRE",
                "PAUSED",
                "OWNER",
            ]);
            for s in &list {
                table.row([
                    clean(&s.name).into_owned(),
                    clean(&s.rule()).into_owned(),
                    clean(&s.kind).into_owned(),
                    if s.paused {
                        "-".into()
                    } else {
                        s.next_fire.to_rfc3339()
                    },
                    s.last_fire.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
                    if s.paused { "yes" } else { "no" }.into(),
                    fmt_opt(&s.owner),
                ]);
            }
            table.print();
        }
        ScheduleCommand::Remove(which) => {
            which.queue(db)?.remove_schedule(&which.name)?;
            if json {
                print_json(&json!({"success": true, "name": which.name}));
            } else {
                println!("removed {}", clean(&which.name));
            }
        }
        ScheduleCommand::Pause(which) => show(&which.queue(db)?.pause_schedule(&which.name)?),
        ScheduleCommand::Resume(which) => show(&which.queue(db)?.resume_schedule(&which.name)?),
        ScheduleCommand::Run(which) => {
            let job = which.queue(db)?.run_schedule_now(&which.name)?;
            if json {
                print_json(
                    &json!({"job_id": job.job_id, "status": job.status, "already_existed": job.already_existed}),
                );
            } else {
                println!("{}", job.job_id);
            }
        }
    }
    Ok(())
}

fn flow_submit(db: &Path, json: bool, file: &str) -> Outcome {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Refused(format!("cannot read the flow from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Refused(format!("cannot read the flow from {file}: {e}")))?
    };
    let document = crate::parse_json("flow", &text)?;
    let flow = crate::http::parse_flow(&document)?;
    let queue = Queue::open(db)?;
    let created = queue.submit_flow(flow)?;
    if json {
        print_json(&created);
    } else {
        println!("group {}", created.group_id);
        for (r, id) in &created.jobs {
            println!("{id}  {}", clean(r));
        }
    }
    Ok(())
}

fn list(db: &Path, json: bool, a: ListArgs) -> Outcome {
    let mut filter = JobFilter::new().limit(a.limit);
    if let Some(s) = a.status.as_deref() {
        filter = match s {
            "scheduled" => filter.scheduled(),
            other => filter.status(other.parse()?),
        };
    }
    if let Some(text) = a.search {
        filter = filter.search(text);
    }
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    if let Some(k) = a.kind {
        filter = filter.kind(k);
    }
    if let Some(g) = a.group {
        filter = filter.group(g);
    }
    if let Some(o) = a.owner {
        filter = filter.owner(o);
    }
    if let Some(after) = a.after {
        filter = filter.after(after);
    }
    let queue = open_existing(db)?;
    let page = queue.list(&filter)?;
    if json {
        print_json(&page);
        return Ok(());
    }
    let mut table = Table::new([
        "ID", "KIND", "QUEUE", "STATUS", "ATTEMPTS", "STAGE", "PROGRESS", "CREATED",
    ]);
    for j in &page.jobs {
        table.row([
            j.id.to_string(),
            j.kind.clone(),
            j.queue.clone(),
            j.shown_status().to_string(),
            format!("{}/{}", j.attempts, j.max_attempts),
            fmt_opt(&j.stage),
            format!("{:.0}%", j.progress * 100.0),
            j.created_at.to_rfc3339(),
        ]);
    }
    table.print();
    match &page.next {
        Some(next) => println!("{} shown; next page: --after {next}", jobs(page.jobs.len())),
        None => println!("{}", jobs(page.jobs.len())),
    }
    Ok(())
}

/// One admin action on each of `ids`, in order: every id is tried; those refused are named
/// on stderr, one line each, and make the command exit 1.
/// `cancel|retry|delete --all`: the action on every job that matches; prints how many
/// changed and which were refused.
fn bulk_matching(
    db: &Path,
    json: bool,
    action: crate::BulkAction,
    (status, queue_name, kind): (Option<String>, Option<String>, Option<String>),
) -> Outcome {
    let mut filter = JobFilter::new();
    if let Some(s) = status.as_deref() {
        filter = match s {
            "scheduled" => filter.scheduled(),
            other => filter.status(other.parse()?),
        };
    }
    if let Some(q) = queue_name {
        filter = filter.queue(q);
    }
    if let Some(k) = kind {
        filter = filter.kind(k);
    }
    let queue = open_existing(db)?;
    let outcome = queue.bulk_matching(action, &filter)?;
    if json {
        print_json(&outcome);
        return Ok(());
    }
    let done = match action {
        crate::BulkAction::Cancel => "cancelled",
        crate::BulkAction::Retry => "queued again",
        crate::BulkAction::Delete => "deleted",
    };
    println!("{} {done}", jobs(outcome.changed));
    if outcome.refused_total > 0 {
        println!("{} refused:", jobs(outcome.refused_total));
        for r in &outcome.refused {
            println!("  {}  {}", r.job_id, clean(&r.reason));
        }
        if outcome.refused_total > outcome.refused.len() {
            println!(
                "  … and {} more",
                outcome.refused_total - outcome.refused.len()
            );
        }
    }
    Ok(())
}

fn admin_action(
    db: &Path,
    json: bool,
    ids: &[String],
    done: &str,
    act: impl Fn(&Queue, &JobId) -> crate::Result<Status>,
) -> Outcome {
    let queue = open_existing(db)?;
    let mut documents = Vec::new();
    let mut refused = Vec::new();
    for text in ids {
        let outcome = job_id(text).and_then(|id| {
            let was = act(&queue, &id)?;
            Ok((id, was))
        });
        match outcome {
            Ok((id, was)) => {
                let message = format!("Job {id} {done} (it was {was})");
                if !json {
                    println!("{message}");
                }
                documents.push(json!({"success": true, "job_id": id, "previous_status": was, "message": message}));
            }
            Err(Refused(why)) => {
                documents.push(json!({"success": false, "job_id": text, "error": why}));
                refused.push(why);
            }
        }
    }
    if json {
        match documents.as_slice() {
            [one] if refused.is_empty() => print_json(one),
            _ => print_json(&json!({ "results": documents })),
        }
    }
    match refused.as_slice() {
        [] => Ok(()),
        [one] if ids.len() == 1 => Err(Refused(one.clone())),
        many => {
            for why in many {
                eprintln!("jobq: {}", clean(why));
            }
            Err(Refused(format!(
                "{} of the {} jobs refused",
                many.len(),
                ids.len()
            )))
        }
    }
}

fn stats(db: &Path, json: bool, a: StatsArgs) -> Outcome {
    let mut filter = StatsFilter::new();
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    if let Some(o) = a.owner {
        filter = filter.owner(o);
    }
    if let Some(g) = a.group {
        filter = filter.group(g);
    }
    let queue = open_existing(db)?;
    let overview = queue.overview(&filter, &HealthThresholds::default())?;
    if json {
        print_json(&overview);
        return Ok(());
    }
    // As jobq shows them: a queued or retrying job whose run_after lies ahead is scheduled.
    let mut table = Table::new(["STATUS", "JOBS"]);
    for name in [
        "blocked",
        "queued",
        "scheduled",
        "running",
        "retry",
        "succeeded",
        "failed",
        "cancelled",
    ] {
        let n = overview.stats.shown.get(name).copied().unwrap_or(0);
        table.row([name.to_string(), n.to_string()]);
    }
    table.row(["total".to_string(), overview.stats.total.to_string()]);
    table.print();
    let s = overview.summary;
    println!(
        "\nhealth: {}   running: {}   pending: {}   failed: {}   dead letter: {}",
        overview.health,
        s.running,
        s.pending,
        s.failed,
        if s.has_dead_letter { "yes" } else { "no" }
    );
    for r in &overview.reasons {
        println!("  {} ({}): {}", r.check, r.level, r.message);
    }
    Ok(())
}

fn running(db: &Path, json: bool) -> Outcome {
    let queue = open_existing(db)?;
    let jobs = queue.running_jobs()?;
    if json {
        print_json(&json!({ "running": jobs }));
        return Ok(());
    }
    println!("Running jobs: {}", jobs.len());
    for j in &jobs {
        println!(
            "  {}: kind={} stage={} progress={:.0}% running={:.0}s heartbeat_age={:.0}s worker={}",
            j.id,
            clean(&j.kind),
            fmt_opt(&j.stage),
            j.progress * 100.0,
            j.running_seconds,
            j.heartbeat_age_seconds,
            fmt_opt(&j.worker)
        );
    }
    Ok(())
}

fn workers(db: &Path, json: bool) -> Outcome {
    let queue = open_existing(db)?;
    let workers = queue.workers()?;
    if json {
        print_json(&json!({ "workers": workers }));
        return Ok(());
    }
    println!("Live workers: {}", workers.len());
    let now = queue.now().as_millis();
    for w in &workers {
        let kinds = w
            .kinds
            .as_ref()
            .map_or_else(|| "any".to_string(), |k| k.join(","));
        println!(
            "  {}: host={} pid={} queues={} kinds={} concurrency={} running={} started={} last_seen={:.0}s ago",
            clean(&w.id),
            clean(&w.host),
            w.pid,
            clean(&w.queues.join(",")),
            clean(&kinds),
            w.concurrency,
            w.running,
            w.started_at,
            (now - w.last_seen.as_millis()).max(0) as f64 / 1000.0
        );
    }
    Ok(())
}

fn dead(db: &Path, json: bool, limit: usize) -> Outcome {
    let queue = open_existing(db)?;
    let jobs = queue.dead_letter(limit)?;
    if json {
        print_json(&json!({ "dead": jobs }));
        return Ok(());
    }
    let mut table = Table::new(["ID", "KIND", "ATTEMPTS", "CODE", "LAST ERROR", "FAILED AT"]);
    for j in &jobs {
        let error: String = j
            .last_error
            .clone()
            .unwrap_or_default()
            .chars()
            .take(60)
            .collect();
        table.row([
            j.id.to_string(),
            j.kind.clone(),
            format!("{}/{}", j.attempts, j.max_attempts),
            fmt_opt(&j.error_code),
            error.replace('\n', " "),
            j.failed_at.to_rfc3339(),
        ]);
    }
    table.print();
    println!("{} in the dead letter", output::jobs(jobs.len()));
    Ok(())
}

fn timing(db: &Path, json: bool, a: TimingArgs) -> Outcome {
    let mut filter = TimingFilter::new();
    if let Some(w) = a.since {
        filter = filter.within(w);
    }
    if a.by_kind {
        filter = filter.by_kind();
    }
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    let queue = open_existing(db)?;
    let rows = queue.timing(&filter)?;
    if json {
        print_json(&json!({ "timing": rows, "window_seconds": a.since.map(|w| w.as_secs()) }));
        return Ok(());
    }
    let mut table = Table::new([
        "STATUS", "KIND", "COUNT", "AVG", "P50", "P95", "MAX", "WAIT P50", "WAIT P95",
    ]);
    for t in &rows {
        table.row([
            t.status.to_string(),
            t.kind.clone().unwrap_or_else(|| "*".into()),
            t.count.to_string(),
            fmt_secs(t.avg_seconds),
            fmt_secs(t.p50_seconds),
            fmt_secs(t.p95_seconds),
            fmt_secs(t.max_seconds),
            fmt_secs(t.wait_p50_seconds),
            fmt_secs(t.wait_p95_seconds),
        ]);
    }
    table.print();
    Ok(())
}

fn stages(db: &Path, json: bool) -> Outcome {
    let queue = open_existing(db)?;
    let rows = queue.stage_distribution()?;
    if json {
        print_json(&json!({ "stages": rows }));
        return Ok(());
    }
    let mut table = Table::new(["STAGE", "STATUS", "JOBS"]);
    for s in &rows {
        table.row([fmt_opt(&s.stage), s.status.to_string(), s.count.to_string()]);
    }
    table.print();
    Ok(())
}

fn costs(db: &Path, json: bool, by: CostBy) -> Outcome {
    let queue = open_existing(db)?;
    let (grouping, name) = match by {
        CostBy::Status => (CostGrouping::Status, "status"),
        CostBy::Owner => (CostGrouping::Owner, "owner"),
        CostBy::Group => (CostGrouping::Group, "group"),
    };
    let rows = queue.costs(grouping)?;
    if json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Some(obj) = v.as_object_mut() {
                    let key = obj.remove("key").unwrap_or(Value::Null);
                    obj.insert(name.to_string(), key);
                }
                v
            })
            .collect();
        print_json(&json!({ "by": name, "costs": rows }));
        return Ok(());
    }
    let owner = matches!(by, CostBy::Owner);
    let mut headers = vec![
        name.to_uppercase(),
        "JOBS".into(),
        "TOTAL (¢)".into(),
        "AVERAGE (¢)".into(),
    ];
    if owner {
        headers.extend([
            "SPENT (¢)".into(),
            "BUDGET (¢)".into(),
            "REMAINING (¢)".into(),
        ]);
    }
    let mut table = Table::new(headers);
    for r in &rows {
        let mut cells = vec![
            r.key.clone().unwrap_or_else(|| "-".into()),
            r.count.to_string(),
            r.total_cost_cents.to_string(),
            format!("{:.1}", r.avg_cost_cents),
        ];
        if owner {
            let show = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            cells.extend([
                show(r.spent_cents),
                show(r.budget_cents),
                show(r.remaining_cents),
            ]);
        }
        table.row(cells);
    }
    table.print();
    Ok(())
}

fn group(db: &Path, json: bool, cmd: GroupCommand) -> Outcome {
    match cmd {
        GroupCommand::Create {
            name,
            owner,
            metadata,
        } => {
            let metadata = metadata.map(|m| json_arg("metadata", &m)).transpose()?;
            let queue = Queue::open(db)?;
            let group = queue.create_group_for(&name, metadata, owner.as_deref())?;
            if json {
                print_json(&group);
            } else {
                println!("{}", group.id);
            }
        }
        GroupCommand::Show { id } => {
            let queue = open_existing(db)?;
            let group = queue.get_group(&id)?;
            if json {
                print_json(&group);
                return Ok(());
            }
            println!("group     {}", clean(&group.id));
            println!("name      {}", clean(&group.name));
            println!("owner     {}", fmt_opt(&group.owner));
            println!("stage     {}", group.stage);
            println!("progress  {:.1}%", group.progress);
            println!("jobs      {}", group.total);
            for (status, n) in &group.counts {
                if *n > 0 {
                    println!("  {status:<10} {n}");
                }
            }
        }
        GroupCommand::Delete { id } => {
            let queue = open_existing(db)?;
            let jobs = queue.delete_group(&id)?;
            if json {
                print_json(&json!({"success": true, "group_id": id, "jobs_deleted": jobs}));
            } else {
                println!("Group {} deleted with its {jobs} jobs", clean(&id));
            }
        }
    }
    Ok(())
}

fn serve(db: &Path, args: ServeArgs) -> Outcome {
    let queue = Queue::builder(db)
        .max_schedules_per_owner(args.max_schedules_per_owner)
        .open()?;
    let mut config = crate::http::ServerConfig::new(&args.addr);
    for host in args.allow_host {
        config = config.allow_host(host);
    }
    for origin in args.allow_origin {
        config = config.allow_origin(origin);
    }
    if let Some(key) = args.admin_key.filter(|k| !k.is_empty()) {
        config = config.admin_key(key);
    }
    if args.insecure_no_auth {
        config = config.insecure_no_auth();
    }
    let server = crate::http::Server::start(queue, config).map_err(|e| Refused(e.to_string()))?;
    say!("jobq serving {} on http://{}", db.display(), server.addr());
    say!("dashboard: http://{}/", server.addr());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .map_err(|e| Refused(e.to_string()))?;
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.shutdown();
    say!("stopped");
    Ok(())
}

//! The commands a handler of `jobq worker --exec` runs to be durable: `jobq step NAME --
//! CMD…`, `jobq sleep DUR` and `jobq wait-event NAME --timeout DUR`, which find the job and
//! its lease in the environment the worker sets; and `jobq event emit`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::print_json;
use super::{Done, Refused, duration, json_arg, open_existing};
use crate::job::ClaimedJob;
use crate::{JobContext, JobError, JobId, Queue};

/// The exit status of a command that parked the job (`EX_TEMPFAIL`): the handler passes it
/// on (`set -e`, or `|| exit $?`) and the worker records the job as `waiting`.
pub(crate) const EXIT_PARKED: u8 = 75;

/// `jobq step NAME -- CMD…`
#[derive(Args, Debug)]
pub(super) struct StepArgs {
    /// The step's name: its identity within the job.
    name: String,
    /// The command (run with its arguments, without a shell), once per job.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// `jobq sleep DUR`
#[derive(Args, Debug)]
pub(super) struct SleepArgs {
    /// How long, e.g. 30s, 2h, 1d.
    #[arg(value_parser = duration)]
    duration: Duration,
}

/// `jobq wait-event NAME --timeout DUR`
#[derive(Args, Debug)]
pub(super) struct WaitEventArgs {
    /// The event's name.
    name: String,
    /// How long to wait at most; then it prints nothing and returns 0.
    #[arg(long, value_parser = duration)]
    timeout: Duration,
}

/// `jobq event …`
#[derive(Subcommand, Debug)]
pub(super) enum EventCommand {
    /// Stores an event and wakes every job waiting for it.
    Emit {
        /// The event's name.
        name: String,
        /// Its payload, a JSON document (default: null).
        #[arg(long)]
        payload: Option<String>,
    },
}

/// The context of the job whose handler runs this command, from its environment.
fn handler_context(db: &Path) -> Result<JobContext, Refused> {
    let var = |name: &str| {
        std::env::var(name).map_err(|_| {
            Refused(format!(
                "{name} is not set: jobq step, sleep and wait-event run inside a handler of `jobq worker --exec`"
            ))
        })
    };
    let id = JobId::parse(&var("JOBQ_JOB_ID")?)
        .map_err(|_| Refused("JOBQ_JOB_ID is not a job id".into()))?;
    let worker = var("JOBQ_WORKER_ID")?;
    let claim: u32 = var("JOBQ_CLAIM")?
        .parse()
        .map_err(|_| Refused("JOBQ_CLAIM is not a number".into()))?;
    let journal = PathBuf::from(var("JOBQ_RUN_JOURNAL")?);
    let queue = open_existing(db)?;
    let job = queue.get(&id)?;
    let claimed = ClaimedJob::held(&job, &worker, claim);
    Ok(JobContext::new(claimed, queue, Arc::new(AtomicBool::new(false))).with_journal(journal))
}

/// What a step, a sleep or a wait ended with, as an exit status: 0, 75 for a park, 1 for
/// a failure (said on stderr).
fn exit_with(result: Result<(), JobError>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) if e.is_park() => {
            eprintln!("jobq: {}", e.message());
            EXIT_PARKED
        }
        Err(e) => {
            eprintln!("jobq: {e}");
            1
        }
    }
}

/// `jobq step NAME -- CMD…`: runs CMD once per job and prints its stdout (stored, then
/// replayed). CMD failing fails the step with its exit status (nothing stored).
pub(super) fn step(db: &Path, args: StepArgs) -> u8 {
    in_handler(db, |ctx| run_step(&ctx, &args))
}

fn run_step(ctx: &JobContext, args: &StepArgs) -> u8 {
    let mut failed_with: Option<u8> = None;
    let result = ctx.step_json(&args.name, || {
        // Only while the lease holds: a handler taken from this worker does nothing more.
        ctx.heartbeat()
            .map_err(|e| JobError::retryable(e.to_string()))?;
        let out = Process::new(&args.command[0])
            .args(&args.command[1..])
            .stderr(std::process::Stdio::inherit())
            .stdin(std::process::Stdio::inherit())
            .output()
            .map_err(|e| JobError::retryable(format!("cannot run {}: {e}", args.command[0])))?;
        if !out.status.success() {
            failed_with = Some(
                out.status
                    .code()
                    .map_or(1, |c| u8::try_from(c).unwrap_or(1)),
            );
            return Err(JobError::retryable(format!(
                "step {:?}: {} failed ({})",
                args.name, args.command[0], out.status
            )));
        }
        Ok(Value::String(
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    });
    match result {
        Ok(output) => {
            let text = output
                .as_str()
                .map_or_else(|| output.to_string(), str::to_string);
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(text.as_bytes());
            let _ = stdout.flush();
            0
        }
        Err(e) => match failed_with {
            Some(code) => {
                eprintln!("jobq: {}", e.message());
                code.max(1)
            }
            None => exit_with(Err(e)),
        },
    }
}

/// `jobq sleep DUR`: 0 once the time has come; until then records the sleep and exits 75.
pub(super) fn sleep(db: &Path, args: SleepArgs) -> u8 {
    in_handler(db, |ctx| exit_with(ctx.sleep_for(args.duration)))
}

/// `jobq wait-event NAME --timeout DUR`: prints the payload once it is there (nothing at
/// the timeout); until then records the wait and exits 75.
pub(super) fn wait_event(db: &Path, args: WaitEventArgs) -> u8 {
    in_handler(db, |ctx| {
        exit_with(ctx.wait_for_event(&args.name, args.timeout).map(|payload| {
            if let Some(payload) = payload {
                println!("{payload}");
            }
        }))
    })
}

/// Runs `f` with the context of the job whose handler runs this command; 1 (said on
/// stderr) outside a handler.
fn in_handler(db: &Path, f: impl FnOnce(JobContext) -> u8) -> u8 {
    match handler_context(db) {
        Ok(ctx) => f(ctx),
        Err(Refused(message)) => {
            eprintln!("jobq: {message}");
            1
        }
    }
}

/// `jobq event emit NAME [--payload JSON]`.
pub(super) fn event(db: &Path, json: bool, cmd: EventCommand) -> Done {
    let EventCommand::Emit { name, payload } = cmd;
    let payload = match payload {
        Some(text) => json_arg("payload", &text)?,
        None => Value::Null,
    };
    let queue: Queue = open_existing(db)?;
    let emitted = queue.emit_event(&name, payload)?;
    if json {
        print_json(&json!({"id": emitted.id, "woken": emitted.woken}));
    } else {
        println!(
            "Event {name} stored (id {}); woke {} waiting job{}",
            emitted.id,
            emitted.woken,
            if emitted.woken == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

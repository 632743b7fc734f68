//! Jobs run by a shell command: the `jobq worker --exec` protocol, as a [`Handler`].
//!
//! For each job, `sh -c COMMAND` runs in a process group of its own. The job's input JSON
//! arrives on its stdin; its environment carries `JOBQ_JOB_ID`, `JOBQ_JOB_KIND`,
//! `JOBQ_ATTEMPT` and `JOBQ_DB`, and for a job with dependencies `JOBQ_DEPENDENCIES_FILE`
//! (a JSON object: each dependency's id and its output); `JOBQ_WORKER_ID`, `JOBQ_CLAIM` and
//! `JOBQ_RUN_JOURNAL` let `jobq step`, `jobq sleep` and `jobq wait-event` act under the
//! job's lease (a sleep or a wait that exits 75 parks the job as `waiting`). A stdout line `@progress 0.45 [STAGE]`, `@stage STAGE` or
//! `@cost CENTS` is a report, applied at once (a cost adds to the job's cost); the rest of
//! stdout, when it is JSON, becomes the job's output (otherwise `{"stdout": "…"}`).
//!
//! Exit 0 is a success. Exit 65 (`EX_DATAERR`) is a permanent failure, never retried. Exit
//! 75 (`EX_TEMPFAIL`) snoozes the job: back to `queued` without spending its attempt, for
//! the duration of its last `@snooze DUR` line (30 s without one). Any other exit, or death
//! by a signal, is a failed attempt with code `EXIT_<n>` or
//! `SIGNAL_<n>` and the last lines of stderr as its message, retried while attempts remain.
//! Past its timeout, or when the job is cancelled, the whole process group is killed
//! (code `TIMEOUT`). Processes the command leaves behind are killed when it exits, and
//! when the worker dies, however it dies, a reaper process kills every command's group.
//!
//! Output never changes an outcome: all of stdout and stderr is read; the first 1 MiB of
//! stdout that is not report lines is kept, and the last 20 lines (4 KiB) of stderr.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::model::JobError;
use crate::worker::{Handler, JobContext};

/// The exit code of a permanent failure: `EX_DATAERR` from `sysexits.h`.
pub const EXIT_PERMANENT: i32 = 65;

/// The exit status that snoozes the job (`EX_TEMPFAIL`): back to `queued` without spending
/// the attempt, to run again after the last `@snooze DUR` line's duration.
pub const EXIT_SNOOZE: i32 = 75;

/// How long exit 75 snoozes a job that printed no `@snooze` line.
pub const DEFAULT_SNOOZE: Duration = Duration::from_secs(30);

/// What happened to one job run by an [`ExecHandler`], for a worker to print.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ExecEvent {
    /// The command starts for this job.
    Started {
        /// The job's id.
        job: String,
        /// Its kind.
        kind: String,
        /// This attempt.
        attempt: u32,
        /// Attempts allowed.
        max_attempts: u32,
    },
    /// The command ended.
    Finished {
        /// The job's id.
        job: String,
        /// How long it ran.
        took: Duration,
        /// `None` on success, else the error code (`EXIT_1`, `SIGNAL_9`, `TIMEOUT`, ...).
        error: Option<String>,
    },
}

/// Runs each job as a shell command. See the module documentation for the protocol.
#[derive(Clone)]
pub struct ExecHandler {
    command: String,
    timeout: Option<Duration>,
    db: PathBuf,
    on_event: Option<OnEvent>,
}

impl std::fmt::Debug for ExecHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecHandler")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ExecHandler {
    /// Runs `command` with `sh -c`; `db` is given to it as `JOBQ_DB`.
    pub fn new(command: impl Into<String>, db: impl Into<PathBuf>) -> ExecHandler {
        ExecHandler {
            command: command.into(),
            timeout: None,
            db: db.into(),
            on_event: None,
        }
    }

    /// Kills the command's process group past this run time (error code `TIMEOUT`).
    /// Defaults to no timeout.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Called when a command starts and when it ends. Defaults to nothing.
    pub fn on_event(mut self, f: impl Fn(ExecEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }
}

/// What [`ExecHandler::on_event`] and [`JsonlHandler::on_event`] call.
type OnEvent = Arc<dyn Fn(ExecEvent) + Send + Sync>;

/// Runs a job's command between its [`ExecEvent::Started`] and [`ExecEvent::Finished`].
fn announced(
    on_event: Option<&OnEvent>,
    ctx: &JobContext,
    run: impl FnOnce() -> Result<Value, JobError>,
) -> Result<Value, JobError> {
    let emit = |event| {
        if let Some(f) = on_event {
            f(event);
        }
    };
    let job = ctx.job();
    emit(ExecEvent::Started {
        job: job.id.to_string(),
        kind: job.kind.clone(),
        attempt: job.attempt,
        max_attempts: job.max_attempts,
    });
    let started = Instant::now();
    let result = run();
    emit(ExecEvent::Finished {
        job: job.id.to_string(),
        took: started.elapsed(),
        error: result
            .as_ref()
            .err()
            .map(|e| e.error_code().unwrap_or("ERROR").to_string()),
    });
    result
}

/// Sends SIGKILL to a whole process group (the command and everything it started).
fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals the process group; the group is the one
    // the child leads (it was started with process_group(0)). ESRCH (gone) is fine.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Starts `command` in a process group of its own that dies with the worker: its `sh` dies
/// with the thread that started it (`PR_SET_PDEATHSIG`), and its whole group is registered
/// with the reaper before `sh` runs, so that nothing it starts outlives the worker either.
/// Python's output is unbuffered (progress lines would otherwise wait for the end).
fn spawn_in_group(command: &mut Command) -> Result<(std::process::Child, Group), JobError> {
    command.env("PYTHONUNBUFFERED", "1").process_group(0);
    let reaper = reaper::socket();
    // SAFETY: between fork and exec only async-signal-safe calls are allowed: prctl,
    // getpid and send are.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if let Some(fd) = reaper {
                reaper::send(fd, libc::getpid());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .map_err(|e| JobError::retryable(format!("could not start sh -c: {e}")).code("SPAWN"))?;
    let group = Group {
        pgid: child.id() as libc::pid_t,
    };
    reaper::register(group.pgid);
    Ok((child, group))
}

/// The process group of a running command: registered with the [`reaper`] before the
/// command starts (by the command's own process, between fork and exec), and killed whole
/// and unregistered when it is dropped, however the run ends.
struct Group {
    pgid: libc::pid_t,
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pgid);
        reaper::forget(self.pgid);
    }
}

mod jsonl;
mod output;
mod reaper;

pub use jsonl::JsonlHandler;
pub use output::{ReportLine, parse_report_line};
use output::{Stdout, stderr_tail};

/// The exit status of a command the shell found but could not run (not executable).
pub const EXIT_CANNOT_RUN: i32 = 126;

/// The exit status of a command the shell did not find.
pub const EXIT_NOT_FOUND: i32 = 127;

/// The failure of a command that ended with `status`: its code names the exit status or
/// the signal; its message is the last line of stderr that says something (where a Python
/// traceback, say, names the error), and the end of stderr is kept as the detail. A
/// command that could not run or was not found (126, 127) fails for good: no retry makes
/// it appear.
fn failure(status: ExitStatus, stderr_tail: &str) -> JobError {
    let (code, described) = match (status.code(), status.signal()) {
        (Some(n), _) => (format!("EXIT_{n}"), format!("exited with status {n}")),
        (None, Some(s)) => (format!("SIGNAL_{s}"), format!("killed by signal {s}")),
        (None, None) => ("EXIT_UNKNOWN".to_string(), "ended".to_string()),
    };
    let last_line = stderr_tail
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && *l != "…");
    let mut message = match last_line {
        Some(line) => line.trim_start_matches('…').to_string(),
        None => format!("the command {described}"),
    };
    let permanent = match status.code() {
        Some(EXIT_PERMANENT) => true,
        Some(EXIT_CANNOT_RUN) => {
            message =
                format!("the command could not be run (exit 126, not executable?): {message}");
            true
        }
        Some(EXIT_NOT_FOUND) => {
            message = format!("the command was not found (exit 127): {message}");
            true
        }
        _ => false,
    };
    let error = if permanent {
        JobError::permanent(message)
    } else {
        JobError::retryable(message)
    };
    let error = error.code(code);
    let detail = stderr_tail.trim_end();
    if detail.lines().filter(|l| !l.trim().is_empty()).count() > 1 {
        error.detail(detail)
    } else {
        error
    }
}

impl Handler for ExecHandler {
    fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        announced(self.on_event.as_ref(), ctx, || self.run(ctx))
    }
}

/// The file named by `JOBQ_DEPENDENCIES_FILE`: the outputs of a job's dependencies, by
/// their ids, readable by the worker's user only; removed when the command has ended.
struct DependenciesFile(PathBuf);

impl DependenciesFile {
    /// The file for the job of `ctx`, if it has dependencies.
    fn write(ctx: &JobContext) -> Result<Option<DependenciesFile>, JobError> {
        let outputs = ctx.dependencies().map_err(JobError::from)?;
        if outputs.is_empty() {
            return Ok(None);
        }
        let path = std::env::temp_dir().join(format!(
            "jobq-dependencies-{}-{}-{}.json",
            ctx.id(),
            std::process::id(),
            ctx.lease().claim
        ));
        let text = serde_json::to_vec(&outputs)
            .map_err(|e| JobError::retryable(format!("could not write the dependencies: {e}")))?;
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&text));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(JobError::retryable(format!(
                "could not write the dependencies to {}: {e}",
                path.display()
            ))
            .code("SPAWN"));
        }
        Ok(Some(DependenciesFile(path)))
    }
}

impl Drop for DependenciesFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The file named by `JOBQ_RUN_JOURNAL`: what the `jobq step`, `jobq sleep` and `jobq
/// wait-event` commands of one run of a handler noted (the names they used, and a park),
/// readable by the worker's user only; removed when the command has ended.
struct RunJournal(PathBuf);

impl RunJournal {
    fn create(ctx: &JobContext) -> Result<RunJournal, JobError> {
        let path = std::env::temp_dir().join(format!(
            "jobq-run-{}-{}-{}.jsonl",
            ctx.id(),
            std::process::id(),
            ctx.lease().claim
        ));
        let _ = std::fs::remove_file(&path);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                JobError::retryable(format!(
                    "could not create the run's journal {}: {e}",
                    path.display()
                ))
                .code("SPAWN")
            })?;
        Ok(RunJournal(path))
    }
}

impl Drop for RunJournal {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ExecHandler {
    fn run(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let dependencies = DependenciesFile::write(ctx)?;
        let journal = RunJournal::create(ctx)?;
        let mut command = Command::new("sh");
        if let Some(file) = &dependencies {
            command.env("JOBQ_DEPENDENCIES_FILE", &file.0);
        }
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("JOBQ_JOB_ID", ctx.id().as_str())
            .env("JOBQ_JOB_KIND", ctx.kind())
            .env("JOBQ_ATTEMPT", ctx.attempt().to_string())
            .env("JOBQ_WORKER_ID", &ctx.lease().worker)
            .env("JOBQ_CLAIM", ctx.lease().claim.to_string())
            .env("JOBQ_RUN_JOURNAL", &journal.0)
            .env("JOBQ_DB", &self.db);
        let (mut child, group) = spawn_in_group(&mut command)?;

        // Feed the input on a thread of its own: a command that never reads stdin must not
        // block us (its exit closes the pipe and ends the write).
        if let Some(mut stdin) = child.stdin.take() {
            let input = ctx.input_json().as_bytes().to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let ((output, truncated, snooze), stderr_tail, status, killed_for) =
            std::thread::scope(|s| {
                let stdout = s.spawn(move || match stdout {
                    Some(out) => Stdout::new(ctx).read_all(out),
                    None => (Vec::new(), false, None),
                });
                let stderr = s.spawn(move || stderr.map(stderr_tail).unwrap_or_default());
                let mut killed_for: Option<JobError> = None;
                let status = loop {
                    match child.try_wait() {
                        Ok(Some(status)) => break Ok(status),
                        Ok(None) => {}
                        Err(e) => break Err(e),
                    }
                    if killed_for.is_none() {
                        if deadline.is_some_and(|d| Instant::now() >= d) {
                            kill_group(group.pgid);
                            killed_for = Some(
                                JobError::retryable(format!(
                                    "killed after its timeout of {}",
                                    crate::duration::format_duration(
                                        self.timeout.unwrap_or_default()
                                    )
                                ))
                                .code("TIMEOUT"),
                            );
                        } else if ctx.is_cancelled() {
                            kill_group(group.pgid);
                            killed_for = Some(
                                JobError::retryable(
                                    "the job was cancelled; its command was killed",
                                )
                                .code("CANCELLED"),
                            );
                        }
                    }
                    std::thread::sleep(Duration::from_millis(10));
                };
                // Whatever the command left running in its group goes with it; this also
                // closes its stdout and stderr for good, so the readers see their end.
                drop(group);
                (
                    stdout.join().unwrap_or_default(),
                    stderr.join().unwrap_or_default(),
                    status,
                    killed_for,
                )
            });
        let status =
            status.map_err(|e| JobError::retryable(format!("waiting for the command: {e}")))?;
        if let Some(error) = killed_for {
            return Err(error);
        }
        if status.code() == Some(EXIT_SNOOZE) {
            // A `jobq sleep` or `jobq wait-event` that parked the job said so in the journal.
            if let (_, Some(park)) = crate::worker::read_journal(&journal.0) {
                return Err(JobError::parked(park));
            }
            return Err(JobError::snooze(snooze.unwrap_or(DEFAULT_SNOOZE)));
        }
        if !status.success() {
            return Err(failure(status, &stderr_tail));
        }
        let output = String::from_utf8_lossy(&output);
        let text = output.trim();
        // JSON is the output, unless it holds integers past 64 bits, which would come back
        // as inexact floats: then the text is kept as it is.
        let value = match crate::json::parse_json("output", text) {
            Ok(v) if !text.is_empty() => v,
            _ => {
                warn_plain_output(ctx);
                serde_json::json!({ "stdout": text })
            }
        };
        if truncated {
            tracing::warn!(job_id = %ctx.id(), "jobq: command output over 1 MiB was cut");
        }
        Ok(value)
    }
}

/// Tells once per process that a command printed text that is neither report lines nor
/// JSON: its output is then `{"stdout": "…"}`, which is rarely what was meant (a stray
/// `print` in a handler, say).
fn warn_plain_output(ctx: &JobContext) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            job_id = %ctx.id(),
            kind = ctx.kind(),
            "jobq: a command printed output that is neither report lines (@progress, @stage, @cost, @snooze) nor JSON: it is kept as {{\"stdout\": …}}. Print one JSON document as the output, and send other text to stderr (told once)"
        );
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_map_to_codes() {
        let e = failure(ExitStatus::from_raw(1 << 8), "boom\n");
        assert_eq!(
            (
                e.error_code(),
                e.message(),
                e.is_permanent(),
                e.error_detail()
            ),
            (Some("EXIT_1"), "boom", false, None)
        );
        let traceback = "Traceback (most recent call last):\n  File \"h.py\", line 3, in <module>\n    raise ValueError(\"bad input\")\nValueError: bad input\n\n";
        let e = failure(ExitStatus::from_raw(1 << 8), traceback);
        assert_eq!(e.message(), "ValueError: bad input");
        assert_eq!(e.error_detail(), Some(traceback.trim_end()));
        for (status, words) in [(126, "could not be run"), (127, "was not found")] {
            let e = failure(
                ExitStatus::from_raw(status << 8),
                "sh: 1: nope: not found\n",
            );
            assert!(e.is_permanent(), "{status}");
            assert_eq!(e.error_code(), Some(format!("EXIT_{status}").as_str()));
            assert!(
                e.message().contains(words) && e.message().contains("nope"),
                "{}",
                e.message()
            );
        }
        let e = failure(ExitStatus::from_raw(65 << 8), "");
        assert_eq!(
            (e.error_code(), e.message(), e.is_permanent()),
            (Some("EXIT_65"), "the command exited with status 65", true)
        );
        let e = failure(ExitStatus::from_raw(9), "");
        assert_eq!(
            (e.error_code(), e.is_permanent()),
            (Some("SIGNAL_9"), false)
        );
    }
}

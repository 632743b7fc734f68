//! Jobs run by a shell command: the `jobq worker --exec` protocol, as a [`Handler`].
//!
//! For each job, `sh -c COMMAND` runs in a process group of its own. The job's input JSON
//! arrives on its stdin; its environment carries `JOBQ_JOB_ID`, `JOBQ_JOB_KIND`,
//! `JOBQ_ATTEMPT` and `JOBQ_DB`, and for a job with dependencies `JOBQ_DEPENDENCIES_FILE`
//! (a JSON object: each dependency's id and its output). A stdout line `@progress 0.45 [STAGE]`, `@stage STAGE` or
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

use std::io::{Read, Write};
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

/// Stdout kept as output, at most; the rest is read and dropped (and a warning says so).
const MAX_STDOUT: usize = 1 << 20;
/// The longest stdout line read as a possible report line; longer lines are output.
const MAX_REPORT_LINE: usize = 8 << 10;
/// Lines of stderr kept for the error message.
const STDERR_LINES: usize = 20;
/// Bytes of stderr kept for the error message, at most (the end of it).
const STDERR_TAIL: usize = 4 << 10;

/// A report line of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportLine {
    /// `@progress P [STAGE]`: progress 0 to 1, and optionally the stage.
    Progress(f64, Option<String>),
    /// `@stage STAGE`.
    Stage(String),
    /// `@cost CENTS`: add to the job's cost.
    Cost(i64),
    /// `@snooze DUR`: how long exit 75 snoozes the job (e.g. `@snooze 5m`).
    Snooze(Duration),
}

/// Reads one stdout line: `None` when it is not a report (ordinary output), `Some(Err)` for
/// a report line that is malformed (it is ignored, with a warning).
///
/// # Examples
///
/// ```
/// use jobq::exec::{ReportLine, parse_report_line};
///
/// assert_eq!(parse_report_line("@progress 0.5 transcoding"), Some(Ok(ReportLine::Progress(0.5, Some("transcoding".into())))));
/// assert_eq!(parse_report_line("@cost 12"), Some(Ok(ReportLine::Cost(12))));
/// assert_eq!(parse_report_line("{\"ok\": true}"), None);
/// assert!(parse_report_line("@progress 1.5").unwrap().is_err());
/// ```
pub fn parse_report_line(line: &str) -> Option<Result<ReportLine, String>> {
    let line = line.trim_end_matches(['\r', '\n']);
    let (directive, rest) = match line.split_once(char::is_whitespace) {
        Some((d, r)) => (d, r.trim()),
        None => (line, ""),
    };
    let report = match directive {
        "@progress" => {
            let (value, stage) = match rest.split_once(char::is_whitespace) {
                Some((v, s)) => (v, Some(s.trim())),
                None => (rest, None),
            };
            let p: f64 = match value.parse() {
                Ok(p) => p,
                Err(_) => {
                    return Some(Err(format!(
                        "@progress needs a number from 0 to 1, got {value:?}"
                    )));
                }
            };
            if !(0.0..=1.0).contains(&p) {
                return Some(Err(format!("@progress {p} is outside 0 to 1")));
            }
            ReportLine::Progress(p, stage.filter(|s| !s.is_empty()).map(String::from))
        }
        "@stage" if !rest.is_empty() => ReportLine::Stage(rest.to_string()),
        "@stage" => return Some(Err("@stage needs a stage name".into())),
        "@cost" => match rest.parse::<i64>() {
            Ok(c) if (0..=crate::MAX_COST_CENTS).contains(&c) => ReportLine::Cost(c),
            _ => {
                return Some(Err(format!(
                    "@cost needs a whole number of cents from 0 to {}, got {rest:?}",
                    crate::MAX_COST_CENTS
                )));
            }
        },
        "@snooze" => match crate::duration::parse_duration(rest) {
            Ok(d) if d <= crate::duration::MAX_DURATION => ReportLine::Snooze(d),
            Ok(_) => return Some(Err(format!("@snooze {rest} is more than 100 years"))),
            Err(e) => return Some(Err(format!("@snooze needs a duration such as 30s: {e}"))),
        },
        _ => return None,
    };
    Some(Ok(report))
}

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
    on_event: Option<Arc<dyn Fn(ExecEvent) + Send + Sync>>,
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

    fn emit(&self, event: ExecEvent) {
        if let Some(f) = &self.on_event {
            f(event);
        }
    }
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
mod reaper;

pub use jsonl::JsonlHandler;

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
        let job = ctx.job();
        self.emit(ExecEvent::Started {
            job: job.id.to_string(),
            kind: job.kind.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
        });
        let started = Instant::now();
        let result = self.run(ctx);
        self.emit(ExecEvent::Finished {
            job: job.id.to_string(),
            took: started.elapsed(),
            error: result
                .as_ref()
                .err()
                .map(|e| e.error_code().unwrap_or("ERROR").to_string()),
        });
        result
    }
}

/// What a command printed on stdout, kept within bounds: report lines are applied as they
/// come; other output is kept up to [`MAX_STDOUT`] bytes and the rest read and dropped, so
/// that no amount of output changes the outcome or the worker's memory.
struct Stdout<'a> {
    ctx: &'a JobContext,
    output: Vec<u8>,
    truncated: bool,
    /// The line being read, while it may still be a report line.
    line: Vec<u8>,
    /// The line being read is too long to be a report: it goes to the output as it comes.
    long_line: bool,
    /// The duration of the last `@snooze` line.
    snooze: std::cell::Cell<Option<Duration>>,
}

impl<'a> Stdout<'a> {
    fn new(ctx: &'a JobContext) -> Stdout<'a> {
        Stdout {
            ctx,
            output: Vec::new(),
            truncated: false,
            line: Vec::new(),
            long_line: false,
            snooze: std::cell::Cell::new(None),
        }
    }

    fn read_all(mut self, mut from: impl Read) -> (Vec<u8>, bool, Option<Duration>) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        if !self.line.is_empty() || self.long_line {
            self.end_line(false);
        }
        (self.output, self.truncated, self.snooze.get())
    }

    fn feed(&mut self, chunk: &[u8]) {
        for piece in chunk.split_inclusive(|b| *b == b'\n') {
            let (text, ends) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            if self.long_line {
                self.keep(text);
            } else if self.line.len() + text.len() <= MAX_REPORT_LINE {
                self.line.extend_from_slice(text);
            } else {
                let start = std::mem::take(&mut self.line);
                self.keep(&start);
                self.keep(text);
                self.long_line = true;
            }
            if ends {
                self.end_line(true);
            }
        }
    }

    fn end_line(&mut self, newline: bool) {
        if !self.long_line {
            let line = std::mem::take(&mut self.line);
            let text = String::from_utf8_lossy(&line);
            match parse_report_line(&text) {
                Some(Ok(report)) => {
                    self.apply(report);
                    return;
                }
                Some(Err(why)) => {
                    tracing::warn!(job_id = %self.ctx.id(), line = %text, why, "jobq: malformed report line ignored");
                    return;
                }
                None => self.keep(&line),
            }
        }
        self.long_line = false;
        if newline {
            self.keep(b"\n");
        }
    }

    fn apply(&self, report: ReportLine) {
        let ctx = self.ctx;
        let applied = match report {
            ReportLine::Progress(p, Some(stage)) => ctx.set_progress_and_stage(p, &stage),
            ReportLine::Progress(p, None) => ctx.set_progress(p),
            ReportLine::Stage(stage) => ctx.set_stage(&stage),
            ReportLine::Cost(cents) => ctx.add_cost(cents),
            ReportLine::Snooze(d) => {
                self.snooze.set(Some(d));
                Ok(())
            }
        };
        if let Err(e) = applied {
            tracing::warn!(job_id = %ctx.id(), error = %e, "jobq: report not applied");
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        let room = MAX_STDOUT - self.output.len();
        if bytes.len() > room {
            self.truncated = true;
        }
        self.output
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }
}

/// The end of what a command wrote on stderr: all of it is read (a command is never cut
/// off by a full pipe), and only the last [`STDERR_LINES`] lines, at most
/// [`STDERR_TAIL`] bytes, are kept.
fn stderr_tail(mut from: impl Read) -> String {
    let mut tail: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 4 * STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let cut = tail.len() > STDERR_TAIL;
    if cut {
        tail.drain(..tail.len() - STDERR_TAIL);
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = text.split('\n').collect();
    let kept = &lines[lines.len().saturating_sub(STDERR_LINES)..];
    let joined = kept.join("\n");
    if cut || kept.len() < lines.len() {
        format!("…{joined}")
    } else {
        joined
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

impl ExecHandler {
    fn run(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let dependencies = DependenciesFile::write(ctx)?;
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
    fn report_lines_parse() {
        assert_eq!(
            parse_report_line("@progress 0.45"),
            Some(Ok(ReportLine::Progress(0.45, None)))
        );
        assert_eq!(
            parse_report_line("@progress 1 done now\r"),
            Some(Ok(ReportLine::Progress(1.0, Some("done now".into()))))
        );
        assert_eq!(
            parse_report_line("@stage  llm_analysis "),
            Some(Ok(ReportLine::Stage("llm_analysis".into())))
        );
        assert_eq!(
            parse_report_line("@cost 250"),
            Some(Ok(ReportLine::Cost(250)))
        );
        for bad in [
            "@progress",
            "@progress x",
            "@progress -0.1",
            "@progress 1.01",
            "@progress NaN",
            "@progress inf",
            "@stage",
            "@stage   ",
            "@cost",
            "@cost -1",
            "@cost 1.5",
            "@cost 99999999999999999999",
            "@cost 1000000000001",
            "@cost 9223372036854775807",
        ] {
            assert!(matches!(parse_report_line(bad), Some(Err(_))), "{bad:?}");
        }
        for plain in [
            "",
            "hello",
            "{\"a\":1}",
            "@other thing",
            " @progress 0.5",
            "progress 0.5",
            "@progresss 0.5",
        ] {
            assert_eq!(parse_report_line(plain), None, "{plain:?}");
        }
    }

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

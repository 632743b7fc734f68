//! Jobs run by a shell command: the `jobq worker --exec` protocol, as a [`Handler`].
//!
//! For each job, `sh -c COMMAND` runs in a process group of its own. The job's input JSON
//! arrives on its stdin; its environment carries `JOBQ_JOB_ID`, `JOBQ_JOB_KIND`,
//! `JOBQ_ATTEMPT` and `JOBQ_DB`. A stdout line `@progress 0.45 [STAGE]`, `@stage STAGE` or
//! `@cost CENTS` is a report, applied at once (a cost adds to the job's cost); the rest of
//! stdout, when it is JSON, becomes the job's output (otherwise `{"stdout": "…"}`).
//!
//! Exit 0 is a success. Exit 65 (`EX_DATAERR`) is a permanent failure, never retried. Any
//! other exit, or death by a signal, is a failed attempt with code `EXIT_<n>` or
//! `SIGNAL_<n>` and the last lines of stderr as its message, retried while attempts remain.
//! Past its timeout, or when the job is cancelled, the whole process group is killed
//! (code `TIMEOUT`). Processes the command leaves behind are killed when it exits.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use serde_json::Value;

use crate::queue::JobError;
use crate::worker::{Handler, JobContext};

/// The exit code of a permanent failure: `EX_DATAERR` from `sysexits.h`.
pub const EXIT_PERMANENT: i32 = 65;

/// Stdout kept as output, at most; the rest is dropped (and says so).
const MAX_STDOUT: usize = 1 << 20;
/// Lines of stderr kept for the error message.
const STDERR_LINES: usize = 20;

/// A report line of the protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportLine {
    /// `@progress P [STAGE]`: progress 0 to 1, and optionally the stage.
    Progress(f64, Option<String>),
    /// `@stage STAGE`.
    Stage(String),
    /// `@cost CENTS`: add to the job's cost.
    Cost(i64),
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
            Ok(c) if c >= 0 => ReportLine::Cost(c),
            _ => {
                return Some(Err(format!(
                    "@cost needs a whole number of cents, 0 or more, got {rest:?}"
                )));
            }
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
fn kill_group(child: &Child) {
    let pgid = child.id() as libc::pid_t;
    // SAFETY: kill(2) with a negative pid signals the process group; the group is the one
    // the child leads (it was started with process_group(0)). ESRCH (gone) is fine.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

fn failure(status: ExitStatus, stderr_tail: &str) -> JobError {
    let (code, described) = match (status.code(), status.signal()) {
        (Some(n), _) => (format!("EXIT_{n}"), format!("exited with status {n}")),
        (None, Some(s)) => (format!("SIGNAL_{s}"), format!("killed by signal {s}")),
        (None, None) => ("EXIT_UNKNOWN".to_string(), "ended".to_string()),
    };
    let message = if stderr_tail.trim().is_empty() {
        format!("the command {described}")
    } else {
        stderr_tail.trim_end().to_string()
    };
    let error = if status.code() == Some(EXIT_PERMANENT) {
        JobError::permanent(message)
    } else {
        JobError::retryable(message)
    };
    error.code(code)
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

impl ExecHandler {
    fn run(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("JOBQ_JOB_ID", ctx.id().as_str())
            .env("JOBQ_JOB_KIND", ctx.kind())
            .env("JOBQ_ATTEMPT", ctx.attempt().to_string())
            .env("JOBQ_DB", &self.db)
            .process_group(0);
        // SAFETY: between fork and exec only async-signal-safe calls are allowed; prctl is
        // one. The command dies with the worker thread that started it (on Linux), so a
        // worker killed by SIGKILL leaves no command running behind it.
        #[cfg(target_os = "linux")]
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| {
            JobError::retryable(format!("could not start sh -c: {e}")).code("SPAWN")
        })?;

        // Feed the input on a thread of its own: a command that never reads stdin must not
        // block us (its exit closes the pipe and ends the write).
        if let Some(mut stdin) = child.stdin.take() {
            let input = ctx.input_json().as_bytes().to_vec();
            std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            });
        }
        let (lines_tx, lines) = crossbeam_channel::unbounded::<String>();
        let stdout = child.stdout.take().map(BufReader::new);
        let stdout_reader = std::thread::spawn(move || {
            if let Some(stdout) = stdout {
                for line in stdout.split(b'\n') {
                    let Ok(line) = line else { break };
                    if lines_tx
                        .send(String::from_utf8_lossy(&line).into_owned())
                        .is_err()
                    {
                        break;
                    }
                }
            }
        });
        let stderr = child.stderr.take();
        let stderr_reader = std::thread::spawn(move || {
            let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
            if let Some(stderr) = stderr {
                for line in BufReader::new(stderr.take(64 << 20)).split(b'\n') {
                    let Ok(line) = line else { break };
                    tail.push_back(String::from_utf8_lossy(&line).into_owned());
                    if tail.len() > STDERR_LINES {
                        tail.pop_front();
                    }
                }
            }
            tail.into_iter().collect::<Vec<_>>().join("\n")
        });

        let deadline = self.timeout.map(|t| Instant::now() + t);
        let mut output = String::new();
        let mut truncated = false;
        let mut exited: Option<ExitStatus> = None;
        let mut killed_for: Option<JobError> = None;
        loop {
            match lines.recv_timeout(Duration::from_millis(20)) {
                Ok(line) => match parse_report_line(&line) {
                    Some(Ok(report)) => {
                        let applied = match report {
                            ReportLine::Progress(p, Some(stage)) => {
                                ctx.set_progress_and_stage(p, &stage)
                            }
                            ReportLine::Progress(p, None) => ctx.set_progress(p),
                            ReportLine::Stage(stage) => ctx.set_stage(&stage),
                            ReportLine::Cost(cents) => ctx.add_cost(cents),
                        };
                        if let Err(e) = applied {
                            tracing::warn!(job_id = %ctx.id(), error = %e, "jobq: report not applied");
                        }
                    }
                    Some(Err(why)) => {
                        tracing::warn!(job_id = %ctx.id(), line, why, "jobq: malformed report line ignored")
                    }
                    None => {
                        if output.len() + line.len() < MAX_STDOUT {
                            output.push_str(&line);
                            output.push('\n');
                        } else {
                            truncated = true;
                        }
                    }
                },
                Err(RecvTimeoutError::Disconnected) if exited.is_some() => break,
                Err(_) => {}
            }
            if exited.is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    exited = Some(status);
                    // Whatever the command left running in its group goes with it; this
                    // also closes stdout for good, so the reader sees its end.
                    kill_group(&child);
                }
            }
            if killed_for.is_none() && exited.is_none() {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    kill_group(&child);
                    killed_for = Some(
                        JobError::retryable(format!(
                            "killed after its timeout of {}",
                            crate::duration::format_duration(self.timeout.unwrap_or_default())
                        ))
                        .code("TIMEOUT"),
                    );
                } else if ctx.is_cancelled() {
                    kill_group(&child);
                    killed_for = Some(
                        JobError::retryable("the job was cancelled; its command was killed")
                            .code("CANCELLED"),
                    );
                }
            }
        }
        let _ = stdout_reader.join();
        let stderr_tail = stderr_reader.join().unwrap_or_default();
        let status = match exited {
            Some(s) => s,
            None => child
                .wait()
                .map_err(|e| JobError::retryable(format!("waiting for the command: {e}")))?,
        };
        if let Some(error) = killed_for {
            return Err(error);
        }
        if !status.success() {
            return Err(failure(status, &stderr_tail));
        }
        let text = output.trim();
        let value = match serde_json::from_str::<Value>(text) {
            Ok(v) if !text.is_empty() => v,
            _ => serde_json::json!({ "stdout": text }),
        };
        if truncated {
            tracing::warn!(job_id = %ctx.id(), "jobq: command output over 1 MiB was cut");
        }
        Ok(value)
    }
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
            (e.error_code(), e.message(), e.is_permanent()),
            (Some("EXIT_1"), "boom", false)
        );
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

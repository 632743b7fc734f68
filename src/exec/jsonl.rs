//! Warm handler processes: the `jobq worker --exec CMD --protocol jsonl` protocol, as a
//! [`Handler`].
//!
//! Each of the pool's handler threads keeps one child, started once with `sh -c CMD` and
//! kept between jobs (a model loads once, not once a job). A job goes to it as one JSON
//! line on its stdin: `{"id", "kind", "attempt", "input", "dependencies"?}` (the outputs of
//! its dependencies, by flow ref or id). It answers on stdout with JSON lines naming the
//! job: reports `{"id", "progress"?, "stage"?, "cost_cents"?}`, applied as they come, then
//! exactly one of `{"id", "ok": OUTPUT}`, `{"id", "error": {"message", "code"?,
//! "permanent"?, "retry_after"?}}` or `{"id", "snooze": "30s"}`. Its stderr goes to the
//! worker's stderr, line by line. A handler may be durable: it asks for a step, a sleep or a
//! wait with a line and reads the answer on its stdin (see [`durable`]); a park ends its
//! run with `{"id", "parked": true}`.
//!
//! A child that exits, or writes anything else on stdout, fails the job it was running
//! (`CHILD_EXITED` or `PROTOCOL`, retried while attempts remain) and is replaced by a new one
//! for the next job. Past the job's timeout, or when the job is cancelled, the child's whole
//! process group is killed (`TIMEOUT`, `CANCELLED`). With a most jobs per child, a child is
//! replaced after that many jobs (a handler that leaks memory, or GPU memory, starts afresh).
//! Children die with the worker as `--exec` commands do.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{Map, Value, json};

use super::output::STDERR_LINES;
use super::{ExecEvent, Group, OnEvent, announced, spawn_in_group};
use crate::duration::parse_duration;
use crate::model::JobError;
use crate::worker::{Handler, JobContext};

/// The longest line a child may answer with: 64 MiB (an output of a job can be large).
const MAX_LINE: usize = 64 << 20;

/// Runs jobs on warm child processes speaking JSON lines. See the module documentation.
#[derive(Clone)]
pub struct JsonlHandler {
    command: String,
    timeout: Option<Duration>,
    db: PathBuf,
    max_jobs_per_child: Option<u64>,
    idle: Arc<Mutex<Vec<Child>>>,
    on_event: Option<OnEvent>,
}

impl std::fmt::Debug for JsonlHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlHandler")
            .field("command", &self.command)
            .field("timeout", &self.timeout)
            .field("max_jobs_per_child", &self.max_jobs_per_child)
            .finish_non_exhaustive()
    }
}

impl JsonlHandler {
    /// Runs `command` with `sh -c` as warm children; `db` is given to them as `JOBQ_DB`.
    pub fn new(command: impl Into<String>, db: impl Into<PathBuf>) -> JsonlHandler {
        JsonlHandler {
            command: command.into(),
            timeout: None,
            db: db.into(),
            max_jobs_per_child: None,
            idle: Arc::default(),
            on_event: None,
        }
    }

    /// Kills the child (and its process group) when a job runs past this (error code
    /// `TIMEOUT`). Defaults to no timeout.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replaces a child after it ran this many jobs. Defaults to never.
    pub fn max_jobs_per_child(mut self, n: Option<u64>) -> Self {
        self.max_jobs_per_child = n.filter(|n| *n > 0);
        self
    }

    /// Called when a job starts and when it ends. Defaults to nothing.
    pub fn on_event(mut self, f: impl Fn(ExecEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// An idle child that is still alive, or a new one.
    fn child(&self) -> Result<Child, JobError> {
        loop {
            let taken = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match taken {
                Some(mut child) => {
                    if child.alive() {
                        return Ok(child);
                    }
                }
                None => return Child::start(&self.command, &self.db),
            }
        }
    }

    fn give_back(&self, child: Child) {
        if self.max_jobs_per_child.is_some_and(|max| child.jobs >= max) {
            return; // dropped: killed with its group
        }
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child);
    }
}

/// One warm child: its process (group), the pipe to its stdin, the lines of its stdout as
/// a thread reads them, and the end of its stderr.
struct Child {
    process: std::process::Child,
    stdin: ChildStdin,
    lines: Receiver<std::io::Result<String>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Disconnected when the child's stderr has been read to its end.
    stderr_done: crossbeam_channel::Receiver<()>,
    jobs: u64,
    // Dropped last: kills the whole group.
    _group: Group,
}

impl Child {
    fn start(command: &str, db: &std::path::Path) -> Result<Child, JobError> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("JOBQ_DB", db)
            .env("JOBQ_PROTOCOL", "jsonl");
        let (mut process, group) = spawn_in_group(&mut cmd)?;
        let stdin = process
            .stdin
            .take()
            .ok_or_else(|| JobError::retryable("the handler process has no stdin").code("SPAWN"))?;
        let stdout = process.stdout.take();
        let stderr = process.stderr.take();
        let pid = process.id();
        let (tx, lines) = crossbeam_channel::bounded(64);
        if let Some(stdout) = stdout {
            std::thread::Builder::new()
                .name("jobq-child-out".into())
                .spawn(move || {
                    let mut reader = BufReader::new(stdout);
                    loop {
                        let mut line = String::new();
                        let read =
                            std::io::Read::take(&mut reader, MAX_LINE as u64).read_line(&mut line);
                        match read {
                            Ok(0) => break,
                            Ok(_) => {
                                if tx.send(Ok(line)).is_err() {
                                    break;
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                break;
                            }
                        }
                    }
                })
                .map_err(|e| {
                    JobError::retryable(format!("cannot read the handler process: {e}"))
                        .code("SPAWN")
                })?;
        }
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        // Disconnected once the reader has read the child's stderr to its end.
        let (stderr_read, stderr_done) = crossbeam_channel::bounded::<()>(0);
        if let Some(stderr) = stderr {
            let tail = Arc::clone(&tail);
            let _ = std::thread::Builder::new()
                .name("jobq-child-err".into())
                .spawn(move || {
                    let _read = stderr_read;
                    for line in BufReader::new(stderr).lines() {
                        let Ok(line) = line else { break };
                        eprintln!("[handler {pid}] {line}");
                        let mut tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
                        if tail.len() == STDERR_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                });
        }
        Ok(Child {
            process,
            stdin,
            lines,
            stderr: tail,
            stderr_done,
            jobs: 0,
            _group: group,
        })
    }

    /// Answers a running job's request on the child's stdin.
    fn tell(&mut self, answer: &Value) -> Result<(), JobError> {
        let mut text = answer.to_string();
        text.push('\n');
        let told = self
            .stdin
            .write_all(text.as_bytes())
            .and_then(|()| self.stdin.flush());
        match told {
            Ok(()) => Ok(()),
            Err(_) => Err(self.ended("exited while running the job")),
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// How the child ended, with the end of its stderr: for the job it was running.
    fn ended(&mut self, what: &str) -> JobError {
        // It closed its stdout: give it a moment to exit and say how.
        let deadline = Instant::now() + Duration::from_millis(500);
        let status = loop {
            match self.process.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => break None,
            }
        };
        let how = match status {
            Some(s) => format!("{s}"),
            None => "closed its output".to_string(),
        };
        // Its last words may still be on their way through the pipe (a process it left
        // behind may hold the pipe open: not for long).
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(1));
        let tail: Vec<String> = self
            .stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let last = tail.iter().rev().find(|l| !l.trim().is_empty());
        let message = match last {
            Some(line) => format!(
                "the handler process {} {what} ({how}): {line}",
                self.process.id()
            ),
            None => format!("the handler process {} {what} ({how})", self.process.id()),
        };
        let error = JobError::retryable(message).code("CHILD_EXITED");
        if tail.len() > 1 {
            error.detail(tail.join("\n"))
        } else {
            error
        }
    }
}

/// The job's line for the child.
fn job_line(ctx: &JobContext) -> Result<Vec<u8>, JobError> {
    let input: Value = serde_json::from_str(ctx.input_json())
        .map_err(|e| JobError::permanent(format!("the job's input is not JSON: {e}")))?;
    let mut job = json!({
        "id": ctx.id().as_str(),
        "kind": ctx.kind(),
        "attempt": ctx.attempt(),
        "input": input,
    });
    let dependencies = ctx.dependencies().map_err(JobError::from)?;
    if !dependencies.is_empty() {
        job["dependencies"] = Value::Object(dependencies.into_iter().collect::<Map<_, _>>());
    }
    let mut line = serde_json::to_vec(&job)
        .map_err(|e| JobError::retryable(format!("cannot write the job: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// What one line of the child says about the job `id`.
enum Said {
    /// A report, applied.
    Report,
    /// A durable step, sleep or wait asked for: this answer goes back on its stdin.
    Answer(Value),
    /// A sleep or a wait parked the job: told to the child, whose run ends with
    /// `{"id", "parked": true}`.
    Parked(JobError),
    /// The job's end.
    Done(Result<Value, JobError>),
}

/// Reads one line of the protocol; `Err` when the line breaks it.
fn read_line(line: &str, id: &str, ctx: &JobContext) -> Result<Said, String> {
    let value: Value = serde_json::from_str(line.trim_end())
        .map_err(|_| format!("wrote a line that is not JSON: {:?}", shorten(line)))?;
    let Value::Object(mut fields) = value else {
        return Err(format!(
            "wrote a line that is not an object: {:?}",
            shorten(line)
        ));
    };
    if fields.get("id").and_then(Value::as_str) != Some(id) {
        return Err(format!(
            "answered for another job than {id}: {:?}",
            shorten(line)
        ));
    }
    if let Some(output) = fields.remove("ok") {
        return Ok(Said::Done(Ok(output)));
    }
    if let Some(error) = fields.remove("error") {
        return Ok(Said::Done(Err(error_of(&error)?)));
    }
    if fields.get("parked").and_then(Value::as_bool) == Some(true) {
        return Ok(Said::Done(Err(JobError::retryable(
            "the handler said it parked, but no sleep or wait parked it",
        )
        .code("PROTOCOL"))));
    }
    if let Some(said) = durable(&mut fields, id, ctx)? {
        return Ok(said);
    }
    if let Some(snooze) = fields.remove("snooze") {
        let delay = match &snooze {
            Value::String(text) => parse_duration(text).map_err(|e| format!("snooze: {e}"))?,
            Value::Number(n) => Duration::from_secs_f64(n.as_f64().unwrap_or(0.0).max(0.0)),
            _ => return Err("snooze must be a duration such as \"30s\"".into()),
        };
        return Ok(Said::Done(Err(JobError::snooze(delay))));
    }
    let progress = fields.get("progress").and_then(Value::as_f64);
    let stage = fields.get("stage").and_then(Value::as_str);
    let applied = match (progress, stage) {
        (Some(p), Some(s)) => ctx.set_progress_and_stage(p, s),
        (Some(p), None) => ctx.set_progress(p),
        (None, Some(s)) => ctx.set_stage(s),
        (None, None) => Ok(()),
    };
    let costed = match fields.get("cost_cents").and_then(Value::as_i64) {
        Some(cents) => ctx.add_cost(cents),
        None => Ok(()),
    };
    if let Err(e) = applied.and(costed) {
        tracing::warn!(job_id = %id, error = %e, "jobq: report not applied");
    }
    Ok(Said::Report)
}

/// A durable step, sleep or wait the child asks for, and the answer it gets:
/// - `{"id", "step": NAME}` → `{"id", "step", "stored": OUTPUT}` when the step finished in an
///   earlier run (do not run it), else `{"id", "step", "run": true}`;
/// - `{"id", "step": NAME, "output": OUTPUT}` → `{"id", "step", "stored": OUTPUT}` once stored;
/// - `{"id", "sleep": SECONDS}` → `{"id", "slept": true}` once the time has come;
/// - `{"id", "wait": NAME, "timeout": SECONDS}` → `{"id", "event": PAYLOAD}` (null at the
///   timeout);
/// - a refusal → `{"id", "refused": {"message", "code", "permanent"}}` (the handler raises
///   it); a park → `{"id", "parked": true}`, and the child ends the run with the same line.
fn durable(
    fields: &mut Map<String, Value>,
    id: &str,
    ctx: &JobContext,
) -> Result<Option<Said>, String> {
    let seconds = |v: Option<&Value>| -> Result<Duration, String> {
        let s = v
            .and_then(Value::as_f64)
            .ok_or("a duration in seconds is needed")?;
        Duration::try_from_secs_f64(s.max(0.0)).map_err(|e| e.to_string())
    };
    let answer = |result: Result<Value, JobError>| match result {
        Ok(answer) => Said::Answer(answer),
        Err(e) if e.is_park() => Said::Parked(e),
        Err(e) => Said::Answer(json!({"id": id, "refused": {
            "message": e.message(), "code": e.error_code(), "permanent": e.is_permanent()}})),
    };
    if let Some(step) = fields.get("step") {
        let name = step.as_str().ok_or("step must be a name")?.to_string();
        let said = match fields.remove("output") {
            Some(output) => ctx
                .record_step(&name, &output)
                .map(|()| json!({"id": id, "step": name, "stored": output})),
            None => ctx.stored_step(&name).map(|stored| match stored {
                Some(output) => json!({"id": id, "step": name, "stored": output}),
                None => json!({"id": id, "step": name, "run": true}),
            }),
        };
        return Ok(Some(answer(said)));
    }
    if let Some(sleep) = fields.get("sleep") {
        let d = seconds(Some(sleep))?;
        return Ok(Some(answer(
            ctx.sleep_for(d).map(|()| json!({"id": id, "slept": true})),
        )));
    }
    if let Some(wait) = fields.get("wait") {
        let name = wait
            .as_str()
            .ok_or("wait must be an event name")?
            .to_string();
        let d = seconds(fields.get("timeout"))?;
        return Ok(Some(answer(
            ctx.wait_for_event(&name, d)
                .map(|payload| json!({"id": id, "event": payload})),
        )));
    }
    Ok(None)
}

/// The error of `{"error": {"message", "code"?, "permanent"?, "retry_after"?}}` (a bare
/// string is its message).
fn error_of(error: &Value) -> Result<JobError, String> {
    let (message, code, permanent, retry_after) = match error {
        Value::String(m) => (m.clone(), None, false, None),
        Value::Object(e) => (
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("the handler failed")
                .to_string(),
            e.get("code").and_then(Value::as_str).map(String::from),
            e.get("permanent").and_then(Value::as_bool).unwrap_or(false),
            e.get("retry_after").cloned(),
        ),
        _ => return Err("error must be an object with a message".into()),
    };
    let mut job_error = if permanent {
        JobError::permanent(message)
    } else {
        JobError::retryable(message)
    };
    if let Some(code) = code {
        job_error = job_error.code(code);
    }
    if let Some(Value::Object(e)) = Some(error)
        && let Some(detail) = e.get("detail").and_then(Value::as_str)
    {
        job_error = job_error.detail(detail);
    }
    match retry_after {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => {
            job_error = job_error
                .retry_after(parse_duration(&text).map_err(|e| format!("retry_after: {e}"))?);
        }
        Some(Value::Number(n)) => {
            job_error =
                job_error.retry_after(Duration::from_secs_f64(n.as_f64().unwrap_or(0.0).max(0.0)));
        }
        Some(_) => return Err("retry_after must be a duration such as \"30s\"".into()),
    }
    Ok(job_error)
}

/// The child's `{"id", "parked": true}`, ending a run that a sleep or a wait parked.
fn is_parked_line(line: &str, id: &str) -> bool {
    serde_json::from_str::<Value>(line.trim_end()).is_ok_and(|v| {
        v.get("id").and_then(Value::as_str) == Some(id) && v.get("parked") == Some(&json!(true))
    })
}

fn shorten(line: &str) -> String {
    let line = line.trim_end();
    match line.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

impl Handler for JsonlHandler {
    fn handle(&self, ctx: &JobContext) -> Result<Value, JobError> {
        announced(self.on_event.as_ref(), ctx, || self.run(ctx))
    }
}

impl JsonlHandler {
    fn run(&self, ctx: &JobContext) -> Result<Value, JobError> {
        let line = job_line(ctx)?;
        let mut child = self.child()?;
        if child
            .stdin
            .write_all(&line)
            .and_then(|()| child.stdin.flush())
            .is_err()
        {
            // It died idle (it is not yet running the job): a new one takes the job.
            child = Child::start(&self.command, &self.db)?;
            if child
                .stdin
                .write_all(&line)
                .and_then(|()| child.stdin.flush())
                .is_err()
            {
                return Err(child.ended("did not take the job"));
            }
        }
        child.jobs += 1;
        let id = ctx.id().as_str().to_string();
        let deadline = self.timeout.map(|t| Instant::now() + t);
        // A sleep or a wait that parked the job: the child's run ends with `parked`.
        let mut parked: Option<JobError> = None;
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(JobError::retryable(format!(
                    "killed after its timeout of {}",
                    crate::duration::format_duration(self.timeout.unwrap_or_default())
                ))
                .code("TIMEOUT"));
            }
            if ctx.is_cancelled() {
                return Err(JobError::retryable(
                    "the job was cancelled; its handler process was killed",
                )
                .code("CANCELLED"));
            }
            match child.lines.recv_timeout(Duration::from_millis(10)) {
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) | Ok(Err(_)) => {
                    return Err(child.ended("exited while running the job"));
                }
                Ok(Ok(line)) if line.trim().is_empty() => continue,
                Ok(Ok(line)) if parked.is_some() && is_parked_line(&line, &id) => {
                    self.give_back(child);
                    return Err(parked
                        .take()
                        .unwrap_or_else(|| JobError::retryable("parked twice").code("PROTOCOL")));
                }
                Ok(Ok(line)) => match read_line(&line, &id, ctx) {
                    Ok(Said::Report) => {}
                    Ok(Said::Answer(answer)) => child.tell(&answer)?,
                    Ok(Said::Parked(park)) => {
                        child.tell(&json!({"id": id, "parked": true}))?;
                        parked = Some(park);
                    }
                    Ok(Said::Done(result)) => {
                        self.give_back(child);
                        return result;
                    }
                    Err(breach) => {
                        let pid = child.process.id();
                        return Err(JobError::retryable(format!(
                            "the handler process {pid} broke the protocol: it {breach}"
                        ))
                        .code("PROTOCOL"));
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_their_fields() {
        let e =
            error_of(&json!({"message": "bad input", "code": "BAD", "permanent": true})).unwrap();
        assert_eq!(
            (e.message(), e.error_code(), e.is_permanent()),
            ("bad input", Some("BAD"), true)
        );
        let e = error_of(&json!({"message": "later", "retry_after": "5s"})).unwrap();
        assert_eq!(e.requested_delay(), Some(Duration::from_secs(5)));
        let e = error_of(&json!({"message": "later", "retry_after": 2.5})).unwrap();
        assert_eq!(e.requested_delay(), Some(Duration::from_millis(2500)));
        let e = error_of(&json!("plain")).unwrap();
        assert_eq!((e.message(), e.is_permanent()), ("plain", false));
        assert!(error_of(&json!({"message": "x", "retry_after": []})).is_err());
        assert!(error_of(&json!(3)).is_err());
    }
}

//! `_jobq.Worker` and `_jobq.Job`: the library's worker pool running Python handlers on its
//! own handler threads. The pool's claims, heartbeats, timeouts, completions and stale
//! release stay in Rust and never take the GIL; a handler's call takes it for the call
//! alone. A handler that holds the GIL for long (CPU work) keeps its lease: the heartbeat
//! thread does not need it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::Value;

use crate::errors::{OrPy, invalid};
use crate::queue::Queue;

/// The job a handler runs: what it is, and its line back to the queue (progress, stage,
/// cost), each report written at once under the job's lease.
#[pyclass(frozen, module = "jobq._jobq")]
pub struct Job {
    ctx: jobq::JobContext,
    /// The park a sleep or a wait of this run returned, handed to the pool when the
    /// handler's wrapper answers `("park",)`.
    parked: Mutex<Option<jobq::JobError>>,
}

impl Job {
    fn new(ctx: jobq::JobContext) -> Job {
        Job {
            ctx,
            parked: Mutex::new(None),
        }
    }

    /// A step's, a sleep's or a wait's error as the handler sees it: a park is kept for the
    /// pool and raised as `jobq._errors.Parked` (a `BaseException`, so that `except
    /// Exception` does not swallow it); a refusal as `jobq.Permanent` or `jobq.Retry`, with
    /// its code.
    fn raise(&self, py: Python<'_>, error: jobq::JobError) -> PyErr {
        let message = error.message().to_string();
        if error.is_park() {
            *self.parked.lock().unwrap_or_else(PoisonError::into_inner) = Some(error);
            return crate::errors::exception(py, "Parked", &message);
        }
        let class = if error.is_permanent() {
            "Permanent"
        } else {
            "Retry"
        };
        let made = py.import("jobq").and_then(|m| {
            let kwargs = PyDict::new(py);
            kwargs.set_item("code", error.error_code())?;
            m.getattr(class)?.call((message,), Some(&kwargs))
        });
        match made {
            Ok(instance) => PyErr::from_value(instance),
            Err(e) => e,
        }
    }
}

#[pymethods]
impl Job {
    /// The job's id.
    #[getter]
    fn id(&self) -> String {
        self.ctx.id().to_string()
    }

    /// The job's kind.
    #[getter]
    fn kind(&self) -> String {
        self.ctx.kind().to_string()
    }

    /// This attempt (1 for the first).
    #[getter]
    fn attempt(&self) -> u32 {
        self.ctx.attempt()
    }

    /// The attempts it may take.
    #[getter]
    fn max_attempts(&self) -> u32 {
        self.ctx.job().max_attempts
    }

    /// Its queue.
    #[getter]
    fn queue(&self) -> String {
        self.ctx.job().queue.clone()
    }

    /// Its owner.
    #[getter]
    fn owner(&self) -> Option<String> {
        self.ctx.job().owner.clone()
    }

    /// Its group.
    #[getter]
    fn group(&self) -> Option<String> {
        self.ctx.job().group_id.clone()
    }

    /// The input, as JSON text.
    #[getter]
    fn input_json(&self) -> String {
        self.ctx.input_json().to_string()
    }

    /// True once the job was cancelled (or taken from this worker, or timed out): a long
    /// handler should stop.
    #[getter]
    fn cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }

    /// Sets the progress, 0 to 1, and the stage when given.
    #[pyo3(signature = (fraction, stage=None))]
    fn progress(&self, py: Python<'_>, fraction: f64, stage: Option<String>) -> PyResult<()> {
        py.detach(|| match &stage {
            Some(s) => self.ctx.set_progress_and_stage(fraction, s),
            None => self.ctx.set_progress(fraction),
        })
        .or_py(py)
    }

    /// Sets the stage.
    fn stage(&self, py: Python<'_>, name: String) -> PyResult<()> {
        py.detach(|| self.ctx.set_stage(&name)).or_py(py)
    }

    /// Adds to the job's cost, in cents.
    fn cost(&self, py: Python<'_>, cents: i64) -> PyResult<()> {
        py.detach(|| self.ctx.add_cost(cents)).or_py(py)
    }

    /// Refreshes the heartbeat (a report does too).
    fn heartbeat(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.ctx.heartbeat()).or_py(py)
    }

    /// The stored output of the step `name` (JSON text) if it finished in an earlier run;
    /// marks the name used in this run.
    fn step_begin(&self, py: Python<'_>, name: String) -> PyResult<Option<String>> {
        match py.detach(|| self.ctx.stored_step(&name)) {
            Ok(stored) => Ok(stored.map(|v| v.to_string())),
            Err(e) => Err(self.raise(py, e)),
        }
    }

    /// Stores the output (JSON text) of the step `name` begun in this run.
    fn step_end(&self, py: Python<'_>, name: String, output_json: String) -> PyResult<()> {
        let output: Value =
            serde_json::from_str(&output_json).map_err(|e| invalid(py, "output", e.to_string()))?;
        py.detach(|| self.ctx.record_step(&name, &output))
            .map_err(|e| self.raise(py, e))
    }

    /// Sleeps `seconds` (stored at the first call): returns once the time has come, and
    /// until then raises `Parked`.
    fn sleep(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let d = Duration::try_from_secs_f64(seconds.max(0.0))
            .map_err(|e| invalid(py, "duration", e.to_string()))?;
        py.detach(|| self.ctx.sleep_for(d))
            .map_err(|e| self.raise(py, e))
    }

    /// Waits for the event `name` at most `timeout` seconds: its payload (JSON text), `None`
    /// at the timeout, and until then raises `Parked`.
    fn wait_for_event(
        &self,
        py: Python<'_>,
        name: String,
        timeout: f64,
    ) -> PyResult<Option<String>> {
        let d = Duration::try_from_secs_f64(timeout.max(0.0))
            .map_err(|e| invalid(py, "timeout", e.to_string()))?;
        match py.detach(|| self.ctx.wait_for_event(&name, d)) {
            Ok(payload) => Ok(payload.map(|v| v.to_string())),
            Err(e) => Err(self.raise(py, e)),
        }
    }

    /// The outputs of the jobs it waits for, by flow ref (or id), as JSON text.
    fn dependency_outputs_json(&self, py: Python<'_>) -> PyResult<String> {
        let outputs = py.detach(|| self.ctx.dependencies()).or_py(py)?;
        serde_json::to_string(&outputs).map_err(|e| invalid(py, "outputs", e.to_string()))
    }
}

/// What a handler's Python wrapper answers: `("ok", output_json)`, `("error", message,
/// code, permanent, retry_after_seconds, detail)` or `("snooze", seconds)`.
fn outcome(answer: &Bound<'_, PyAny>) -> Result<Value, jobq::JobError> {
    let bad = |why: String| jobq::JobError::retryable(why).code("HANDLER_WRAPPER");
    let tuple = answer
        .cast::<PyTuple>()
        .map_err(|_| bad("the handler's wrapper answered something else than a tuple".into()))?;
    let tag: String = tuple
        .get_item(0)
        .and_then(|t| t.extract())
        .map_err(|e| bad(e.to_string()))?;
    match tag.as_str() {
        "ok" => {
            let text: String = tuple
                .get_item(1)
                .and_then(|t| t.extract())
                .map_err(|e| bad(e.to_string()))?;
            serde_json::from_str(&text).map_err(|e| {
                jobq::JobError::permanent(format!("the handler's output is not JSON: {e}"))
                    .code("OUTPUT")
            })
        }
        "error" => {
            let field = |i: usize| tuple.get_item(i).map_err(|e| bad(e.to_string()));
            let message: String = field(1)?
                .extract::<String>()
                .map_err(|e| bad(e.to_string()))?;
            let code = field(2)?
                .extract::<Option<String>>()
                .map_err(|e| bad(e.to_string()))?;
            let permanent = field(3)?
                .extract::<bool>()
                .map_err(|e| bad(e.to_string()))?;
            let after = field(4)?
                .extract::<Option<f64>>()
                .map_err(|e| bad(e.to_string()))?;
            let detail = field(5)?
                .extract::<Option<String>>()
                .map_err(|e| bad(e.to_string()))?;
            let mut error = if permanent {
                jobq::JobError::permanent(message)
            } else {
                jobq::JobError::retryable(message)
            };
            if let Some(code) = code {
                error = error.code(code);
            }
            if let Some(s) = after {
                error = error.retry_after(Duration::from_secs_f64(s.max(0.0)));
            }
            if let Some(detail) = detail {
                error = error.detail(detail);
            }
            Err(error)
        }
        "park" => Err(jobq::JobError::retryable(
            "the handler answered a park without a sleep or a wait",
        )
        .code("PARKED")),
        "snooze" => {
            let seconds: f64 = tuple
                .get_item(1)
                .and_then(|t| t.extract())
                .map_err(|e| bad(e.to_string()))?;
            Err(jobq::JobError::snooze(Duration::from_secs_f64(
                seconds.max(0.0),
            )))
        }
        other => Err(bad(format!("the handler's wrapper answered {other:?}"))),
    }
}

/// Set once the interpreter begins to exit (by the package's `atexit` hook): a handler
/// thread that ends after that leaves its Python thread state to the interpreter's own
/// clean-up instead of taking the GIL of an interpreter that is going away.
static EXITING: AtomicBool = AtomicBool::new(false);

/// Tells the extension that the interpreter is exiting.
#[pyfunction]
pub(crate) fn interpreter_exiting() {
    EXITING.store(true, Ordering::SeqCst);
}

/// The Python thread state of one of the pool's handler threads, kept from its first
/// handler call to the thread's end. Without it every call would make a thread state and
/// throw it away (on CPython 3.11, an mmap and a munmap each time, a third of the time of a
/// no-op job on 4 threads).
struct KeptThreadState {
    gstate: pyo3::ffi::PyGILState_STATE,
    tstate: *mut pyo3::ffi::PyThreadState,
}

impl Drop for KeptThreadState {
    fn drop(&mut self) {
        if !EXITING.load(Ordering::SeqCst) {
            // SAFETY: the state was made on this thread by `keep_thread_state` and saved
            // there; restoring it and releasing it is the pair that ends it.
            unsafe {
                pyo3::ffi::PyEval_RestoreThread(self.tstate);
                pyo3::ffi::PyGILState_Release(self.gstate);
            }
        }
    }
}

thread_local! {
    static KEPT: RefCell<Option<KeptThreadState>> = const { RefCell::new(None) };
}

/// Gives this thread a Python thread state for good, if it has none (a thread of the
/// library's pool, not one Python made). Called without the GIL held.
fn keep_thread_state() {
    KEPT.with(|kept| {
        if kept.borrow().is_some() {
            return;
        }
        // SAFETY: the interpreter is initialised (this module is loaded); the thread has no
        // thread state and does not hold the GIL, so Ensure makes and takes one, and
        // SaveThread releases the GIL while keeping the state for the next attach.
        unsafe {
            if !pyo3::ffi::PyGILState_GetThisThreadState().is_null() {
                return;
            }
            let gstate = pyo3::ffi::PyGILState_Ensure();
            let tstate = pyo3::ffi::PyEval_SaveThread();
            *kept.borrow_mut() = Some(KeptThreadState { gstate, tstate });
        }
    });
}

/// Calls a handler's Python wrapper for one job, holding the GIL for the call alone.
fn call(wrapper: &Py<PyAny>, ctx: &jobq::JobContext) -> Result<Value, jobq::JobError> {
    keep_thread_state();
    Python::attach(|py| {
        let job = Py::new(py, Job::new(ctx.clone()))
            .map_err(|e| jobq::JobError::retryable(e.to_string()))?;
        match wrapper.call1(py, (job.clone_ref(py),)) {
            Ok(answer) => match outcome(answer.bind(py)) {
                Err(e) if e.error_code() == Some("PARKED") => {
                    let parked = job
                        .get()
                        .parked
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    Err(parked.unwrap_or(e))
                }
                other => other,
            },
            Err(e) => Err(
                jobq::JobError::retryable(format!("the handler's wrapper failed: {e}"))
                    .code("HANDLER_WRAPPER"),
            ),
        }
    })
}

/// Registers each `(kind, wrapper, timeout seconds or None)` on `builder`.
fn with_handlers(
    py: Python<'_>,
    mut builder: jobq::WorkerPoolBuilder,
    handlers: Vec<(String, Py<PyAny>, Option<f64>)>,
) -> PyResult<jobq::WorkerPoolBuilder> {
    for (kind, wrapper, timeout) in handlers {
        if let Some(s) = timeout {
            builder = builder.job_timeout(&kind, seconds(py, "timeout", s)?);
        }
        builder = builder.handler(kind, move |ctx: &jobq::JobContext| call(&wrapper, ctx));
    }
    Ok(builder)
}

/// Runs the ready jobs of `queues` (the default queue when empty) one by one on the
/// calling thread, with no other threads, and returns what happened to each as `(id, kind,
/// attempt, status, output_json or None, error message or None, error code or None)`:
/// the test mode.
#[pyfunction]
#[pyo3(signature = (queue, handlers, queues=Vec::new()))]
#[allow(clippy::type_complexity)]
pub(crate) fn drain_inline(
    py: Python<'_>,
    queue: &Queue,
    handlers: Vec<(String, Py<PyAny>, Option<f64>)>,
    queues: Vec<String>,
) -> PyResult<
    Vec<(
        String,
        String,
        u32,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    )>,
> {
    if handlers.is_empty() {
        return Err(invalid(
            py,
            "handlers",
            "a drain needs at least one handler",
        ));
    }
    let mut builder = jobq::WorkerPool::builder(&queue.inner);
    if !queues.is_empty() {
        builder = builder.queues(queues);
    }
    builder = with_handlers(py, builder, handlers)?;
    let outcomes = py.detach(|| builder.drain_inline()).or_py(py)?;
    Ok(outcomes
        .into_iter()
        .map(|o| {
            let (output, message, code) = match &o.result {
                Ok(v) => (Some(v.to_string()), None, None),
                Err(e) => (
                    None,
                    Some(e.message().to_string()),
                    e.error_code().map(str::to_string),
                ),
            };
            (
                o.job_id.to_string(),
                o.kind,
                o.attempt,
                o.status.to_string(),
                output,
                message,
                code,
            )
        })
        .collect())
}

/// A running worker pool: `join` waits for it to stop (in slices, so that signals are
/// seen between them), `stop` and `stop_now` stop it.
#[pyclass(frozen, module = "jobq._jobq")]
pub struct Worker {
    worker_id: String,
    stop: jobq::StopHandle,
    /// Closed when the pool has stopped (its summary stored first).
    done: Receiver<()>,
    summary: Arc<Mutex<Option<jobq::Summary>>>,
}

fn seconds(py: Python<'_>, field: &'static str, s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| invalid(py, field, e.to_string()))
}

#[pymethods]
impl Worker {
    /// Starts a pool on `queue` running `handlers`: a list of `(kind, wrapper, timeout
    /// seconds or None)`.
    #[new]
    #[pyo3(signature = (queue, handlers, *, concurrency=4, queues=Vec::new(), poll_interval=1.0,
                        heartbeat_interval=None, grace=30.0, once=false, limit=None,
                        prefetch=None, worker_id=None, heartbeat_timeout=None,
                        maintenance_interval=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        queue: &Queue,
        handlers: Vec<(String, Py<PyAny>, Option<f64>)>,
        concurrency: usize,
        queues: Vec<String>,
        poll_interval: f64,
        heartbeat_interval: Option<f64>,
        grace: f64,
        once: bool,
        limit: Option<u64>,
        prefetch: Option<usize>,
        worker_id: Option<String>,
        heartbeat_timeout: Option<f64>,
        maintenance_interval: Option<f64>,
    ) -> PyResult<Worker> {
        if handlers.is_empty() {
            return Err(invalid(
                py,
                "handlers",
                "a worker needs at least one handler",
            ));
        }
        let mut builder = jobq::WorkerPool::builder(&queue.inner)
            .concurrency(concurrency)
            .poll_interval(seconds(py, "poll_interval", poll_interval)?)
            .shutdown_grace(seconds(py, "grace", grace)?)
            .stop_when_idle(once);
        if !queues.is_empty() {
            builder = builder.queues(queues);
        }
        if let Some(s) = heartbeat_interval {
            builder = builder.heartbeat_interval(seconds(py, "heartbeat_interval", s)?);
        }
        if let Some(n) = limit {
            builder = builder.limit(n);
        }
        if let Some(n) = prefetch {
            builder = builder.prefetch(n);
        }
        if let Some(id) = worker_id {
            builder = builder.worker_id(id);
        }
        if let Some(s) = heartbeat_timeout {
            builder = builder.stale_timeouts(
                jobq::StaleTimeouts::none().heartbeat_timeout(seconds(py, "heartbeat_timeout", s)?),
            );
        }
        if let Some(s) = maintenance_interval {
            builder = builder.maintenance_interval(Some(seconds(py, "maintenance_interval", s)?));
        }
        builder = with_handlers(py, builder, handlers)?;
        let pool = py.detach(|| builder.start()).or_py(py)?;
        let worker_id = pool.worker_id().to_string();
        let stop = pool.stop_handle();
        let summary = Arc::new(Mutex::new(None));
        let (tx, done) = crossbeam_channel::bounded::<()>(0);
        let stored = Arc::clone(&summary);
        std::thread::Builder::new()
            .name("jobq-py-worker".into())
            .spawn(move || {
                let s = pool.wait();
                *stored.lock().unwrap_or_else(PoisonError::into_inner) = Some(s);
                drop(tx);
            })
            .map_err(|e| invalid(py, "worker", e.to_string()))?;
        Ok(Worker {
            worker_id,
            stop,
            done,
            summary,
        })
    }

    /// The worker's id (`host-pid-random`).
    #[getter]
    fn worker_id(&self) -> String {
        self.worker_id.clone()
    }

    /// Waits up to `timeout` seconds for the pool to stop; its summary (a dict), or `None`
    /// while it runs on.
    fn join<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let finished = || *self.summary.lock().unwrap_or_else(PoisonError::into_inner);
        // The lock is never held while the GIL is released; the waiter thread stores the
        // summary before its channel closes, so every joiner finds it.
        let s = match finished() {
            Some(s) => s,
            None => {
                let slice = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
                match py.detach(|| self.done.recv_timeout(slice)) {
                    Err(RecvTimeoutError::Timeout) => return Ok(None),
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => match finished() {
                        Some(s) => s,
                        None => return Err(invalid(py, "worker", "the worker's thread ended")),
                    },
                }
            }
        };
        let dict = PyDict::new(py);
        dict.set_item("processed", s.processed)?;
        dict.set_item("succeeded", s.succeeded)?;
        dict.set_item("failed", s.failed)?;
        dict.set_item("retried", s.retried)?;
        dict.set_item("released", s.released)?;
        dict.set_item("snoozed", s.snoozed)?;
        dict.set_item("parked", s.parked)?;
        dict.set_item("attempts", s.attempts)?;
        dict.set_item("lost", s.lost)?;
        Ok(Some(dict))
    }

    /// Stops claiming; running jobs finish within the grace period, the rest are released.
    fn stop(&self) {
        self.stop.stop();
    }

    /// Stops now: running jobs are released (their handlers abandoned).
    fn stop_now(&self) {
        self.stop.stop_now();
    }
}

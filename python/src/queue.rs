//! `_jobq.Queue`: a handle on one database, every call one call into the library with the
//! GIL released. Documents come back as JSON text (the `--json` documents of the command
//! line), which the Python layer turns into dicts.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde_json::Value;

use crate::errors::{OrPy, invalid, to_py};

/// A handle on a jobq database (a SQLite file, or a `postgres://` URL).
#[pyclass(frozen, module = "jobq._jobq")]
pub struct Queue {
    pub(crate) inner: jobq::Queue,
}

fn json<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| invalid(py, "document", e.to_string()))
}

fn job_id(py: Python<'_>, id: &str) -> PyResult<jobq::JobId> {
    jobq::JobId::parse(id).map_err(|_| {
        to_py(
            py,
            jobq::Error::NotFound {
                what: "job",
                id: id.to_string(),
            },
        )
    })
}

fn millis(ms: i64) -> Duration {
    Duration::from_millis(ms.max(0) as u64)
}

/// A limit of `set_queue_limits`: absent (unchanged), `null` (cleared) or a number.
fn limit(py: Python<'_>, doc: &Value, field: &'static str) -> PyResult<Option<Option<u32>>> {
    match doc.get(field) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(|n| Some(Some(n)))
            .ok_or_else(|| invalid(py, field, "must be a whole number from 0, or None")),
    }
}

/// What an enqueue answers Python: the id, the status, and whether the key named a job.
pub(crate) fn enqueued_tuple(e: jobq::Enqueued) -> (String, String, bool) {
    (
        e.job_id.to_string(),
        e.status.to_string(),
        e.already_existed,
    )
}

/// One option of [`new_job`] set on `job`; a value of the wrong type is refused naming
/// `field`.
fn set_option(
    py: Python<'_>,
    job: jobq::NewJob,
    name: &str,
    field: &'static str,
    value: &Bound<'_, PyAny>,
) -> PyResult<jobq::NewJob> {
    fn get<'py, T: for<'a> FromPyObject<'a, 'py>>(
        py: Python<'py>,
        field: &'static str,
        value: &Bound<'py, PyAny>,
    ) -> PyResult<T> {
        value.extract::<T>().map_err(|_| {
            let shown = value
                .repr()
                .map(|r| r.to_string())
                .unwrap_or_else(|_| "the value".into());
            invalid(py, field, format!("{shown} is not of the right type"))
        })
    }
    Ok(match name {
        "queue" => job.queue(get::<String>(py, field, value)?),
        "priority" => job.priority(get(py, field, value)?),
        "delay_ms" => job.run_after(millis(get(py, field, value)?)),
        "run_at_ms" => job.run_at(jobq::Timestamp::from_millis(get(py, field, value)?)),
        "max_attempts" => job.max_attempts(get(py, field, value)?),
        "key" => job.idempotency_key(get::<String>(py, field, value)?),
        "unique_for_ms" => job.unique_for(millis(get(py, field, value)?)),
        "unique_while_active" if get::<bool>(py, field, value)? => job.unique_while_active(),
        "unique_while_active" => job,
        "after" => {
            let mut job = job;
            for id in get::<Vec<String>>(py, field, value)? {
                let id: jobq::JobId = id
                    .parse()
                    .map_err(|_| invalid(py, "after", format!("{id:?} is not a job id")))?;
                job = job.after(&id);
            }
            job
        }
        "on_dependency_failure" => match get::<String>(py, field, value)?.as_str() {
            "cancel" => job,
            "run" => job.on_dependency_failure(jobq::OnDependencyFailure::Run),
            other => {
                return Err(invalid(
                    py,
                    "on_dependency_failure",
                    format!("{other:?} is not cancel or run"),
                ));
            }
        },
        "concurrency_key" => job.concurrency_key(get::<String>(py, field, value)?),
        "group" => job.group(get::<String>(py, field, value)?),
        "cost_cents" => job.cost_cents(get(py, field, value)?),
        "external_id" => job.external_id(get::<String>(py, field, value)?),
        _ => job.owner(get::<String>(py, field, value)?),
    })
}

/// A job from its kind, its input (JSON text) and its options by name: `queue`, `priority`,
/// `delay_ms`, `run_at_ms`, `max_attempts`, `key`, `unique_for_ms`, `unique_while_active`,
/// `after` (ids), `on_dependency_failure`, `concurrency_key`, `group`, `cost_cents`,
/// `external_id`, `owner`. An unknown option is refused, naming it.
pub(crate) fn new_job(
    py: Python<'_>,
    kind: String,
    input_json: Option<String>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<jobq::NewJob> {
    let mut job = jobq::NewJob::new(kind);
    if let Some(input) = input_json {
        job = job.input_json(input);
    }
    let Some(options) = options else {
        return Ok(job);
    };
    for (name, value) in options.iter() {
        if value.is_none() {
            continue;
        }
        let name: String = name.extract()?;
        // The options' names as the library's fields, so that a bad value is named.
        let field: &'static str = match name.as_str() {
            "queue" => "queue",
            "priority" => "priority",
            "delay_ms" => "run_after",
            "run_at_ms" => "run_after",
            "max_attempts" => "max_attempts",
            "key" => "key",
            "unique_for_ms" => "unique_for",
            "unique_while_active" => "unique_while_active",
            "after" => "after",
            "on_dependency_failure" => "on_dependency_failure",
            "concurrency_key" => "concurrency_key",
            "group" => "group",
            "cost_cents" => "cost_cents",
            "external_id" => "external_id",
            "owner" => "owner",
            other => return Err(invalid(py, "options", format!("unknown option {other:?}"))),
        };
        job = set_option(py, job, &name, field, &value)?;
    }
    Ok(job)
}

#[pymethods]
impl Queue {
    /// Opens (creating and migrating as needed) the database `db`.
    #[new]
    #[pyo3(signature = (db, owner=None, max_snoozes=None, max_schedules_per_owner=None, default_max_attempts=None))]
    fn new(
        py: Python<'_>,
        db: &str,
        owner: Option<String>,
        max_snoozes: Option<u32>,
        max_schedules_per_owner: Option<usize>,
        default_max_attempts: Option<u32>,
    ) -> PyResult<Queue> {
        let db = db.to_string();
        let opened = py.detach(move || {
            let mut builder = jobq::Queue::builder(&db);
            if let Some(n) = max_snoozes {
                builder = builder.max_snoozes(n);
            }
            if let Some(n) = max_schedules_per_owner {
                builder = builder.max_schedules_per_owner(n);
            }
            if let Some(n) = default_max_attempts {
                builder = builder.default_max_attempts(n);
            }
            builder.open()
        });
        let queue = opened.or_py(py)?;
        Ok(Queue {
            inner: match owner {
                Some(owner) => queue.scoped(owner),
                None => queue,
            },
        })
    }

    /// The same database, seeing and changing only `owner`'s jobs.
    fn scoped(&self, owner: String) -> Queue {
        Queue {
            inner: self.inner.scoped(owner),
        }
    }

    /// The database as given (a URL with its password).
    #[getter]
    fn path(&self) -> String {
        self.inner.path().to_string_lossy().into_owned()
    }

    /// The database for people to read (a URL without its password).
    #[getter]
    fn location(&self) -> String {
        self.inner.location().to_string()
    }

    /// The owner this handle is scoped to.
    #[getter]
    fn owner(&self) -> Option<String> {
        self.inner.owner().map(str::to_string)
    }

    /// `sqlite` or `postgres`.
    #[getter]
    fn engine(&self) -> &'static str {
        self.inner.engine_name()
    }

    /// Enqueues a job; returns its id, its status and whether its key named a job already.
    /// `options` holds the enqueue's options by their names (durations in milliseconds).
    #[pyo3(signature = (kind, input_json=None, options=None))]
    fn enqueue(
        &self,
        py: Python<'_>,
        kind: String,
        input_json: Option<String>,
        options: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<(String, String, bool)> {
        let job = new_job(py, kind, input_json, options)?;
        let enqueued = py.detach(|| self.inner.enqueue(job)).or_py(py)?;
        Ok(enqueued_tuple(enqueued))
    }

    /// Enqueues many jobs in one transaction, all of them or none: `jobs` is a list of
    /// `(kind, input_json, options)`; returns each one's `(id, status, already_existed)`.
    fn enqueue_many(
        &self,
        py: Python<'_>,
        jobs: Vec<(String, Option<String>, Option<Bound<'_, PyDict>>)>,
    ) -> PyResult<Vec<(String, String, bool)>> {
        let jobs = jobs
            .into_iter()
            .map(|(kind, input, options)| new_job(py, kind, input, options.as_ref()))
            .collect::<PyResult<Vec<_>>>()?;
        let enqueued = py.detach(|| self.inner.enqueue_many(jobs)).or_py(py)?;
        Ok(enqueued.into_iter().map(enqueued_tuple).collect())
    }

    /// Releases the running jobs whose heartbeat is older than `heartbeat_timeout` seconds
    /// (their worker died or hangs), as `jobq release-stale` does; returns how many.
    fn release_stale(&self, py: Python<'_>, heartbeat_timeout: f64) -> PyResult<usize> {
        let timeout = Duration::try_from_secs_f64(heartbeat_timeout)
            .map_err(|e| invalid(py, "heartbeat_timeout", e.to_string()))?;
        let timeouts = jobq::StaleTimeouts::none().heartbeat_timeout(timeout);
        py.detach(|| self.inner.release_stale(&timeouts)).or_py(py)
    }

    /// The job (the document of `jobq show --json`).
    fn get(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        let job = py.detach(|| self.inner.get(&id)).or_py(py)?;
        json(py, &job)
    }

    /// The job's status as jobq shows it (`scheduled` for one whose time lies ahead).
    fn status(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        let job = py.detach(|| self.inner.get(&id)).or_py(py)?;
        Ok(job.shown_status().to_string())
    }

    /// A page of jobs, newest first (the document of `jobq list --json`).
    #[pyo3(signature = (status=None, kind=None, queue=None, group=None, owner=None,
                        search=None, limit=50, after=None))]
    #[allow(clippy::too_many_arguments)]
    fn list(
        &self,
        py: Python<'_>,
        status: Option<String>,
        kind: Option<String>,
        queue: Option<String>,
        group: Option<String>,
        owner: Option<String>,
        search: Option<String>,
        limit: usize,
        after: Option<String>,
    ) -> PyResult<String> {
        let mut filter = jobq::JobFilter::new().limit(limit);
        match status.as_deref() {
            None => {}
            Some("scheduled") => filter = filter.scheduled(),
            Some(s) => filter = filter.status(s.parse().or_py(py)?),
        }
        if let Some(k) = kind {
            filter = filter.kind(k);
        }
        if let Some(q) = queue {
            filter = filter.queue(q);
        }
        if let Some(g) = group {
            filter = filter.group(g);
        }
        if let Some(o) = owner {
            filter = filter.owner(o);
        }
        if let Some(s) = search {
            filter = filter.search(s);
        }
        if let Some(a) = after {
            filter = filter.after(a);
        }
        let page = py.detach(|| self.inner.list(&filter)).or_py(py)?;
        json(py, &page)
    }

    /// Counts, health and summary (the document of `jobq stats --json`).
    fn stats(&self, py: Python<'_>) -> PyResult<String> {
        let overview = py
            .detach(|| {
                self.inner.overview(
                    &jobq::StatsFilter::new(),
                    &jobq::HealthThresholds::default(),
                )
            })
            .or_py(py)?;
        json(py, &overview)
    }

    /// Counts and latencies over time (`jobq stats --series --json`): window and step in
    /// seconds.
    #[pyo3(signature = (window, step, queue=None, kind=None))]
    fn series(
        &self,
        py: Python<'_>,
        window: f64,
        step: f64,
        queue: Option<String>,
        kind: Option<String>,
    ) -> PyResult<String> {
        let seconds = |v: f64, name: &'static str| {
            std::time::Duration::try_from_secs_f64(v)
                .map_err(|_| crate::errors::invalid(py, name, format!("{v} is not a duration")))
        };
        let mut query = jobq::SeriesQuery::new()
            .window(seconds(window, "window")?)
            .step(seconds(step, "step")?);
        if let Some(q) = queue {
            query = query.queue(q);
        }
        if let Some(k) = kind {
            query = query.kind(k);
        }
        let series = py.detach(|| self.inner.series(&query)).or_py(py)?;
        json(py, &series)
    }

    /// Cancels a job; returns the status it had.
    fn cancel(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        Ok(py.detach(|| self.inner.cancel(&id)).or_py(py)?.to_string())
    }

    /// Puts a failed or cancelled job back in the queue; returns the status it had.
    fn retry(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        Ok(py.detach(|| self.inner.retry(&id)).or_py(py)?.to_string())
    }

    /// Puts a failed or cancelled job back in the queue, forgetting its stored steps;
    /// returns the status it had.
    fn retry_from_scratch(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        Ok(py
            .detach(|| self.inner.retry_from_scratch(&id))
            .or_py(py)?
            .to_string())
    }

    /// Stores an event (payload as JSON text) and wakes the jobs waiting for it; returns
    /// `(id, woken)`.
    fn emit_event(&self, py: Python<'_>, name: &str, payload_json: &str) -> PyResult<(i64, usize)> {
        let payload: Value = serde_json::from_str(payload_json)
            .map_err(|e| invalid(py, "payload", e.to_string()))?;
        let emitted = py
            .detach(|| self.inner.emit_event(name, payload))
            .or_py(py)?;
        Ok((emitted.id, emitted.woken))
    }

    /// The stored steps of a job, as JSON text.
    fn steps(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        let steps = py.detach(|| self.inner.steps(&id)).or_py(py)?;
        json(py, &steps)
    }

    /// Deletes a job that is not running; returns the status it had.
    fn delete(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        Ok(py.detach(|| self.inner.delete(&id)).or_py(py)?.to_string())
    }

    /// Waits up to `timeout` seconds for the job to finish; the job, or `None` when it has
    /// not finished by then. (The Python layer waits in slices, checking for signals.)
    fn wait(&self, py: Python<'_>, id: &str, timeout: f64) -> PyResult<Option<String>> {
        let id = job_id(py, id)?;
        let slice = Duration::from_secs_f64(timeout.clamp(0.0, 3600.0));
        match py.detach(|| self.inner.wait(&id, slice)) {
            Ok(job) => json(py, &job).map(Some),
            Err(jobq::Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(to_py(py, e)),
        }
    }

    /// The outputs of the job's dependencies, by flow ref (or id), as JSON.
    fn dependency_outputs(&self, py: Python<'_>, id: &str) -> PyResult<String> {
        let id = job_id(py, id)?;
        let outputs = py.detach(|| self.inner.dependency_outputs(&id)).or_py(py)?;
        json(py, &outputs)
    }

    /// Submits a flow written as the JSON of `POST /api/flows`; returns `{"group_id",
    /// "jobs", "already_existed"}` as JSON.
    fn submit_flow(&self, py: Python<'_>, flow_json: &str) -> PyResult<String> {
        let document: Value =
            serde_json::from_str(flow_json).map_err(|e| invalid(py, "flow", e.to_string()))?;
        let flow = jobq::http::parse_flow(&document).or_py(py)?;
        let created = py.detach(|| self.inner.submit_flow(flow)).or_py(py)?;
        json(py, &created)
    }

    /// Adds (or with `replace`, replaces) a schedule; returns it as JSON.
    #[pyo3(signature = (name, kind, *, cron=None, every_ms=None, input_json=None, queue=None,
                        priority=0, max_attempts=None, timezone=None, catch_up=None,
                        owner=None, replace=false))]
    #[allow(clippy::too_many_arguments)]
    fn add_schedule(
        &self,
        py: Python<'_>,
        name: String,
        kind: String,
        cron: Option<String>,
        every_ms: Option<i64>,
        input_json: Option<String>,
        queue: Option<String>,
        priority: i32,
        max_attempts: Option<u32>,
        timezone: Option<String>,
        catch_up: Option<String>,
        owner: Option<String>,
        replace: bool,
    ) -> PyResult<String> {
        let rule = match (cron, every_ms) {
            (Some(c), None) => jobq::Rule::Cron(c),
            (None, Some(ms)) => jobq::Rule::Every(millis(ms)),
            _ => return Err(invalid(py, "rule", "give cron or every, one of them")),
        };
        let mut s = jobq::NewSchedule::new(name, rule, kind)
            .priority(priority)
            .replace(replace);
        if let Some(input) = input_json {
            let value: Value =
                serde_json::from_str(&input).map_err(|e| invalid(py, "input", e.to_string()))?;
            s = s.input(value);
        }
        if let Some(q) = queue {
            s = s.queue(q);
        }
        if let Some(n) = max_attempts {
            s = s.max_attempts(n);
        }
        if let Some(tz) = timezone {
            s = s.timezone(tz);
        }
        if let Some(c) = catch_up {
            s = s.catch_up(c.parse().or_py(py)?);
        }
        if let Some(o) = owner {
            s = s.owner(o);
        }
        let added = py.detach(|| self.inner.add_schedule(s)).or_py(py)?;
        json(py, &added)
    }

    /// Every schedule this handle sees, as JSON.
    fn schedules(&self, py: Python<'_>) -> PyResult<String> {
        let list = py.detach(|| self.inner.schedules()).or_py(py)?;
        json(py, &list)
    }

    /// Removes a schedule.
    fn remove_schedule(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        py.detach(|| self.inner.remove_schedule(name)).or_py(py)
    }

    /// Pauses (`"pause"`), resumes (`"resume"`) or runs now (`"run"`) a schedule; returns the
    /// schedule, or for a run the job, as JSON.
    fn schedule_action(&self, py: Python<'_>, name: &str, action: &str) -> PyResult<String> {
        match action {
            "pause" => json(
                py,
                &py.detach(|| self.inner.pause_schedule(name)).or_py(py)?,
            ),
            "resume" => json(
                py,
                &py.detach(|| self.inner.resume_schedule(name)).or_py(py)?,
            ),
            "run" => json(
                py,
                &py.detach(|| self.inner.run_schedule_now(name)).or_py(py)?,
            ),
            other => Err(invalid(
                py,
                "action",
                format!("{other:?} is not pause, resume or run"),
            )),
        }
    }

    /// Pauses (`true`) or resumes a queue; returns it as JSON.
    fn pause_queue(&self, py: Python<'_>, name: &str, pause: bool) -> PyResult<String> {
        let info = py
            .detach(|| {
                if pause {
                    self.inner.pause_queue(name)
                } else {
                    self.inner.resume_queue(name)
                }
            })
            .or_py(py)?;
        json(py, &info)
    }

    /// Sets a queue's limits from a JSON object of `max_running`, `max_running_per_key` and
    /// `rate` (absent: unchanged; `null`: cleared); returns the queue as JSON.
    fn set_queue_limits(&self, py: Python<'_>, name: &str, limits_json: &str) -> PyResult<String> {
        let doc: Value =
            serde_json::from_str(limits_json).map_err(|e| invalid(py, "limits", e.to_string()))?;
        let mut limits = jobq::QueueLimits::new();
        if let Some(n) = limit(py, &doc, "max_running")? {
            limits = limits.max_running(n);
        }
        if let Some(n) = limit(py, &doc, "max_running_per_key")? {
            limits = limits.max_running_per_key(n);
        }
        match doc.get("rate") {
            None => {}
            Some(Value::Null) => limits = limits.rate(None),
            Some(Value::String(r)) => limits = limits.rate(Some(r.parse().or_py(py)?)),
            Some(_) => return Err(invalid(py, "rate", "must be N/DUR such as 100/1m, or None")),
        }
        let info = py
            .detach(|| self.inner.set_queue_limits(name, limits))
            .or_py(py)?;
        json(py, &info)
    }

    /// Every queue with its counts and limits, as JSON.
    fn queues(&self, py: Python<'_>) -> PyResult<String> {
        let list = py.detach(|| self.inner.queues()).or_py(py)?;
        json(py, &list)
    }

    /// A transaction of the application's own on the same database, in which jobs are
    /// enqueued with its writes: both commit, or neither.
    fn transaction(&self, py: Python<'_>) -> PyResult<crate::transaction::Transaction> {
        crate::transaction::Transaction::begin(py, self.inner.clone())
    }
}

//! Handlers of the larger routes (jobs, flows, schedules, queues), each a call into the
//! library. `routes.rs` says which one runs.

use std::time::Duration;

use serde_json::{Value, json};

use super::Reply;
use super::body::Body;
use super::query::Query;
use super::routes::overview;
use crate::duration::parse_duration;
use crate::error::Error;
use crate::flow_control::{QueueLimits, Rate};
use crate::job::{JobId, NewJob, OnDependencyFailure, Status, Timestamp};
use crate::queue::flow::Flow;
use crate::queue::{BulkAction, JobFilter, Queue};
use crate::schedule::{NewSchedule, Rule};

/// The dashboard: one page, HTML, CSS and plain JavaScript, no build step.
pub(crate) const DASHBOARD: &str = include_str!("dashboard.html");

pub(crate) fn job_id(text: &str) -> Result<JobId, Reply> {
    // A malformed id names no job: 404, like a missing one.
    JobId::parse(text).map_err(|_| Reply::error(404, "not_found", format!("job {text} not found")))
}

pub(crate) fn list_jobs(queue: &Queue, query: &Query) -> Result<Reply, Reply> {
    let mut filter = JobFilter::new().limit(query.number("limit")?.unwrap_or(50));
    if let Some(s) = query.get("status") {
        filter = status_filter(filter, s)?;
    }
    if let Some(text) = query.get("q") {
        filter = filter.search(text);
    }
    if let Some(q) = query.get("queue") {
        filter = filter.queue(q);
    }
    if let Some(k) = query.get("kind") {
        filter = filter.kind(k);
    }
    if let Some(g) = query.get("group_id") {
        filter = filter.group(g);
    }
    if let Some(o) = query.get("owner") {
        filter = filter.owner(o);
    }
    if let Some(after) = query.get("after") {
        filter = filter.after(after);
    }
    let time = |name: &'static str| -> Result<Option<Timestamp>, Reply> {
        match query.get(name) {
            None => Ok(None),
            Some(text) => match text.parse::<i64>() {
                Ok(ms) => Ok(Some(Timestamp::from_millis(ms))),
                Err(_) => Ok(Some(Timestamp::parse_rfc3339(name, text)?)),
            },
        }
    };
    let (from, to) = (time("created_from")?, time("created_to")?);
    if from.is_some() || to.is_some() {
        filter = filter.created_between(from, to);
    }
    let page = queue.list(&filter)?;
    let mut doc = json!({ "jobs": page.jobs, "next": page.next });
    if query.flag("stats") {
        doc["stats"] = overview(queue)?;
    }
    Ok(Reply::ok(&doc))
}

const ENQUEUE_FIELDS: [&str; 16] = [
    "concurrency_key",
    "kind",
    "input",
    "queue",
    "priority",
    "run_after",
    "max_attempts",
    "idempotency_key",
    "unique_for",
    "unique_while_active",
    "after",
    "on_dependency_failure",
    "group_id",
    "cost_cents",
    "external_id",
    "owner",
];

/// A listing's status filter: a stored status, or `scheduled`.
fn status_filter(filter: JobFilter, status: &str) -> Result<JobFilter, Error> {
    Ok(match status {
        "scheduled" => filter.scheduled(),
        other => filter.status(other.parse::<Status>()?),
    })
}

/// `{"action": "cancel" | "retry" | "delete", "ids"?: [id…], "filter"?: {"status"?,
/// "queue"?, "kind"?}}`, ids or a filter: `{"changed", "refused": [{"job_id", "reason"}…],
/// "refused_total"}`.
pub(crate) fn bulk(queue: &Queue, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["action", "ids", "filter"])?;
    let action: BulkAction = body.required_string("action")?.parse()?;
    let outcome = match (body.value("ids"), body.value("filter")) {
        (Some(_), None) => {
            let ids: Vec<JobId> = strings(&body, "ids")?
                .into_iter()
                .map(|id| {
                    id.parse().map_err(|_| {
                        Reply::error(400, "invalid_input", format!("{id:?} is not a job id"))
                    })
                })
                .collect::<Result<_, Reply>>()?;
            queue.bulk(action, &ids)?
        }
        (None, Some(filter_value)) => {
            let f = Body::new(filter_value, &["status", "queue", "kind"])
                .map_err(|e| e.prefixed("field `filter`: "))?;
            let mut filter = JobFilter::new();
            if let Some(s) = f.string("status")? {
                filter = status_filter(filter, s)?;
            }
            if let Some(q) = f.string("queue")? {
                filter = filter.queue(q);
            }
            if let Some(k) = f.string("kind")? {
                filter = filter.kind(k);
            }
            queue.bulk_matching(action, &filter)?
        }
        _ => {
            return Err(Reply::error(
                400,
                "invalid_input",
                "give `ids` or `filter`, one of them",
            ));
        }
    };
    Ok(Reply::ok(&outcome))
}

pub(crate) fn enqueue(queue: &Queue, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &ENQUEUE_FIELDS)?;
    let mut job = job_from(&body)?;
    for id in strings(&body, "after")? {
        let id: JobId = id.parse().map_err(|_| {
            Reply::error(
                400,
                "invalid_input",
                format!("field `after` must list job ids, and {id:?} is not one"),
            )
        })?;
        job = job.after(&id);
    }
    let out = queue.enqueue(job)?;
    Ok(Reply::json(
        if out.already_existed { 200 } else { 201 },
        &out,
    ))
}

/// A field that is a list of strings (absent: none).
fn strings<'a>(body: &Body<'a>, field: &str) -> Result<Vec<&'a str>, Reply> {
    let bad = || {
        Reply::error(
            400,
            "invalid_input",
            format!("field `{field}` must be a list of strings"),
        )
    };
    match body.value(field) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| v.as_str().ok_or_else(bad)).collect(),
        Some(_) => Err(bad()),
    }
}

/// A duration field: seconds (a number) or a duration like `"5m"`.
fn duration_field(body: &Body<'_>, field: &str) -> Result<Option<Duration>, Reply> {
    let bad = |what: String| {
        Reply::error(
            400,
            "invalid_input",
            format!("field `{field}` must be seconds or a duration like \"5m\", not {what}"),
        )
    };
    match body.value(field) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|secs| Some(Duration::from_secs(secs)))
            .ok_or_else(|| bad(n.to_string())),
        Some(Value::String(s)) => parse_duration(s)
            .map(Some)
            .map_err(|_| bad(format!("{s:?}"))),
        Some(other) => Err(bad(other.to_string())),
    }
}

/// The job a `POST /api/jobs` body (or a job of a flow) describes, but its `after`.
fn job_from(body: &Body<'_>) -> Result<NewJob, Reply> {
    let mut job = NewJob::new(body.required_string("kind")?);
    // The input is the caller's data: null is an input like any other.
    if let Some(input) = body.given("input") {
        job = job.input(input);
    }
    if let Some(q) = body.string("queue")? {
        job = job.queue(q);
    }
    if let Some(p) = body.integer_in::<i32>("priority", "a 32-bit whole number")? {
        job = job.priority(p);
    }
    if let Some(run_after) = body.value("run_after") {
        job = match run_after {
            Value::Number(n) => match n.as_u64() {
                Some(secs) => job.run_after(Duration::from_secs(secs)),
                None => return Err(Reply::error(400, "invalid_input", "field `run_after` must be seconds (0 or more), a duration like \"5m\" or an RFC 3339 time")),
            },
            Value::String(s) => match parse_duration(s) {
                Ok(d) => job.run_after(d),
                Err(_) => job.run_at(Timestamp::parse_rfc3339("run_after", s).map_err(|_| {
                    Reply::error(400, "invalid_input", format!("field `run_after` must be seconds, a duration like \"5m\" or an RFC 3339 time, not {s:?}"))
                })?),
            },
            _ => return Err(Reply::error(400, "invalid_input", "field `run_after` must be a number or a string")),
        };
    }
    if let Some(n) = body.integer_in::<u32>("max_attempts", "a whole number from 1")? {
        job = job.max_attempts(n);
    }
    if let Some(k) = body.string("idempotency_key")? {
        job = job.idempotency_key(k);
    }
    if let Some(window) = duration_field(body, "unique_for")? {
        job = job.unique_for(window);
    }
    match body.value("unique_while_active") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => job = job.unique_while_active(),
        Some(_) => {
            return Err(Reply::error(
                400,
                "invalid_input",
                "field `unique_while_active` must be true or false",
            ));
        }
    }
    if let Some(policy) = body.string("on_dependency_failure")? {
        job = job.on_dependency_failure(policy.parse::<OnDependencyFailure>()?);
    }
    if let Some(g) = body.string("group_id")? {
        job = job.group(g);
    }
    if let Some(k) = body.string("concurrency_key")? {
        job = job.concurrency_key(k);
    }
    if let Some(c) = body.integer("cost_cents")? {
        job = job.cost_cents(c);
    }
    if let Some(e) = body.string("external_id")? {
        job = job.external_id(e);
    }
    if let Some(o) = body.string("owner")? {
        job = job.owner(o);
    }
    Ok(job)
}

/// The flow a `POST /api/flows` body describes: `{"group": {"name", "metadata"?}?,
/// "jobs": [{"ref", "kind", "after"?: [ref or id…], …any POST /api/jobs field}…]}`.
pub(crate) fn flow_from_json(value: &Value) -> Result<Flow, Reply> {
    let body = Body::new(value, &["key", "group", "jobs"])?;
    let mut flow = match body.value("group") {
        None => Flow::new("flow"),
        Some(group) => {
            let group = Body::new(group, &["name", "metadata"]).map_err(|_| {
                Reply::error(
                    400,
                    "invalid_input",
                    "field `group` must be an object with `name` and `metadata`",
                )
            })?;
            let mut flow = Flow::new(group.required_string("name")?);
            if let Some(metadata) = group.value("metadata") {
                flow = flow.metadata(metadata.clone());
            }
            flow
        }
    };
    if let Some(key) = body.string("key")? {
        flow = flow.key(key);
    }
    let Some(Value::Array(jobs)) = body.value("jobs") else {
        return Err(Reply::error(
            400,
            "invalid_input",
            "field `jobs` must be a list of jobs",
        ));
    };
    for (i, job) in jobs.iter().enumerate() {
        let fields: Vec<&str> = std::iter::once("ref").chain(ENQUEUE_FIELDS).collect();
        let job =
            Body::new(job, &fields).map_err(|e| e.prefixed(&format!("job #{i} of the flow: ")))?;
        let r = job.required_string("ref")?;
        let new = job_from(&job).map_err(|e| e.prefixed(&format!("job {r:?} of the flow: ")))?;
        let after =
            strings(&job, "after").map_err(|e| e.prefixed(&format!("job {r:?} of the flow: ")))?;
        flow = flow.job_after(r, new, after);
    }
    Ok(flow)
}

const SCHEDULE_FIELDS: [&str; 13] = [
    "name",
    "cron",
    "every",
    "kind",
    "input",
    "queue",
    "priority",
    "max_attempts",
    "timezone",
    "catch_up",
    "owner",
    "paused",
    "replace",
];

pub(crate) fn add_schedule(queue: &Queue, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &SCHEDULE_FIELDS)?;
    let name = body.required_string("name")?;
    let kind = body.required_string("kind")?;
    let rule = match (body.string("cron")?, duration_field(&body, "every")?) {
        (Some(cron), None) => Rule::Cron(cron.to_string()),
        (None, Some(every)) => Rule::Every(every),
        _ => {
            return Err(Reply::error(
                400,
                "invalid_input",
                "give `cron` or `every`, one of them",
            ));
        }
    };
    let mut schedule = NewSchedule::new(name, rule, kind);
    if let Some(input) = body.given("input") {
        schedule = schedule.input(input.clone());
    }
    if let Some(q) = body.string("queue")? {
        schedule = schedule.queue(q);
    }
    if let Some(p) = body.integer_in::<i32>("priority", "a 32-bit whole number")? {
        schedule = schedule.priority(p);
    }
    if let Some(n) = body.integer_in::<u32>("max_attempts", "a whole number from 1")? {
        schedule = schedule.max_attempts(n);
    }
    if let Some(tz) = body.string("timezone")? {
        schedule = schedule.timezone(tz);
    }
    if let Some(c) = body.string("catch_up")? {
        schedule = schedule.catch_up(c.parse()?);
    }
    if let Some(o) = body.string("owner")? {
        schedule = schedule.owner(o);
    }
    if body.value("replace") == Some(&Value::Bool(true)) {
        schedule = schedule.replace(true);
    }
    let mut added = queue.add_schedule(schedule)?;
    if body.value("paused") == Some(&Value::Bool(true)) {
        let owners = match &added.owner {
            Some(owner) => queue.scoped(owner.clone()),
            None => queue.clone(),
        };
        added = owners.pause_schedule(&added.name)?;
    }
    Ok(Reply::json(201, &added))
}

/// `{"action": "pause" | "resume"}`, or limits: `{"max_running"?, "max_running_per_key"?,
/// "rate"?}` where `null` clears one.
pub(crate) fn queue_action(
    queue: &Queue,
    name: &str,
    body: Option<&Value>,
) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(
        &value,
        &["action", "max_running", "max_running_per_key", "rate"],
    )?;
    if let Some(action) = body.string("action")? {
        let info = match action {
            "pause" => queue.pause_queue(name)?,
            "resume" => queue.resume_queue(name)?,
            other => {
                return Err(Reply::error(
                    400,
                    "invalid_input",
                    format!("field `action` must be \"pause\" or \"resume\", not {other:?}"),
                ));
            }
        };
        return Ok(Reply::ok(&info));
    }
    let given = |field: &str| value.as_object().is_some_and(|m| m.contains_key(field));
    let mut limits = QueueLimits::new();
    for field in ["max_running", "max_running_per_key"] {
        if !given(field) {
            continue;
        }
        let n = body.integer_in::<u32>(field, "a whole number from 0, or null")?;
        limits = if field == "max_running" {
            limits.max_running(n)
        } else {
            limits.max_running_per_key(n)
        };
    }
    if given("rate") {
        limits = limits.rate(match body.string("rate")? {
            Some(r) => Some(r.parse::<Rate>()?),
            None => None,
        });
    }
    if !["max_running", "max_running_per_key", "rate"]
        .iter()
        .any(|f| given(f))
    {
        return Err(Reply::error(
            400,
            "invalid_input",
            "give `action`, or one of `max_running`, `max_running_per_key`, `rate`",
        ));
    }
    Ok(Reply::ok(&queue.set_queue_limits(name, limits)?))
}

/// The handle that reaches a schedule named in a path: `?owner=` scopes an admin's to that
/// owner (needed when several owners have a schedule of that name); an owner's token sees
/// only its own.
pub(crate) fn schedule_owner(queue: &Queue, query: &Query) -> Result<Queue, Reply> {
    match (queue.owner(), query.get("owner")) {
        (_, None) => Ok(queue.clone()),
        (None, Some(owner)) => Ok(queue.scoped(owner)),
        (Some(me), Some(owner)) if me == owner => Ok(queue.clone()),
        (Some(_), Some(_)) => Err(Reply::error(404, "not_found", "no such schedule")),
    }
}

/// `{"action": "pause" | "resume" | "run"}`: `run` enqueues one of its jobs now (its slots
/// are unchanged) and answers the job.
pub(crate) fn schedule_action(
    queue: &Queue,
    name: &str,
    body: Option<&Value>,
) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["action"])?;
    let schedule = match body.required_string("action")? {
        "pause" => queue.pause_schedule(name)?,
        "resume" => queue.resume_schedule(name)?,
        "run" => {
            let job = queue.run_schedule_now(name)?;
            return Ok(Reply::json(
                201,
                &json!({"job_id": job.job_id, "status": job.status, "already_existed": job.already_existed}),
            ));
        }
        other => {
            return Err(Reply::error(
                400,
                "invalid_input",
                format!("field `action` must be \"pause\", \"resume\" or \"run\", not {other:?}"),
            ));
        }
    };
    Ok(Reply::ok(&schedule))
}

pub(crate) fn submit_flow(queue: &Queue, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let flow = flow_from_json(&value)?;
    let created = queue.submit_flow(flow)?;
    let status = if created.already_existed { 200 } else { 201 };
    Ok(Reply::json(status, &created))
}

/// `POST /api/events` `{"name", "payload"?}`: stores an event of the caller's owner and
/// wakes the jobs waiting for it.
pub(crate) fn emit_event(queue: &Queue, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["name", "payload"])?;
    let name = body.required_string("name")?;
    let payload = body.given("payload").cloned().unwrap_or(Value::Null);
    let emitted = queue.emit_event(name, payload)?;
    Ok(Reply::json(201, &emitted))
}

pub(crate) fn job_action(queue: &Queue, id: &JobId, body: Option<&Value>) -> Result<Reply, Reply> {
    let value = body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["action", "from_scratch"])?;
    let from_scratch = body.boolean("from_scratch")?.unwrap_or(false);
    let (was, message) = match body.required_string("action")? {
        "cancel" => (queue.cancel(id)?, "Job cancelled successfully"),
        "retry" if from_scratch => (
            queue.retry_from_scratch(id)?,
            "Job queued for retry from scratch",
        ),
        "retry" => (queue.retry(id)?, "Job queued for retry"),
        other => {
            return Err(Reply::error(
                400,
                "invalid_input",
                format!("field `action` must be \"cancel\" or \"retry\", not {other:?}"),
            ));
        }
    };
    Ok(Reply::ok(
        &json!({ "success": true, "message": message, "job_id": id, "previous_status": was }),
    ))
}

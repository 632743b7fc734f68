//! The HTTP API's routes: one table that serves both the dispatch and the methods a path
//! allows (405 and `Allow`), with who may call each route and the query parameters it
//! reads. Handlers live in `api.rs`; this file only decides which one runs.

use serde_json::{Value, json};

use super::api;
use super::body::Body;
use super::query::Query;
use super::{App, Caller, Reply};
use crate::model::CostGrouping;
use crate::queue::Queue;
use crate::stats::{HealthThresholds, StatsFilter, TimingFilter};

/// What a handler gets: the caller's queue (scoped to its owner, if it is one), the path's
/// wildcard segments in order, the query and the JSON body.
pub(crate) struct Call<'a> {
    pub queue: Queue,
    pub args: Vec<&'a str>,
    pub query: &'a Query,
    pub body: Option<&'a Value>,
}

impl Call<'_> {
    /// The path's first wildcard segment (a job id, a queue or schedule name, an owner).
    fn arg(&self) -> &str {
        self.args.first().copied().unwrap_or("")
    }
}

type Handler = fn(&Call<'_>) -> Result<Reply, Reply>;

/// One method of a route: its handler and the query parameters it reads (any other is
/// refused with 400, so that a mistyped `?staus=failed` is not silently ignored).
pub(crate) struct Method {
    name: &'static str,
    params: &'static [&'static str],
    run: Handler,
}

const fn method(name: &'static str, run: Handler) -> Method {
    Method {
        name,
        params: &[],
        run,
    }
}

const fn reading(name: &'static str, params: &'static [&'static str], run: Handler) -> Method {
    Method { name, params, run }
}

/// A path (`*` matches any one segment), what it reads or changes when only the admin key
/// may reach it (an owner's token gets 403), and its methods.
pub(crate) struct Route {
    path: &'static [&'static str],
    admin_only: Option<&'static str>,
    methods: &'static [Method],
}

const fn route(path: &'static [&'static str], methods: &'static [Method]) -> Route {
    Route {
        path,
        admin_only: None,
        methods,
    }
}

const fn admin(
    what: &'static str,
    path: &'static [&'static str],
    methods: &'static [Method],
) -> Route {
    Route {
        path,
        admin_only: Some(what),
        methods,
    }
}

const JOB_FILTERS: &[&str] = &[
    "status",
    "queue",
    "kind",
    "group_id",
    "owner",
    "q",
    "limit",
    "after",
    "stats",
    "created_from",
    "created_to",
];

/// Every route, the more specific path first (`/api/jobs/running` before `/api/jobs/*`).
static ROUTES: &[Route] = &[
    admin("metrics", &["metrics"], &[method("GET", metrics)]),
    route(
        &["api", "stats"],
        &[method("GET", |c| Ok(Reply::ok(&overview(&c.queue)?)))],
    ),
    route(
        &["api", "stats", "timing"],
        &[reading("GET", &["since", "by_kind", "queue"], timing)],
    ),
    route(&["api", "stats", "stages"], &[method("GET", stages)]),
    route(
        &["api", "series"],
        &[reading("GET", &["window", "step", "queue", "kind"], series)],
    ),
    route(
        &["api", "stats", "costs"],
        &[reading("GET", &["by"], costs)],
    ),
    route(
        &["api", "jobs"],
        &[
            reading("GET", JOB_FILTERS, |c| api::list_jobs(&c.queue, c.query)),
            method("POST", |c| api::enqueue(&c.queue, c.body)),
        ],
    ),
    route(&["api", "jobs", "running"], &[method("GET", running)]),
    route(
        &["api", "jobs", "bulk"],
        &[method("POST", |c| api::bulk(&c.queue, c.body))],
    ),
    route(
        &["api", "jobs", "dead"],
        &[reading("GET", &["limit"], dead), method("POST", retry_dead)],
    ),
    route(
        &["api", "jobs", "*"],
        &[
            method("GET", |c| {
                Ok(Reply::ok(&c.queue.get(&api::job_id(c.arg())?)?))
            }),
            method("POST", |c| {
                api::job_action(&c.queue, &api::job_id(c.arg())?, c.body)
            }),
            method("DELETE", |c| {
                c.queue.delete(&api::job_id(c.arg())?)?;
                Ok(Reply::empty(204))
            }),
        ],
    ),
    route(
        &["api", "events"],
        &[method("POST", |c| api::emit_event(&c.queue, c.body))],
    ),
    route(
        &["api", "flows"],
        &[method("POST", |c| api::submit_flow(&c.queue, c.body))],
    ),
    route(
        &["api", "schedules"],
        &[
            method("GET", |c| {
                Ok(Reply::ok(&json!({ "schedules": c.queue.schedules()? })))
            }),
            method("POST", |c| api::add_schedule(&c.queue, c.body)),
        ],
    ),
    route(
        &["api", "schedules", "*"],
        &[
            reading("POST", &["owner"], |c| {
                let owner = api::schedule_owner(&c.queue, c.query)?;
                api::schedule_action(&owner, c.arg(), c.body)
            }),
            reading("DELETE", &["owner"], |c| {
                api::schedule_owner(&c.queue, c.query)?.remove_schedule(c.arg())?;
                Ok(Reply::empty(204))
            }),
        ],
    ),
    admin(
        "queues",
        &["api", "queues"],
        &[method("GET", |c| {
            Ok(Reply::ok(&json!({ "queues": c.queue.queues()? })))
        })],
    ),
    admin(
        "queues",
        &["api", "queues", "*"],
        &[method("POST", |c| {
            api::queue_action(&c.queue, c.arg(), c.body)
        })],
    ),
    route(
        &["api", "groups"],
        &[
            reading("GET", &["limit"], groups),
            method("POST", create_group),
        ],
    ),
    route(
        &["api", "groups", "*"],
        &[
            method("GET", |c| Ok(Reply::ok(&c.queue.get_group(c.arg())?))),
            method("DELETE", |c| {
                c.queue.delete_group(c.arg())?;
                Ok(Reply::empty(204))
            }),
        ],
    ),
    route(
        &["api", "groups", "*", "flow"],
        &[method("GET", |c| {
            Ok(Reply::ok(&c.queue.flow_view(c.arg())?))
        })],
    ),
    admin(
        "owners' budgets",
        &["api", "owners", "*", "budget"],
        &[method("PUT", set_budget)],
    ),
    admin(
        "workers",
        &["api", "workers"],
        &[method("GET", |c| {
            Ok(Reply::ok(&json!({ "workers": c.queue.workers()? })))
        })],
    ),
];

/// The route a path leads to and the path's wildcard segments, or `None` (404).
fn find<'a>(segments: &[&'a str]) -> Option<(&'static Route, Vec<&'a str>)> {
    ROUTES.iter().find_map(|r| {
        let matches = r.path.len() == segments.len()
            && r.path
                .iter()
                .zip(segments)
                .all(|(p, s)| *p == "*" || p == s);
        let args = r.path.iter().zip(segments).filter(|(p, _)| **p == "*");
        matches.then(|| (r, args.map(|(_, s)| *s).collect()))
    })
}

/// The methods a path answers (as an `Allow` header says them), or `None` for an unknown
/// path.
pub(crate) fn allowed_methods(segments: &[&str]) -> Option<String> {
    let (route, _) = find(segments)?;
    let names: Vec<&str> = route.methods.iter().map(|m| m.name).collect();
    Some(names.join(", "))
}

/// Runs the API request: the route (decided before, so known to exist), the caller's right
/// to it, the query's parameters, then the handler.
pub(crate) fn handle(
    app: &App,
    caller: &Caller,
    method: &str,
    segments: &[&str],
    query: &Query,
    body: Option<&Value>,
) -> Reply {
    let not_found = || Reply::error(404, "not_found", "no such route");
    let Some((route, args)) = find(segments) else {
        return not_found();
    };
    let Some(method) = route.methods.iter().find(|m| m.name == method) else {
        return not_found();
    };
    if let (Caller::Owner(_), Some(what)) = (caller, route.admin_only) {
        return Reply::error(
            403,
            "forbidden",
            format!("{what} belong to every owner: they need the admin key"),
        );
    }
    if let Err(reply) = query.only(method.params) {
        return reply;
    }
    let call = Call {
        queue: app.queue_for(caller),
        args,
        query,
        body,
    };
    (method.run)(&call).unwrap_or_else(|reply| reply)
}

// ---- handlers of the smaller routes ------------------------------------------------------

pub(crate) fn overview(queue: &Queue) -> Result<Value, crate::Error> {
    let overview = queue.overview(&StatsFilter::new(), &HealthThresholds::default())?;
    Ok(serde_json::to_value(overview).unwrap_or(Value::Null))
}

fn metrics(c: &Call<'_>) -> Result<Reply, Reply> {
    let text = c.queue.metrics()?;
    Ok(Reply::text(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    ))
}

fn timing(c: &Call<'_>) -> Result<Reply, Reply> {
    let mut filter = TimingFilter::new();
    if let Some(since) = c.query.get("since") {
        filter = filter.within(crate::duration::parse_duration(since)?);
    }
    if c.query.flag("by_kind") {
        filter = filter.by_kind();
    }
    if let Some(q) = c.query.get("queue") {
        filter = filter.queue(q);
    }
    Ok(Reply::ok(&json!({ "timing": c.queue.timing(&filter)? })))
}

/// Counts and latencies over time, of the caller's jobs (a token's owner's only).
fn series(c: &Call<'_>) -> Result<Reply, Reply> {
    let mut query = crate::SeriesQuery::new();
    if let Some(window) = c.query.get("window") {
        query = query.window(crate::duration::parse_duration(window)?);
    }
    if let Some(step) = c.query.get("step") {
        query = query.step(crate::duration::parse_duration(step)?);
    }
    if let Some(q) = c.query.get("queue") {
        query = query.queue(q);
    }
    if let Some(k) = c.query.get("kind") {
        query = query.kind(k);
    }
    Ok(Reply::ok(&c.queue.series(&query)?))
}

fn stages(c: &Call<'_>) -> Result<Reply, Reply> {
    Ok(Reply::ok(
        &json!({ "stages": c.queue.stage_distribution()? }),
    ))
}

fn costs(c: &Call<'_>) -> Result<Reply, Reply> {
    let (by, name) = match c.query.get("by") {
        None | Some("status") => (CostGrouping::Status, "status"),
        Some("owner") => (CostGrouping::Owner, "owner"),
        Some("group") => (CostGrouping::Group, "group"),
        Some(other) => {
            return Err(Reply::error(
                400,
                "invalid_input",
                format!("query `by` must be status, owner or group, not {other:?}"),
            ));
        }
    };
    let rows: Vec<Value> = c
        .queue
        .costs(by)?
        .into_iter()
        .map(|r| {
            let mut v = serde_json::to_value(&r).unwrap_or(Value::Null);
            if let Some(obj) = v.as_object_mut() {
                let key = obj.remove("key").unwrap_or(Value::Null);
                obj.insert(name.to_string(), key);
            }
            v
        })
        .collect();
    Ok(Reply::ok(&json!({ "by": name, "costs": rows })))
}

fn running(c: &Call<'_>) -> Result<Reply, Reply> {
    Ok(Reply::ok(&json!({ "running": c.queue.running_jobs()? })))
}

fn dead(c: &Call<'_>) -> Result<Reply, Reply> {
    let limit = c.query.number("limit")?.unwrap_or(50);
    Ok(Reply::ok(&json!({ "dead": c.queue.dead_letter(limit)? })))
}

fn retry_dead(c: &Call<'_>) -> Result<Reply, Reply> {
    let value = c.body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["action", "kind", "queue"])?;
    match body.required_string("action")? {
        "retry" => {}
        other => {
            return Err(Reply::error(
                400,
                "invalid_input",
                format!("field `action` must be \"retry\", not {other:?}"),
            ));
        }
    }
    let retried = c
        .queue
        .retry_dead(body.string("kind")?, body.string("queue")?)?;
    Ok(Reply::ok(&json!({ "success": true, "retried": retried })))
}

fn set_budget(c: &Call<'_>) -> Result<Reply, Reply> {
    let value = c.body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["budget_cents"])?;
    let budget = match body.given("budget_cents") {
        None => {
            return Err(Reply::error(
                400,
                "invalid_input",
                "field `budget_cents` is required (null clears the budget)",
            ));
        }
        Some(Value::Null) => None,
        Some(_) => body.integer("budget_cents")?,
    };
    Ok(Reply::ok(&c.queue.set_budget(c.arg(), budget)?))
}

fn groups(c: &Call<'_>) -> Result<Reply, Reply> {
    let limit = c.query.number("limit")?.unwrap_or(50);
    Ok(Reply::ok(&json!({ "groups": c.queue.list_groups(limit)? })))
}

fn create_group(c: &Call<'_>) -> Result<Reply, Reply> {
    let value = c.body.cloned().unwrap_or(Value::Null);
    let body = Body::new(&value, &["name", "metadata", "owner"])?;
    let name = body.required_string("name")?;
    let metadata = body.value("metadata").cloned();
    let group = c
        .queue
        .create_group_for(name, metadata, body.string("owner")?)?;
    Ok(Reply::json(201, &group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_methods() {
        assert_eq!(
            allowed_methods(&["api", "jobs"]).as_deref(),
            Some("GET, POST")
        );
        assert_eq!(
            allowed_methods(&["api", "jobs", "running"]).as_deref(),
            Some("GET")
        );
        assert_eq!(
            allowed_methods(&["api", "jobs", "x"]).as_deref(),
            Some("GET, POST, DELETE")
        );
        assert_eq!(allowed_methods(&["api", "jobs", "x", "y"]), None);
        assert_eq!(allowed_methods(&["nope"]), None);
    }

    #[test]
    fn no_route_is_shadowed_by_an_earlier_one() {
        for (i, later) in ROUTES.iter().enumerate() {
            let concrete: Vec<&str> = later
                .path
                .iter()
                .map(|p| if *p == "*" { "x" } else { p })
                .collect();
            let (first, _) = find(&concrete).unwrap();
            assert!(
                std::ptr::eq(first, &ROUTES[i]),
                "{:?} is shadowed",
                later.path
            );
            let mut names: Vec<&str> = later.methods.iter().map(|m| m.name).collect();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                later.methods.len(),
                "{:?} repeats a method",
                later.path
            );
        }
    }
}

//! The HTTP API through real HTTP on a loopback port: every route, its codes and JSON
//! shapes, auth and owner isolation, hardening, concurrency, and `jobq serve` itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use jobq::http::{Server, ServerConfig};
use jobq::{ClaimFilter, JobError, NewJob, Queue};
use serde_json::{Value, json};

use crate::common::{Db, execute};

pub const KEY: &str = "admin-key-for-tests";

pub struct Api {
    /// Keeps the database alive.
    _db: Db,
    pub queue: Queue,
    pub server: Server,
    pub agent: ureq::Agent,
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts an error document with this status and code.
    #[track_caller]
    pub fn error(&self, status: u16, code: &str) -> &str {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        self.body["error"]["message"].as_str().unwrap()
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    Admin,
    Token(&'a str),
    Key(&'a str),
    None,
}

impl Api {
    pub fn start() -> Api {
        Api::with(ServerConfig::new("127.0.0.1:0").admin_key(KEY))
    }

    pub fn with(config: ServerConfig) -> Api {
        let db = Db::fresh();
        let queue = Queue::open(db.path()).unwrap();
        let server = Server::start(queue.clone(), config).unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Api {
            _db: db,
            queue,
            server,
            agent,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr())
    }

    pub fn call(&self, method: &str, path: &str, auth: Auth<'_>, body: Option<&Value>) -> Answer {
        let url = self.url(path);
        let response = match method {
            "GET" => with_auth(self.agent.get(&url), auth).call(),
            "DELETE" => with_auth(self.agent.delete(&url), auth).call(),
            "PUT" => with_auth(self.agent.put(&url), auth)
                .header("Content-Type", "application/json")
                .send(body.map(|b| b.to_string()).unwrap_or_default()),
            "POST" => {
                let req = with_auth(self.agent.post(&url), auth)
                    .header("Content-Type", "application/json");
                match body {
                    Some(b) => req.send(b.to_string()),
                    None => req.send_empty(),
                }
            }
            other => panic!("{other}"),
        };
        let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let text = response.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            text,
            headers,
        }
    }

    pub fn get(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.call("GET", path, auth, None)
    }

    pub fn post(&self, path: &str, auth: Auth<'_>, body: Value) -> Answer {
        self.call("POST", path, auth, Some(&body))
    }

    pub fn delete(&self, path: &str, auth: Auth<'_>) -> Answer {
        self.call("DELETE", path, auth, None)
    }
}

fn with_auth<B>(req: ureq::RequestBuilder<B>, auth: Auth<'_>) -> ureq::RequestBuilder<B> {
    match auth {
        Auth::Admin => req.header("X-Admin-Key", KEY),
        Auth::Key(k) => req.header("X-Admin-Key", k),
        Auth::Token(t) => req.header("Authorization", format!("Bearer {t}")),
        Auth::None => req,
    }
}

#[test]
fn the_seeds_flow_enqueue_list_get_cancel_retry_stats() {
    let api = Api::start();
    let admin = Auth::Admin;
    let first = api.post("/api/jobs", admin, json!({"kind": "ingest", "input": {"source_type": "s3", "s3_key": "videos/test-ad.mp4"}, "idempotency_key": "s3:videos/test-ad.mp4"}));
    assert_eq!(first.status, 201);
    assert_eq!(
        (
            first.body["status"].as_str(),
            first.body["already_existed"].as_bool()
        ),
        (Some("queued"), Some(false))
    );
    let id = first.body["job_id"].as_str().unwrap().to_string();
    let again = api.post("/api/jobs", admin, json!({"kind": "ingest", "input": {"s3_key": "videos/test-ad.mp4"}, "idempotency_key": "s3:videos/test-ad.mp4"}));
    assert_eq!(again.status, 200);
    assert_eq!(
        (
            again.body["job_id"].as_str(),
            again.body["already_existed"].as_bool()
        ),
        (Some(id.as_str()), Some(true))
    );

    let list = api.get("/api/jobs?stats=true", admin);
    assert_eq!(list.status, 200);
    assert_eq!(list.body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(list.body["next"], Value::Null);
    assert_eq!(list.body["stats"]["stats"]["by_status"]["queued"], 1);
    assert_eq!(list.body["stats"]["health"], "healthy");
    assert_eq!(list.body["stats"]["summary"]["pending"], 1);

    let job = api.get(&format!("/api/jobs/{id}"), admin);
    assert_eq!(
        (job.status, job.body["input"]["s3_key"].as_str()),
        (200, Some("videos/test-ad.mp4"))
    );
    assert_eq!(job.header("content-type"), Some("application/json"));

    let cancel = api.post(
        &format!("/api/jobs/{id}"),
        admin,
        json!({"action": "cancel"}),
    );
    assert_eq!(cancel.status, 200);
    assert_eq!(cancel.body["success"], true);
    assert_eq!(cancel.body["message"], "Job cancelled successfully");
    let refused = api.post(
        &format!("/api/jobs/{id}"),
        admin,
        json!({"action": "cancel"}),
    );
    let message = refused.error(409, "invalid_transition");
    assert!(
        message.contains(&id) && message.contains("cancelled"),
        "{message}"
    );

    // A failed job comes back with a retry.
    let failed = api
        .queue
        .enqueue(NewJob::new("flaky").max_attempts(1))
        .unwrap()
        .job_id;
    let lease = api.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
    api.queue
        .fail(&lease, &JobError::retryable("boom"))
        .unwrap();
    let failed_list = api.get("/api/jobs?status=FAILED", admin);
    assert_eq!(failed_list.body["jobs"][0]["id"], json!(failed.to_string()));
    let retried = api.post(
        &format!("/api/jobs/{failed}"),
        admin,
        json!({"action": "retry"}),
    );
    assert_eq!(
        (retried.status, retried.body["success"].as_bool()),
        (200, Some(true))
    );
    assert_eq!(
        api.get(&format!("/api/jobs/{failed}"), admin).body["status"],
        "queued"
    );

    let stats = api.get("/api/stats", admin);
    assert_eq!(stats.status, 200);
    assert_eq!(stats.body["stats"]["total"], 2);
    assert_eq!(stats.body["stats"]["by_status"]["cancelled"], 1);
    for key in ["running", "pending", "failed", "has_dead_letter"] {
        assert!(stats.body["summary"].get(key).is_some(), "{key}");
    }
    assert!(["healthy", "degraded", "unhealthy"].contains(&stats.body["health"].as_str().unwrap()));

    assert_eq!(api.delete(&format!("/api/jobs/{id}"), admin).status, 204);
    api.get(&format!("/api/jobs/{id}"), admin)
        .error(404, "not_found");
}

#[test]
fn every_other_route_answers_with_its_document() {
    let api = Api::start();
    let admin = Auth::Admin;
    let group = api.post(
        "/api/groups",
        admin,
        json!({"name": "campaign", "metadata": {"brand": "acme"}}),
    );
    assert_eq!(group.status, 201);
    let group_id = group.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        (
            group.body["stage"].as_str(),
            group.body["progress"].as_f64()
        ),
        (Some("empty"), Some(0.0))
    );
    for _ in 0..2 {
        assert_eq!(api.post("/api/jobs", admin, json!({"kind": "scene", "group_id": group_id, "cost_cents": 25, "priority": 3, "max_attempts": 2, "run_after": 0, "external_id": "x", "queue": "video"})).status, 201);
    }
    let leases = api
        .queue
        .claim("w", 2, &ClaimFilter::queues(["video"]))
        .unwrap();
    api.queue
        .set_progress(&leases[0].lease(), 0.5, Some("rendering"))
        .unwrap();
    api.queue
        .fail(&leases[1].lease(), &JobError::permanent("bad").code("BAD"))
        .unwrap();

    let g = api.get(&format!("/api/groups/{group_id}"), admin);
    assert_eq!(
        (
            g.status,
            g.body["stage"].as_str(),
            g.body["progress"].as_f64()
        ),
        (200, Some("in_progress"), Some(75.0))
    );
    assert_eq!(g.body["counts"]["running"], 1);
    assert_eq!(
        api.get("/api/groups", admin).body["groups"][0]["id"],
        json!(group_id)
    );
    let running = api.get("/api/jobs/running", admin);
    assert_eq!(running.body["running"][0]["stage"], "rendering");
    let dead = api.get("/api/jobs/dead?limit=5", admin);
    assert_eq!(dead.body["dead"][0]["error_code"], "BAD");
    api.queue
        .complete(&leases[0].lease(), json!({"ok": true}))
        .unwrap();
    let series = api.get("/api/series?window=10m&queue=video&kind=scene", admin);
    assert_eq!(series.status, 200);
    assert_eq!(series.body["step_s"], 60);
    let points = series.body["points"].as_array().unwrap();
    assert_eq!(points.len(), 10);
    let sum = |field: &str| -> i64 { points.iter().map(|p| p[field].as_i64().unwrap()).sum() };
    assert_eq!(
        (
            sum("enqueued"),
            sum("started"),
            sum("failed"),
            sum("succeeded")
        ),
        (2, 2, 1, 1)
    );
    // A claim and its completion may fall in different minutes: each in its own step.
    let finished = points.iter().find(|p| p["succeeded"] == 1).unwrap();
    assert!(finished["run_ms"]["p50"].is_number(), "{finished}");
    assert!(
        points
            .iter()
            .filter(|p| p["started"].as_i64() > Some(0))
            .all(|p| p["wait_ms"]["p99"].is_number()),
        "{points:?}"
    );
    assert!(points[0]["run_ms"]["p50"].is_null(), "{}", points[0]);
    assert!(points[0]["t"].as_str().unwrap().ends_with('Z'));
    api.get("/api/series?step=30s", admin)
        .error(400, "invalid_input");
    api.get("/api/series?window=1y&step=1m", admin)
        .error(400, "invalid_input");
    let timing = api.get("/api/stats/timing?by_kind=true&since=1h", admin);
    assert_eq!(timing.body["timing"].as_array().unwrap().len(), 2);
    assert_eq!(timing.body["timing"][0]["kind"], "scene");
    let stages = api.get("/api/stats/stages", admin);
    assert!(
        stages.body["stages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "succeeded")
    );
    let costs = api.get("/api/stats/costs?by=group", admin);
    assert_eq!(costs.body["costs"][0]["group"], json!(group_id));
    assert_eq!(costs.body["costs"][0]["total_cost_cents"], 50);
    api.get("/api/stats/costs?by=planet", admin)
        .error(400, "invalid_input");

    let metrics = api.get("/metrics", admin);
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        metrics.text.contains("jobq_jobs{status=\"succeeded\"} 1"),
        "{}",
        metrics.text
    );

    let page = api.get("/", Auth::None);
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.text.contains("<title>jobq</title>"));

    assert_eq!(
        api.delete(&format!("/api/groups/{group_id}"), admin).status,
        204
    );
    api.get(&format!("/api/groups/{group_id}"), admin)
        .error(404, "not_found");
    assert_eq!(
        api.get("/api/stats", admin).body["stats"]["total"],
        0,
        "the group took its jobs along"
    );
}

#[test]
fn an_owners_token_reaches_only_that_owners_rows() {
    let api = Api::start();
    let alice = api.queue.create_token("alice").unwrap();
    let bob = api.queue.create_token("bob").unwrap();
    let (a, b) = (Auth::Token(&alice), Auth::Token(&bob));

    let mine = api.post("/api/jobs", a, json!({"kind": "render"}));
    assert_eq!(mine.status, 201);
    let alices = mine.body["job_id"].as_str().unwrap().to_string();
    assert_eq!(
        api.queue
            .get(&alices.parse().unwrap())
            .unwrap()
            .owner
            .as_deref(),
        Some("alice"),
        "stamped with its owner"
    );
    let bobs = api.post("/api/jobs", b, json!({"kind": "render"})).body["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bobs_group = api.post("/api/groups", b, json!({"name": "bob's"})).body["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Make bob's job failed, so that a retry would be allowed if alice could reach it.
    let bobs_failed = api
        .queue
        .scoped("bob")
        .enqueue(NewJob::new("x").max_attempts(1))
        .unwrap()
        .job_id;
    let lease = api
        .queue
        .scoped("bob")
        .claim("w", 10, &ClaimFilter::default())
        .unwrap()
        .into_iter()
        .find(|j| j.id == bobs_failed)
        .unwrap()
        .lease();
    api.queue.fail(&lease, &JobError::retryable("x")).unwrap();
    let before = crate::common::dump(api.queue.path());

    api.get(&format!("/api/jobs/{bobs}"), a)
        .error(404, "not_found");
    api.post(&format!("/api/jobs/{bobs}"), a, json!({"action": "cancel"}))
        .error(404, "not_found");
    api.post(
        &format!("/api/jobs/{bobs_failed}"),
        a,
        json!({"action": "retry"}),
    )
    .error(404, "not_found");
    api.delete(&format!("/api/jobs/{bobs}"), a)
        .error(404, "not_found");
    api.get(&format!("/api/groups/{bobs_group}"), a)
        .error(404, "not_found");
    api.delete(&format!("/api/groups/{bobs_group}"), a)
        .error(404, "not_found");
    api.post("/api/jobs", a, json!({"kind": "x", "group_id": bobs_group}))
        .error(404, "not_found");
    api.post("/api/jobs", a, json!({"kind": "x", "owner": "bob"}))
        .error(400, "invalid_input");
    let arrived = |auth| -> i64 {
        let series = api.get("/api/series?window=2h&step=1h", auth);
        series.body["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["enqueued"].as_i64().unwrap())
            .sum()
    };
    assert_eq!(
        (arrived(a), arrived(b), arrived(Auth::Admin)),
        (1, 2, 3),
        "a token's series holds its owner's jobs only"
    );
    let listed = api.get("/api/jobs", a);
    assert_eq!(
        listed.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec![alices.as_str()]
    );
    assert_eq!(api.get("/api/stats", a).body["stats"]["total"], 1);
    assert_eq!(api.get("/api/jobs/dead", a).body["dead"], json!([]));
    api.get("/metrics", a).error(403, "forbidden");
    assert_eq!(
        crate::common::dump(api.queue.path()),
        before,
        "nothing changed"
    );

    // The admin key reaches everything.
    assert_eq!(
        api.get(&format!("/api/jobs/{bobs}"), Auth::Admin).status,
        200
    );
    assert_eq!(
        api.post(
            &format!("/api/jobs/{bobs}"),
            Auth::Admin,
            json!({"action": "cancel"})
        )
        .status,
        200
    );
    assert_eq!(
        api.delete(&format!("/api/jobs/{bobs}"), Auth::Admin).status,
        204
    );
    assert_eq!(api.get("/api/stats", Auth::Admin).body["stats"]["total"], 2);
}

#[test]
fn requests_without_valid_credentials_get_401() {
    let api = Api::start();
    let token = api.queue.create_token("carol").unwrap();
    for auth in [
        Auth::None,
        Auth::Key("wrong-key-wrong"),
        Auth::Token("jobq_nope_nope"),
        Auth::Token(&token[..token.len() - 1]),
    ] {
        for (method, path) in [
            ("GET", "/api/jobs"),
            ("GET", "/api/stats"),
            ("POST", "/api/jobs"),
            ("GET", "/metrics"),
            ("DELETE", "/api/jobs/01900000-0000-7000-8000-000000000000"),
        ] {
            let answer = api.call(method, path, auth, Some(&json!({"kind": "x"})));
            answer.error(401, "unauthorized");
        }
    }
    assert_eq!(api.queue.stats(&jobq::StatsFilter::new()).unwrap().total, 0);
    assert_eq!(api.get("/api/jobs", Auth::Token(&token)).status, 200);
}

/// One character of `text` at `at` replaced by another hex digit (the length is kept).
fn one_changed(text: &str, at: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[at] = if chars[at] == '0' { '1' } else { '0' };
    chars.into_iter().collect()
}

#[test]
fn only_the_whole_admin_key_or_the_whole_token_is_accepted() {
    let api = Api::start();
    let token = api.queue.create_token("erin").unwrap();
    api.queue
        .scoped("erin")
        .enqueue(NewJob::new("mine"))
        .unwrap();
    let prefix = &KEY[..KEY.len() - 1];
    let longer = format!("{KEY}x");
    let changed = one_changed(KEY, KEY.len() - 1);
    for key in [prefix, &KEY[..8], longer.as_str(), changed.as_str(), ""] {
        api.get("/api/jobs", Auth::Key(key))
            .error(401, "unauthorized");
    }
    // A token with any one character of its secret changed, cut short or made longer.
    let secret_at = token.rfind('_').unwrap() + 1;
    let mut wrong: Vec<String> = [secret_at, secret_at + 8, secret_at + 31, token.len() - 1]
        .into_iter()
        .map(|at| one_changed(&token, at))
        .collect();
    wrong.push(format!("{token}0"));
    wrong.push(token[..token.len() - 1].to_string());
    wrong.push(one_changed(&token, 5));
    for bad in &wrong {
        api.get("/api/jobs", Auth::Token(bad))
            .error(401, "unauthorized");
    }
    assert_eq!(api.get("/api/jobs", Auth::Token(&token)).status, 200);
    // The stored hash is compared whole: one that agrees with the token's on all but its
    // last characters refuses it.
    execute(
        api.queue.path(),
        "UPDATE jobq_tokens SET secret_hash = substr(secret_hash, 1, 60) ||
             CASE WHEN substr(secret_hash, 61) = '0000' THEN '1111' ELSE '0000' END",
    );
    api.get("/api/jobs", Auth::Token(&token))
        .error(401, "unauthorized");

    // A wrong admin key is refused even beside a valid token: no falling through to it.
    let url = api.url("/api/jobs");
    let mut both = api
        .agent
        .get(&url)
        .header("X-Admin-Key", "wrong-key-wrong")
        .header("Authorization", format!("Bearer {token}"))
        .call()
        .unwrap();
    assert_eq!(both.status().as_u16(), 401);
    let doc: Value = both.body_mut().read_json().unwrap();
    assert_eq!(doc["error"]["code"], "unauthorized");
}

#[test]
fn bodies_past_the_limit_are_refused_whole_whether_announced_or_chunked() {
    let api = Api::start();
    let before = crate::common::dump(api.queue.path());
    // Announced one byte past the limit: 413 at once, before any of it arrives.
    let mut stream = TcpStream::connect(api.server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{{",
                jobq::http::MAX_BODY + 1
            )
            .as_bytes(),
        )
        .unwrap();
    let mut reply = [0u8; 12];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.1 413");

    // Chunked, with no length announced: refused once it passes the limit, not cut short
    // and stored.
    let input = "x".repeat(jobq::http::MAX_BODY);
    let body = json!({"kind": "k", "input": {"blob": input}}).to_string();
    let mut stream = TcpStream::connect(api.server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(
        format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    for chunk in body.as_bytes().chunks(64 << 10) {
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .and_then(|_| stream.write_all(chunk))
            .and_then(|_| stream.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n");
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("payload_too_large"), "{reply}");

    // Just under the limit, chunked, is taken whole.
    let fits =
        json!({"kind": "k", "input": {"blob": "y".repeat(jobq::http::MAX_BODY - 100)}}).to_string();
    assert!(fits.len() <= jobq::http::MAX_BODY);
    let mut stream = TcpStream::connect(api.server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{fits}\r\n0\r\n\r\n", fits.len())
                .as_bytes(),
        )
        .unwrap();
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply);
    assert!(
        reply.starts_with("HTTP/1.1 201"),
        "{}",
        &reply[..reply.len().min(300)]
    );
    let stored = api.queue.list(&jobq::JobFilter::new()).unwrap().jobs;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].input["blob"].as_str().unwrap().len(),
        jobq::http::MAX_BODY - 100
    );
    assert_ne!(crate::common::dump(api.queue.path()), before);
}

#[test]
fn bad_requests_get_413_400_404_405_and_change_nothing() {
    let api = Api::start();
    let admin = Auth::Admin;
    let id = api.post("/api/jobs", admin, json!({"kind": "k"})).body["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = crate::common::dump(api.queue.path());

    // Over 1 MiB: refused from its Content-Length, before the body is read.
    let huge = json!({"kind": "k", "input": {"blob": "x".repeat(1_100_000)}});
    let big = api.post("/api/jobs", admin, huge);
    big.error(413, "payload_too_large");

    for (body, field) in [
        (json!({"kind": "k", "priority": "high"}), "priority"),
        (json!({"kind": "k", "max_attempts": -1}), "max_attempts"),
        (json!({"kind": "k", "max_attempts": 0}), "max_attempts"),
        (json!({"kind": 5}), "kind"),
        (json!({"input": {}}), "kind"),
        (json!({"kind": "k", "colour": "blue"}), "colour"),
        (json!({"kind": "k", "run_after": "tomorrow"}), "run_after"),
        (json!({"kind": "k", "cost_cents": -1}), "cost_cents"),
        (json!({"kind": ""}), "kind"),
        (json!(["not", "an", "object"]), "object"),
    ] {
        let message = api
            .post("/api/jobs", admin, body.clone())
            .error(400, "invalid_input")
            .to_string();
        assert!(message.contains(field), "{body}: {message}");
    }
    let raw = api.call("POST", "/api/jobs", admin, None);
    raw.error(400, "invalid_input");
    let url = api.url("/api/jobs");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut malformed = agent
        .post(&url)
        .header("X-Admin-Key", KEY)
        .header("Content-Type", "application/json")
        .send("{\"kind\": ")
        .unwrap();
    assert_eq!(malformed.status().as_u16(), 400);
    let doc: Value = malformed.body_mut().read_json().unwrap();
    assert_eq!(doc["error"]["code"], "invalid_json");
    api.post(
        &format!("/api/jobs/{id}"),
        admin,
        json!({"action": "explode"}),
    )
    .error(400, "invalid_input");
    api.post(
        &format!("/api/jobs/{id}"),
        admin,
        json!({"action": "cancel", "why": "x"}),
    )
    .error(400, "invalid_input");
    api.get("/api/jobs?status=bogus", admin)
        .error(400, "invalid_input");
    api.get("/api/jobs?limit=abc", admin)
        .error(400, "invalid_input");
    api.get("/api/stats/timing?since=forever", admin)
        .error(400, "invalid_input");

    api.get("/api/nothing-here", admin).error(404, "not_found");
    api.get("/api/jobs/x/y", admin).error(404, "not_found");
    api.get("/api/jobs/not-a-uuid", admin)
        .error(404, "not_found");
    let wrong = api.delete("/api/stats", admin);
    wrong.error(405, "method_not_allowed");
    assert_eq!(wrong.header("allow"), Some("GET"));
    api.call("PUT", "/api/jobs", admin, Some(&json!({})))
        .error(405, "method_not_allowed");
    api.delete("/api/jobs/running", admin)
        .error(405, "method_not_allowed");
    assert_eq!(
        crate::common::dump(api.queue.path()),
        before,
        "nothing changed"
    );
}

#[test]
fn a_budget_refusal_is_422() {
    let api = Api::start();
    api.queue.set_budget("dana", Some(100)).unwrap();
    let token = api.queue.create_token("dana").unwrap();
    assert_eq!(
        api.post(
            "/api/jobs",
            Auth::Token(&token),
            json!({"kind": "gen", "cost_cents": 80})
        )
        .status,
        201
    );
    let message = api
        .post(
            "/api/jobs",
            Auth::Token(&token),
            json!({"kind": "gen", "cost_cents": 30}),
        )
        .error(422, "budget_exceeded")
        .to_string();
    assert!(
        message.contains("dana") && message.contains("100"),
        "{message}"
    );
    assert_eq!(api.queue.stats(&jobq::StatsFilter::new()).unwrap().total, 1);
}

#[test]
fn many_concurrent_clients_enqueue_and_list_without_error_or_loss() {
    let api = Api::start();
    let url = api.url("");
    let ids: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let url = url.clone();
                s.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let mut mine = Vec::new();
                    for i in 0..60 {
                        let mut r = agent
                            .post(&format!("{url}/api/jobs"))
                            .header("X-Admin-Key", KEY)
                            .header("Content-Type", "application/json")
                            .send(json!({"kind": "load", "input": {"t": t, "i": i}}).to_string())
                            .unwrap();
                        assert_eq!(r.status().as_u16(), 201);
                        let doc: Value = r.body_mut().read_json().unwrap();
                        mine.push(doc["job_id"].as_str().unwrap().to_string());
                        if i % 5 == 0 {
                            let mut l = agent
                                .get(&format!("{url}/api/jobs?limit=20&stats=true"))
                                .header("X-Admin-Key", KEY)
                                .call()
                                .unwrap();
                            assert_eq!(l.status().as_u16(), 200);
                            let doc: Value = l.body_mut().read_json().unwrap();
                            assert!(
                                doc["jobs"].is_array()
                                    && doc["stats"]["stats"]["total"].as_i64().unwrap() >= 1
                            );
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: std::collections::HashSet<String> = ids.into_iter().flatten().collect();
    assert_eq!(all.len(), 480);
    let stored = api
        .queue
        .list(&jobq::JobFilter::new().limit(1000))
        .unwrap()
        .jobs;
    assert_eq!(stored.len(), 480);
    assert!(stored.iter().all(|j| all.contains(j.id.as_str())));
}

#[test]
fn a_slow_client_does_not_hold_the_server() {
    let api = Api::with(
        ServerConfig::new("127.0.0.1:0")
            .admin_key(KEY)
            .threads(1)
            .io_timeout(Duration::from_secs(1)),
    );
    // A client that sends half its headers, and one that promises a body it never sends.
    let mut half = TcpStream::connect(api.server.addr()).unwrap();
    half.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin")
        .unwrap();
    let mut stalled = TcpStream::connect(api.server.addr()).unwrap();
    stalled
        .write_all(format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"kind\"").as_bytes())
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        api.get("/api/stats", Auth::Admin).status,
        200,
        "still served"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The stalled body gets 408 (or the connection is closed) once the timeout passes.
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reply = String::new();
    let _ = stalled.read_to_string(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );
    half.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = half.read_to_end(&mut rest);
    assert_eq!(api.queue.stats(&jobq::StatsFilter::new()).unwrap().total, 0);
}

#[test]
fn the_server_refuses_to_run_open_unless_told_and_only_on_loopback() {
    let fresh = Db::fresh();
    let queue = Queue::open(fresh.path()).unwrap();
    let err = Server::start(queue.clone(), ServerConfig::new("127.0.0.1:0")).unwrap_err();
    assert!(err.to_string().contains("admin key"), "{err}");
    let err = Server::start(
        queue.clone(),
        ServerConfig::new("0.0.0.0:0").insecure_no_auth(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a loopback address"), "{err}");
    let err = Server::start(
        queue.clone(),
        ServerConfig::new("127.0.0.1:0").admin_key("short"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 8"), "{err}");
    let open = Server::start(
        queue.clone(),
        ServerConfig::new("127.0.0.1:0").insecure_no_auth(),
    )
    .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .get(&format!("http://{}/api/stats", open.addr()))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    open.shutdown();
    // A key makes any address acceptable.
    let keyed = Server::start(queue, ServerConfig::new("0.0.0.0:0").admin_key(KEY)).unwrap();
    keyed.shutdown();
}

#[test]
fn jobq_serve_starts_with_a_key_and_stops_on_sigterm() {
    let fresh = Db::fresh();
    let db = fresh.path();
    let jobq = env!("CARGO_BIN_EXE_jobq");
    let out = Command::new(jobq)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env_remove("JOBQ_ADMIN_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin key"));
    let out = Command::new(jobq)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--addr", "0.0.0.0:0", "--insecure-no-auth"])
        .env_remove("JOBQ_ADMIN_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));

    let mut child = Command::new(jobq)
        .arg("--db")
        .arg(&db)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("JOBQ_ADMIN_KEY", KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(&format!("http://{addr}/api/jobs"))
        .header("X-Admin-Key", KEY)
        .header("Content-Type", "application/json")
        .send(r#"{"kind":"from-http"}"#)
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let doc: Value = r.body_mut().read_json().unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success());
    let queue = Queue::open(&db).unwrap();
    assert_eq!(
        queue
            .get(&doc["job_id"].as_str().unwrap().parse().unwrap())
            .unwrap()
            .kind,
        "from-http"
    );
}

#[test]
fn an_idle_server_keeps_accepting_past_its_io_timeout() {
    let api = Api::with(
        ServerConfig::new("127.0.0.1:0")
            .admin_key(KEY)
            .io_timeout(Duration::from_millis(300)),
    );
    assert_eq!(api.get("/api/stats", Auth::Admin).status, 200);
    // Five times the timeout without a request: accept must not have timed out for good.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(api.get("/api/stats", Auth::Admin).status, 200);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(api.get("/api/jobs", Auth::Admin).status, 200);
}

#[test]
fn an_admin_sets_budgets_and_retries_the_dead_letter_over_http() {
    let api = Api::start();
    let token = api.queue.create_token("dana").unwrap();
    let put = |auth, body: Value| api.call("PUT", "/api/owners/dana/budget", auth, Some(&body));
    let owner = put(Auth::Admin, json!({"budget_cents": 500}));
    assert_eq!(owner.status, 200, "{}", owner.text);
    assert_eq!(owner.body["budget_cents"], 500);
    let before = crate::common::dump(api.queue.path());
    put(Auth::Token(&token), json!({"budget_cents": 1_000_000})).error(403, "forbidden");
    put(Auth::Admin, json!({"budget_cents": -1})).error(400, "invalid_input");
    put(Auth::Admin, json!({"budget_cents": "lots"})).error(400, "invalid_input");
    put(Auth::Admin, json!({})).error(400, "invalid_input");
    put(Auth::Admin, json!({"budget_cents": 5, "colour": "red"})).error(400, "invalid_input");
    assert_eq!(crate::common::dump(api.queue.path()), before);
    assert_eq!(
        put(Auth::Admin, json!({"budget_cents": null})).body["budget_cents"],
        Value::Null
    );

    for kind in ["a", "a", "b"] {
        let id = api
            .queue
            .enqueue(NewJob::new(kind).max_attempts(1))
            .unwrap()
            .job_id;
        let lease = api.queue.claim("w", 1, &ClaimFilter::default()).unwrap()[0].lease();
        assert_eq!(lease.job_id, id);
        api.queue.fail(&lease, &JobError::permanent("x")).unwrap();
    }
    let retried = api.post(
        "/api/jobs/dead",
        Auth::Admin,
        json!({"action": "retry", "kind": "a"}),
    );
    assert_eq!(
        (retried.status, retried.body["retried"].as_u64()),
        (200, Some(2))
    );
    let retried = api.post("/api/jobs/dead", Auth::Admin, json!({"action": "retry"}));
    assert_eq!(retried.body["retried"], 1);
    api.post("/api/jobs/dead", Auth::Admin, json!({"action": "bury"}))
        .error(400, "invalid_input");
    let stats = api.queue.stats(&jobq::StatsFilter::new()).unwrap();
    assert_eq!(stats.count(jobq::Status::Queued), 3);
}

#[test]
fn flows_dependencies_and_windows_over_http() {
    let api = Api::start();
    let token = api.queue.create_token("dana").unwrap();
    let flow = json!({
        "group": {"name": "campaign", "metadata": {"client": "acme"}},
        "jobs": [
            {"ref": "composite", "kind": "composite", "after": ["scene-1", "scene-2"]},
            {"ref": "scene-1", "kind": "render", "input": {"scene": 1}, "priority": 5},
            {"ref": "scene-2", "kind": "render", "input": {"scene": 2}},
        ]
    });
    let created = api.post("/api/flows", Auth::Token(&token), flow);
    assert_eq!(created.status, 201, "{}", created.text);
    let group_id = created.body["group_id"].as_str().unwrap().to_string();
    let composite = created.body["jobs"]["composite"]
        .as_str()
        .unwrap()
        .to_string();
    let scene = created.body["jobs"]["scene-1"]
        .as_str()
        .unwrap()
        .to_string();
    let job = api.get(&format!("/api/jobs/{composite}"), Auth::Token(&token));
    assert_eq!(job.body["status"], "blocked");
    assert_eq!(job.body["dependencies"].as_array().unwrap().len(), 2);
    assert_eq!(job.body["dependencies"][0]["status"], "queued");
    let scene_job = api.get(&format!("/api/jobs/{scene}"), Auth::Token(&token));
    assert_eq!(scene_job.body["dependents"][0]["id"], composite.as_str());
    assert_eq!(
        scene_job.body["owner"], "dana",
        "what a token creates is its owner's"
    );
    let group = api.get(&format!("/api/groups/{group_id}"), Auth::Token(&token));
    assert_eq!(
        (group.body["total"].as_i64(), group.body["owner"].as_str()),
        (Some(3), Some("dana"))
    );

    // Refusals name the ref, and nothing is created.
    let erin = api.queue.create_token("erin").unwrap();
    let before = crate::common::dump(api.queue.path());
    for (body, needle) in [
        (
            json!({"jobs": [{"ref": "a", "kind": "a", "after": ["ghost"]}]}),
            "ghost",
        ),
        (
            json!({"jobs": [
                {"ref": "a", "kind": "a", "after": ["b"]},
                {"ref": "b", "kind": "b", "after": ["a"]}]}),
            "cycle",
        ),
        (
            json!({"jobs": [{"ref": "a", "kind": "a", "colour": "red"}]}),
            "colour",
        ),
        (json!({"jobs": [{"kind": "a"}]}), "ref"),
        (json!({"jobs": []}), "at least one"),
        (
            json!({"jobs": [{"ref": "a", "kind": "a", "max_attempts": 0}]}),
            "\"a\"",
        ),
    ] {
        let answer = api.post("/api/flows", Auth::Admin, body);
        let message = answer.error(400, "invalid_input");
        assert!(message.contains(needle), "{needle}: {message}");
    }
    // Another owner's job is not a dependency one can name.
    api.post(
        "/api/jobs",
        Auth::Token(&erin),
        json!({"kind": "x", "after": [scene]}),
    )
    .error(400, "invalid_input");
    api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "x", "after": ["not-an-id"]}),
    )
    .error(400, "invalid_input");
    api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "x", "on_dependency_failure": "maybe"}),
    )
    .error(400, "invalid_input");
    assert_eq!(crate::common::dump(api.queue.path()), before);

    // POST /api/jobs: after, the policy, and a uniqueness window.
    let after = api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "report", "after": [composite], "on_dependency_failure": "run"}),
    );
    assert_eq!(
        (after.status, after.body["status"].as_str()),
        (201, Some("blocked"))
    );
    let windowed = json!({"kind": "sync", "idempotency_key": "k", "unique_for": "1h"});
    let first = api.post("/api/jobs", Auth::Admin, windowed.clone());
    let again = api.post("/api/jobs", Auth::Admin, windowed);
    assert_eq!((first.status, again.status), (201, 200));
    assert_eq!(first.body["job_id"], again.body["job_id"]);
    let active = json!({"kind": "sync", "idempotency_key": "w", "unique_while_active": true});
    assert_eq!(api.post("/api/jobs", Auth::Admin, active).status, 201);
    // A job others wait for cannot be deleted while they wait.
    api.delete(&format!("/api/jobs/{scene}"), Auth::Admin)
        .error(409, "invalid_transition");
}

#[test]
fn schedules_over_http_are_owner_scoped() {
    let api = Api::start();
    let dana = api.queue.create_token("dana").unwrap();
    let erin = api.queue.create_token("erin").unwrap();
    let created = api.post(
        "/api/schedules",
        Auth::Token(&dana),
        json!({"name": "nightly", "cron": "0 2 * * *", "kind": "report", "timezone": "Europe/Paris",
               "catch_up": "all", "input": {"full": true}}),
    );
    assert_eq!(created.status, 201, "{}", created.text);
    assert_eq!(created.body["owner"], "dana");
    assert_eq!(created.body["catch_up"], "all");
    let every = api.post(
        "/api/schedules",
        Auth::Admin,
        json!({"name": "tick", "every": "5m", "kind": "ping"}),
    );
    assert_eq!(
        (every.status, every.body["every"].as_str()),
        (201, Some("5m"))
    );
    // Each owner sees its own; the admin sees all.
    let list = api.get("/api/schedules", Auth::Token(&dana));
    assert_eq!(list.body["schedules"].as_array().unwrap().len(), 1);
    assert!(
        api.get("/api/schedules", Auth::Token(&erin)).body["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        api.get("/api/schedules", Auth::Admin).body["schedules"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Another owner's schedule is 404, never 403.
    api.post(
        "/api/schedules/nightly",
        Auth::Token(&erin),
        json!({"action": "pause"}),
    )
    .error(404, "not_found");
    api.delete("/api/schedules/nightly", Auth::Token(&erin))
        .error(404, "not_found");
    let paused = api.post(
        "/api/schedules/nightly",
        Auth::Token(&dana),
        json!({"action": "pause"}),
    );
    assert_eq!(paused.body["paused"], true);
    let resumed = api.post(
        "/api/schedules/nightly",
        Auth::Token(&dana),
        json!({"action": "resume"}),
    );
    assert_eq!(resumed.body["paused"], false);
    // Refusals change nothing.
    let before = crate::common::dump(api.queue.path());
    for body in [
        json!({"name": "x", "kind": "k"}),
        json!({"name": "x", "kind": "k", "cron": "* * * * *", "every": "1m"}),
        json!({"name": "x", "kind": "k", "cron": "not cron"}),
        json!({"name": "x", "kind": "k", "every": "1m", "timezone": "Nowhere/Else"}),
        json!({"name": "x", "kind": "k", "every": "1m", "catch_up": "some"}),
        json!({"name": "x", "kind": "k", "every": "1m", "colour": "red"}),
    ] {
        api.post("/api/schedules", Auth::Admin, body)
            .error(400, "invalid_input");
    }
    api.post(
        "/api/schedules",
        Auth::Token(&dana),
        json!({"name": "nightly", "every": "1m", "kind": "k"}),
    )
    .error(409, "duplicate");
    api.post(
        "/api/schedules/tick",
        Auth::Admin,
        json!({"action": "explode"}),
    )
    .error(400, "invalid_input");
    assert_eq!(crate::common::dump(api.queue.path()), before);
    assert_eq!(
        api.delete("/api/schedules/nightly", Auth::Token(&dana))
            .status,
        204
    );
    assert!(
        api.get("/api/schedules", Auth::Token(&dana)).body["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn jobq_serve_fires_the_schedules_that_are_due() {
    let api = Api::start();
    let added = api.post(
        "/api/schedules",
        Auth::Admin,
        json!({"name": "tick", "every": "1s", "kind": "tick"}),
    );
    assert_eq!(added.status, 201, "{}", added.text);
    // No worker runs: the server alone fires it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let jobs = api.get("/api/jobs?kind=tick", Auth::Admin);
        if jobs.body["jobs"].as_array().is_some_and(|j| j.len() >= 2) {
            let key = jobs.body["jobs"][0]["idempotency_key"].as_str().unwrap();
            assert!(key.starts_with("schedule:tick:"), "{key}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server fired nothing"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn queues_over_http_need_the_admin_key() {
    let api = Api::start();
    let token = api.queue.create_token("dana").unwrap();
    api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "render", "queue": "gpu", "concurrency_key": "customer-1"}),
    );
    let limited = api.post(
        "/api/queues/gpu",
        Auth::Admin,
        json!({"max_running": 2, "max_running_per_key": 1, "rate": "100/1m"}),
    );
    assert_eq!(limited.status, 200, "{}", limited.text);
    assert_eq!(
        (
            limited.body["max_running"].as_u64(),
            limited.body["max_running_per_key"].as_u64(),
            limited.body["rate"].as_str()
        ),
        (Some(2), Some(1), Some("100/1m"))
    );
    let paused = api.post("/api/queues/gpu", Auth::Admin, json!({"action": "pause"}));
    assert_eq!(paused.body["paused"], true);
    let list = api.get("/api/queues", Auth::Admin);
    let gpu = list.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "gpu")
        .unwrap()
        .clone();
    assert_eq!(
        (gpu["ready"].as_i64(), gpu["paused"].as_bool()),
        (Some(1), Some(true))
    );
    // `null` clears a limit; the others stay.
    let cleared = api.post("/api/queues/gpu", Auth::Admin, json!({"max_running": null}));
    assert_eq!(
        (
            cleared.body["max_running"].clone(),
            cleared.body["max_running_per_key"].as_u64()
        ),
        (Value::Null, Some(1))
    );
    api.get("/api/queues", Auth::Token(&token))
        .error(403, "forbidden");
    api.post(
        "/api/queues/gpu",
        Auth::Token(&token),
        json!({"action": "resume"}),
    )
    .error(403, "forbidden");
    let before = crate::common::dump(api.queue.path());
    for body in [
        json!({"action": "stop"}),
        json!({"rate": "fast"}),
        json!({"max_running": -1}),
        json!({}),
        json!({"colour": 1}),
    ] {
        api.post("/api/queues/gpu", Auth::Admin, body)
            .error(400, "invalid_input");
    }
    assert_eq!(crate::common::dump(api.queue.path()), before);
}

#[test]
fn names_in_paths_are_percent_decoded_once() {
    let api = Api::start();
    for (name, path) in [
        ("my queue", "my%20queue"),
        ("café", "caf%C3%A9"),
        ("a/b", "a%2Fb"),
        ("100%", "100%25"),
    ] {
        api.post(
            "/api/jobs",
            Auth::Admin,
            json!({"kind": "k", "queue": name}),
        );
        let paused = api.post(
            &format!("/api/queues/{path}"),
            Auth::Admin,
            json!({"action": "pause"}),
        );
        assert_eq!(
            (paused.status, paused.body["name"].as_str()),
            (200, Some(name)),
            "{}",
            paused.text
        );
        let queues = api.get("/api/queues", Auth::Admin);
        let all = queues.body["queues"].as_array().unwrap();
        assert!(
            all.iter().any(|q| q["name"] == name && q["paused"] == true),
            "{name}: {all:?}"
        );
        assert!(
            !all.iter().any(|q| q["name"] == path && path != name),
            "a phantom queue {path}: {all:?}"
        );
        let added = api.post(
            "/api/schedules",
            Auth::Admin,
            json!({"name": format!("nightly {name}"), "every": "1h", "kind": "report"}),
        );
        assert_eq!(added.status, 201, "{}", added.text);
        let schedule = format!("/api/schedules/nightly%20{path}");
        let paused = api.post(&schedule, Auth::Admin, json!({"action": "pause"}));
        assert_eq!(
            (paused.status, paused.body["paused"].as_bool()),
            (200, Some(true)),
            "{}",
            paused.text
        );
        assert_eq!(api.delete(&schedule, Auth::Admin).status, 204);
    }
    assert!(
        api.get("/api/schedules", Auth::Admin).body["schedules"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    // A budget for an owner whose id needs escaping.
    let budget = api.call(
        "PUT",
        "/api/owners/acme%20corp/budget",
        Auth::Admin,
        Some(&json!({"budget_cents": 100})),
    );
    assert_eq!(
        (budget.status, budget.body["id"].as_str()),
        (200, Some("acme corp")),
        "{}",
        budget.text
    );
}

#[test]
fn every_admin_only_route_answers_a_token_with_403_and_changes_nothing() {
    let api = Api::start();
    let token = api.queue.create_token("dana").unwrap();
    api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "k", "queue": "gpu"}),
    );
    let before = crate::common::dump(api.queue.path());
    for (method, path, body) in [
        ("GET", "/metrics", None),
        ("GET", "/api/workers", None),
        ("GET", "/api/queues", None),
        ("POST", "/api/queues/gpu", Some(json!({"action": "pause"}))),
        (
            "PUT",
            "/api/owners/dana/budget",
            Some(json!({"budget_cents": 1})),
        ),
    ] {
        let answer = api.call(method, path, Auth::Token(&token), body.as_ref());
        let message = answer.error(403, "forbidden");
        assert!(message.contains("admin key"), "{method} {path}: {message}");
    }
    assert_eq!(crate::common::dump(api.queue.path()), before);
}

#[test]
fn an_admin_names_a_schedules_owner_replaces_and_runs_it_over_http() {
    let api = Api::start();
    for owner in ["acme", "globex"] {
        let added = api.post(
            "/api/schedules",
            Auth::Admin,
            json!({"name": "nightly", "every": "1h", "kind": "report", "owner": owner}),
        );
        assert_eq!(added.status, 201, "{}", added.text);
    }
    // Two owners share the name: the admin says whose.
    api.post(
        "/api/schedules/nightly",
        Auth::Admin,
        json!({"action": "pause"}),
    )
    .error(400, "invalid_input");
    let paused = api.post(
        "/api/schedules/nightly?owner=acme",
        Auth::Admin,
        json!({"action": "pause"}),
    );
    assert_eq!(
        (
            paused.status,
            paused.body["owner"].as_str(),
            paused.body["paused"].as_bool()
        ),
        (200, Some("acme"), Some(true)),
        "{}",
        paused.text
    );
    // A token cannot reach another owner's through the parameter.
    let token = api.queue.create_token("globex").unwrap();
    api.post(
        "/api/schedules/nightly?owner=acme",
        Auth::Token(&token),
        json!({"action": "resume"}),
    )
    .error(404, "not_found");
    // Run now: one job, its slots unchanged.
    let ran = api.post(
        "/api/schedules/nightly?owner=globex",
        Auth::Admin,
        json!({"action": "run"}),
    );
    assert_eq!(ran.status, 201, "{}", ran.text);
    let job = api.get(
        &format!("/api/jobs/{}", ran.body["job_id"].as_str().unwrap()),
        Auth::Admin,
    );
    assert_eq!(
        (job.body["kind"].as_str(), job.body["owner"].as_str()),
        (Some("report"), Some("globex"))
    );
    // Replace in place, for the token's owner.
    let replaced = api.post(
        "/api/schedules",
        Auth::Token(&token),
        json!({"name": "nightly", "cron": "0 3 * * *", "kind": "summary", "replace": true}),
    );
    assert_eq!(
        (
            replaced.status,
            replaced.body["cron"].as_str(),
            replaced.body["kind"].as_str()
        ),
        (201, Some("0 3 * * *"), Some("summary")),
        "{}",
        replaced.text
    );
    assert_eq!(
        api.delete("/api/schedules/nightly?owner=acme", Auth::Admin)
            .status,
        204
    );
    assert_eq!(
        api.get("/api/schedules", Auth::Admin).body["schedules"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_flow_posted_again_with_its_key_answers_the_first_with_200() {
    let api = Api::start();
    let flow = json!({"key": "campaign-7", "group": {"name": "campaign"},
                      "jobs": [{"ref": "scene", "kind": "render"},
                               {"ref": "final", "kind": "composite", "after": ["scene"]}]});
    let first = api.post("/api/flows", Auth::Admin, flow.clone());
    assert_eq!(
        (first.status, first.body["already_existed"].as_bool()),
        (201, Some(false)),
        "{}",
        first.text
    );
    let again = api.post("/api/flows", Auth::Admin, flow);
    assert_eq!(
        (again.status, again.body["already_existed"].as_bool()),
        (200, Some(true)),
        "{}",
        again.text
    );
    assert_eq!(again.body["group_id"], first.body["group_id"]);
    assert_eq!(again.body["jobs"], first.body["jobs"]);
    let view = api.get(
        &format!(
            "/api/groups/{}/flow",
            first.body["group_id"].as_str().unwrap()
        ),
        Auth::Admin,
    );
    let refs: Vec<&str> = view.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["ref"].as_str())
        .collect();
    assert_eq!(refs, ["scene", "final"]);
    let job = api.get(
        &format!(
            "/api/jobs/{}",
            first.body["jobs"]["final"].as_str().unwrap()
        ),
        Auth::Admin,
    );
    assert_eq!(
        (
            job.body["ref"].as_str(),
            job.body["dependencies"][0]["ref"].as_str()
        ),
        (Some("final"), Some("scene"))
    );
}

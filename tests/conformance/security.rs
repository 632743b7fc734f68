//! Security: owner isolation tried through every HTTP route and every library call of a
//! scoped handle (another owner's job or group is "not found" and nothing changes), tokens
//! kept only as hashes, no SQL built by formatting strings, and no open server off loopback.

use jobq::http::{Server, ServerConfig};
use jobq::{ClaimFilter, Error, JobError, JobFilter, Lease, NewJob, Queue, Status};
use serde_json::{Value, json};

use crate::common::{Db, dump};
use crate::http::{Api, Auth};

/// Bob's rows, seen by alice: a queued job, a running job (with its lease), a failed job and
/// a group.
struct Foreign {
    queued: String,
    running: Lease,
    failed: String,
    group: String,
}

fn bobs_rows(queue: &Queue) -> Foreign {
    let bob = queue.scoped("bob");
    let group = bob.create_group("bob's campaign", None).unwrap().id;
    let queued = bob
        .enqueue(NewJob::new("render").group(&group))
        .unwrap()
        .job_id
        .to_string();
    bob.enqueue(NewJob::new("run").queue("bob-q")).unwrap();
    let running = bob
        .claim("bobs-worker", 1, &ClaimFilter::queues(["bob-q"]))
        .unwrap()
        .remove(0)
        .lease();
    bob.enqueue(NewJob::new("doomed").queue("bob-fail").max_attempts(1))
        .unwrap();
    let lease = bob
        .claim("bobs-worker", 1, &ClaimFilter::queues(["bob-fail"]))
        .unwrap()
        .remove(0)
        .lease();
    bob.fail(&lease, &JobError::permanent("x")).unwrap();
    Foreign {
        queued,
        running,
        failed: lease.job_id.to_string(),
        group,
    }
}

#[test]
fn every_http_route_refuses_another_owners_ids_with_404_and_changes_nothing() {
    let api = Api::start();
    let foreign = bobs_rows(&api.queue);
    let alice = api.queue.create_token("alice").unwrap();
    let before = dump(api.queue.path());
    let running = foreign.running.job_id.to_string();
    let table: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", format!("/api/jobs/{}", foreign.queued), None),
        ("GET", format!("/api/jobs/{running}"), None),
        ("GET", format!("/api/jobs/{}", foreign.failed), None),
        (
            "POST",
            format!("/api/jobs/{}", foreign.queued),
            Some(json!({"action": "cancel"})),
        ),
        (
            "POST",
            format!("/api/jobs/{running}"),
            Some(json!({"action": "cancel"})),
        ),
        (
            "POST",
            format!("/api/jobs/{}", foreign.failed),
            Some(json!({"action": "retry"})),
        ),
        ("DELETE", format!("/api/jobs/{}", foreign.queued), None),
        ("DELETE", format!("/api/jobs/{}", foreign.failed), None),
        ("GET", format!("/api/groups/{}", foreign.group), None),
        ("DELETE", format!("/api/groups/{}", foreign.group), None),
        (
            "POST",
            "/api/jobs".into(),
            Some(json!({"kind": "sneak", "group_id": foreign.group})),
        ),
    ];
    for (method, path, body) in &table {
        let answer = api.call(method, path, Auth::Token(&alice), body.as_ref());
        assert_eq!(answer.status, 404, "{method} {path}: {answer:?}");
        assert_eq!(answer.body["error"]["code"], "not_found");
        assert_eq!(
            dump(api.queue.path()),
            before,
            "{method} {path} changed something"
        );
    }
    // Reads list nothing of bob's.
    for path in [
        "/api/jobs",
        "/api/jobs?status=failed",
        "/api/jobs/running",
        "/api/jobs/dead",
        "/api/groups",
        "/api/stats/costs?by=owner",
    ] {
        let answer = api.get(path, Auth::Token(&alice));
        assert_eq!(answer.status, 200, "{path}");
        assert!(
            !answer.text.contains("bob"),
            "{path} leaks bob's rows: {}",
            answer.text
        );
        for id in [&foreign.queued, &running, &foreign.failed, &foreign.group] {
            assert!(!answer.text.contains(id.as_str()), "{path} leaks {id}");
        }
    }
    assert_eq!(
        api.get("/api/stats", Auth::Token(&alice)).body["stats"]["total"],
        0
    );
    assert_eq!(dump(api.queue.path()), before);
}

#[test]
fn every_library_call_of_a_scoped_handle_refuses_another_owners_rows() {
    let db = Db::fresh();
    let admin = Queue::open(db.path()).unwrap();
    let foreign = bobs_rows(&admin);
    let alice = admin.scoped("alice");
    let before = dump(admin.path());
    let queued = foreign.queued.parse().unwrap();
    let failed = foreign.failed.parse().unwrap();
    let lease = foreign.running.clone();
    type Call<'a> = (&'a str, Box<dyn Fn() -> Result<(), Error> + 'a>);
    let table: Vec<Call> = vec![
        ("get", Box::new(|| alice.get(&queued).map(|_| ()))),
        ("cancel", Box::new(|| alice.cancel(&queued).map(|_| ()))),
        ("retry", Box::new(|| alice.retry(&failed).map(|_| ()))),
        ("delete", Box::new(|| alice.delete(&failed).map(|_| ()))),
        (
            "transition to running",
            Box::new(|| alice.transition(&queued, Status::Running, None).map(|_| ())),
        ),
        (
            "transition to cancelled",
            Box::new(|| {
                alice
                    .transition(&queued, Status::Cancelled, None)
                    .map(|_| ())
            }),
        ),
        (
            "complete with bob's lease",
            Box::new(|| alice.complete(&lease, json!("forged"))),
        ),
        (
            "fail with bob's lease",
            Box::new(|| {
                alice
                    .fail(&lease, &JobError::permanent("forged"))
                    .map(|_| ())
            }),
        ),
        ("release bob's lease", Box::new(|| alice.release(&lease))),
        (
            "heartbeat bob's lease",
            Box::new(|| alice.heartbeat(&lease)),
        ),
        (
            "set_progress with bob's lease",
            Box::new(|| alice.set_progress(&lease, 0.9, Some("forged"))),
        ),
        (
            "add_cost with bob's lease",
            Box::new(|| alice.add_cost(&lease, 1000)),
        ),
        (
            "get_group",
            Box::new(|| alice.get_group(&foreign.group).map(|_| ())),
        ),
        (
            "delete_group",
            Box::new(|| alice.delete_group(&foreign.group).map(|_| ())),
        ),
        (
            "enqueue into bob's group",
            Box::new(|| {
                alice
                    .enqueue(NewJob::new("sneak").group(&foreign.group))
                    .map(|_| ())
            }),
        ),
        (
            "get_owner bob",
            Box::new(|| alice.get_owner("bob").map(|_| ())),
        ),
    ];
    for (what, call) in &table {
        let err = call().unwrap_err();
        assert!(
            err.is_not_found(),
            "{what}: expected not found, got {err:?}"
        );
        assert_eq!(dump(admin.path()), before, "{what} changed something");
    }
    assert!(
        alice
            .heartbeat_many("bobs-worker", std::slice::from_ref(&lease))
            .unwrap()
            .is_empty()
    );
    assert!(
        alice
            .claim(
                "alice-worker",
                10,
                &ClaimFilter::queues(["default", "bob-q", "bob-fail"])
            )
            .unwrap()
            .is_empty()
    );
    assert!(
        alice
            .list(&JobFilter::new().owner("bob"))
            .unwrap()
            .jobs
            .is_empty()
    );
    assert_eq!(alice.stats(&jobq::StatsFilter::new()).unwrap().total, 0);
    assert!(alice.running_jobs().unwrap().is_empty() && alice.dead_letter(10).unwrap().is_empty());
    assert_eq!(alice.prune(std::time::Duration::ZERO, &[]).unwrap(), 0);
    assert_eq!(
        alice
            .release_stale(&jobq::StaleTimeouts::none().lock_timeout(std::time::Duration::ZERO))
            .unwrap(),
        0
    );
    for forbidden in [
        alice.create_token("alice").map(|_| ()),
        alice.create_owner("x", None).map(|_| ()),
        alice.metrics().map(|_| ()),
    ] {
        assert!(
            matches!(forbidden, Err(Error::Forbidden { .. })),
            "{forbidden:?}"
        );
    }
    assert_eq!(dump(admin.path()), before);
    // Bob's own lease still works: the refusals above were about alice, not the lease.
    admin
        .scoped("bob")
        .complete(&lease, json!("bob's result"))
        .unwrap();
}

#[test]
fn tokens_are_kept_only_as_hashes() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    let tokens: Vec<String> = (0..5)
        .map(|_| queue.create_token("carol").unwrap())
        .collect();
    let bytes = std::fs::read(queue.path()).unwrap_or_default();
    let stored = dump(queue.path());
    for token in &tokens {
        let secret = token.rsplit('_').next().unwrap();
        assert_eq!(secret.len(), 64, "256 random bits");
        assert!(!stored.contains(secret) && !stored.contains(token.as_str()));
        assert!(!String::from_utf8_lossy(&bytes).contains(secret));
        assert_eq!(queue.authenticate(token).unwrap().as_deref(), Some("carol"));
    }
    let distinct: std::collections::HashSet<&String> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len());
}

/// The grep-able rule: no `format!` output reaches SQLite. In production code (test modules
/// sit at the end of each file and may `EXPLAIN` a constant), no call that takes SQL is given
/// a `format!`, and no `format!` literal begins with an SQL statement.
#[test]
fn no_sql_is_built_by_formatting_strings() {
    let sinks = [
        "prepare(",
        "prepare_cached(",
        "execute(",
        "execute_batch(",
        "query_row(",
        "query(",
        "pragma_update(",
    ];
    let statements = [
        "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "PRAGMA", "CREATE", "DROP", "ALTER",
        "EXPLAIN", "BEGIN", "REPLACE", "VALUES",
    ];
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20);
    let mut offenders = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let production = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let lines: Vec<&str> = production.lines().collect();
        for (n, line) in lines.iter().enumerate() {
            let into_sink = sinks.iter().any(|s| {
                line.contains(&format!("{s}&format!(")) || line.contains(&format!("{s}format!("))
            });
            let builds_sql = line.match_indices("format!(\"").any(|(at, m)| {
                let literal = line[at + m.len()..].trim_start();
                statements.iter().any(|k| literal.starts_with(k))
            });
            // A format! whose literal starts on the next line.
            let builds_sql = builds_sql
                || (line.trim_end().ends_with("format!(")
                    && lines.get(n + 1).is_some_and(|next| {
                        let literal = next.trim_start().trim_start_matches('"');
                        statements.iter().any(|k| literal.starts_with(k))
                    }));
            if into_sink || builds_sql {
                offenders.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "SQL built by formatting:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn serve_refuses_a_non_loopback_address_without_a_key() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    for addr in ["0.0.0.0:0", "[::]:0"] {
        let err =
            Server::start(queue.clone(), ServerConfig::new(addr).insecure_no_auth()).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{addr}: {err}");
    }
    let err = Server::start(queue, ServerConfig::new("0.0.0.0:0")).unwrap_err();
    assert!(err.to_string().contains("admin key"), "{err}");
}

/// Sends a raw request and returns its status and body.
fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply).into_owned();
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = reply.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A request with `Connection: close`, a body, and the extra header lines given.
fn request(method: &str, path: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    if !body.is_empty() || method == "POST" {
        text.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    text
}

#[test]
fn a_server_without_a_key_cannot_be_driven_by_a_web_page() {
    let fresh = Db::fresh();
    let queue = Queue::open(fresh.path()).unwrap();
    let server = Server::start(
        queue.clone(),
        ServerConfig::new("127.0.0.1:0")
            .insecure_no_auth()
            .allow_host("jobs.internal"),
    )
    .unwrap();
    let addr = server.addr();
    let host = format!("Host: {addr}");
    let own = format!("Origin: http://{addr}");
    let job = r#"{"kind": "deploy"}"#;
    let before = dump(queue.path());
    for (what, headers, body) in [
        // A form a page posts anywhere, and text/plain, which needs no preflight.
        (
            "a form",
            vec![
                host.as_str(),
                "Content-Type: application/x-www-form-urlencoded",
                "Origin: http://evil.example",
            ],
            "kind=deploy",
        ),
        (
            "text/plain",
            vec![host.as_str(), "Content-Type: text/plain", own.as_str()],
            job,
        ),
        ("no content type", vec![host.as_str(), own.as_str()], job),
        // JSON, but from another origin.
        (
            "a foreign origin",
            vec![
                host.as_str(),
                "Content-Type: application/json",
                "Origin: http://evil.example",
            ],
            job,
        ),
        (
            "a null origin",
            vec![
                host.as_str(),
                "Content-Type: application/json",
                "Origin: null",
            ],
            job,
        ),
        // DNS rebinding: the page's own name now points at 127.0.0.1.
        (
            "a rebound host",
            vec!["Host: evil.example:8080", "Content-Type: application/json"],
            job,
        ),
    ] {
        let (status, answer) = raw(addr, &request("POST", "/api/jobs", &headers, body));
        assert!(status == 403 || status == 415, "{what}: {status} {answer}");
    }
    assert_eq!(dump(queue.path()), before, "nothing was enqueued");
    // Reads: a foreign origin or host reads nothing either.
    for headers in [
        vec![host.as_str(), "Origin: http://evil.example"],
        vec!["Host: evil.example"],
        vec!["Host: 10.0.0.7:8080"],
    ] {
        let (status, _) = raw(addr, &request("GET", "/api/jobs", &headers, ""));
        assert_eq!(status, 403, "{headers:?}");
    }
    // The dashboard's own requests, and curl's (no Origin), work; so do localhost names
    // and a host allowed by name.
    for headers in [
        vec![
            host.as_str(),
            "Content-Type: application/json",
            own.as_str(),
        ],
        vec![
            "Host: localhost:8080",
            "Content-Type: application/json; charset=utf-8",
        ],
        vec!["Host: [::1]:8080", "Content-Type: application/json"],
        vec!["Host: jobs.internal:8080", "Content-Type: application/json"],
    ] {
        let (status, answer) = raw(addr, &request("POST", "/api/jobs", &headers, job));
        assert_eq!(status, 201, "{headers:?}: {answer}");
    }
    server.shutdown();
}

#[test]
fn with_a_key_a_write_from_another_origin_is_refused() {
    let api = Api::start();
    let addr = api.server.addr();
    let host = format!("Host: {addr}");
    let key = format!("X-Admin-Key: {}", crate::http::KEY);
    let job = r#"{"kind": "deploy"}"#;
    let before = dump(api.queue.path());
    for headers in [
        vec![
            host.as_str(),
            key.as_str(),
            "Content-Type: application/json",
            "Origin: http://evil.example",
        ],
        vec![host.as_str(), key.as_str(), "Content-Type: text/plain"],
    ] {
        let (status, answer) = raw(addr, &request("POST", "/api/jobs", &headers, job));
        assert!(
            status == 403 || status == 415,
            "{headers:?}: {status} {answer}"
        );
    }
    let (status, answer) = raw(
        addr,
        &request(
            "PUT",
            "/api/owners/acme/budget",
            &[host.as_str(), key.as_str(), "Content-Type: text/plain"],
            r#"{"budget_cents": 5}"#,
        ),
    );
    assert_eq!(status, 415, "{answer}");
    assert!(answer.contains("application/json"), "{answer}");
    assert_eq!(dump(api.queue.path()), before);
    // Any Host with a key (behind a proxy), and a read from another origin gets its answer
    // (a browser keeps it from the page: no CORS header is sent).
    let (status, _) = raw(
        addr,
        &request(
            "GET",
            "/api/stats",
            &[
                "Host: jobs.example.com",
                key.as_str(),
                "Origin: http://evil.example",
            ],
            "",
        ),
    );
    assert_eq!(status, 200);
    let (status, answer) = raw(
        addr,
        &request(
            "POST",
            "/api/jobs",
            &[
                "Host: jobs.example.com",
                key.as_str(),
                "Content-Type: application/json",
                "Origin: http://jobs.example.com",
            ],
            job,
        ),
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn another_owners_flow_and_dependency_outputs_are_not_found() {
    let api = Api::start();
    let bob = api.queue.scoped("bob");
    let flow = bob
        .submit_flow(
            jobq::Flow::new("bob's flow")
                .job("a", NewJob::new("a"))
                .job_after("b", NewJob::new("b"), ["a"]),
        )
        .unwrap();
    let lease = bob
        .claim("w", 1, &jobq::ClaimFilter::default().kinds(["a"]))
        .unwrap()[0]
        .lease();
    bob.complete(&lease, json!({"secret": 42})).unwrap();
    let alice = api.queue.scoped("alice");
    // The library.
    assert!(alice.flow_view(&flow.group_id).unwrap_err().is_not_found());
    assert!(
        alice
            .dependency_outputs(&flow.jobs["b"])
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        bob.dependency_outputs(&flow.jobs["b"]).unwrap()["a"],
        json!({"secret": 42})
    );
    // HTTP.
    let token = api.queue.create_token("alice").unwrap();
    api.get(
        &format!("/api/groups/{}/flow", flow.group_id),
        Auth::Token(&token),
    )
    .error(404, "not_found");
    let mine = api.queue.create_token("bob").unwrap();
    let view = api.get(
        &format!("/api/groups/{}/flow", flow.group_id),
        Auth::Token(&mine),
    );
    assert_eq!(view.status, 200, "{}", view.text);
}

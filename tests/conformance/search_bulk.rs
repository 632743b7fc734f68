//! Finding jobs (by id or its start, idempotency key, external id; scheduled ones) and
//! acting on many at once (cancel, retry, delete by ids or by a filter), from the library,
//! the command line and HTTP.

use jobq::{BulkAction, ClaimFilter, JobError, JobFilter, NewJob, Status};
use serde_json::json;

use crate::cli::Cli;
use crate::common::Env;
use crate::http::{Api, Auth};

fn ids(page: jobq::Page) -> Vec<String> {
    page.jobs.into_iter().map(|j| j.id.to_string()).collect()
}

#[test]
fn a_search_finds_a_job_by_id_its_start_its_key_or_its_external_id() {
    let env = Env::new();
    let q = &env.queue;
    let keyed = q
        .enqueue(NewJob::new("mail").idempotency_key("welcome-ada"))
        .unwrap()
        .job_id;
    let external = q
        .enqueue(NewJob::new("charge").external_id("ch_3Nx9"))
        .unwrap()
        .job_id;
    let mut others = Vec::new();
    for _ in 0..20 {
        others.push(q.enqueue(NewJob::new("noise")).unwrap().job_id.to_string());
    }
    let find = |text: &str| ids(q.list(&JobFilter::new().search(text)).unwrap());
    assert_eq!(find("welcome-ada"), [keyed.to_string()]);
    assert_eq!(find("ch_3Nx9"), [external.to_string()]);
    assert_eq!(find(keyed.as_str()), [keyed.to_string()]);
    // The start of an id, with or without its dashes, in any case.
    let target = &others[7];
    let upper = target.to_uppercase();
    for prefix in [
        &target[..23],
        &target[..28],
        &upper[..23],
        &target.replace('-', "")[..26],
    ] {
        assert_eq!(find(prefix), std::slice::from_ref(target), "{prefix}");
    }
    // A short start finds every job it names, newest first.
    let shared = &target[..8];
    let found = find(shared);
    assert!(found.len() >= 20 && found.contains(target), "{found:?}");
    assert!(find("nothing-like-it").is_empty());
    // Other filters still apply, and an owner finds only its own.
    assert!(
        ids(q
            .list(&JobFilter::new().search("welcome-ada").kind("other"))
            .unwrap())
        .is_empty()
    );
    assert!(
        ids(q
            .scoped("acme")
            .list(&JobFilter::new().search("welcome-ada"))
            .unwrap())
        .is_empty()
    );
}

#[test]
fn scheduled_lists_the_jobs_waiting_for_their_time() {
    let env = Env::new();
    let q = &env.queue;
    let later = q
        .enqueue(NewJob::new("k").run_after(std::time::Duration::from_secs(600)))
        .unwrap()
        .job_id;
    q.enqueue(NewJob::new("k")).unwrap();
    let retrying = q.enqueue(NewJob::new("r").max_attempts(3)).unwrap().job_id;
    let lease = q
        .claim("w", 1, &ClaimFilter::default().kinds(["r"]))
        .unwrap()[0]
        .lease();
    q.fail(&lease, &JobError::retryable("later")).unwrap();
    let mut found = ids(q.list(&JobFilter::new().scheduled()).unwrap());
    found.sort();
    let mut expected = vec![later.to_string(), retrying.to_string()];
    expected.sort();
    assert_eq!(found, expected);
    env.advance(3600);
    assert!(ids(q.list(&JobFilter::new().scheduled()).unwrap()).is_empty());
}

#[test]
fn bulk_actions_change_what_they_may_and_name_what_they_refuse() {
    let env = Env::new();
    let q = &env.queue;
    let queued: Vec<_> = (0..3)
        .map(|_| q.enqueue(NewJob::new("k").queue("mail")).unwrap().job_id)
        .collect();
    let other = q.enqueue(NewJob::new("k").queue("video")).unwrap().job_id;
    let done = q.enqueue(NewJob::new("done").queue("mail")).unwrap().job_id;
    let lease = q
        .claim("w", 1, &ClaimFilter::queues(["mail"]).kinds(["done"]))
        .unwrap()[0]
        .lease();
    q.complete(&lease, json!(null)).unwrap();
    // By ids: the succeeded one is refused, named.
    let mut named = queued[..2].to_vec();
    named.push(done.clone());
    let outcome = q.bulk(BulkAction::Cancel, &named).unwrap();
    assert_eq!((outcome.changed, outcome.refused_total), (2, 1));
    assert_eq!(outcome.refused[0].job_id, done);
    assert!(
        outcome.refused[0].reason.contains("succeeded"),
        "{:?}",
        outcome.refused
    );
    // By a filter: every cancelled job of the mail queue back in the queue.
    let outcome = q
        .bulk_matching(
            BulkAction::Retry,
            &JobFilter::new().status(Status::Cancelled).queue("mail"),
        )
        .unwrap();
    assert_eq!((outcome.changed, outcome.refused_total), (2, 0));
    // Cancel the whole mail queue, then delete what is cancelled: video is left alone.
    let outcome = q
        .bulk_matching(BulkAction::Cancel, &JobFilter::new().queue("mail"))
        .unwrap();
    assert_eq!((outcome.changed, outcome.refused_total), (3, 1));
    let outcome = q
        .bulk_matching(
            BulkAction::Delete,
            &JobFilter::new().status(Status::Cancelled),
        )
        .unwrap();
    assert_eq!(outcome.changed, 3);
    assert_eq!(q.get(&other).unwrap().status, Status::Queued);
    // More than a page of them.
    q.enqueue_many((0..2500).map(|_| NewJob::new("many")))
        .unwrap();
    let outcome = q
        .bulk_matching(BulkAction::Cancel, &JobFilter::new().kind("many"))
        .unwrap();
    assert_eq!(outcome.changed, 2500);
    // Another owner's jobs are refused as not found.
    let outcome = q
        .scoped("acme")
        .bulk(BulkAction::Cancel, std::slice::from_ref(&other))
        .unwrap();
    assert_eq!((outcome.changed, outcome.refused_total), (0, 1));
    assert_eq!(q.get(&other).unwrap().status, Status::Queued);
}

#[test]
fn search_scheduled_and_bulk_over_http() {
    let api = Api::start();
    let keyed = api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "mail", "idempotency_key": "welcome ada", "queue": "mail"}),
    );
    let keyed_id = keyed.body["job_id"].as_str().unwrap().to_string();
    api.post(
        "/api/jobs",
        Auth::Admin,
        json!({"kind": "later", "run_after": "10m"}),
    );
    let found = api.get("/api/jobs?q=welcome+ada", Auth::Admin);
    assert_eq!(
        found.body["jobs"].as_array().unwrap().len(),
        1,
        "{}",
        found.text
    );
    assert_eq!(found.body["jobs"][0]["id"], keyed_id.as_str());
    let prefix = &keyed_id[..13];
    let found = api.get(&format!("/api/jobs?q={prefix}"), Auth::Admin);
    assert!(
        found.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == keyed_id.as_str())
    );
    let scheduled = api.get("/api/jobs?status=scheduled", Auth::Admin);
    let kinds: Vec<&str> = scheduled.body["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["kind"].as_str())
        .collect();
    assert_eq!(kinds, ["later"], "{}", scheduled.text);
    // A mistyped parameter is refused, named.
    let message = api
        .get("/api/jobs?staus=failed", Auth::Admin)
        .error(400, "invalid_input")
        .to_string();
    assert!(message.contains("staus"), "{message}");
    let message = api
        .get("/api/stats?verbose=1", Auth::Admin)
        .error(400, "invalid_input")
        .to_string();
    assert!(message.contains("verbose"), "{message}");
    // Bulk, by ids and by a filter.
    let done = api.post(
        "/api/jobs/bulk",
        Auth::Admin,
        json!({"action": "cancel", "ids": [keyed_id, "019b76da-a800-7000-8000-000000000000"]}),
    );
    assert_eq!(done.status, 200, "{}", done.text);
    assert_eq!(
        (
            done.body["changed"].as_u64(),
            done.body["refused"][0]["job_id"].as_str()
        ),
        (Some(1), Some("019b76da-a800-7000-8000-000000000000"))
    );
    let done = api.post(
        "/api/jobs/bulk",
        Auth::Admin,
        json!({"action": "delete", "filter": {"status": "cancelled"}}),
    );
    assert_eq!(done.body["changed"], 1, "{}", done.text);
    for body in [
        json!({"action": "explode", "ids": []}),
        json!({"action": "cancel"}),
        json!({"action": "cancel", "ids": ["x"], "filter": {}}),
        json!({"action": "cancel", "filter": {"colour": "red"}}),
        json!({"action": "cancel", "ids": ["not-an-id"]}),
    ] {
        api.post("/api/jobs/bulk", Auth::Admin, body.clone())
            .error(400, "invalid_input");
    }
    // A token acts only on its owner's jobs.
    let token = api.queue.create_token("dana").unwrap();
    let done = api.post(
        "/api/jobs/bulk",
        Auth::Token(&token),
        json!({"action": "cancel", "filter": {}}),
    );
    assert_eq!(done.body["changed"], 0, "{}", done.text);
}

#[test]
fn search_scheduled_and_bulk_on_the_command_line() {
    let cli = Cli::new();
    let id = cli.enqueue(&["mail", "--key", "welcome-ada"]);
    cli.enqueue(&["later", "--run-after", "10m"]);
    for _ in 0..3 {
        cli.enqueue(&["bulk"]);
    }
    let found = cli.json(&["list", "--search", "welcome-ada"]);
    assert_eq!(found["jobs"][0]["id"], id.as_str());
    let found = cli.json(&["list", "--status", "scheduled"]);
    assert_eq!(found["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(found["jobs"][0]["kind"], "later");
    let out = cli.ok(&["cancel", "--all", "--kind", "bulk"]);
    assert!(out.contains("3 jobs cancelled"), "{out}");
    let outcome = cli.json(&["retry", "--all", "--status", "cancelled"]);
    assert_eq!(
        (
            outcome["changed"].as_u64(),
            outcome["refused_total"].as_u64()
        ),
        (Some(3), Some(0))
    );
    let out = cli.ok(&["cancel", "--all"]);
    assert!(out.contains("5 jobs cancelled"), "{out}");
    let out = cli.ok(&["delete", "--all", "--status", "cancelled"]);
    assert!(out.contains("5 jobs deleted"), "{out}");
    cli.refused(2, &["cancel", "--kind", "bulk"]);
    cli.refused(2, &["delete"]);
}

//! The registry of live workers: pools register, stay alive with their heartbeat and leave
//! on a clean stop; a killed one drops out after its heartbeat timeout; ready work that no
//! live worker serves is a health reason; the command line, HTTP and the dashboard's route
//! list them.

use std::time::{Duration, Instant};

use jobq::{
    HealthThresholds, JobContext, JobError, NewJob, Queue, StaleTimeouts, StatsFilter, WorkerPool,
};
use serde_json::{Value, json};

use crate::cli::Cli;
use crate::common::{Db, Env, child_env, is_child, spawn_child};
use crate::http::{Api, Auth};

fn noop(_: &JobContext) -> Result<Value, JobError> {
    Ok(Value::Null)
}

fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_pool_is_listed_while_it_runs_with_what_it_serves_and_leaves_when_it_stops() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    assert!(queue.workers().unwrap().is_empty());
    let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
    let pool = WorkerPool::builder(&queue)
        .queues(["mail", "bulk"])
        .concurrency(3)
        .handler("send", move |_: &JobContext| -> Result<Value, JobError> {
            let _ = release_rx.recv();
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    let id = queue
        .enqueue(NewJob::new("send").queue("mail"))
        .unwrap()
        .job_id;
    eventually("the job to run", || {
        queue.get(&id).unwrap().status == jobq::Status::Running
    });
    let workers = queue.workers().unwrap();
    assert_eq!(workers.len(), 1, "{workers:?}");
    let me = &workers[0];
    assert_eq!(me.id, pool.worker_id());
    assert_eq!(me.pid, std::process::id());
    assert!(
        me.id.starts_with(&format!("{}-{}-", me.host, me.pid)),
        "{me:?}"
    );
    assert_eq!(me.queues, vec!["bulk".to_string(), "mail".to_string()]);
    assert_eq!(me.kinds, Some(vec!["send".to_string()]));
    assert_eq!((me.concurrency, me.running), (3, 1));
    assert!(me.serves("mail", "send") && !me.serves("mail", "other") && !me.serves("x", "send"));
    // A scoped handle does not see the workers: they serve every owner.
    assert!(queue.scoped("alice").workers().is_err());
    release_tx.send(()).unwrap();
    pool.shutdown();
    assert!(queue.workers().unwrap().is_empty(), "a clean stop leaves");
}

/// The child: a pool with a one-second heartbeat timeout that runs until it is killed.
#[test]
fn child_registered_pool() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let pool = WorkerPool::builder(&queue)
        .heartbeat_interval(Duration::from_millis(200))
        .stale_timeouts(StaleTimeouts::default().heartbeat_timeout(Duration::from_secs(1)))
        .handler("k", noop)
        .start()
        .unwrap();
    println!("STARTED {}", pool.worker_id());
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_killed_worker_drops_out_after_its_heartbeat_timeout_and_is_expired() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    let mut child = spawn_child(
        "conformance::registry::child_registered_pool",
        &[("JOBQ_TEST_DB", db.location().to_string())],
    );
    eventually("the child's pool to register", || {
        queue.workers().unwrap().len() == 1
    });
    // Alive for longer than its timeout: its heartbeat keeps it listed.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(queue.workers().unwrap().len(), 1);
    child.kill().unwrap(); // SIGKILL: no clean stop
    child.wait().unwrap();
    eventually("the dead worker to drop out", || {
        queue.workers().unwrap().is_empty()
    });
    // A maintainer expires its row (here, another pool's).
    let other = WorkerPool::builder(&queue)
        .handler("k", noop)
        .maintenance_interval(Some(Duration::from_millis(50)))
        .start()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rows = crate::common::sql_rows(&db.path(), "SELECT id FROM jobq_workers");
    assert_eq!(
        rows,
        vec![vec![json!(other.worker_id())]],
        "the dead row expired"
    );
    other.shutdown();
}

#[test]
fn ready_jobs_no_live_worker_serves_make_the_queue_degraded_and_say_which() {
    let env = Env::new();
    let q = &env.queue;
    let t = HealthThresholds::default();
    let pool = WorkerPool::builder(q)
        .queues(["mail"])
        .handler("send_email", |_: &JobContext| -> Result<Value, JobError> {
            std::thread::sleep(Duration::from_secs(60));
            Ok(Value::Null)
        })
        .concurrency(1)
        .heartbeat_interval(Duration::from_millis(20))
        .start()
        .unwrap();
    // A mistyped kind, and a queue nobody runs; and work the pool serves but has no room
    // for yet (its one handler is busy).
    q.enqueue(NewJob::new("send_emial").queue("mail")).unwrap();
    q.enqueue(NewJob::new("send_email").queue("mial")).unwrap();
    let busy = q
        .enqueue(NewJob::new("send_email").queue("mail"))
        .unwrap()
        .job_id;
    eventually("the busy job to run", || {
        q.get(&busy).unwrap().status == jobq::Status::Running
    });
    q.enqueue(NewJob::new("send_email").queue("mail")).unwrap();
    let reasons = |q: &Queue| {
        q.overview(&StatsFilter::new(), &t)
            .unwrap()
            .reasons
            .into_iter()
            .filter(|r| r.check == "unserved")
            .map(|r| r.message)
            .collect::<Vec<_>>()
    };
    assert!(reasons(q).is_empty(), "not before they have waited a while");
    env.advance(61);
    // The pool's heartbeat tells the registry it is alive at the new time.
    eventually("the pool to say it is alive", || {
        q.workers().unwrap().len() == 1
    });
    let found = reasons(q);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found
            .iter()
            .any(|m| m.contains("kind send_emial in queue mail"))
            && found
                .iter()
                .any(|m| m.contains("kind send_email in queue mial")),
        "{found:?}"
    );
    let overview = q.overview(&StatsFilter::new(), &t).unwrap();
    assert_eq!(overview.health, jobq::Health::Degraded);
    // Owners do not judge the workers.
    assert!(reasons(&q.scoped("alice")).is_empty());
    pool.stop_handle().stop_now();
    pool.shutdown();
}

#[test]
fn workers_are_listed_by_the_command_line_and_over_http_to_the_admin_only() {
    let cli = Cli::new();
    let queue = Queue::open(cli.db()).unwrap();
    let pool = WorkerPool::builder(&queue)
        .kinds(["render"])
        .handler("render", noop)
        .start()
        .unwrap();
    let doc = cli.json(&["workers"]);
    let workers = doc["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0]["id"], json!(pool.worker_id()));
    assert_eq!(workers[0]["kinds"], json!(["render"]));
    assert_eq!(workers[0]["queues"], json!(["default"]));
    for field in [
        "host",
        "pid",
        "started_at",
        "last_seen",
        "running",
        "concurrency",
    ] {
        assert!(workers[0].get(field).is_some(), "{field} missing: {doc}");
    }
    assert!(cli.ok(&["workers"]).contains(pool.worker_id()));
    pool.shutdown();
    assert_eq!(cli.json(&["workers"])["workers"], json!([]));

    let api = Api::start();
    let pool = WorkerPool::builder(&api.queue)
        .handler("k", noop)
        .start()
        .unwrap();
    let answer = api.get("/api/workers", Auth::Admin);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["workers"][0]["id"], json!(pool.worker_id()));
    let token = api.queue.create_token("carol").unwrap();
    api.get("/api/workers", Auth::Token(&token))
        .error(403, "forbidden");
    pool.shutdown();
}

//! What only the PostgreSQL engine has, or must survive: the application's own `postgres`
//! transaction, wake-ups across processes, migrations raced by many processes, the
//! server's clock, the views in psql, and the server's own faults (a restart in the middle
//! of a drain, connections killed under the pool).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jobq::http::{Server, ServerConfig};
use jobq::{
    Clock, Error, JobContext, JobError, JobFilter, NewJob, Queue, StaleTimeouts, StatsFilter,
    Status, WorkerPool,
};
use serde_json::{Value, json};

use crate::common::{Db, Env, child_env, child_report, is_child, spawn_child, sql_rows};

fn all_jobs(queue: &Queue) -> Vec<jobq::Job> {
    let mut out = Vec::new();
    let mut filter = JobFilter::new().limit(10_000);
    loop {
        let page = queue.list(&filter).unwrap();
        out.extend(page.jobs);
        match page.next {
            Some(n) => filter = JobFilter::new().limit(10_000).after(n),
            None => return out,
        }
    }
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited too long for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn an_application_enqueues_in_its_own_postgres_transaction() {
    let env = Env::new();
    let mut client = env.pg();
    client
        .batch_execute("CREATE TABLE orders (id bigint PRIMARY KEY)")
        .unwrap();
    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (1)", &[])
        .unwrap();
    let dropped = env
        .queue
        .enqueue_pg_tx(&mut tx, NewJob::new("ship").input(json!({"order": 1})))
        .unwrap();
    tx.rollback().unwrap();
    assert!(env.queue.get(&dropped.job_id).unwrap_err().is_not_found());

    let mut tx = client.transaction().unwrap();
    tx.execute("INSERT INTO orders (id) VALUES (2)", &[])
        .unwrap();
    let kept = env
        .queue
        .enqueue_pg_tx(
            &mut tx,
            NewJob::new("ship")
                .input(json!({"order": 2}))
                .idempotency_key("order-2"),
        )
        .unwrap();
    // Not visible to others before the commit.
    assert!(env.queue.get(&kept.job_id).unwrap_err().is_not_found());
    tx.commit().unwrap();
    assert_eq!(
        env.queue.get(&kept.job_id).unwrap().input,
        json!({"order": 2})
    );
    // The key holds across the two ways of enqueueing.
    let again = env
        .queue
        .enqueue(NewJob::new("ship").idempotency_key("order-2"))
        .unwrap();
    assert!(again.already_existed && again.job_id == kept.job_id);

    // A SQLite transaction is refused on PostgreSQL, and the reverse.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Queue::open(dir.path().join("q.db")).unwrap();
    let err = sqlite
        .enqueue_pg_tx(&mut client, NewJob::new("ship"))
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let conn = jobq::rusqlite::Connection::open(dir.path().join("q.db")).unwrap();
    let err = env
        .queue
        .enqueue_tx(&conn, NewJob::new("ship"))
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

/// The child: a pool that polls once an hour, so that only a notification can wake it;
/// prints how long after the enqueue's commit its handler started.
#[test]
fn child_sleeping_pool() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<i64>();
    let started_at = queue.clone();
    let pool = WorkerPool::builder(&queue)
        .poll_interval(Duration::from_secs(3600))
        .maintenance_interval(None)
        .handler("wake", move |ctx: &JobContext| -> Result<Value, JobError> {
            let _ = tx.send(started_at.now().as_millis() - ctx.input::<i64>()?);
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    println!("READY");
    let mut latencies = Vec::new();
    for _ in 0..child_env("JOBQ_TEST_N").parse::<usize>().unwrap() {
        latencies.push(rx.recv_timeout(Duration::from_secs(60)).unwrap());
    }
    pool.shutdown();
    println!("LATENCIES {}", serde_json::to_string(&latencies).unwrap());
}

#[test]
fn an_enqueue_wakes_an_idle_pool_in_another_process_at_once() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    let mut child = spawn_child(
        "postgres_only::child_sleeping_pool",
        &[
            ("JOBQ_TEST_DB", db.location().to_string()),
            ("JOBQ_TEST_N", "5".into()),
        ],
    );
    // Wait for the child's pool to be up and listening.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("READY") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut stdout, &mut line).unwrap() > 0);
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        queue
            .enqueue(NewJob::new("wake").input(json!(queue.now().as_millis())))
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(child.wait().unwrap().success());
    let latencies: Vec<i64> = rest
        .lines()
        .find_map(|l| l.split_once("LATENCIES ").map(|(_, v)| v.to_string()))
        .map(|v| serde_json::from_str(&v).unwrap())
        .unwrap_or_else(|| panic!("no latencies in {rest}"));
    // With an hour between polls, only the notification can have woken it.
    assert_eq!(latencies.len(), 5);
    eprintln!("wake-up across processes, ms: {latencies:?}");
}

/// The child: opens (and so migrates) the database it is given, and says it did.
#[test]
fn child_opener() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    queue.enqueue(NewJob::new("opened")).unwrap();
    println!("OPENED {}", jobq::schema_version());
}

#[test]
fn ten_processes_opening_one_fresh_database_at_once_migrate_it_once() {
    let db = Db::fresh();
    let children: Vec<_> = (0..10)
        .map(|_| {
            spawn_child(
                "postgres_only::child_opener",
                &[("JOBQ_TEST_DB", db.location().to_string())],
            )
        })
        .collect();
    for child in children {
        assert_eq!(
            child_report(child, "OPENED "),
            jobq::schema_version().to_string()
        );
    }
    let versions = sql_rows(&db.path(), "SELECT version FROM jobq_migrations ORDER BY 1");
    let versions: Vec<i64> = versions.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(versions, (2..=jobq::schema_version()).collect::<Vec<_>>());
    let queue = Queue::open(db.path()).unwrap();
    assert_eq!(queue.stats(&StatsFilter::new()).unwrap().total, 10);
}

#[test]
fn the_default_clock_is_the_servers() {
    let env = Env::new();
    let queue = Queue::open(env.path()).unwrap();
    let mut client = env.pg();
    let server: i64 = client
        .query_one(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
            &[],
        )
        .unwrap()
        .get(0);
    let ours = queue.now().as_millis();
    assert!(
        (ours - server).abs() < 1000,
        "the queue's clock ({ours}) is not the server's ({server})"
    );
    let _ = jobq::SystemClock.now_ms();
}

#[test]
fn the_views_answer_in_psql_with_what_the_library_says() {
    let env = Env::new();
    let q = &env.queue;
    q.enqueue(NewJob::new("a").queue("mail")).unwrap();
    let failed = q.enqueue(NewJob::new("b").max_attempts(1)).unwrap().job_id;
    q.enqueue(NewJob::new("c")).unwrap();
    let leases: Vec<_> = q
        .claim("w", 2, &jobq::ClaimFilter::default())
        .unwrap()
        .iter()
        .map(|j| j.lease())
        .collect();
    let lease_b = leases.iter().find(|l| l.job_id == failed).unwrap();
    q.fail(lease_b, &JobError::permanent("no")).unwrap();
    q.set_stage(
        leases.iter().find(|l| l.job_id != failed).unwrap(),
        "rendering",
    )
    .unwrap();
    let path = env.path();
    let monitor = sql_rows(
        &path,
        "SELECT id, kind, stage, worker, running_seconds FROM jobq_running_jobs_monitor",
    );
    assert_eq!(monitor.len(), 1);
    assert_eq!(
        (monitor[0][1].as_str(), monitor[0][2].as_str()),
        (Some("c"), Some("rendering"))
    );
    let dead = sql_rows(&path, "SELECT id, failed_at FROM jobq_dead_letter_jobs");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0][0], json!(failed.to_string()));
    assert!(dead[0][1].as_str().unwrap().ends_with('Z'), "{dead:?}");
    let stats = sql_rows(
        &path,
        "SELECT queue, queued, failed, running FROM jobq_queue_stats",
    );
    assert_eq!(
        stats,
        vec![
            vec![json!("default"), json!(0), json!(1), json!(1)],
            vec![json!("mail"), json!(1), json!(0), json!(0)]
        ]
    );
    // psql itself, where the machine has it.
    if let Ok(out) = std::process::Command::new("psql")
        .args([
            env.db.location(),
            "-Atc",
            "SELECT count(*) FROM jobq_dead_letter_jobs",
        ])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    }
}

/// A drain by a pool of this process on the database `url` while `fault` strikes the
/// server again and again: nothing is lost, and every job succeeds exactly once.
fn drain_through(url: &str, fault: impl Fn(&str) + Send + Sync + 'static, jobs: usize) {
    let url = url.to_string();
    let queue = Queue::open(&url).unwrap();
    let ids: HashSet<String> = queue
        .enqueue_many((0..jobs).map(|i| NewJob::new("work").input(json!(i)).max_attempts(1000)))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id.to_string())
        .collect();
    let runs = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let pool = WorkerPool::builder(&queue)
        .concurrency(4)
        .poll_interval(Duration::from_millis(200))
        .heartbeat_interval(Duration::from_millis(500))
        // A claim whose answer a fault cut off leaves jobs running under this worker that it
        // does not know of: released soon, so that the test does not wait a minute.
        .stale_timeouts(StaleTimeouts::default().heartbeat_timeout(Duration::from_secs(3)))
        .maintenance_interval(Some(Duration::from_millis(500)))
        .handler("work", move |_: &JobContext| -> Result<Value, JobError> {
            counted.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(2));
            Ok(Value::Null)
        })
        .start()
        .unwrap();
    let striking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let striker = {
        let striking = Arc::clone(&striking);
        std::thread::spawn(move || {
            let mut strikes = 0;
            while striking.load(Ordering::SeqCst) && strikes < 4 {
                std::thread::sleep(Duration::from_millis(400));
                fault(&url);
                strikes += 1;
            }
            strikes
        })
    };
    wait_for("the drain to finish", Duration::from_secs(240), || {
        queue
            .stats(&StatsFilter::new())
            .is_ok_and(|s| s.count(Status::Succeeded) == jobs as i64)
    });
    striking.store(false, Ordering::SeqCst);
    let strikes = striker.join().unwrap();
    pool.shutdown();
    let all = all_jobs(&queue);
    assert_eq!(all.len(), jobs, "no job lost, none added");
    assert!(
        all.iter()
            .all(|j| j.status == Status::Succeeded && ids.contains(j.id.as_str()))
    );
    eprintln!(
        "{jobs} jobs through {strikes} faults: {} handler runs",
        runs.load(Ordering::SeqCst)
    );
    assert!(strikes >= 1, "the drain finished before the first fault");
}

#[test]
fn a_drain_goes_on_through_server_restarts() {
    // A cluster of the test's own: restarting the shared one would fail the others.
    let Some(server) = crate::cluster::private_server() else {
        crate::cluster::skip_or_fail()
    };
    let server = Arc::new(server);
    let url = server.fresh_database();
    let restarting = Arc::clone(&server);
    drain_through(
        &url,
        move |_| {
            restarting.restart();
        },
        3000,
    );
}

#[test]
fn a_drain_goes_on_when_its_connections_are_killed() {
    let db = Db::fresh();
    drain_through(
        db.location(),
        |url| {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            client
                .batch_execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE datname = current_database() AND pid <> pg_backend_pid()",
                )
                .unwrap();
        },
        3000,
    );
}

#[test]
fn the_http_server_answers_again_after_the_database_comes_back() {
    let Some(server) = crate::cluster::private_server() else {
        crate::cluster::skip_or_fail()
    };
    let url = server.fresh_database();
    let queue = Queue::open(&url).unwrap();
    let http = Server::start(
        queue.clone(),
        ServerConfig::new("127.0.0.1:0").admin_key("admin-key-for-tests"),
    )
    .unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let stats = || {
        agent
            .get(&format!("http://{}/api/stats", http.addr()))
            .header("X-Admin-Key", "admin-key-for-tests")
            .call()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    // Several requests at once, so that the pool holds several connections.
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| assert_eq!(stats(), 200));
        }
    });
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .unwrap();
    drop(client);
    // A read that meets a dead connection runs again on a fresh one.
    let codes: Vec<u16> = (0..4).map(|_| stats()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    server.restart().unwrap();
    let codes: Vec<u16> = (0..4).map(|_| stats()).collect();
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    http.shutdown();
}

#[test]
fn a_flow_submitted_in_the_applications_postgres_transaction_exists_only_if_it_commits() {
    let env = Env::new();
    let mut client = env.pg();
    let flow = || {
        jobq::Flow::new("order")
            .job("pick", NewJob::new("pick"))
            .job_after("ship", NewJob::new("ship"), ["pick"])
    };
    let mut tx = client.transaction().unwrap();
    let dropped = env.queue.submit_flow_pg_tx(&mut tx, flow()).unwrap();
    tx.rollback().unwrap();
    assert!(
        env.queue
            .get_group(&dropped.group_id)
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        env.queue
            .get(&dropped.jobs["pick"])
            .unwrap_err()
            .is_not_found()
    );

    let mut tx = client.transaction().unwrap();
    let kept = env.queue.submit_flow_pg_tx(&mut tx, flow()).unwrap();
    tx.commit().unwrap();
    let ship = env.queue.get(&kept.jobs["ship"]).unwrap();
    assert_eq!(ship.status, jobq::Status::Blocked);
    assert_eq!(ship.dependencies.unwrap()[0].id, kept.jobs["pick"]);
    // An unknown ref is refused before anything is sent.
    let mut tx = client.transaction().unwrap();
    let err = env
        .queue
        .submit_flow_pg_tx(
            &mut tx,
            jobq::Flow::new("bad").job_after("a", NewJob::new("a"), ["ghost"]),
        )
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}

#[test]
fn a_connection_the_server_refuses_is_reported_at_once_in_its_words() {
    let db = Db::fresh();
    let url = db.location().to_string();
    // postgres://user@host:port/name?query → the parts to change.
    let (before_db, query) = match url.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (url.clone(), String::new()),
    };
    let (server, name) = before_db.rsplit_once('/').unwrap();
    let (scheme_user, host) = server.rsplit_once('@').unwrap();
    let scheme = scheme_user.split("://").next().unwrap();
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let role = format!("{name}_limited");
    admin
        .batch_execute(&format!("CREATE ROLE {role} LOGIN CONNECTION LIMIT 0"))
        .unwrap();
    for (what, url, words) in [
        (
            "a missing database",
            format!("{server}/{name}_missing{query}"),
            "does not exist",
        ),
        (
            "an unknown role",
            format!("{scheme}://nobody_{name}@{host}/{name}{query}"),
            "role \"nobody_",
        ),
        (
            "a role out of connections",
            format!("{scheme}://{role}@{host}/{name}{query}"),
            "too many connections",
        ),
    ] {
        let err = Queue::builder(&url)
            .busy_timeout(Duration::from_secs(120))
            .open()
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Open { .. }), "{what}: {err:?}");
        assert!(message.contains(words), "{what}: {message}");
        assert!(message.contains("SQLSTATE"), "{what}: {message}");
        // Not through the pool's wait: that would have said it timed out.
        assert!(!message.contains("timed out"), "{what}: {message}");
    }
    admin.batch_execute(&format!("DROP ROLE {role}")).unwrap();
}

/// Backends of this database waiting for a lock.
fn waiting_for_locks(client: &mut postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn an_enqueue_that_reads_its_dependency_running_is_not_left_blocked_by_its_success_meanwhile() {
    let env = Env::new();
    let q = &env.queue;
    let dependency = q.enqueue(NewJob::new("dep")).unwrap().job_id;
    let lease = q
        .claim("w", 1, &jobq::ClaimFilter::default().kinds(["dep"]))
        .unwrap()[0]
        .lease();
    let url = env.path().display().to_string();
    // A reader holds the dependency's row (FOR SHARE) so that what follows queues up.
    let mut holder = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut hold = holder.transaction().unwrap();
    hold.execute(
        "SELECT 1 FROM jobq_jobs WHERE id = $1::text::uuid FOR SHARE",
        &[&dependency.as_str()],
    )
    .unwrap();
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    // First in line: the dependency's success.
    let completer = {
        let q = q.clone();
        std::thread::spawn(move || q.complete(&lease, json!({"done": true})))
    };
    wait_for("the success to wait", Duration::from_secs(30), || {
        waiting_for_locks(&mut watch) == 1
    });
    // Second: an enqueue of a job that waits for it, in the application's transaction.
    let enqueuer = {
        let q = q.clone();
        let url = url.clone();
        let dependency = dependency.clone();
        std::thread::spawn(move || {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            let mut tx = client.transaction().unwrap();
            let job = q
                .enqueue_pg_tx(&mut tx, NewJob::new("after").after(&dependency))
                .unwrap();
            tx.commit().unwrap();
            job.job_id
        })
    };
    wait_for("the enqueue to wait", Duration::from_secs(30), || {
        waiting_for_locks(&mut watch) == 2
    });
    hold.commit().unwrap();
    completer.join().unwrap().unwrap();
    let dependent = enqueuer.join().unwrap();
    // The enqueue read the dependency only once it held it: after its success. Had it read
    // it running before, the success would have missed the new dependent for ever.
    assert_eq!(q.get(&dependent).unwrap().status, Status::Queued);
}

#[test]
fn a_dependent_enqueued_in_an_open_transaction_is_released_when_its_dependency_succeeds_meanwhile()
{
    let env = Env::new();
    let q = &env.queue;
    let dependency = q.enqueue(NewJob::new("dep")).unwrap().job_id;
    let lease = q
        .claim("w", 1, &jobq::ClaimFilter::default().kinds(["dep"]))
        .unwrap()[0]
        .lease();
    // The application's transaction enqueues the dependent, waiting for a running job.
    let url = env.path().display().to_string();
    let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut tx = client.transaction().unwrap();
    let dependent = q
        .enqueue_pg_tx(&mut tx, NewJob::new("after").after(&dependency))
        .unwrap();
    assert_eq!(dependent.status, Status::Blocked);
    // The dependency succeeds from another connection before that transaction commits.
    let completer = {
        let q = q.clone();
        std::thread::spawn(move || q.complete(&lease, json!({"done": true})))
    };
    let mut watch = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    wait_for(
        "the completion to finish or wait for the enqueue",
        Duration::from_secs(30),
        || {
            completer.is_finished()
                || watch
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .unwrap()
                    .get::<_, i64>(0)
                    > 0
        },
    );
    tx.commit().unwrap();
    completer.join().unwrap().unwrap();
    // Whichever came first, the dependent is not left waiting for a job that succeeded.
    assert_eq!(q.get(&dependent.job_id).unwrap().status, Status::Queued);
}

/// A pool in this process that polls once an hour: only a wake-up makes it run a job.
fn hourly_pool(queue: &Queue, ran: &Arc<AtomicU64>) -> WorkerPool {
    let ran = Arc::clone(ran);
    WorkerPool::builder(queue)
        .poll_interval(Duration::from_secs(3600))
        .handler("wake", move |_: &JobContext| -> Result<Value, JobError> {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(Value::Null)
        })
        .start()
        .unwrap()
}

#[test]
fn a_broken_listening_connection_is_made_again() {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    let ran = Arc::new(AtomicU64::new(0));
    let pool = hourly_pool(&queue, &ran);
    let mut admin = postgres::Client::connect(db.location(), postgres::NoTls).unwrap();
    let listening = |admin: &mut postgres::Client| -> Vec<i32> {
        admin
            .query(
                "SELECT pid FROM pg_stat_activity
                 WHERE datname = current_database() AND query = 'LISTEN jobq'",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    wait_for("the pool to listen", Duration::from_secs(30), || {
        !listening(&mut admin).is_empty()
    });
    let before = listening(&mut admin);
    for pid in &before {
        admin
            .execute("SELECT pg_terminate_backend($1)", &[pid])
            .unwrap();
    }
    wait_for("the pool to listen again", Duration::from_secs(30), || {
        let now = listening(&mut admin);
        !now.is_empty() && now.iter().all(|p| !before.contains(p))
    });
    // Another process's enqueue (a handle of its own) wakes it through the new connection.
    let other = Queue::open(db.path()).unwrap();
    other.enqueue(NewJob::new("wake")).unwrap();
    wait_for("the job to run", Duration::from_secs(30), || {
        ran.load(Ordering::SeqCst) == 1
    });
    pool.shutdown();
}

#[test]
fn a_job_of_a_controlled_queue_that_finishes_notifies_the_other_hosts() {
    let env = Env::new();
    let q = &env.queue;
    q.set_queue_limits("gpu", jobq::QueueLimits::new().max_running(Some(1)))
        .unwrap();
    q.enqueue(NewJob::new("render").queue("gpu")).unwrap();
    let lease = q
        .claim("w", 1, &jobq::ClaimFilter::queues(["gpu"]))
        .unwrap()[0]
        .lease();
    let mut listener =
        postgres::Client::connect(&env.path().display().to_string(), postgres::NoTls).unwrap();
    listener.batch_execute("LISTEN jobq").unwrap();
    q.complete(&lease, json!(null)).unwrap();
    // Room for another: the queue's name on the channel.
    let mut notifications = listener.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_secs(30));
    let got = postgres::fallible_iterator::FallibleIterator::next(&mut iter)
        .unwrap()
        .expect("a notification");
    assert_eq!((got.channel(), got.payload()), ("jobq", "gpu"));
}

#[test]
fn the_queue_keeps_the_servers_time_when_the_servers_clock_is_off() {
    let db = Db::fresh();
    let mut admin = postgres::Client::connect(db.location(), postgres::NoTls).unwrap();
    // The server's clock, as its sessions see it here, is an hour ahead of this host's.
    admin
        .batch_execute(
            "CREATE FUNCTION public.clock_timestamp() RETURNS timestamptz LANGUAGE sql AS
             $$ SELECT pg_catalog.clock_timestamp() + interval '1 hour' $$",
        )
        .unwrap();
    let sep = if db.location().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}options=-c%20search_path%3Dpublic%2Cpg_catalog",
        db.location()
    );
    let queue = Queue::open(&url).unwrap();
    let host = jobq::SystemClock.now_ms();
    let ahead = queue.now().as_millis() - host;
    assert!(
        (3_540_000..3_660_000).contains(&ahead),
        "the queue's clock is {ahead} ms from this host's, not the server's hour"
    );
    let id = queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let created = queue.get(&id).unwrap().created_at.as_millis();
    assert!(
        (created - host - 3_600_000).abs() < 60_000,
        "{created} vs {host}"
    );
}

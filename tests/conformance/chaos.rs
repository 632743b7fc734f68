//! The chaos drain: worker processes drain a queue while a loop kills a random one with
//! SIGKILL every few hundred milliseconds and starts a new one. Afterwards nothing is
//! missing, every job succeeded, each job's handler ran at least once and exactly one run of
//! it was recorded as its success, and the file passes `PRAGMA integrity_check`.
//!
//! Bounded here (2,000 jobs, 3 processes); the long run is
//! `JOBQ_CHAOS_JOBS=20000 cargo test --release --test integration chaos -- --nocapture`.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::time::{Duration, Instant};

use jobq::{
    JobContext, NewJob, Queue, RetryPolicy, StaleTimeouts, StatsFilter, Status, WorkerPool,
};
use serde_json::json;

use crate::common::{ChaosWorkers, Db, child_env, integrity, is_child, random};

/// A worker process: runs until it is killed. Each run of the handler appends
/// `<job id> <claim> <pid>` to this process's own log with one unbuffered write, so what was
/// written survives the SIGKILL.
#[test]
fn child_chaos_worker() {
    if !is_child() {
        return;
    }
    // Released jobs come back at once: the drain is about outcomes, not backoff (a job its
    // workers' deaths released ten times would otherwise wait an hour).
    let queue = Queue::builder(child_env("JOBQ_TEST_DB"))
        .retry_policy(RetryPolicy::exponential(
            Duration::from_millis(10),
            Duration::from_millis(200),
        ))
        .open()
        .unwrap();
    let log = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(child_env("JOBQ_TEST_OUT"))
            .unwrap(),
    );
    let pid = std::process::id();
    let _pool = WorkerPool::builder(&queue)
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_timeouts(StaleTimeouts::none().heartbeat_timeout(Duration::from_millis(800)))
        .maintenance_interval(Some(Duration::from_millis(200)))
        .handler("chaos", move |ctx: &JobContext| {
            let line = format!("{} {} {pid}\n", ctx.id(), ctx.job().claim);
            (&*log).write_all(line.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(10));
            Ok(json!({"pid": pid, "claim": ctx.job().claim}))
        })
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_chaos_drain_loses_nothing_and_records_each_success_once() {
    let jobs: usize = std::env::var("JOBQ_CHAOS_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let fresh = Db::fresh();
    let (dir, db) = (&fresh.dir, fresh.path());
    let queue = Queue::open(&db).unwrap();
    let ids: HashSet<String> = queue
        .enqueue_many((0..jobs).map(|i| {
            NewJob::new("chaos")
                .input(json!({ "i": i }))
                .max_attempts(1000)
        }))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id.to_string())
        .collect();
    let mut workers =
        ChaosWorkers::start("conformance::chaos::child_chaos_worker", &db, dir.path(), 3);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600);
    loop {
        std::thread::sleep(Duration::from_millis(200 + random(300)));
        let stats = queue.stats(&StatsFilter::new()).unwrap();
        let done = stats.count(Status::Succeeded);
        if done == jobs as i64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the chaos drain did not finish: {stats:?}"
        );
        workers.kill_one_after_progress(done);
    }
    let took = started.elapsed();
    workers.stop();
    let (logs, kills) = (&workers.logs, workers.kills);

    // Nothing missing, everything succeeded, the file is sound.
    assert_eq!(integrity(&db), "ok");
    let all = crate::common::all_jobs(&queue);
    assert_eq!(all.len(), jobs, "no job missing, none added");
    assert!(
        all.iter()
            .all(|j| j.status == Status::Succeeded && ids.contains(j.id.as_str()))
    );

    // Every run the handlers logged, by job: (claim, pid).
    let mut runs: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            if let [id, claim, pid] = parts[..] {
                runs.entry(id.to_string())
                    .or_default()
                    .push((claim.parse().unwrap(), pid.parse().unwrap()));
            }
        }
    }
    let mut reruns = 0;
    for job in &all {
        let ran = runs
            .get(job.id.as_str())
            .unwrap_or_else(|| panic!("job {} never ran", job.id));
        reruns += ran.len() - 1;
        // The one recorded success is one of the runs: the run whose lease still held.
        let output = job.output.as_ref().unwrap();
        let success = (
            output["claim"].as_u64().unwrap() as u32,
            output["pid"].as_u64().unwrap() as u32,
        );
        assert_eq!(
            ran.iter().filter(|r| **r == success).count(),
            1,
            "job {}: success {success:?} among runs {ran:?}",
            job.id
        );
        // Killed runs were released (each rerun follows a HEARTBEAT_TIMEOUT in the history).
        assert!(
            job.errors
                .iter()
                .all(|e| e.code.as_deref() == Some("HEARTBEAT_TIMEOUT"))
        );
    }
    // Whatever was killed, the rollups agree with the jobs.
    crate::conformance::rollups::assert_rollups_agree(&queue, &[]);
    eprintln!(
        "chaos drain: {jobs} jobs, 3 worker processes, {kills} SIGKILLs survived, {reruns} runs repeated after a kill, {:.0} jobs/s over {:.1} s",
        jobs as f64 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(
        kills >= 3,
        "the drain ended before the chaos began ({kills} kills)"
    );
}

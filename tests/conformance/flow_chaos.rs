//! A flow at scale under chaos: 1,000 fan-outs of 10 jobs into 1 (11,000 jobs, one
//! flow, one transaction) drained by three worker processes while a loop kills a random one
//! with SIGKILL and starts another. Every job succeeds once (its one recorded success is
//! one of its runs), and every dependent ran only after all ten of its dependencies had
//! succeeded: each run of a join reads its dependencies' outputs and logs whether all ten
//! were there.
//!
//! `JOBQ_FLOW_FANOUTS=N` changes the number of fan-outs.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use jobq::{
    Flow, JobContext, JobError, NewJob, Queue, RetryPolicy, StaleTimeouts, StatsFilter, Status,
    WorkerPool,
};
use serde_json::{Value, json};

use crate::common::{ChaosWorkers, Db, child_env, integrity, is_child, random};

/// A worker process: runs until it is killed, logging `<job id> <claim> <pid> <ok>` for
/// each run with one unbuffered write (`ok`: for a join, whether all ten dependencies had
/// succeeded with their outputs when it ran; `-` for a leaf).
#[test]
fn child_flow_worker() {
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
    let (leaf_log, join_log) = (log.clone(), log);
    let _pool = WorkerPool::builder(&queue)
        .concurrency(4)
        .poll_interval(Duration::from_millis(50))
        .heartbeat_interval(Duration::from_millis(100))
        .stale_timeouts(StaleTimeouts::none().heartbeat_timeout(Duration::from_millis(800)))
        .maintenance_interval(Some(Duration::from_millis(200)))
        .handler("leaf", move |ctx: &JobContext| {
            let line = format!("{} {} {pid} -\n", ctx.id(), ctx.job().claim);
            (&*leaf_log).write_all(line.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            let input: Value = ctx.input()?;
            Ok(json!({"pid": pid, "claim": ctx.job().claim, "i": input["i"]}))
        })
        .handler("join", move |ctx: &JobContext| -> Result<Value, JobError> {
            let deps = ctx.dependencies()?;
            let ok = deps.len() == 10 && deps.values().all(|v| v["i"].is_u64());
            let line = format!("{} {} {pid} {ok}\n", ctx.id(), ctx.job().claim);
            (&*join_log).write_all(line.as_bytes()).unwrap();
            Ok(json!({"pid": pid, "claim": ctx.job().claim, "sum": deps.len()}))
        })
        .start()
        .unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

#[test]
fn a_flow_of_11000_jobs_drains_under_sigkill_with_each_join_after_its_ten() {
    let fanouts: usize = std::env::var("JOBQ_FLOW_FANOUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let fresh = Db::fresh();
    let (dir, db) = (&fresh.dir, fresh.path());
    let queue = Queue::open(&db).unwrap();
    let mut flow = Flow::new("fan-in at scale");
    for f in 0..fanouts {
        let leaves: Vec<String> = (0..10).map(|l| format!("leaf-{f}-{l}")).collect();
        for (l, r) in leaves.iter().enumerate() {
            flow = flow.job(
                r.clone(),
                NewJob::new("leaf")
                    .input(json!({"i": f * 10 + l}))
                    .max_attempts(1000),
            );
        }
        flow = flow.job_after(
            format!("join-{f}"),
            NewJob::new("join").max_attempts(1000),
            leaves,
        );
    }
    let submitted = Instant::now();
    let created = queue.submit_flow(flow).unwrap();
    let submit_took = submitted.elapsed();
    let total = fanouts * 11;
    assert_eq!(created.jobs.len(), total);

    let mut workers = ChaosWorkers::start(
        "conformance::flow_chaos::child_flow_worker",
        &db,
        dir.path(),
        3,
    );
    let started = Instant::now();
    let deadline = started + Duration::from_secs(900);
    let (mut done_before, mut progress_at, mut idle_looks) = (0, Instant::now(), 0);
    loop {
        // Often enough that the chaos always begins before the drain ends.
        std::thread::sleep(Duration::from_millis(100 + random(200)));
        let stats = queue.stats(&StatsFilter::new()).unwrap();
        let done = stats.count(Status::Succeeded);
        if done == total as i64 {
            break;
        }
        if done > done_before {
            (done_before, progress_at) = (done, Instant::now());
        }
        // Fail fast, saying what is stuck: jobs blocked with nothing left to run that
        // could release them, or no job finishing for two minutes.
        let movable =
            stats.count(Status::Queued) + stats.count(Status::Running) + stats.count(Status::Retry);
        idle_looks = if movable == 0 { idle_looks + 1 } else { 0 };
        if idle_looks >= 10 || progress_at.elapsed() > Duration::from_secs(120) {
            panic!("{}", stuck(&queue, &stats));
        }
        assert!(
            Instant::now() < deadline,
            "the flow did not drain: {stats:?}"
        );
        assert_eq!(
            stats.count(Status::Failed) + stats.count(Status::Cancelled),
            0,
            "{stats:?}"
        );
        workers.kill_one_after_progress(done);
    }
    let took = started.elapsed();
    workers.stop();
    let (logs, kills) = (&workers.logs, workers.kills);
    assert_eq!(integrity(&db), "ok");

    let all = crate::common::all_jobs(&queue);
    assert_eq!(all.len(), total, "no job missing, none added");
    let mut runs: HashMap<String, Vec<(u32, u32, String)>> = HashMap::new();
    for log in logs {
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            if let [id, claim, pid, ok] = line.split(' ').collect::<Vec<_>>()[..] {
                runs.entry(id.to_string()).or_default().push((
                    claim.parse().unwrap(),
                    pid.parse().unwrap(),
                    ok.to_string(),
                ));
            }
        }
    }
    let mut reruns = 0;
    let mut join_runs = 0;
    for job in &all {
        assert_eq!(job.status, Status::Succeeded);
        let ran = runs
            .get(job.id.as_str())
            .unwrap_or_else(|| panic!("job {} never ran", job.id));
        reruns += ran.len() - 1;
        let output = job.output.as_ref().unwrap();
        let success = (
            output["claim"].as_u64().unwrap() as u32,
            output["pid"].as_u64().unwrap() as u32,
        );
        assert_eq!(
            ran.iter().filter(|r| (r.0, r.1) == success).count(),
            1,
            "job {}: its one success {success:?} among its runs {ran:?}",
            job.id
        );
        if job.kind == "join" {
            join_runs += ran.len();
            // Every run of a join, the killed ones too, saw all ten dependencies done.
            assert!(
                ran.iter().all(|r| r.2 == "true"),
                "join {} ran before its dependencies: {ran:?}",
                job.id
            );
            // More runs than one only when a kill ended a run (each a new claim).
            let claims: std::collections::HashSet<u32> = ran.iter().map(|r| r.0).collect();
            assert_eq!(claims.len(), ran.len(), "join {}: {ran:?}", job.id);
            assert_eq!(output["sum"], 10);
        }
    }
    eprintln!(
        "flow chaos: {fanouts} fan-outs of 10 into 1 ({total} jobs) submitted in {:.2} s, drained in {:.1} s ({:.0} jobs/s) by 3 worker processes through {kills} SIGKILLs; {reruns} runs repeated after a kill, {join_runs} runs of {fanouts} joins",
        submit_took.as_secs_f64(),
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    assert!(
        kills >= 3,
        "the drain ended before the chaos began ({kills} kills)"
    );
}

/// What keeps a flow from draining: the counts, and a few blocked jobs with what they wait
/// for.
fn stuck(queue: &Queue, stats: &jobq::Stats) -> String {
    let blocked = queue
        .list(&jobq::JobFilter::new().status(Status::Blocked).limit(5))
        .unwrap()
        .jobs;
    let mut text = format!("the flow is stuck: {stats:?}");
    for job in blocked {
        let job = queue.get(&job.id).unwrap();
        let waits: Vec<String> = job
            .dependencies
            .unwrap_or_default()
            .iter()
            .filter(|d| d.status != Status::Succeeded)
            .map(|d| format!("{} ({})", d.id, d.status))
            .collect();
        text.push_str(&format!(
            "\n  {} ({}) waits for {}",
            job.id,
            job.kind,
            waits.join(", ")
        ));
    }
    text
}

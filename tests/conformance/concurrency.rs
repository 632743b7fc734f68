//! Many claimers on one file: threads and separate OS processes.

use std::collections::HashMap;
use std::io::Write;

use jobq::{ClaimFilter, JobFilter, NewJob, Queue, Status};
use serde_json::json;

use crate::common::{Env, child_env, is_child, spawn_child};

fn drain_claims(queue: &Queue, worker: &str, batch: usize) -> Vec<String> {
    let mut mine = Vec::new();
    loop {
        let jobs = queue.claim(worker, batch, &ClaimFilter::default()).unwrap();
        if jobs.is_empty() {
            return mine;
        }
        for job in jobs {
            queue.complete(&job.lease(), json!({"by": worker})).unwrap();
            mine.push(job.id.to_string());
        }
    }
}

#[test]
fn four_threads_claim_ten_thousand_jobs_each_exactly_once() {
    let env = Env::new();
    let ids: Vec<String> = env
        .queue
        .enqueue_many((0..10_000).map(|i| NewJob::new("k").input(json!({ "i": i }))))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id.to_string())
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let queue = env.queue.clone();
            std::thread::spawn(move || drain_claims(&queue, &format!("thread-{t}"), 1 + t * 7))
        })
        .collect();
    let per_thread: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_claimed_exactly_once(&env, &ids, &per_thread);
}

#[test]
fn child_claimer() {
    if !is_child() {
        return;
    }
    let queue = Queue::open(child_env("JOBQ_TEST_DB")).unwrap();
    let worker = format!("process-{}", std::process::id());
    let mine = drain_claims(&queue, &worker, 16);
    let mut out = std::fs::File::create(child_env("JOBQ_TEST_OUT")).unwrap();
    for id in mine {
        writeln!(out, "{id}").unwrap();
    }
}

#[test]
fn three_processes_claim_from_one_file_each_job_exactly_once() {
    let env = Env::new();
    let ids: Vec<String> = env
        .queue
        .enqueue_many((0..3000).map(|_| NewJob::new("k")))
        .unwrap()
        .into_iter()
        .map(|e| e.job_id.to_string())
        .collect();
    let outs: Vec<_> = (0..3)
        .map(|i| env.dir().join(format!("claimed-{i}.txt")))
        .collect();
    let children: Vec<_> = outs
        .iter()
        .map(|out| {
            spawn_child(
                "conformance::concurrency::child_claimer",
                &[
                    ("JOBQ_TEST_DB", env.path().display().to_string()),
                    ("JOBQ_TEST_OUT", out.display().to_string()),
                ],
            )
        })
        .collect();
    for child in children {
        assert!(
            child
                .into_inner()
                .wait_with_output()
                .unwrap()
                .status
                .success()
        );
    }
    let per_process: Vec<Vec<String>> = outs
        .iter()
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        })
        .collect();
    assert_claimed_exactly_once(&env, &ids, &per_process);
    // Every job was completed by the process that claimed it, with one attempt.
    let jobs = env
        .queue
        .list(&JobFilter::new().limit(10_000))
        .unwrap()
        .jobs;
    assert!(
        jobs.iter()
            .all(|j| j.status == Status::Succeeded && j.attempts == 1)
    );
    assert!(
        jobs.iter()
            .all(|j| j.output.as_ref().unwrap()["by"] == json!(j.locked_by.clone().unwrap()))
    );
}

fn assert_claimed_exactly_once(env: &Env, ids: &[String], per_claimer: &[Vec<String>]) {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for id in per_claimer.iter().flatten() {
        *count.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "claimed more than once: {twice:?}");
    let missed: Vec<_> = ids
        .iter()
        .filter(|id| !count.contains_key(id.as_str()))
        .collect();
    assert!(missed.is_empty(), "never claimed: {} jobs", missed.len());
    assert_eq!(count.len(), ids.len());
    let left = env
        .queue
        .list(&JobFilter::new().status(Status::Queued))
        .unwrap()
        .jobs
        .len();
    assert_eq!(left, 0);
}

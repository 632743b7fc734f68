//! Helpers for testing code that uses jobq, in the spirit of Oban.Testing and rivertest.
//!
//! Run handlers without threads or sleeps with
//! [`WorkerPoolBuilder::drain_inline`](crate::WorkerPoolBuilder::drain_inline), and check
//! what your code enqueued with [`assert_enqueued`].
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! use jobq::{NewJob, Queue, Status, WorkerPool, testing};
//! use serde_json::json;
//!
//! let queue = Queue::open(dir.path().join("q.db"))?;
//! // The code under test enqueues a job...
//! queue.enqueue(NewJob::new("welcome_email").input(json!({"user": 7, "locale": "fr"})))?;
//! // ...and the test checks it, matching only the fields it cares about.
//! testing::assert_enqueued(&queue, "welcome_email", &json!({"user": 7}));
//!
//! let outcomes = WorkerPool::builder(&queue)
//!     .handler("welcome_email", |_ctx: &jobq::JobContext| Ok(json!({"sent": true})))
//!     .drain_inline()?;
//! assert_eq!(outcomes.len(), 1);
//! assert_eq!(outcomes[0].status, Status::Succeeded);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde_json::Value;

use crate::job::Job;
use crate::queue::{JobFilter, Queue};

/// The jobs of `kind` whose input contains `input` (every field of `input`, recursively;
/// other fields are ignored), newest first, whatever their status.
///
/// # Panics
///
/// When the database cannot be read.
pub fn enqueued(queue: &Queue, kind: &str, input: &Value) -> Vec<Job> {
    let mut found = Vec::new();
    let mut filter = JobFilter::new().kind(kind).limit(1000);
    loop {
        let page = queue
            .list(&filter)
            .expect("jobq::testing: listing jobs failed");
        found.extend(page.jobs.into_iter().filter(|j| contains(&j.input, input)));
        match page.next {
            Some(next) => filter = JobFilter::new().kind(kind).limit(1000).after(next),
            None => return found,
        }
    }
}

/// Asserts that a job of `kind` whose input contains `input` was enqueued, and returns the
/// newest such job.
///
/// # Panics
///
/// When there is none, listing the inputs of the jobs of that kind that do exist.
pub fn assert_enqueued(queue: &Queue, kind: &str, input: &Value) -> Job {
    let mut matching = enqueued(queue, kind, input);
    if matching.is_empty() {
        let others: Vec<String> = enqueued(queue, kind, &Value::Object(Default::default()))
            .iter()
            .take(10)
            .map(|j| j.input.to_string())
            .collect();
        panic!(
            "expected a {kind:?} job with input containing {input}, found none; {kind:?} jobs have inputs: {others:?}"
        );
    }
    matching.remove(0)
}

/// Asserts that no job of `kind` whose input contains `input` was enqueued.
///
/// # Panics
///
/// When there is one.
pub fn refute_enqueued(queue: &Queue, kind: &str, input: &Value) {
    let matching = enqueued(queue, kind, input);
    assert!(
        matching.is_empty(),
        "expected no {kind:?} job with input containing {input}, found {}: {}",
        matching.len(),
        matching[0].id
    );
}

/// Whether `actual` contains `expected`: objects field by field (extra fields allowed),
/// everything else by equality.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        _ => actual == expected,
    }
}

#[cfg(test)]
mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn containment_matches_subsets_of_objects() {
        let job = json!({"user": 7, "opts": {"locale": "fr", "tz": "CET"}, "tags": [1, 2]});
        assert!(contains(&job, &json!({})));
        assert!(contains(&job, &json!({"user": 7})));
        assert!(contains(&job, &json!({"opts": {"locale": "fr"}})));
        assert!(contains(&job, &json!({"tags": [1, 2]})));
        assert!(!contains(&job, &json!({"tags": [1]})));
        assert!(!contains(&job, &json!({"user": 8})));
        assert!(!contains(&job, &json!({"missing": null})));
    }
}

//! A model-based property test: random sequences of enqueue, claim, complete, fail, cancel,
//! retry, heartbeat, stale release, stale reports and clock advances run against the real
//! database and against a plain in-memory model of the state machine. After every step the
//! two agree on every job's status and attempts, and no job leaves a terminal status except
//! by the manual retry.

use std::time::Duration;

use jobq::{
    ClaimFilter, Error, JobError, JobFilter, JobId, Lease, ManualClock, NewJob, Queue, RetryPolicy,
    StaleTimeouts, Status,
};
use proptest::prelude::*;

use crate::common::{Db, T0};

const BACKOFF_MS: i64 = 10_000;
const HEARTBEAT_TIMEOUT_MS: i64 = 30_000;

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        priority: i32,
        max_attempts: u32,
        delay_s: u64,
    },
    Claim {
        n: usize,
    },
    Complete {
        lease: usize,
    },
    Fail {
        lease: usize,
        permanent: bool,
    },
    Heartbeat {
        lease: usize,
    },
    Cancel {
        job: usize,
    },
    Retry {
        job: usize,
    },
    ReleaseStale,
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (-2i32..=2, 1u32..=3, prop_oneof![Just(0u64), 1u64..=20]).prop_map(|(priority, max_attempts, delay_s)| Op::Enqueue { priority, max_attempts, delay_s }),
        3 => (1usize..=3).prop_map(|n| Op::Claim { n }),
        3 => any::<usize>().prop_map(|lease| Op::Complete { lease }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(lease, permanent)| Op::Fail { lease, permanent }),
        1 => any::<usize>().prop_map(|lease| Op::Heartbeat { lease }),
        1 => any::<usize>().prop_map(|job| Op::Cancel { job }),
        1 => any::<usize>().prop_map(|job| Op::Retry { job }),
        1 => Just(Op::ReleaseStale),
        2 => (1u64..=40).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// One job as the model sees it.
#[derive(Debug, Clone)]
struct Model {
    id: JobId,
    seq: usize,
    status: Status,
    attempts: u32,
    max_attempts: u32,
    priority: i32,
    run_after: i64,
    heartbeat_at: i64,
    /// Claims so far: a lease holds only while it is the latest claim of a running job.
    claims: u32,
}

struct World {
    _db: Db,
    queue: Queue,
    clock: ManualClock,
    jobs: Vec<Model>,
    /// Every lease ever handed out, live or stale.
    leases: Vec<Lease>,
}

impl World {
    fn new() -> World {
        let db = Db::fresh();
        let clock = ManualClock::new(T0);
        let queue = Queue::builder(db.path())
            .clock(clock.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_millis(BACKOFF_MS as u64)))
            .open()
            .unwrap();
        World {
            _db: db,
            queue,
            clock,
            jobs: Vec::new(),
            leases: Vec::new(),
        }
    }

    fn now(&self) -> i64 {
        use jobq::Clock;
        self.clock.now_ms()
    }

    fn model_mut(&mut self, id: &JobId) -> &mut Model {
        self.jobs.iter_mut().find(|j| &j.id == id).unwrap()
    }

    /// Whether `lease` still holds its job, by the model.
    fn holds(&self, lease: &Lease) -> bool {
        self.jobs
            .iter()
            .any(|j| j.id == lease.job_id && j.status == Status::Running && j.claims == lease.claim)
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now();
        match op {
            Op::Enqueue {
                priority,
                max_attempts,
                delay_s,
            } => {
                let job = NewJob::new("model")
                    .priority(*priority)
                    .max_attempts(*max_attempts)
                    .run_after(Duration::from_secs(*delay_s));
                let id = self.queue.enqueue(job).unwrap().job_id;
                let seq = self.jobs.len();
                self.jobs.push(Model {
                    id,
                    seq,
                    status: Status::Queued,
                    attempts: 0,
                    max_attempts: *max_attempts,
                    priority: *priority,
                    run_after: now + *delay_s as i64 * 1000,
                    heartbeat_at: 0,
                    claims: 0,
                });
            }
            Op::Claim { n } => {
                let mut ready: Vec<&Model> = self
                    .jobs
                    .iter()
                    .filter(|j| j.status.is_ready() && j.run_after <= now)
                    .collect();
                ready.sort_by(|a, b| {
                    b.priority
                        .cmp(&a.priority)
                        .then(a.run_after.cmp(&b.run_after))
                        .then(a.seq.cmp(&b.seq))
                });
                let expected: Vec<JobId> = ready.iter().take(*n).map(|j| j.id.clone()).collect();
                let claimed = self.queue.claim("w", *n, &ClaimFilter::default()).unwrap();
                let got: Vec<JobId> = claimed.iter().map(|c| c.id.clone()).collect();
                assert_eq!(got, expected, "claim order");
                for c in claimed {
                    let m = self.model_mut(&c.id);
                    m.status = Status::Running;
                    m.attempts += 1;
                    m.claims += 1;
                    m.heartbeat_at = now;
                    assert_eq!((c.attempt, c.claim), (m.attempts, m.claims));
                    self.leases.push(c.lease());
                }
            }
            Op::Complete { lease } | Op::Fail { lease, .. } | Op::Heartbeat { lease } => {
                if self.leases.is_empty() {
                    return;
                }
                let lease = self.leases[lease % self.leases.len()].clone();
                let valid = self.holds(&lease);
                let result = match op {
                    Op::Complete { .. } => self
                        .queue
                        .complete(&lease, serde_json::json!(null))
                        .map(|_| Status::Succeeded),
                    Op::Fail { permanent, .. } => {
                        let e = if *permanent {
                            JobError::permanent("no")
                        } else {
                            JobError::retryable("again")
                        };
                        self.queue.fail(&lease, &e)
                    }
                    _ => self.queue.heartbeat(&lease).map(|_| Status::Running),
                };
                if !valid {
                    let err = result.unwrap_err();
                    assert!(
                        matches!(err, Error::LockLost { .. }),
                        "a stale lease was not refused: {err:?}"
                    );
                    return;
                }
                let got = result.unwrap();
                let m = self.model_mut(&lease.job_id);
                match op {
                    Op::Complete { .. } => m.status = Status::Succeeded,
                    Op::Fail { permanent, .. } => {
                        if *permanent || m.attempts >= m.max_attempts {
                            m.status = Status::Failed;
                        } else {
                            m.status = Status::Retry;
                            m.run_after = now + BACKOFF_MS;
                        }
                    }
                    _ => m.heartbeat_at = now,
                }
                assert_eq!(got, m.status);
            }
            Op::Cancel { job } | Op::Retry { job } => {
                if self.jobs.is_empty() {
                    return;
                }
                let id = self.jobs[job % self.jobs.len()].id.clone();
                let m = self.model_mut(&id);
                let before = m.status;
                let (allowed, result) = match op {
                    Op::Cancel { .. } => (!before.is_terminal(), self.queue.cancel(&id)),
                    _ => (
                        matches!(before, Status::Failed | Status::Cancelled),
                        self.queue.retry(&id),
                    ),
                };
                if !allowed {
                    assert!(
                        matches!(result, Err(Error::InvalidTransition { from, .. }) if from == before),
                        "{op:?} from {before}: {result:?}"
                    );
                    return;
                }
                assert_eq!(result.unwrap(), before);
                let m = self.model_mut(&id);
                match op {
                    Op::Cancel { .. } => m.status = Status::Cancelled,
                    _ => {
                        m.status = Status::Queued;
                        m.attempts = 0;
                        m.run_after = now;
                    }
                }
            }
            Op::ReleaseStale => {
                let timeouts = StaleTimeouts::none()
                    .heartbeat_timeout(Duration::from_millis(HEARTBEAT_TIMEOUT_MS as u64));
                let released = self.queue.release_stale(&timeouts).unwrap();
                let mut expected = 0;
                for m in &mut self.jobs {
                    if m.status == Status::Running && m.heartbeat_at < now - HEARTBEAT_TIMEOUT_MS {
                        expected += 1;
                        if m.attempts >= m.max_attempts {
                            m.status = Status::Failed;
                        } else {
                            m.status = Status::Retry;
                            m.run_after = now;
                        }
                    }
                }
                assert_eq!(released, expected);
            }
            Op::Advance { secs } => self.clock.advance(Duration::from_secs(*secs)),
        }
    }

    /// The database and the model agree on every job.
    fn check(&self) {
        let page = self.queue.list(&JobFilter::new().limit(10_000)).unwrap();
        assert_eq!(page.jobs.len(), self.jobs.len());
        for job in &page.jobs {
            let m = self.jobs.iter().find(|m| m.id == job.id).unwrap();
            assert_eq!(
                (job.status, job.attempts),
                (m.status, m.attempts),
                "job {} (model {m:?})",
                job.id
            );
            assert_eq!(
                job.status.is_terminal(),
                job.completed_at.is_some(),
                "completed_at follows the status"
            );
            if job.status.is_ready() {
                assert_eq!(
                    job.run_after.as_millis(),
                    m.run_after,
                    "run_after of {}",
                    job.id
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn the_database_follows_the_state_machine(ops in proptest::collection::vec(op(), 1..60)) {
        let mut world = World::new();
        for op in &ops {
            let before: Vec<(JobId, Status)> = world.jobs.iter().map(|j| (j.id.clone(), j.status)).collect();
            world.apply(op);
            world.check();
            // No job leaves a terminal status except by the manual retry.
            for (id, was) in before {
                let now = world.jobs.iter().find(|j| j.id == id).unwrap().status;
                if was.is_terminal() && now != was {
                    prop_assert!(matches!(op, Op::Retry { .. }) && now == Status::Queued, "{id} left {was} for {now} by {op:?}");
                }
            }
        }
        // The rollups the transactions kept agree with the jobs.
        crate::conformance::rollups::assert_rollups_agree(&world.queue, &[]);
    }
}

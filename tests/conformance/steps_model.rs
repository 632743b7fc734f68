//! A property test of durable steps: random interleavings of runs (some crashing part-way,
//! some claims abandoned by a dead worker and released as stale), events, clock advances and
//! enqueues, against the real database. After every operation: no step ran again after it
//! was stored, no job waits for an event already emitted for it, no waiting job is held by
//! a worker; and at the end, with time run out and every event emitted, every job
//! succeeded with each step's effect once and a wait's payload that a real event gave it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobq::{
    ClaimFilter, JobContext, JobError, JobId, ManualClock, NewJob, Queue, RetryPolicy,
    StaleTimeouts, Status, StepKind, WorkerPool,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{Db, T0};

const EVENTS: [&str; 2] = ["approved", "paid"];

#[derive(Debug, Clone)]
enum Op {
    Enqueue,
    /// Runs every ready job; the first run crashes after this many durable calls.
    Run {
        crash_after: Option<u32>,
    },
    /// A worker claims a job and dies with it.
    Abandon,
    ReleaseStale,
    Emit {
        event: usize,
    },
    Advance {
        secs: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Enqueue),
        4 => prop_oneof![Just(None), (0u32..6).prop_map(Some)].prop_map(|crash_after| Op::Run { crash_after }),
        1 => Just(Op::Abandon),
        1 => Just(Op::ReleaseStale),
        2 => (0usize..EVENTS.len()).prop_map(|event| Op::Emit { event }),
        2 => prop_oneof![Just(1u64), 10u64..=90, Just(200u64)].prop_map(|secs| Op::Advance { secs }),
    ]
}

/// Side effects per (job, step), and the runs' crash budget.
#[derive(Default)]
struct Effects {
    by_step: BTreeMap<(String, String), u32>,
}

struct World {
    queue: Queue,
    clock: ManualClock,
    _db: Db,
    effects: Arc<Mutex<Effects>>,
    jobs: Vec<JobId>,
    /// Every emitted event: name, time, payload.
    emitted: Vec<(String, i64, Value)>,
}

/// The handler: step a, a 30 s sleep, step b, a wait for its event (2 min at most), step c.
fn handler(effects: Arc<Mutex<Effects>>, crash_after: Option<u32>) -> impl jobq::Handler {
    let budget = Arc::new(AtomicU32::new(crash_after.map_or(u32::MAX, |n| n + 1)));
    move |ctx: &JobContext| -> Result<Value, JobError> {
        let calls = AtomicU32::new(0);
        let tick = || {
            if calls.fetch_add(1, Ordering::SeqCst) + 1 >= budget.load(Ordering::SeqCst) {
                budget.store(u32::MAX, Ordering::SeqCst); // one crash per Run
                return Err(JobError::retryable("the worker died here"));
            }
            Ok(())
        };
        let event = EVENTS[ctx.input::<usize>()? % EVENTS.len()];
        let effect = |name: &str| {
            *effects
                .lock()
                .unwrap()
                .by_step
                .entry((ctx.id().to_string(), name.to_string()))
                .or_default() += 1;
        };
        tick()?;
        ctx.step("a", || {
            effect("a");
            Ok(1)
        })?;
        tick()?;
        ctx.sleep_for(Duration::from_secs(30))?;
        tick()?;
        ctx.step("b", || {
            effect("b");
            Ok(2)
        })?;
        tick()?;
        let got = ctx.wait_for_event(event, Duration::from_secs(120))?;
        tick()?;
        ctx.step("c", || {
            effect("c");
            Ok(3)
        })?;
        Ok(json!({ "got": got }))
    }
}

impl World {
    fn new() -> World {
        let db = Db::fresh();
        let clock = ManualClock::new(T0);
        let queue = Queue::builder(db.path())
            .clock(clock.clone())
            .retry_policy(RetryPolicy::fixed(Duration::from_secs(10)))
            .open()
            .unwrap();
        World {
            queue,
            clock,
            _db: db,
            effects: Arc::default(),
            jobs: Vec::new(),
            emitted: Vec::new(),
        }
    }

    fn run(&self, crash_after: Option<u32>) {
        WorkerPool::builder(&self.queue)
            .handler("durable", handler(self.effects.clone(), crash_after))
            .drain_inline()
            .unwrap();
    }

    fn apply(&mut self, op: &Op) {
        let q = &self.queue;
        match op {
            Op::Enqueue => {
                let n = self.jobs.len();
                let id = q
                    .enqueue(NewJob::new("durable").input(json!(n)).max_attempts(1000))
                    .unwrap()
                    .job_id;
                self.jobs.push(id);
            }
            Op::Run { crash_after } => self.run(*crash_after),
            Op::Abandon => {
                q.claim("dead-worker", 1, &ClaimFilter::default()).unwrap();
            }
            Op::ReleaseStale => {
                q.release_stale(&StaleTimeouts::none().heartbeat_timeout(Duration::from_secs(60)))
                    .unwrap();
            }
            Op::Emit { event } => {
                let payload = json!(self.emitted.len());
                q.emit_event(EVENTS[*event], payload.clone()).unwrap();
                self.emitted
                    .push((EVENTS[*event].to_string(), q.now().as_millis(), payload));
            }
            Op::Advance { secs } => self.clock.advance(Duration::from_secs(*secs)),
        }
    }

    fn check(&self) -> Result<(), TestCaseError> {
        for count in self.effects.lock().unwrap().by_step.values() {
            prop_assert!(*count <= 1, "a step ran again after it was stored");
        }
        for id in &self.jobs {
            let job = self.queue.get(id).unwrap();
            if job.status != Status::Waiting {
                continue;
            }
            prop_assert!(
                job.heartbeat_at.is_none() && job.started_at.is_none(),
                "{id} waits held"
            );
            if let Some(event) = &job.waiting_for {
                let lost = self
                    .emitted
                    .iter()
                    .any(|(name, at, _)| name == event && *at >= job.created_at.as_millis());
                prop_assert!(!lost, "{id} waits for {event}, emitted already");
            }
        }
        let running = self.queue.running_jobs().unwrap();
        prop_assert!(
            running
                .iter()
                .all(|r| self.queue.get(&r.id).unwrap().status == Status::Running)
        );
        Ok(())
    }

    /// Time runs out, every event is emitted once more, the dead worker's claims are
    /// released: every job succeeds.
    fn finish(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..6 {
            self.clock.advance(Duration::from_secs(200));
            self.apply(&Op::ReleaseStale);
            self.run(None);
        }
        for id in &self.jobs {
            let job = self.queue.get(id).unwrap();
            prop_assert_eq!(job.status, Status::Succeeded, "{}", id);
            for step in ["a", "b", "c"] {
                let n = self
                    .effects
                    .lock()
                    .unwrap()
                    .by_step
                    .get(&(id.to_string(), step.to_string()))
                    .copied();
                prop_assert_eq!(n, Some(1), "{} step {}", id, step);
            }
            let steps = self.queue.steps(id).unwrap();
            let wait = steps.iter().find(|s| s.kind == StepKind::Wait).unwrap();
            let got = job.output.unwrap()["got"].clone();
            let event = wait.event.clone().unwrap();
            let created = job.created_at.as_millis();
            let deadline = wait.wake_at.unwrap();
            if got.is_null() {
                // Timed out: no event of its name came between its creation and its deadline.
                let missed = self
                    .emitted
                    .iter()
                    .any(|(name, at, _)| *name == event && *at >= created && *at <= deadline);
                prop_assert!(
                    !missed,
                    "{} timed out though {} was emitted in time",
                    id,
                    event
                );
            } else {
                // The payload of a real event of its name, emitted after it was created.
                let real = self
                    .emitted
                    .iter()
                    .any(|(name, at, payload)| *name == event && *at >= created && *payload == got);
                prop_assert!(real, "{} got {} from no event", id, got);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 500, ..ProptestConfig::default() })]

    #[test]
    fn steps_sleeps_and_events_survive_any_interleaving(ops in proptest::collection::vec(op(), 1..40)) {
        let mut world = World::new();
        world.apply(&Op::Enqueue);
        for op in &ops {
            world.apply(op);
            world.check()?;
        }
        world.finish()?;
        crate::conformance::rollups::assert_rollups_agree(&world.queue, &[]);
    }
}

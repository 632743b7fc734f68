//! Rollups: what happened to jobs, per minute and per (owner, queue, kind), written by the
//! transactions that change the jobs. Counters of transitions and log-scale histograms of
//! run time and queue wait, so counts and percentiles come out for any window without
//! reading a job.

use crate::job::Status;

/// A minute, the span of the rows every transaction writes.
pub(crate) const MINUTE_MS: i64 = 60_000;
/// An hour, the span minutes fold into.
pub(crate) const HOUR_MS: i64 = 3_600_000;
/// The span of the rows hours fold into when they expire: everything older, at time 0.
pub(crate) const EVER: i64 = 0;

/// The upper bounds (inclusive, in milliseconds) of the histograms' slots: slot `i` holds
/// times in `(BOUNDS[i-1], BOUNDS[i]]`, slot 0 one millisecond or less, and slot 64 more
/// than the last bound. Eight slots a decade (each bound about 1.33 times the last) from
/// 10 ms to 100,000 s. `schema.postgres.sql` (`jobq_slot`) holds the same list.
pub const SLOT_BOUNDS_MS: [i64; 64] = [
    1, 2, 3, 4, 5, 6, 8, 10, 13, 18, 24, 32, 42, 56, 75, 100, 133, 178, 237, 316, 422, 562, 750,
    1000, 1334, 1778, 2371, 3162, 4217, 5623, 7499, 10000, 13335, 17783, 23714, 31623, 42170,
    56234, 74989, 100000, 133352, 177828, 237137, 316228, 421697, 562341, 749894, 1000000, 1333521,
    1778279, 2371374, 3162278, 4216965, 5623413, 7498942, 10000000, 13335214, 17782794, 23713737,
    31622777, 42169650, 56234133, 74989421, 100000000,
];

/// The slot a time of `ms` milliseconds falls in: how many bounds are below it.
pub(crate) fn slot(ms: i64) -> i64 {
    SLOT_BOUNDS_MS.partition_point(|b| *b < ms) as i64
}

/// What a rollup row counts. Stored by name (`metric`), so the tables read well in `sqlite3`
/// and `psql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Metric {
    /// A job was inserted.
    Enqueued,
    /// A claim took a job (a worker's or an admin's).
    Started,
    /// A job entered `succeeded`.
    Succeeded,
    /// A job entered `failed`.
    Failed,
    /// A running attempt failed and the job will run again.
    Retried,
    /// A job entered `cancelled`.
    Cancelled,
    /// A running job was snoozed.
    Snoozed,
    /// A running job was given back unspent.
    Released,
    /// A job left a finished status (a manual retry, a dependency retried).
    Revived,
    /// A running job parked itself (a sleep, a wait for an event).
    Waited,
    /// The run time of an attempt that ended (succeeded, failed or retried), by slot.
    RunMs,
    /// The queue wait of a claim (from when the job was due), by slot.
    WaitMs,
}

impl Metric {
    pub(crate) const ALL: [Metric; 12] = [
        Metric::Enqueued,
        Metric::Started,
        Metric::Succeeded,
        Metric::Failed,
        Metric::Retried,
        Metric::Cancelled,
        Metric::Snoozed,
        Metric::Released,
        Metric::Revived,
        Metric::Waited,
        Metric::RunMs,
        Metric::WaitMs,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Metric::Enqueued => "enqueued",
            Metric::Started => "started",
            Metric::Succeeded => "succeeded",
            Metric::Failed => "failed",
            Metric::Retried => "retried",
            Metric::Cancelled => "cancelled",
            Metric::Snoozed => "snoozed",
            Metric::Released => "released",
            Metric::Revived => "revived",
            Metric::Waited => "waited",
            Metric::RunMs => "run_ms",
            Metric::WaitMs => "wait_ms",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// One change of one job row, as a rollup sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Transition {
    pub from: Status,
    pub to: Status,
    /// Whether a claim took it (its claim counter moved).
    pub claimed: bool,
    /// Whether its snooze counter moved.
    pub snoozed: bool,
    /// When it changed.
    pub now: i64,
    /// When the run that ended began (the old `started_at`).
    pub started_at: Option<i64>,
    /// When it was due before the change (the later of its `run_after` and `created_at`).
    pub due_at: i64,
}

impl Transition {
    /// What it adds to the rollups: (metric, slot) pairs. The same rules, in SQL, are
    /// PostgreSQL's `jobq_roll_updates` (schema.postgres.sql).
    pub(crate) fn metrics(&self) -> impl Iterator<Item = (Metric, i64)> {
        let finished = |s: Status| s.is_terminal();
        let changed = self.from != self.to;
        let started = self
            .claimed
            .then(|| (Metric::WaitMs, slot(self.now - self.due_at)));
        let entered = match self.to {
            _ if !changed => None,
            Status::Succeeded => Some(Metric::Succeeded),
            Status::Failed => Some(Metric::Failed),
            Status::Cancelled => Some(Metric::Cancelled),
            Status::Retry if self.from == Status::Running => Some(Metric::Retried),
            Status::Queued if self.from == Status::Running && self.snoozed => Some(Metric::Snoozed),
            Status::Queued if self.from == Status::Running => Some(Metric::Released),
            Status::Waiting if self.from == Status::Running => Some(Metric::Waited),
            _ => None,
        };
        let revived = (changed && finished(self.from)).then_some((Metric::Revived, 0));
        let ran = match (self.from, self.to, self.started_at) {
            (Status::Running, Status::Succeeded | Status::Failed | Status::Retry, Some(at)) => {
                Some((Metric::RunMs, slot(self.now - at)))
            }
            _ => None,
        };
        self.claimed
            .then_some((Metric::Started, 0))
            .into_iter()
            .chain(started)
            .chain(entered.map(|m| (m, 0)))
            .chain(revived)
            .chain(ran)
    }
}

/// The key of a rollup row written by a transaction (a minute's row).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TallyKey {
    /// The minute (its first millisecond).
    pub at: i64,
    /// The owner, `""` for none.
    pub owner: String,
    pub queue: String,
    pub kind: String,
    pub metric: Metric,
    pub slot: i64,
}

/// What one transaction adds to the rollups, one entry per row it will upsert. A
/// transaction touches few keys, so they are found by a scan that allocates nothing when
/// the key is already there.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub rows: Vec<(TallyKey, i64)>,
    /// Changes of the counts of jobs by (owner, queue, status).
    pub counts: Vec<(CountKey, i64)>,
}

/// The key of a row of the counts of jobs by status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CountKey {
    /// The owner, `""` for none.
    pub owner: String,
    pub queue: String,
    pub status: Status,
}

impl Tally {
    pub(crate) fn add(
        &mut self,
        now: i64,
        owner: Option<&str>,
        queue: &str,
        kind: &str,
        metric: Metric,
        slot: i64,
    ) {
        let at = now - now.rem_euclid(MINUTE_MS);
        let owner = owner.unwrap_or("");
        let found = self.rows.iter_mut().find(|(k, _)| {
            k.at == at
                && k.metric == metric
                && k.slot == slot
                && k.queue == queue
                && k.kind == kind
                && k.owner == owner
        });
        match found {
            Some((_, n)) => *n += 1,
            None => self.rows.push((
                TallyKey {
                    at,
                    owner: owner.to_string(),
                    queue: queue.to_string(),
                    kind: kind.to_string(),
                    metric,
                    slot,
                },
                1,
            )),
        }
    }

    /// Adds `delta` to the count of jobs of `status` (of that owner and queue).
    pub(crate) fn count(&mut self, owner: Option<&str>, queue: &str, status: Status, delta: i64) {
        let owner = owner.unwrap_or("");
        let found = self
            .counts
            .iter_mut()
            .find(|(k, _)| k.status == status && k.queue == queue && k.owner == owner);
        match found {
            Some((_, n)) => *n += delta,
            None => self.counts.push((
                CountKey {
                    owner: owner.to_string(),
                    queue: queue.to_string(),
                    status,
                },
                delta,
            )),
        }
    }

    /// A change of one job, in the rollups and the counts.
    pub(crate) fn transition(
        &mut self,
        t: &Transition,
        owner: Option<&str>,
        queue: &str,
        kind: &str,
    ) {
        for (metric, slot) in t.metrics() {
            self.add(t.now, owner, queue, kind, metric, slot);
        }
        if t.from != t.to {
            self.count(owner, queue, t.from, -1);
            self.count(owner, queue, t.to, 1);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.counts.iter().all(|(_, n)| *n == 0)
    }
}

/// Which rollup rows a reader wants: those of spans starting in `[from, to)`, of a queue
/// and a kind if given, of an owner if scoped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RollupQuery<'a> {
    pub from: i64,
    pub to: i64,
    pub queue: Option<&'a str>,
    pub kind: Option<&'a str>,
    /// Whether to group by queue and kind (else all together).
    pub by_queue_kind: bool,
    /// The rows are summed per step of this many milliseconds from `from` (each row's `at`
    /// is its step's start); 0 sums the whole range into one row per metric and slot (at
    /// `from`).
    pub step: i64,
}

/// A sum of rollup rows: the span start (`at`), or all time for totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollupRow {
    pub at: i64,
    pub queue: String,
    pub kind: String,
    pub metric: Metric,
    pub slot: i64,
    pub n: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_times_up_to_their_bound() {
        assert_eq!(slot(-5), 0);
        assert_eq!(slot(0), 0);
        assert_eq!(slot(1), 0);
        assert_eq!(slot(2), 1);
        assert_eq!(slot(9), 7);
        assert_eq!(slot(10), 7);
        assert_eq!(slot(11), 8);
        assert_eq!(slot(100_000_000), 63);
        assert_eq!(slot(100_000_001), 64);
        assert!(SLOT_BOUNDS_MS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn postgres_slots_use_the_same_bounds() {
        let schema = include_str!("../../schema.postgres.sql");
        let list: String = SLOT_BOUNDS_MS.map(|b| b.to_string()).join(",");
        let compact: String = schema.split_whitespace().collect();
        assert!(
            compact.contains(&format!("ARRAY[{list}]")),
            "jobq_slot in schema.postgres.sql must list SLOT_BOUNDS_MS"
        );
    }

    #[test]
    fn a_transition_adds_what_happened() {
        let t = |from, to, claimed, snoozed| Transition {
            from,
            to,
            claimed,
            snoozed,
            now: 10_000,
            started_at: Some(9_000),
            due_at: 9_990,
        };
        let of = |t: Transition| t.metrics().collect::<Vec<_>>();
        use Metric::{Released, Retried, Revived, RunMs, Snoozed, Started, WaitMs};
        use Status::{Blocked, Failed, Queued, Retry, Running};
        assert_eq!(
            of(t(Queued, Running, true, false)),
            [(Started, 0), (WaitMs, slot(10))]
        );
        assert_eq!(
            of(t(Running, Status::Succeeded, false, false)),
            [(Metric::Succeeded, 0), (RunMs, slot(1000))]
        );
        assert_eq!(
            of(t(Running, Retry, false, false)),
            [(Retried, 0), (RunMs, slot(1000))]
        );
        assert_eq!(of(t(Running, Queued, false, true)), [(Snoozed, 0)]);
        assert_eq!(of(t(Running, Queued, false, false)), [(Released, 0)]);
        assert_eq!(
            of(t(Queued, Status::Cancelled, false, false)),
            [(Metric::Cancelled, 0)]
        );
        assert_eq!(of(t(Failed, Queued, false, false)), [(Revived, 0)]);
        assert_eq!(
            of(t(Failed, Status::Cancelled, false, false)),
            [(Metric::Cancelled, 0), (Revived, 0)]
        );
        assert!(of(t(Blocked, Queued, false, false)).is_empty());
        assert!(of(t(Running, Running, false, false)).is_empty());
    }
}

//! Job commands: enqueue, list, show, cancel, retry, delete, release-stale, prune.

use std::path::Path;
use std::time::Duration;

use crate::{JobFilter, JobId, NewJob, OnDependencyFailure, Queue, StaleTimeouts, Status};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::output::{Table, clean, fmt_opt, jobs, print_json};

use super::{Done, Refused, duration, job_id, json_arg, open_existing};

#[derive(Args, Debug)]
pub(super) struct EnqueueArgs {
    /// The job's kind (which handler runs it).
    pub(super) kind: String,
    /// The input, as JSON.
    #[arg(long)]
    pub(super) input: Option<String>,
    /// The queue.
    #[arg(long, default_value = "default")]
    pub(super) queue: String,
    /// Higher runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) priority: i32,
    /// Not claimable before this delay has passed.
    #[arg(long, value_parser = duration)]
    pub(super) run_after: Option<Duration>,
    /// Attempts allowed before the dead letter.
    #[arg(long, allow_negative_numbers = true)]
    pub(super) max_attempts: Option<i64>,
    /// Idempotency key: a second enqueue with it returns the first job.
    #[arg(long)]
    pub(super) key: Option<String>,
    /// The key holds only this long after the first job's creation.
    #[arg(long, value_parser = duration, requires = "key", conflicts_with = "unique_while_active")]
    pub(super) unique_for: Option<Duration>,
    /// The key holds only while its job has not ended.
    #[arg(long, requires = "key")]
    pub(super) unique_while_active: bool,
    /// Wait for this job (repeat for more): blocked until every one has succeeded.
    #[arg(long = "after", value_name = "ID")]
    pub(super) after: Vec<String>,
    /// What a failed or cancelled dependency does to this job.
    #[arg(long, value_enum, default_value_t = DependencyFailure::Cancel)]
    pub(super) on_dependency_failure: DependencyFailure,
    /// Its concurrency key, for its queue's per-key running limit.
    #[arg(long)]
    pub(super) concurrency_key: Option<String>,
    /// The group the job belongs to.
    #[arg(long)]
    pub(super) group: Option<String>,
    /// The owner.
    #[arg(long)]
    pub(super) owner: Option<String>,
    /// The cost known up front, in cents.
    #[arg(long, allow_negative_numbers = true)]
    pub(super) cost_cents: Option<i64>,
    /// An id at an outside service.
    #[arg(long)]
    pub(super) external_id: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum DependencyFailure {
    /// Cancel it (error code DEPENDENCY_FAILED).
    Cancel,
    /// Run it anyway once every dependency has ended.
    Run,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("every").args(["all"])))]
pub(super) struct BulkArgs {
    /// The jobs.
    #[arg(
        value_name = "ID",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub(super) ids: Vec<String>,
    /// Every job that matches --status, --queue and --kind (every job, without them).
    #[arg(long)]
    pub(super) all: bool,
    /// With --all: only jobs of this status (or `scheduled`).
    #[arg(long, requires = "every")]
    pub(super) status: Option<String>,
    /// With --all: only jobs of this queue.
    #[arg(long, requires = "every")]
    pub(super) queue: Option<String>,
    /// With --all: only jobs of this kind.
    #[arg(long, requires = "every")]
    pub(super) kind: Option<String>,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("every").args(["all", "all_dead"])))]
pub(super) struct RetryArgs {
    /// The jobs to retry.
    #[arg(
        value_name = "ID",
        required_unless_present_any = ["all_dead", "all"],
        conflicts_with_all = ["all_dead", "all"]
    )]
    pub(super) ids: Vec<String>,
    /// Every failed job (the dead letter), or only those of --kind and --queue.
    #[arg(long, conflicts_with = "all")]
    pub(super) all_dead: bool,
    /// Every job that matches --status, --queue and --kind.
    #[arg(long)]
    pub(super) all: bool,
    /// With --all: only jobs of this status (or `scheduled`).
    #[arg(long, requires = "all")]
    pub(super) status: Option<String>,
    /// With --all or --all-dead: only jobs of this kind.
    #[arg(long, requires = "every")]
    pub(super) kind: Option<String>,
    /// With --all or --all-dead: only jobs of this queue.
    #[arg(long, requires = "every")]
    pub(super) queue: Option<String>,
    /// Forget the jobs' stored steps: they run again from scratch (a plain retry keeps
    /// them, so finished steps are not repeated).
    #[arg(long, conflicts_with_all = ["all_dead", "all"])]
    pub(super) from_scratch: bool,
}

#[derive(Args, Debug)]
pub(super) struct ListArgs {
    #[arg(long)]
    pub(super) status: Option<String>,
    #[arg(long)]
    pub(super) queue: Option<String>,
    #[arg(long)]
    pub(super) kind: Option<String>,
    #[arg(long)]
    pub(super) group: Option<String>,
    #[arg(long)]
    pub(super) owner: Option<String>,
    /// At most this many (1 to 10,000).
    #[arg(long, default_value_t = 50)]
    pub(super) limit: usize,
    /// The page after this cursor (the `next` of the previous page).
    #[arg(long)]
    pub(super) after: Option<String>,
    /// Only the jobs this finds: an id or its start, an idempotency key, an external id.
    #[arg(long)]
    pub(super) search: Option<String>,
}

pub(super) fn enqueue(db: &Path, json: bool, a: EnqueueArgs) -> Done {
    let mut job = NewJob::new(a.kind).queue(a.queue).priority(a.priority);
    if let Some(input) = &a.input {
        job = job.input(json_arg("input", input)?);
    }
    if let Some(delay) = a.run_after {
        job = job.run_after(delay);
    }
    if let Some(n) = a.max_attempts {
        let n = u32::try_from(n)
            .map_err(|_| Refused(format!("invalid max_attempts: {n} must be at least 1")))?;
        job = job.max_attempts(n);
    }
    if let Some(key) = a.key {
        job = job.idempotency_key(key);
    }
    if let Some(window) = a.unique_for {
        job = job.unique_for(window);
    }
    if a.unique_while_active {
        job = job.unique_while_active();
    }
    for id in &a.after {
        job = job.after(&job_id(id)?);
    }
    if let DependencyFailure::Run = a.on_dependency_failure {
        job = job.on_dependency_failure(OnDependencyFailure::Run);
    }
    if let Some(key) = a.concurrency_key {
        job = job.concurrency_key(key);
    }
    if let Some(group) = a.group {
        job = job.group(group);
    }
    if let Some(owner) = a.owner {
        job = job.owner(owner);
    }
    if let Some(cents) = a.cost_cents {
        job = job.cost_cents(cents);
    }
    if let Some(id) = a.external_id {
        job = job.external_id(id);
    }
    let queue = Queue::open(db)?;
    let out = queue.enqueue(job)?;
    if json {
        print_json(&out);
    } else if out.already_existed {
        println!("{} (already existed, {})", out.job_id, out.status);
    } else {
        println!("{}", out.job_id);
    }
    Ok(())
}

pub(super) fn list(db: &Path, json: bool, a: ListArgs) -> Done {
    let mut filter = JobFilter::new().limit(a.limit);
    if let Some(s) = a.status.as_deref() {
        filter = match s {
            "scheduled" => filter.scheduled(),
            other => filter.status(other.parse()?),
        };
    }
    if let Some(text) = a.search {
        filter = filter.search(text);
    }
    if let Some(q) = a.queue {
        filter = filter.queue(q);
    }
    if let Some(k) = a.kind {
        filter = filter.kind(k);
    }
    if let Some(g) = a.group {
        filter = filter.group(g);
    }
    if let Some(o) = a.owner {
        filter = filter.owner(o);
    }
    if let Some(after) = a.after {
        filter = filter.after(after);
    }
    let queue = open_existing(db)?;
    let page = queue.list(&filter)?;
    if json {
        print_json(&page);
        return Ok(());
    }
    let mut table = Table::new([
        "ID", "KIND", "QUEUE", "STATUS", "ATTEMPTS", "STAGE", "PROGRESS", "CREATED",
    ]);
    for j in &page.jobs {
        table.row([
            j.id.to_string(),
            j.kind.clone(),
            j.queue.clone(),
            j.shown_status().to_string(),
            format!("{}/{}", j.attempts, j.max_attempts),
            fmt_opt(&j.stage),
            format!("{:.0}%", j.progress * 100.0),
            j.created_at.to_rfc3339(),
        ]);
    }
    table.print();
    match &page.next {
        Some(next) => println!("{} shown; next page: --after {next}", jobs(page.jobs.len())),
        None => println!("{}", jobs(page.jobs.len())),
    }
    Ok(())
}

/// One admin action on each of `ids`, in order: every id is tried; those refused are named
/// on stderr, one line each, and make the command exit 1.
/// `cancel|retry|delete --all`: the action on every job that matches; prints how many
/// changed and which were refused.
pub(super) fn bulk_matching(
    db: &Path,
    json: bool,
    action: crate::BulkAction,
    (status, queue_name, kind): (Option<String>, Option<String>, Option<String>),
) -> Done {
    let mut filter = JobFilter::new();
    if let Some(s) = status.as_deref() {
        filter = match s {
            "scheduled" => filter.scheduled(),
            other => filter.status(other.parse()?),
        };
    }
    if let Some(q) = queue_name {
        filter = filter.queue(q);
    }
    if let Some(k) = kind {
        filter = filter.kind(k);
    }
    let queue = open_existing(db)?;
    let outcome = queue.bulk_matching(action, &filter)?;
    if json {
        print_json(&outcome);
        return Ok(());
    }
    let done = match action {
        crate::BulkAction::Cancel => "cancelled",
        crate::BulkAction::Retry => "queued again",
        crate::BulkAction::Delete => "deleted",
    };
    println!("{} {done}", jobs(outcome.changed));
    if outcome.refused_total > 0 {
        println!("{} refused:", jobs(outcome.refused_total));
        for r in &outcome.refused {
            println!("  {}  {}", r.job_id, clean(&r.reason));
        }
        if outcome.refused_total > outcome.refused.len() {
            println!(
                "  … and {} more",
                outcome.refused_total - outcome.refused.len()
            );
        }
    }
    Ok(())
}

pub(super) fn admin_action(
    db: &Path,
    json: bool,
    ids: &[String],
    done: &str,
    act: impl Fn(&Queue, &JobId) -> crate::Result<Status>,
) -> Done {
    let queue = open_existing(db)?;
    let mut documents = Vec::new();
    let mut refused = Vec::new();
    for text in ids {
        let outcome = job_id(text).and_then(|id| {
            let was = act(&queue, &id)?;
            Ok((id, was))
        });
        match outcome {
            Ok((id, was)) => {
                let message = format!("Job {id} {done} (it was {was})");
                if !json {
                    println!("{message}");
                }
                documents.push(json!({"success": true, "job_id": id, "previous_status": was, "message": message}));
            }
            Err(Refused(why)) => {
                documents.push(json!({"success": false, "job_id": text, "error": why}));
                refused.push(why);
            }
        }
    }
    if json {
        match documents.as_slice() {
            [one] if refused.is_empty() => print_json(one),
            _ => print_json(&json!({ "results": documents })),
        }
    }
    match refused.as_slice() {
        [] => Ok(()),
        [one] if ids.len() == 1 => Err(Refused(one.clone())),
        many => {
            for why in many {
                eprintln!("jobq: {}", clean(why));
            }
            Err(Refused(format!(
                "{} of the {} jobs refused",
                many.len(),
                ids.len()
            )))
        }
    }
}

/// Options of `jobq release-stale`.
#[derive(Args, Debug)]
pub(super) struct ReleaseStaleArgs {
    /// Release jobs claimed longer ago than this, heartbeat or not.
    #[arg(long, value_parser = duration)]
    pub(super) lock_timeout: Option<Duration>,
    /// Release jobs whose last heartbeat is older than this.
    #[arg(long, value_parser = duration)]
    pub(super) heartbeat_timeout: Option<Duration>,
}

/// Options of `jobq prune`.
#[derive(Args, Debug)]
pub(super) struct PruneArgs {
    /// Only jobs that finished longer ago than this.
    #[arg(long, value_parser = duration)]
    pub(super) older_than: Duration,
    /// Only these statuses (succeeded, failed, cancelled); all three when absent.
    #[arg(long = "status")]
    pub(super) statuses: Vec<String>,
}

pub(super) fn show(db: &Path, json: bool, id: &str) -> Done {
    let queue = open_existing(db)?;
    let job = queue.get(&job_id(id)?)?;
    if json {
        print_json(&job);
    } else {
        super::output::print_job(&job);
    }
    Ok(())
}

pub(super) fn cancel(db: &Path, json: bool, args: BulkArgs) -> Done {
    if args.all {
        let matching = (args.status, args.queue, args.kind);
        return bulk_matching(db, json, crate::BulkAction::Cancel, matching);
    }
    admin_action(db, json, &args.ids, "cancelled", |q, id| q.cancel(id))
}

pub(super) fn retry(db: &Path, json: bool, args: RetryArgs) -> Done {
    if args.all {
        let matching = (args.status, args.queue, args.kind);
        return bulk_matching(db, json, crate::BulkAction::Retry, matching);
    }
    if args.from_scratch {
        return admin_action(db, json, &args.ids, "queued again from scratch", |q, id| {
            q.retry_from_scratch(id)
        });
    }
    if !args.all_dead {
        return admin_action(db, json, &args.ids, "queued again", |q, id| q.retry(id));
    }
    let queue = open_existing(db)?;
    let retried = queue.retry_dead(args.kind.as_deref(), args.queue.as_deref())?;
    if json {
        print_json(&json!({"success": true, "retried": retried}));
    } else {
        println!("{} from the dead letter queued again", jobs(retried));
    }
    Ok(())
}

pub(super) fn delete(db: &Path, json: bool, args: BulkArgs) -> Done {
    if args.all {
        let matching = (args.status, args.queue, args.kind);
        return bulk_matching(db, json, crate::BulkAction::Delete, matching);
    }
    admin_action(db, json, &args.ids, "deleted", |q, id| q.delete(id))
}

pub(super) fn release_stale(db: &Path, json: bool, args: ReleaseStaleArgs) -> Done {
    let queue = open_existing(db)?;
    let mut timeouts = StaleTimeouts::none();
    if let Some(t) = args.lock_timeout {
        timeouts = timeouts.lock_timeout(t);
    }
    if let Some(t) = args.heartbeat_timeout {
        timeouts = timeouts.heartbeat_timeout(t);
    }
    if args.lock_timeout.is_none() && args.heartbeat_timeout.is_none() {
        timeouts = StaleTimeouts::default();
    }
    let released = queue.release_stale(&timeouts)?;
    if json {
        print_json(&json!({ "released": released }));
    } else {
        println!("Released {released} stale jobs");
    }
    Ok(())
}

pub(super) fn prune(db: &Path, json: bool, args: PruneArgs) -> Done {
    let queue = open_existing(db)?;
    let statuses = args
        .statuses
        .iter()
        .map(|s| s.parse::<Status>())
        .collect::<Result<Vec<_>, _>>()?;
    let pruned = queue.prune(args.older_than, &statuses)?;
    if json {
        print_json(&json!({ "pruned": pruned }));
    } else {
        println!("Pruned {pruned} jobs");
    }
    Ok(())
}

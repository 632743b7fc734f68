//! `jobq schedule`: add, list, pause, resume and remove schedules.

use std::path::Path;
use std::time::Duration;

use crate::Queue;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use super::output::{Table, clean, fmt_opt, print_json};

use super::{Done, Refused, duration, json_arg, open_existing};

#[derive(Subcommand, Debug)]
pub(super) enum ScheduleCommand {
    /// Add a schedule: a job of KIND at each time of a cron expression, or every DUR.
    Add(ScheduleAddArgs),
    /// Every schedule: name, rule, kind, next and last fire, paused or not.
    List,
    /// Remove a schedule (the jobs it enqueued stay).
    Remove(ScheduleName),
    /// Pause a schedule: it fires nothing until resumed.
    Pause(ScheduleName),
    /// Resume a paused schedule from its next slot.
    Resume(ScheduleName),
    /// Enqueue one of the schedule's jobs now (its slots are unchanged); prints the job id.
    Run(ScheduleName),
}

#[derive(Args, Debug)]
pub(super) struct ScheduleName {
    /// The schedule's name.
    pub(super) name: String,
    /// Its owner: needed when several owners have a schedule of that name.
    #[arg(long)]
    pub(super) owner: Option<String>,
}

impl ScheduleName {
    /// A handle on `db` that reaches the schedule: scoped to its owner, when given.
    fn queue(&self, db: &Path) -> Result<Queue, Refused> {
        let queue = open_existing(db)?;
        Ok(match &self.owner {
            Some(owner) => queue.scoped(owner.clone()),
            None => queue,
        })
    }
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("rule").required(true).args(["cron", "every"])))]
pub(super) struct ScheduleAddArgs {
    /// Its name, unique per owner.
    pub(super) name: String,
    /// A 5-field cron expression, or @hourly, @daily, @weekly, @monthly, @yearly.
    #[arg(long)]
    pub(super) cron: Option<String>,
    /// A fixed interval, e.g. 5m.
    #[arg(long, value_parser = duration)]
    pub(super) every: Option<Duration>,
    /// The kind of its jobs.
    pub(super) kind: String,
    /// The input of its jobs, as JSON.
    #[arg(long)]
    pub(super) input: Option<String>,
    /// The queue of its jobs.
    #[arg(long)]
    pub(super) queue: Option<String>,
    /// The priority of its jobs.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub(super) priority: i32,
    /// The attempts of its jobs.
    #[arg(long)]
    pub(super) max_attempts: Option<u32>,
    /// The time zone a cron expression is read in.
    #[arg(long, default_value = "UTC")]
    pub(super) timezone: String,
    /// What a start after missed slots enqueues.
    #[arg(long, value_enum, default_value_t = CatchUpArg::One)]
    pub(super) catch_up: CatchUpArg,
    /// The owner of the schedule and its jobs.
    #[arg(long)]
    pub(super) owner: Option<String>,
    /// Change the schedule of that name in place (it stays paused or not, and keeps when
    /// it last fired) instead of refusing a name already taken.
    #[arg(long)]
    pub(super) replace: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub(super) enum CatchUpArg {
    /// Nothing for missed slots.
    None,
    /// The last missed slot.
    One,
    /// Every missed slot (the latest 100 at most).
    All,
}

pub(super) fn schedule(db: &Path, json: bool, cmd: ScheduleCommand) -> Done {
    let show = |s: &crate::Schedule| {
        if json {
            print_json(s);
        } else {
            println!(
                "{}  {}  next {}",
                clean(&s.name),
                clean(&s.rule()),
                s.next_fire.to_rfc3339()
            );
        }
    };
    match cmd {
        ScheduleCommand::Add(a) => {
            let rule = match (a.cron, a.every) {
                (Some(cron), _) => crate::Rule::Cron(cron),
                (None, Some(every)) => crate::Rule::Every(every),
                (None, None) => return Err(Refused("give --cron or --every".into())),
            };
            let mut s = crate::NewSchedule::new(a.name, rule, a.kind)
                .priority(a.priority)
                .timezone(a.timezone)
                .catch_up(match a.catch_up {
                    CatchUpArg::None => crate::CatchUp::None,
                    CatchUpArg::One => crate::CatchUp::One,
                    CatchUpArg::All => crate::CatchUp::All,
                });
            if let Some(input) = &a.input {
                s = s.input(json_arg("input", input)?);
            }
            if let Some(q) = a.queue {
                s = s.queue(q);
            }
            if let Some(n) = a.max_attempts {
                s = s.max_attempts(n);
            }
            if let Some(o) = a.owner {
                s = s.owner(o);
            }
            s = s.replace(a.replace);
            let queue = Queue::open(db)?;
            show(&queue.add_schedule(s)?);
        }
        ScheduleCommand::List => {
            let queue = open_existing(db)?;
            let list = queue.schedules()?;
            if json {
                print_json(&json!({ "schedules": list }));
                return Ok(());
            }
            let mut table = Table::new([
                "NAME",
                "RULE",
                "KIND",
                "NEXT FIRE",
                "LAST FIRE",
                "PAUSED",
                "OWNER",
            ]);
            for s in &list {
                table.row([
                    clean(&s.name).into_owned(),
                    clean(&s.rule()).into_owned(),
                    clean(&s.kind).into_owned(),
                    if s.paused {
                        "-".into()
                    } else {
                        s.next_fire.to_rfc3339()
                    },
                    s.last_fire.map_or_else(|| "-".into(), |t| t.to_rfc3339()),
                    if s.paused { "yes" } else { "no" }.into(),
                    fmt_opt(&s.owner),
                ]);
            }
            table.print();
        }
        ScheduleCommand::Remove(which) => {
            which.queue(db)?.remove_schedule(&which.name)?;
            if json {
                print_json(&json!({"success": true, "name": which.name}));
            } else {
                println!("removed {}", clean(&which.name));
            }
        }
        ScheduleCommand::Pause(which) => show(&which.queue(db)?.pause_schedule(&which.name)?),
        ScheduleCommand::Resume(which) => show(&which.queue(db)?.resume_schedule(&which.name)?),
        ScheduleCommand::Run(which) => {
            let job = which.queue(db)?.run_schedule_now(&which.name)?;
            if json {
                print_json(
                    &json!({"job_id": job.job_id, "status": job.status, "already_existed": job.already_existed}),
                );
            } else {
                println!("{}", job.job_id);
            }
        }
    }
    Ok(())
}

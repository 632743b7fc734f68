//! Groups, flows, tokens and owners' budgets.

use std::path::Path;

use crate::Queue;
use clap::Subcommand;
use serde_json::json;

use super::output::{clean, fmt_opt, print_json};

use super::{Done, Refused, json_arg, open_existing};

#[derive(Subcommand, Debug)]
pub(super) enum FlowCommand {
    /// Create a whole flow from the JSON of `POST /api/flows` (a file, or - for standard
    /// input); prints the group id and each ref's job id.
    Submit {
        #[arg(value_name = "FILE|-")]
        file: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum GroupCommand {
    /// Create a group; prints its id.
    Create {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        /// Metadata, as a JSON object.
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Show a group's stage, progress (0-100) and counts by status.
    Show { id: String },
    /// Delete a group and all its jobs.
    Delete { id: String },
}

#[derive(Subcommand, Debug)]
pub(super) enum TokenCommand {
    /// Create a token for an owner and print it (it cannot be shown again).
    Create {
        #[arg(long)]
        owner: String,
    },
}

#[derive(Subcommand, Debug)]
pub(super) enum OwnerCommand {
    /// Set an owner's spending limit in cents (`none` removes it), creating the owner if
    /// needed; enqueues that would pass it are refused.
    Budget {
        /// The owner.
        id: String,
        /// The budget in cents, or `none`.
        #[arg(value_name = "CENTS|none", allow_negative_numbers = true)]
        cents: String,
    },
}

pub(super) fn flow_submit(db: &Path, json: bool, file: &str) -> Done {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| Refused(format!("cannot read the flow from standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Refused(format!("cannot read the flow from {file}: {e}")))?
    };
    let document = crate::parse_json("flow", &text)?;
    let flow = crate::http::parse_flow(&document)?;
    let queue = Queue::open(db)?;
    let created = queue.submit_flow(flow)?;
    if json {
        print_json(&created);
    } else {
        println!("group {}", created.group_id);
        for (r, id) in &created.jobs {
            println!("{id}  {}", clean(r));
        }
    }
    Ok(())
}

pub(super) fn group(db: &Path, json: bool, cmd: GroupCommand) -> Done {
    match cmd {
        GroupCommand::Create {
            name,
            owner,
            metadata,
        } => {
            let metadata = metadata.map(|m| json_arg("metadata", &m)).transpose()?;
            let queue = Queue::open(db)?;
            let group = queue.create_group_for(&name, metadata, owner.as_deref())?;
            if json {
                print_json(&group);
            } else {
                println!("{}", group.id);
            }
        }
        GroupCommand::Show { id } => {
            let queue = open_existing(db)?;
            let group = queue.get_group(&id)?;
            if json {
                print_json(&group);
                return Ok(());
            }
            println!("group     {}", clean(&group.id));
            println!("name      {}", clean(&group.name));
            println!("owner     {}", fmt_opt(&group.owner));
            println!("stage     {}", group.stage);
            println!("progress  {:.1}%", group.progress);
            println!("jobs      {}", group.total);
            for (status, n) in &group.counts {
                if *n > 0 {
                    println!("  {status:<10} {n}");
                }
            }
        }
        GroupCommand::Delete { id } => {
            let queue = open_existing(db)?;
            let jobs = queue.delete_group(&id)?;
            if json {
                print_json(&json!({"success": true, "group_id": id, "jobs_deleted": jobs}));
            } else {
                println!("Group {} deleted with its {jobs} jobs", clean(&id));
            }
        }
    }
    Ok(())
}

pub(super) fn create_token(db: &Path, json: bool, owner: &str) -> Done {
    let queue = Queue::open(db)?;
    let token = queue.create_token(owner)?;
    if json {
        print_json(&json!({ "owner": owner, "token": token }));
    } else {
        println!("{token}");
    }
    Ok(())
}

pub(super) fn set_budget(db: &Path, json: bool, id: &str, cents: &str) -> Done {
    let budget = match cents.trim() {
        "none" => None,
        text => Some(text.parse::<i64>().map_err(|_| {
            Refused(format!(
                "invalid budget: {text:?} is not a whole number of cents or `none`"
            ))
        })?),
    };
    let queue = Queue::open(db)?;
    let owner = queue.set_budget(id, budget)?;
    if json {
        print_json(&owner);
        return Ok(());
    }
    match owner.budget_cents {
        Some(b) => println!(
            "Owner {}: budget {b} cents, {} spent",
            clean(&owner.id),
            owner.spent_cents
        ),
        None => println!(
            "Owner {}: no budget, {} cents spent",
            clean(&owner.id),
            owner.spent_cents
        ),
    }
    Ok(())
}

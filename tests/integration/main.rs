//! jobq's integration tests: one binary, one module per capability, each test on a fresh
//! database file in a temp folder.

/// The engine every test of this binary runs on.
pub const ENGINE: common::Engine = common::Engine::Sqlite;

// The PostgreSQL binary uses all of it; this one only what `common` does.
#[allow(dead_code)]
mod cluster;
mod common;

mod bad_input;
mod browser;
mod chaos;
mod claim;
mod cli;
mod concurrency;
mod contention;
mod dependencies;
mod durability;
mod embedding;
mod enqueue;
mod exec_worker;
mod flow_chaos;
mod flow_control;
mod fuzz;
mod guards;
mod hostile_data;
mod hostile_http;
pub mod http;
mod jsonl;
mod lifecycle;
mod maintenance;
mod model;
mod observability;
mod open;
mod owners_groups;
mod registry;
mod retry;
mod schedules;
mod search_bulk;
mod security;
mod snooze;
mod sqlite_only;
mod uniqueness;
mod views;
mod worker;

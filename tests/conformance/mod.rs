//! The conformance suite: the behaviour every engine must show, one module per capability.
//! Both test binaries include this one list (`tests/integration` on SQLite,
//! `tests/postgres` on PostgreSQL); each test runs on the engine `crate::ENGINE` names,
//! on a fresh database. What only one engine has stays in that binary's own modules.

mod bad_input;
mod chaos;
mod claim;
pub(crate) mod cli;
mod concurrency;
mod contention;
mod dependencies;
mod embedding;
mod enqueue;
mod exec_worker;
mod flow_chaos;
mod flow_control;
mod fuzz;
mod guards;
mod hostile_data;
pub(crate) mod http;
mod jsonl;
mod lifecycle;
mod maintenance;
mod model;
mod observability;
mod operations;
mod owners_groups;
mod registry;
mod retry;
pub(crate) mod rollups;
mod schedules;
mod search_bulk;
mod security;
mod snooze;
mod steps;
mod steps_model;
mod uniqueness;
mod worker;

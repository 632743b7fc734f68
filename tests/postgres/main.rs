//! The conformance suite on PostgreSQL: the integration suite's behavioural modules, the
//! same tests, each on a fresh database of the server `JOBQ_TEST_POSTGRES_URL` names or of
//! a throwaway cluster this binary starts with the PostgreSQL binaries on the machine. With
//! neither, it says that it skipped and exits. Tests of what only SQLite has (its file, its
//! pragmas and plans) stay in the integration binary alone.

/// The engine every test of this binary runs on.
pub const ENGINE: common::Engine = common::Engine::Postgres;

#[path = "../integration/cluster.rs"]
mod cluster;
#[path = "../integration/common.rs"]
mod common;

#[path = "../integration/bad_input.rs"]
mod bad_input;
#[path = "../integration/chaos.rs"]
mod chaos;
#[path = "../integration/claim.rs"]
mod claim;
#[path = "../integration/cli.rs"]
mod cli;
#[path = "../integration/concurrency.rs"]
mod concurrency;
#[path = "../integration/contention.rs"]
mod contention;
#[path = "../integration/dependencies.rs"]
mod dependencies;
#[path = "../integration/embedding.rs"]
mod embedding;
#[path = "../integration/enqueue.rs"]
mod enqueue;
#[path = "../integration/exec_worker.rs"]
mod exec_worker;
#[path = "../integration/flow_chaos.rs"]
mod flow_chaos;
#[path = "../integration/flow_control.rs"]
mod flow_control;
#[path = "../integration/fuzz.rs"]
mod fuzz;
#[path = "../integration/guards.rs"]
mod guards;
#[path = "../integration/hostile_data.rs"]
mod hostile_data;
#[path = "../integration/http.rs"]
pub mod http;
#[path = "../integration/jsonl.rs"]
mod jsonl;
#[path = "../integration/lifecycle.rs"]
mod lifecycle;
#[path = "../integration/maintenance.rs"]
mod maintenance;
#[path = "../integration/model.rs"]
mod model;
#[path = "../integration/observability.rs"]
mod observability;
#[path = "../integration/owners_groups.rs"]
mod owners_groups;
mod postgres_only;
#[path = "../integration/registry.rs"]
mod registry;
#[path = "../integration/retry.rs"]
mod retry;
#[path = "../integration/schedules.rs"]
mod schedules;
#[path = "../integration/search_bulk.rs"]
mod search_bulk;
#[path = "../integration/security.rs"]
mod security;
#[path = "../integration/snooze.rs"]
mod snooze;
#[path = "../integration/uniqueness.rs"]
mod uniqueness;
#[path = "../integration/worker.rs"]
mod worker;

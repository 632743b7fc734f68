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

mod postgres_only;

#[path = "../conformance/mod.rs"]
mod conformance;
pub(crate) use conformance::{cli, http};

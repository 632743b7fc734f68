//! jobq's integration tests: one binary, one module per capability, each test on a fresh
//! database file in a temp folder.

/// The engine every test of this binary runs on.
pub const ENGINE: common::Engine = common::Engine::Sqlite;

// The PostgreSQL binary uses all of it; this one only what `common` does.
#[allow(dead_code)]
mod cluster;
mod common;

mod browser;
mod durability;
mod hostile_http;
mod open;
mod portability;
mod sqlite_only;
mod views;

#[path = "../conformance/mod.rs"]
mod conformance;
pub(crate) use conformance::{cli, http};

//! Storage: the engines that keep jobs. `sqlite/` is the embedded one (one file, WAL).

pub(crate) mod sqlite;

pub use sqlite::Durability;
pub(crate) use sqlite::{Store, StoreOptions, WriteTx};

//! Changes made by other connections: `PRAGMA data_version`.

use crate::error::Result;
use rusqlite::Connection;
use std::sync::Arc;

use super::Sqlite;
use crate::store::Changes;

/// `PRAGMA data_version` on a connection of its own: it changes only when another
/// connection commits, so that an idle pool costs one cheap read per poll.
struct DataVersion(Connection);

impl Changes for DataVersion {
    fn version(&mut self) -> Option<i64> {
        self.0
            .query_row("PRAGMA data_version", [], |r| r.get(0))
            .ok()
    }
}

impl crate::store::ChangeFeed for Sqlite {
    fn changes(&self, _on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>> {
        Ok(Box::new(DataVersion(self.connect()?)))
    }
}

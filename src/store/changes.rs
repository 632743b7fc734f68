//! Changes made by other connections, for an idle pool deciding whether to look for work.

use std::sync::Arc;

use crate::error::Result;

/// Changes made by other connections, for an idle pool deciding whether to look for work.
pub(crate) trait ChangeFeed {
    /// A counter that moves on when another connection (process, host) commits, for an
    /// idle pool deciding whether to look for work; `on_change` is called as soon as one is
    /// known, where the engine learns of them by itself.
    fn changes(&self, on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>>;
}

/// See [`ChangeFeed::changes`].
pub(crate) trait Changes: Send {
    /// A number that differs from its last answer once another connection has committed.
    fn version(&mut self) -> Option<i64>;
}

//! A pool's handlers by kind, its fallback handler, and the settings of each kind (job
//! timeout, retry policy), which may be given before or after the kind's handler.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Handler;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;

/// What runs one job, resolved for its kind.
#[derive(Clone)]
pub(crate) struct Registered {
    pub handler: Arc<dyn Handler>,
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

/// The settings of one kind.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct KindSettings {
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
}

#[derive(Clone, Default)]
pub(crate) struct Handlers {
    pub by_kind: HashMap<String, Arc<dyn Handler>>,
    pub fallback: Option<Arc<dyn Handler>>,
    pub settings: HashMap<String, KindSettings>,
    pub default_timeout: Option<Duration>,
}

impl Handlers {
    /// The handler of `kind` (its own, else the fallback) with its timeout (its own, else the
    /// default) and retry policy.
    pub fn for_kind(&self, kind: &str) -> Option<Registered> {
        let handler = self
            .by_kind
            .get(kind)
            .or(self.fallback.as_ref())
            .map(Arc::clone)?;
        let settings = self.settings.get(kind).copied().unwrap_or_default();
        Some(Registered {
            handler,
            timeout: settings.timeout.or(self.default_timeout),
            retry: settings.retry,
        })
    }

    pub fn setting(&mut self, kind: &str) -> &mut KindSettings {
        self.settings.entry(kind.to_string()).or_default()
    }

    /// Refuses settings that could never apply: for a kind no handler runs (a misspelt
    /// kind, most likely), or a timeout of zero (every job would time out at once).
    pub fn check(&self, kinds: Option<&[String]>) -> Result<()> {
        if self.by_kind.is_empty() && self.fallback.is_none() {
            return Err(Error::invalid("handlers", "register at least one handler"));
        }
        let runs = |kind: &str| {
            self.by_kind.contains_key(kind)
                || (self.fallback.is_some() && kinds.is_none_or(|k| k.iter().any(|k| k == kind)))
        };
        let mut configured: Vec<&String> = self.settings.keys().collect();
        configured.sort();
        for kind in configured {
            if !runs(kind) {
                return Err(Error::invalid(
                    "kind",
                    format!(
                        "a job timeout or retry policy is set for kind {kind:?}, which no handler of this pool runs"
                    ),
                ));
            }
        }
        let zero = self
            .settings
            .values()
            .filter_map(|s| s.timeout)
            .chain(self.default_timeout)
            .any(|t| t.is_zero());
        if zero {
            return Err(Error::invalid(
                "job_timeout",
                "a timeout of 0 would time every job out at once (leave it unset for none)",
            ));
        }
        Ok(())
    }
}

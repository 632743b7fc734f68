//! The maintainer: releases the jobs of dead workers, prunes old finished jobs and old
//! events and folds old rollups, once at start and then every interval.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use super::Pool;
use crate::maintenance::{RollupRetention, StaleTimeouts};

pub(super) fn run(
    pool: &Arc<Pool>,
    interval: Duration,
    stale: StaleTimeouts,
    prune_after: Option<Duration>,
    (rollups, events): (RollupRetention, Duration),
    stop: Receiver<()>,
) {
    loop {
        if let Some(problem) = pool.queue.engine().file_problem() {
            tracing::error!(
                problem,
                "jobq: the database file is not the one this worker opened"
            );
        }
        match pool.queue.release_stale(&stale) {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "jobq: released stale jobs"),
            Err(e) => tracing::warn!(error = %e, "jobq: stale release failed"),
        }
        if let Err(e) = pool.queue.engine().expire_workers(pool.queue.now_ms()) {
            tracing::debug!(error = %e, "jobq: expiring dead workers failed");
        }
        if let Some(age) = prune_after {
            if let Err(e) = pool.queue.prune(age, &[]) {
                tracing::warn!(error = %e, "jobq: pruning failed");
            }
        }
        if let Err(e) = pool.queue.fold_rollups(&rollups) {
            tracing::warn!(error = %e, "jobq: folding rollups failed");
        }
        if pool.queue.owner().is_none() {
            let ms = i64::try_from(events.as_millis()).unwrap_or(i64::MAX);
            let before = crate::job::Timestamp::from_millis(pool.queue.now_ms().saturating_sub(ms));
            if let Err(e) = pool.queue.prune_events(before) {
                tracing::warn!(error = %e, "jobq: pruning events failed");
            }
        }
        select! {
            recv(stop) -> _ => break,
            default(interval) => {}
        }
    }
}

//! The maintainer: releases the jobs of dead workers and prunes old finished jobs, once at
//! start and then every interval.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, select};

use super::Engine;
use crate::maintenance::StaleTimeouts;

pub(super) fn run(
    engine: &Arc<Engine>,
    interval: Duration,
    stale: StaleTimeouts,
    prune_after: Option<Duration>,
    stop: Receiver<()>,
) {
    loop {
        if let Some(problem) = engine.queue.engine().file_problem() {
            tracing::error!(
                problem,
                "jobq: the database file is not the one this worker opened"
            );
        }
        match engine.queue.release_stale(&stale) {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "jobq: released stale jobs"),
            Err(e) => tracing::warn!(error = %e, "jobq: stale release failed"),
        }
        if let Err(e) = engine.queue.engine().expire_workers(engine.queue.now_ms()) {
            tracing::debug!(error = %e, "jobq: expiring dead workers failed");
        }
        if let Some(age) = prune_after {
            if let Err(e) = engine.queue.prune(age, &[]) {
                tracing::warn!(error = %e, "jobq: pruning failed");
            }
        }
        select! {
            recv(stop) -> _ => break,
            default(interval) => {}
        }
    }
}

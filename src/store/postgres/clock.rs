//! One clock for every host: the database server's.
//!
//! Hosts' clocks drift apart, and a queue shared by many hosts compares times written by
//! one host against times read by another (`run_after`, leases, heartbeats). So on
//! PostgreSQL the queue's default clock is the server's: this host's clock corrected by the
//! distance to the server's, measured when the engine opens (half a round trip either way)
//! and again every half minute. Reading it costs no round trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Sender, bounded};

use super::Conn;
use crate::clock::{Clock, SystemClock};
use crate::error::Result;

/// How often the distance to the server's clock is measured again.
const REMEASURE_EVERY: Duration = Duration::from_secs(30);

/// The server's clock as seen from this host. Cloning shares the measurement.
#[derive(Debug, Clone)]
pub(crate) struct ServerClock {
    /// Server time minus this host's time, in milliseconds.
    offset: Arc<AtomicI64>,
}

impl Clock for ServerClock {
    fn now_ms(&self) -> i64 {
        SystemClock
            .now_ms()
            .saturating_add(self.offset.load(Ordering::Relaxed))
    }
}

const SERVER_NOW: &str = "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";

impl ServerClock {
    /// Measures the distance to the server's clock on `conn`.
    pub(crate) fn measure(conn: &mut Conn) -> Result<ServerClock> {
        let clock = ServerClock {
            offset: Arc::new(AtomicI64::new(0)),
        };
        clock.remeasure(conn)?;
        Ok(clock)
    }

    /// The server's time minus this host's, in milliseconds.
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    fn remeasure(&self, conn: &mut Conn) -> Result<()> {
        let before = SystemClock.now_ms();
        let server: i64 = conn.query_one(SERVER_NOW, &[])?.get(0);
        let after = SystemClock.now_ms();
        let local = before + (after - before) / 2;
        self.offset.store(server - local, Ordering::Relaxed);
        Ok(())
    }

    /// Measures again every [`REMEASURE_EVERY`] on a connection from `connect`, until the
    /// returned sender is dropped.
    pub(crate) fn keep_measuring<C>(
        &self,
        connect: impl Fn() -> Option<C> + Send + 'static,
    ) -> Sender<()>
    where
        C: std::ops::DerefMut<Target = Conn>,
    {
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let clock = self.clone();
        let spawned = std::thread::Builder::new()
            .name("jobq-pg-clock".into())
            .spawn(move || {
                while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    stop_rx.recv_timeout(REMEASURE_EVERY)
                {
                    if let Some(mut conn) = connect() {
                        if let Err(e) = clock.remeasure(&mut conn) {
                            tracing::debug!(error = %e, "jobq: measuring the server's clock failed");
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "jobq: cannot start the thread that follows the server's clock");
        }
        stop_tx
    }
}

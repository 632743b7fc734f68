//! Wake-ups across hosts: a connection of its own that `LISTEN`s to the channel `jobq`,
//! which the table's triggers notify (once per queue, at commit) when jobs become ready.

use super::Postgres;
use crate::error::Error;
use crate::error::Result;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};

use crate::store::Changes;

/// How long the listener waits for a notification before it looks whether it should stop.
const TICK: Duration = Duration::from_millis(250);

/// The changes another connection made, as counted by a listening thread.
pub(crate) struct Listener {
    version: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Changes for Listener {
    fn version(&mut self) -> Option<i64> {
        Some(self.version.load(Ordering::SeqCst))
    }
}

/// Starts listening on a connection made from `config`; `on_change` is called on every
/// notification, and after every reconnection (what happened while the connection was down
/// is unknown, so it counts as a change). The thread ends soon after the listener drops.
pub(crate) fn listen(
    config: postgres::Config,
    location: String,
    on_change: Arc<dyn Fn() + Send + Sync>,
) -> std::io::Result<Listener> {
    let version = Arc::new(AtomicI64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let listener = Listener {
        version: Arc::clone(&version),
        stop: Arc::clone(&stop),
    };
    std::thread::Builder::new()
        .name("jobq-pg-listen".into())
        .spawn(move || {
            let changed = || {
                version.fetch_add(1, Ordering::SeqCst);
                on_change();
            };
            let mut pause = Duration::from_millis(50);
            let mut warned = false;
            while !stop.load(Ordering::SeqCst) {
                let mut client = match connect(&config) {
                    Ok(client) => client,
                    Err(e) => {
                        if !warned {
                            tracing::warn!(error = %e, database = location, "jobq: cannot listen for wake-ups; polling until the server answers");
                            warned = true;
                        }
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_secs(1));
                        continue;
                    }
                };
                if warned {
                    tracing::info!(database = location, "jobq: listening for wake-ups again");
                    warned = false;
                }
                pause = Duration::from_millis(50);
                changed();
                while !stop.load(Ordering::SeqCst) {
                    let got = client.notifications().timeout_iter(TICK).next();
                    match got {
                        Ok(Some(_)) => {
                            // Take every notification already here: one wake-up for all.
                            let mut notifications = client.notifications();
                            let mut pending = notifications.iter();
                            while let Ok(Some(_)) = pending.next() {}
                            changed();
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "jobq: the listening connection broke; connecting again");
                            break;
                        }
                        Ok(None) if client.is_closed() => break,
                        Ok(None) => {}
                    }
                }
            }
        })?;
    Ok(listener)
}

fn connect(config: &postgres::Config) -> Result<Client, postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute("LISTEN jobq")?;
    Ok(client)
}

impl crate::store::ChangeFeed for Postgres {
    fn changes(&self, on_change: Arc<dyn Fn() + Send + Sync>) -> Result<Box<dyn Changes>> {
        let listener =
            listen(self.config.clone(), self.location.clone(), on_change).map_err(|e| {
                Error::Unavailable {
                    reason: format!("cannot start the thread that listens for wake-ups: {e}"),
                }
            })?;
        Ok(Box::new(listener))
    }
}

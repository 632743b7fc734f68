//! `jobq serve`: the HTTP API and the dashboard until SIGINT or SIGTERM.

use std::path::Path;
use std::time::Duration;

use crate::Queue;
use clap::Args;

use super::output::say;

use super::{Done, Refused};

#[derive(Args, Debug)]
pub(super) struct ServeArgs {
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub(super) addr: String,
    /// The admin key (X-Admin-Key).
    #[arg(long, env = "JOBQ_ADMIN_KEY", hide_env_values = true)]
    pub(super) admin_key: Option<String>,
    /// Serve without any key. Only on a loopback address, answering only loopback host
    /// names (and those of --allow-host).
    #[arg(long)]
    pub(super) insecure_no_auth: bool,
    /// A host name a server without a key answers besides localhost (repeatable).
    #[arg(long, value_name = "NAME")]
    pub(super) allow_host: Vec<String>,
    /// An origin (http://host:port) whose pages may send requests besides the dashboard's
    /// own (repeatable).
    #[arg(long, value_name = "ORIGIN")]
    pub(super) allow_origin: Vec<String>,
    /// The most schedules one owner may have.
    #[arg(long, env = "JOBQ_MAX_SCHEDULES_PER_OWNER", default_value_t = crate::DEFAULT_MAX_SCHEDULES_PER_OWNER)]
    pub(super) max_schedules_per_owner: usize,
}

pub(super) fn run(db: &Path, args: ServeArgs) -> Done {
    let queue = Queue::builder(db)
        .max_schedules_per_owner(args.max_schedules_per_owner)
        .open()?;
    let mut config = crate::http::ServerConfig::new(&args.addr);
    for host in args.allow_host {
        config = config.allow_host(host);
    }
    for origin in args.allow_origin {
        config = config.allow_origin(origin);
    }
    if let Some(key) = args.admin_key.filter(|k| !k.is_empty()) {
        config = config.admin_key(key);
    }
    if args.insecure_no_auth {
        config = config.insecure_no_auth();
    }
    let server = crate::http::Server::start(queue, config).map_err(|e| Refused(e.to_string()))?;
    say!("jobq serving {} on http://{}", db.display(), server.addr());
    say!("dashboard: http://{}/", server.addr());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .map_err(|e| Refused(e.to_string()))?;
    }
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    server.shutdown();
    say!("stopped");
    Ok(())
}

//! The HTTP admin API and the web dashboard, over the library (no second implementation of
//! any rule).
//!
//! The server is hyper's HTTP/1 on a tokio runtime of its own, on one thread; the library's
//! calls, which are synchronous, run on a small pool of blocking threads. No client can hold
//! the server: slow clients cost a task, not a thread, and every limit is enforced before
//! anything is buffered:
//!
//! - the request line and headers: at most [`MAX_HEAD`] bytes (431 beyond), read within the
//!   I/O timeout from the moment the server waits for them (an idle connection is closed);
//! - the body: at most [`MAX_BODY`] bytes (413 beyond, decided from `Content-Length` before
//!   reading, or while reading a chunked body), read within the I/O timeout (else 408);
//! - the answer: a client that stops reading it is cut off after the I/O timeout;
//! - connections: at most [`ServerConfig::max_connections`] at once; a process out of file
//!   descriptors keeps listening and accepts again as soon as one is free.
//!
//! Auth: `X-Admin-Key: KEY` sees and changes everything; `Authorization: Bearer TOKEN` (from
//! [`Queue::create_token`]; the scheme in any case) sees and changes only that owner's jobs
//! and groups, and what it creates is owned by it. A wrong admin key is 401, whatever else
//! the request carries. Another owner's job is 404, never 403; a token on a route only the
//! admin key may reach (queues, workers, budgets, metrics) is 403. Errors are
//! `{"error": {"code": "…", "message": "…"}}`.

mod api;
mod body;
mod query;
mod reply;
mod routes;

/// Reads a flow from the JSON document `POST /api/flows` takes (and `jobq flow submit`):
/// `{"group": {"name", "metadata"?}?, "jobs": [{"ref", "kind", "after"?: [ref or id…],
/// …any field of POST /api/jobs}…]}`.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the field (and the ref) that is wrong.
pub fn parse_flow(document: &Value) -> crate::Result<crate::Flow> {
    api::flow_from_json(document).map_err(|reply| Error::InvalidInput {
        field: "flow",
        reason: reply.message(),
    })
}
mod metrics;
mod serve;

use std::net::{SocketAddr, ToSocketAddrs};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::owner::constant_time_eq;
use crate::queue::Queue;
pub(crate) use reply::{Reply, json_body, method_not_allowed, too_large, unauthorized};

/// The largest request body accepted: 1 MiB.
pub const MAX_BODY: usize = 1 << 20;

/// The largest request line and headers accepted, together: 16 KiB.
pub const MAX_HEAD: usize = 16 << 10;

/// Settings of [`Server::start`].
#[derive(Clone)]
#[must_use]
pub struct ServerConfig {
    addr: String,
    admin_key: Option<String>,
    insecure_no_auth: bool,
    threads: usize,
    io_timeout: Duration,
    max_connections: usize,
    schedule_interval: Option<Duration>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "…"))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("threads", &self.threads)
            .field("io_timeout", &self.io_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl ServerConfig {
    /// Listen on `addr` (`host:port`; port 0 picks a free port).
    pub fn new(addr: impl Into<String>) -> ServerConfig {
        ServerConfig {
            addr: addr.into(),
            admin_key: None,
            insecure_no_auth: false,
            threads: 4,
            io_timeout: Duration::from_secs(10),
            max_connections: 1024,
            schedule_interval: Some(Duration::from_secs(1)),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }

    /// A `Host` name (without its port) a server without a key answers besides the
    /// loopback ones (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`): without a key,
    /// any other `Host` is refused (403), so that a web page cannot reach the server
    /// through a name it controls (DNS rebinding). Defaults to none.
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into().to_ascii_lowercase());
        self
    }

    /// An origin (`scheme://host[:port]`) whose pages may send requests besides the
    /// server's own: a request from any other origin (its `Origin` header) is refused
    /// (403) when it changes something, and always on a server without a key. Defaults to
    /// none.
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins
            .push(origin.into().trim_end_matches('/').to_ascii_lowercase());
        self
    }

    /// The admin key, sent as `X-Admin-Key`. Required unless
    /// [`ServerConfig::insecure_no_auth`] on a loopback address.
    pub fn admin_key(mut self, key: impl Into<String>) -> Self {
        self.admin_key = Some(key.into());
        self
    }

    /// Serve without any key: every request acts as the admin. Refused on an address that
    /// is not loopback.
    pub fn insecure_no_auth(mut self) -> Self {
        self.insecure_no_auth = true;
        self
    }

    /// Threads that run the library's calls (the database work of requests); requests past
    /// them wait their turn. Defaults to 4.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// How long the server waits on a client: for a request's line and headers (and on an
    /// idle connection, for the next request), for its body, and for the client to take the
    /// answer. Each is a deadline for the whole step, not for one read. Defaults to 10 s.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Connections served at once; a connection past them is closed as soon as it is
    /// accepted. Defaults to 1024.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// How often the server fires the schedules that are due (as worker pools do; each
    /// slot fires once however many processes take part). `None` leaves it to others.
    /// Defaults to every second.
    pub fn schedule_interval(mut self, interval: Option<Duration>) -> Self {
        self.schedule_interval = interval;
        self
    }
}

/// A running HTTP server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
    firer: Option<crate::schedule::Firer>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// The name in a `Host` header, without its port (`[::1]:8080` → `[::1]`).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(name, _)| &host[..=name.len()]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

/// Who is asking.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Admin,
    Owner(String),
}

/// What a request presents as its identity, read from its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// An `X-Admin-Key` header, right or wrong.
    AdminKey(String),
    /// `Authorization: Bearer TOKEN`, the scheme in any case.
    Bearer(String),
    /// Nothing usable.
    None,
}

impl Credentials {
    /// From the values of the `X-Admin-Key` and `Authorization` headers. An admin key, even
    /// a wrong one, wins: it is never passed over for a token.
    pub(crate) fn read(admin_key: Option<&str>, authorization: Option<&str>) -> Credentials {
        if let Some(key) = admin_key {
            return Credentials::AdminKey(key.to_string());
        }
        let Some(authorization) = authorization else {
            return Credentials::None;
        };
        match authorization.trim().split_once(char::is_whitespace) {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                Credentials::Bearer(token.trim().to_string())
            }
            _ => Credentials::None,
        }
    }
}

pub(crate) struct App {
    queue: Queue,
    admin_key: Option<String>,
    insecure: bool,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
}

impl Server {
    /// Binds the address and starts serving.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (field `addr` or `admin_key`) without an admin key and
    /// without `insecure_no_auth`, with `insecure_no_auth` on an address that is not
    /// loopback, or for an address that cannot be resolved; [`Error::Open`] when it cannot
    /// be bound (or the OS refuses the server its thread).
    pub fn start(queue: Queue, config: ServerConfig) -> crate::Result<Server> {
        let addrs: Vec<SocketAddr> = config
            .addr
            .to_socket_addrs()
            .map_err(|e| {
                Error::invalid(
                    "addr",
                    format!("{:?} is not a host:port address: {e}", config.addr),
                )
            })?
            .collect();
        let addr = *addrs.first().ok_or_else(|| {
            Error::invalid("addr", format!("{:?} resolves to no address", config.addr))
        })?;
        let loopback = addrs.iter().all(|a| a.ip().is_loopback());
        if config.admin_key.is_none() {
            if !config.insecure_no_auth {
                return Err(Error::invalid(
                    "admin_key",
                    "serve needs an admin key (--admin-key or $JOBQ_ADMIN_KEY), or --insecure-no-auth on a loopback address",
                ));
            }
            if !loopback {
                return Err(Error::invalid(
                    "addr",
                    format!(
                        "{addr} is not a loopback address: serving without a key is allowed only on 127.0.0.1 or ::1"
                    ),
                ));
            }
        }
        if config.admin_key.as_deref().is_some_and(|k| k.len() < 8) {
            return Err(Error::invalid("admin_key", "must be at least 8 characters"));
        }
        let firer = match config.schedule_interval {
            Some(interval) => Some(
                crate::schedule::Firer::spawn(queue.unscoped(), interval).map_err(|e| {
                    Error::Open {
                        path: addr.to_string().into(),
                        reason: format!("cannot start the thread that fires schedules: {e}"),
                    }
                })?,
            ),
            None => None,
        };
        let app = App {
            queue,
            admin_key: config.admin_key.clone(),
            insecure: config.insecure_no_auth && loopback,
            allowed_hosts: config.allowed_hosts.clone(),
            allowed_origins: config.allowed_origins.clone(),
        };
        let open_err = |reason: String| Error::Open {
            path: addr.to_string().into(),
            reason,
        };
        let running = serve::start(addr, app, &config).map_err(open_err)?;
        tracing::info!(addr = %running.addr, "jobq: HTTP server listening");
        Ok(Server {
            addr: running.addr,
            stop: Some(running.stop),
            thread: Some(running.thread),
            firer,
        })
    }

    /// The address it listens on (with the port picked, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets the requests in progress finish (for up to the I/O timeout),
    /// closes every connection and returns.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.firer.take());
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

impl App {
    /// Refuses a request a web page could have sent behind the operator's back, from what
    /// its head says: on a server without a key, a `Host` that is not loopback (or
    /// allowed) — DNS rebinding — and any request from another origin; with a key, a
    /// request from another origin that changes something. A browser sends `Origin` on
    /// every request that changes something, and on every cross-origin one.
    fn refuse_foreign(
        &self,
        method: &str,
        host: Option<&str>,
        origin: Option<&str>,
    ) -> Result<(), Reply> {
        if self.insecure && !host.is_some_and(|h| self.host_allowed(h)) {
            return Err(Reply::error(
                403,
                "forbidden",
                format!(
                    "host {:?} refused: a server without a key answers only loopback names (allow others with --allow-host)",
                    host.unwrap_or("")
                ),
            ));
        }
        let Some(origin) = origin else {
            return Ok(());
        };
        let writes = !matches!(method, "GET" | "HEAD" | "OPTIONS");
        if (writes || self.insecure) && !self.origin_allowed(origin, host) {
            return Err(Reply::error(
                403,
                "forbidden",
                format!(
                    "a request from the origin {origin:?} refused: only the server's own pages may {} (allow others with --allow-origin)",
                    if writes {
                        "change anything"
                    } else {
                        "read it without a key"
                    }
                ),
            ));
        }
        Ok(())
    }

    /// A `Host` header (with or without its port) naming this machine's loopback, or one
    /// allowed.
    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host).to_ascii_lowercase();
        if let Ok(ip) = name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
        {
            return ip.is_loopback();
        }
        name == "localhost" || name.ends_with(".localhost") || self.allowed_hosts.contains(&name)
    }

    /// An `Origin` that is the server's own (the page came from the `Host` the request
    /// names), or one allowed.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.contains(&origin) {
            return true;
        }
        let Some(host) = host else {
            return false;
        };
        origin
            .strip_prefix("http://")
            .is_some_and(|o| o == host.trim().to_ascii_lowercase())
    }

    /// What a path and method lead to, decided before anything is read or authenticated:
    /// the dashboard, an API route, or an error answer (404, 405). `HEAD` is `GET`.
    fn route(method: &str, segments: &[&str], path: &str) -> Result<Route, Reply> {
        let method = if method == "HEAD" { "GET" } else { method };
        // The dashboard asks for a key itself.
        if segments.iter().all(|s| s.is_empty()) || segments == ["index.html"] {
            return match method {
                "GET" => Ok(Route::Dashboard),
                _ => Err(method_not_allowed("GET")),
            };
        }
        let Some(allowed) = routes::allowed_methods(segments) else {
            return Err(Reply::error(404, "not_found", format!("no route {path}")));
        };
        if !allowed.split(", ").any(|m| m == method) {
            return Err(method_not_allowed(&allowed));
        }
        Ok(Route::Api)
    }

    /// The caller, from what the request presented; `None` means 401. Only a token needs
    /// the database.
    fn caller(&self, credentials: &Credentials) -> crate::Result<Option<Caller>> {
        if self.insecure {
            return Ok(Some(Caller::Admin));
        }
        Ok(match credentials {
            Credentials::AdminKey(given) => self
                .admin_key
                .as_ref()
                .filter(|key| constant_time_eq(given.as_bytes(), key.as_bytes()))
                .map(|_| Caller::Admin),
            Credentials::Bearer(token) => self.queue.authenticate(token)?.map(Caller::Owner),
            Credentials::None => None,
        })
    }

    /// Whether resolving these credentials needs the database (and so a blocking thread).
    fn caller_needs_database(&self, credentials: &Credentials) -> bool {
        !self.insecure && matches!(credentials, Credentials::Bearer(_))
    }

    pub(crate) fn queue_for(&self, caller: &Caller) -> Queue {
        match caller {
            Caller::Admin => self.queue.unscoped(),
            Caller::Owner(owner) => self.queue.scoped(owner.clone()),
        }
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Dashboard,
    Api,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_read_an_admin_key_first_and_the_bearer_scheme_in_any_case() {
        assert_eq!(
            Credentials::read(Some("k"), Some("Bearer t")),
            Credentials::AdminKey("k".into())
        );
        for header in ["Bearer t", "bearer t", "BEARER  t ", "bEaReR\tt"] {
            assert_eq!(
                Credentials::read(None, Some(header)),
                Credentials::Bearer("t".into()),
                "{header:?}"
            );
        }
        for header in ["Basic dXNlcg==", "Bearer", "Bearert", "t"] {
            assert_eq!(Credentials::read(None, Some(header)), Credentials::None);
        }
        assert_eq!(Credentials::read(None, None), Credentials::None);
    }

    #[test]
    fn routes_are_decided_before_anything_is_read() {
        assert_eq!(App::route("GET", &[""], "/").unwrap(), Route::Dashboard);
        assert_eq!(
            App::route("HEAD", &["api", "stats"], "/api/stats").unwrap(),
            Route::Api
        );
        assert_eq!(App::route("POST", &[""], "/").unwrap_err().status, 405);
        assert_eq!(
            App::route("GET", &["nope"], "/nope").unwrap_err().status,
            404
        );
        assert_eq!(
            App::route("DELETE", &["api", "stats"], "/api/stats")
                .unwrap_err()
                .status,
            405
        );
    }
}

//! The HTTP admin API and the web dashboard, over the library (no second implementation of
//! any rule).
//!
//! Synchronous: tiny_http reads requests on its own connection threads and a fixed pool of
//! request threads answers them. Every connection has read and write timeouts, so a slow
//! client cannot hold a thread for long; bodies over 1 MiB are refused before they are read.
//!
//! The timeouts are set on the listening socket (accepted connections inherit them), where
//! they also bound `accept()`, and tiny_http stops accepting at its first accept error. So a
//! keeper thread connects to the server every quarter of the timeout (an idle server never
//! sees its accept time out), and should accepting stop all the same, the request threads
//! listen again on the same address with a fresh tiny_http server.
//!
//! Auth: `X-Admin-Key: KEY` sees and changes everything; `Authorization: Bearer TOKEN` (from
//! [`Queue::create_token`]) sees and changes only that owner's jobs and groups, and what it
//! creates is owned by it. Another owner's job is 404, never 403. Errors are
//! `{"error": {"code": "…", "message": "…"}}`.

mod api;
mod body;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::error::Error;
use crate::owner::constant_time_eq;
use crate::queue::Queue;

/// The largest request body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// Settings of [`Server::start`].
#[derive(Clone)]
#[must_use]
pub struct ServerConfig {
    addr: String,
    admin_key: Option<String>,
    insecure_no_auth: bool,
    threads: usize,
    io_timeout: Duration,
    keeper: bool,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("addr", &self.addr)
            .field("admin_key", &self.admin_key.as_ref().map(|_| "…"))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("threads", &self.threads)
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
            keeper: true,
        }
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

    /// Request threads. Defaults to 4.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// How long a connection may wait on a slow client (reading a request, or writing a
    /// response). Defaults to 10 s.
    pub fn io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// No keeper thread: accepting is left to time out, for the test of listening again.
    #[cfg(test)]
    fn without_keeper(mut self) -> Self {
        self.keeper = false;
        self
    }
}

/// A running HTTP server. Dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    listening: Arc<Listening>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    keeper: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Who is asking.
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    Admin,
    Owner(String),
}

pub(crate) struct App {
    queue: Queue,
    admin_key: Option<String>,
    insecure: bool,
}

impl Server {
    /// Binds the address and starts the request threads.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] (field `addr` or `admin_key`) without an admin key and
    /// without `insecure_no_auth`, with `insecure_no_auth` on an address that is not
    /// loopback, or for an address that cannot be resolved; [`Error::Open`] when it cannot
    /// be bound.
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
        let http = listen(addr, config.io_timeout).map_err(|reason| Error::Open {
            path: addr.to_string().into(),
            reason,
        })?;
        let addr = match http.server_addr() {
            tiny_http::ListenAddr::IP(a) => a,
            #[allow(unreachable_patterns)]
            _ => addr,
        };
        let listening = Arc::new(Listening {
            addr,
            io_timeout: config.io_timeout,
            threads: config.threads,
            current: std::sync::RwLock::new(Arc::new(http)),
        });
        let app = Arc::new(App {
            queue,
            admin_key: config.admin_key,
            insecure: config.insecure_no_auth && loopback,
        });
        let stopping = Arc::new(AtomicBool::new(false));
        let threads = (0..config.threads)
            .map(|i| {
                let (listening, app, stopping) = (
                    Arc::clone(&listening),
                    Arc::clone(&app),
                    Arc::clone(&stopping),
                );
                std::thread::Builder::new()
                    .name(format!("jobq-http-{i}"))
                    .spawn(move || {
                        while !stopping.load(Ordering::SeqCst) {
                            let http = listening.current();
                            match http.recv() {
                                Ok(request) => app.answer(request),
                                Err(e) if !stopping.load(Ordering::SeqCst) => {
                                    listening.revive(&http, &e)
                                }
                                Err(_) => break,
                            }
                        }
                    })
                    .expect("the OS refused to start an HTTP thread")
            })
            .collect();
        let keeper = config.keeper.then(|| {
            let stopping = Arc::clone(&stopping);
            let every = (config.io_timeout / 4).max(Duration::from_millis(10));
            std::thread::Builder::new()
                .name("jobq-http-keeper".into())
                .spawn(move || keep_accepting(addr, every, &stopping))
                .expect("the OS refused to start an HTTP thread")
        });
        tracing::info!(%addr, "jobq: HTTP server listening");
        Ok(Server {
            addr,
            listening,
            stopping,
            threads,
            keeper,
        })
    }

    /// The address it listens on (with the port picked, if 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits for the request threads to finish their requests.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
        let http = self.listening.current();
        for _ in &self.threads {
            http.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the server listens, and the tiny_http server listening there now.
struct Listening {
    addr: SocketAddr,
    io_timeout: Duration,
    threads: usize,
    current: std::sync::RwLock<Arc<tiny_http::Server>>,
}

impl Listening {
    fn current(&self) -> Arc<tiny_http::Server> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// `failed` stopped accepting: listen again on the same address (unless another thread
    /// already did), and wake the threads still waiting on the old server.
    fn revive(&self, failed: &Arc<tiny_http::Server>, why: &std::io::Error) {
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !Arc::ptr_eq(&current, failed) {
            return;
        }
        tracing::warn!(error = %why, addr = %self.addr, "jobq: the HTTP server stopped accepting; listening again");
        for attempt in 0..50 {
            match listen(self.addr, self.io_timeout) {
                Ok(http) => {
                    *current = Arc::new(http);
                    drop(current);
                    for _ in 0..self.threads {
                        failed.unblock();
                    }
                    return;
                }
                Err(e) if attempt == 49 => {
                    tracing::error!(error = e, addr = %self.addr, "jobq: cannot listen again");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// A tiny_http server on a listener of our own, with read and write timeouts.
fn listen(
    addr: SocketAddr,
    io_timeout: Duration,
) -> std::result::Result<tiny_http::Server, String> {
    let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen: {e}"))?;
    set_timeouts(&listener, io_timeout);
    tiny_http::Server::from_listener(listener, None).map_err(|e| e.to_string())
}

/// Connects to the server every `every` until it stops, so that its accept never waits a
/// whole timeout (see the module documentation). The connection sends nothing and closes.
fn keep_accepting(addr: SocketAddr, every: Duration, stopping: &AtomicBool) {
    let target = match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    };
    let tick = Duration::from_millis(10).min(every);
    let mut waited = Duration::ZERO;
    while !stopping.load(Ordering::SeqCst) {
        std::thread::sleep(tick);
        waited += tick;
        if waited >= every {
            waited = Duration::ZERO;
            let _ = std::net::TcpStream::connect_timeout(&target, every);
        }
    }
}

/// Read and write timeouts on the listening socket; accepted connections inherit them.
fn set_timeouts(listener: &TcpListener, timeout: Duration) {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    for option in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
        // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from a valid timeval for an
        // open socket we own.
        unsafe {
            libc::setsockopt(
                listener.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
    }
}

/// An HTTP answer: a status and a JSON body (or text, or nothing).
pub(crate) struct Reply {
    status: u16,
    body: Vec<u8>,
    content_type: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        Reply {
            status,
            body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn ok(value: &impl serde::Serialize) -> Reply {
        Reply::json(200, value)
    }

    pub fn empty(status: u16) -> Reply {
        Reply {
            status,
            body: Vec::new(),
            content_type: "application/json",
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            body: body.into(),
            content_type,
            headers: Vec::new(),
        }
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &json!({"error": {"code": code, "message": message.into()}}),
        )
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        let (status, code) = match &e {
            Error::NotFound { .. } => (404, "not_found"),
            Error::InvalidTransition { .. } => (409, "invalid_transition"),
            Error::LockLost { .. } => (409, "lock_lost"),
            Error::Duplicate { .. } => (409, "duplicate"),
            Error::BudgetExceeded { .. } => (422, "budget_exceeded"),
            Error::InvalidInput { .. } => (400, "invalid_input"),
            Error::Forbidden { .. } => (403, "forbidden"),
            Error::Busy { .. } => (503, "busy"),
            Error::DiskFull(_) => (507, "disk_full"),
            _ => (500, "internal"),
        };
        if status == 500 {
            tracing::error!(error = %e, "jobq: HTTP request failed");
        }
        let reply = Reply::error(status, code, e.to_string());
        if status == 503 {
            reply.with_header("Retry-After", "1")
        } else {
            reply
        }
    }
}

impl App {
    fn answer(&self, mut request: Request) {
        let reply = self.route(&mut request);
        let mut response =
            Response::from_data(reply.body).with_status_code(StatusCode(reply.status));
        let mut headers = vec![
            ("Content-Type", reply.content_type.to_string()),
            ("Cache-Control", "no-store".to_string()),
            ("X-Content-Type-Options", "nosniff".to_string()),
        ];
        headers.extend(reply.headers);
        for (name, value) in headers {
            if let Ok(h) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(h);
            }
        }
        let _ = request.respond(response);
    }

    fn route(&self, request: &mut Request) -> Reply {
        let url = request.url().to_string();
        let (path, query) = match url.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (url.clone(), String::new()),
        };
        let method = request.method().clone();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();

        // The dashboard asks for a key itself.
        if segments.iter().all(|s| s.is_empty()) || segments == ["index.html"] {
            return match method {
                Method::Get | Method::Head => {
                    Reply::text(200, "text/html; charset=utf-8", api::DASHBOARD)
                }
                _ => method_not_allowed("GET"),
            };
        }
        let Some(allowed) = api::allowed_methods(&segments) else {
            return Reply::error(404, "not_found", format!("no route {path}"));
        };
        let method_name = method.as_str().to_ascii_uppercase();
        if !allowed.split(", ").any(|m| m == method_name) {
            return method_not_allowed(allowed);
        }
        let caller = match self.caller(request) {
            Some(c) => c,
            None => {
                return Reply::error(
                    401,
                    "unauthorized",
                    "send X-Admin-Key: KEY or Authorization: Bearer TOKEN",
                )
                .with_header("WWW-Authenticate", "Bearer");
            }
        };
        let body = match method {
            Method::Post | Method::Put | Method::Patch => match read_body(request) {
                Ok(body) => Some(body),
                Err(reply) => return reply,
            },
            _ => None,
        };
        let query = api::Query::parse(&query);
        api::handle(
            self,
            &caller,
            &method_name,
            &segments,
            &query,
            body.as_ref(),
        )
    }

    /// The caller, from the admin key or a bearer token; `None` means 401.
    fn caller(&self, request: &Request) -> Option<Caller> {
        if self.insecure {
            return Some(Caller::Admin);
        }
        let header = |name: &str| {
            request
                .headers()
                .iter()
                .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
                .map(|h| h.value.as_str().to_string())
        };
        if let (Some(given), Some(key)) = (header("X-Admin-Key"), &self.admin_key) {
            if constant_time_eq(given.as_bytes(), key.as_bytes()) {
                return Some(Caller::Admin);
            }
            return None;
        }
        let token = header("Authorization")?;
        let token = token
            .strip_prefix("Bearer ")
            .or_else(|| token.strip_prefix("bearer "))?
            .trim();
        match self.queue.authenticate(token) {
            Ok(Some(owner)) => Some(Caller::Owner(owner)),
            _ => None,
        }
    }

    pub(crate) fn queue_for(&self, caller: &Caller) -> Queue {
        match caller {
            Caller::Admin => self.queue.unscoped(),
            Caller::Owner(owner) => self.queue.scoped(owner.clone()),
        }
    }
}

fn method_not_allowed(allowed: &str) -> Reply {
    Reply::error(405, "method_not_allowed", format!("use {allowed}"))
        .with_header("Allow", allowed.to_string())
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes: 413 beyond (decided from
/// `Content-Length` before reading, or after reading one byte too many), 408 when the
/// client stalls, 400 when it is not JSON.
fn read_body(request: &mut Request) -> Result<Value, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "payload_too_large",
            format!("the body is over {MAX_BODY} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    match request
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut bytes)
    {
        Ok(_) if bytes.len() > MAX_BODY => return Err(too_large()),
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return Err(Reply::error(
                408,
                "request_timeout",
                "the body did not arrive in time",
            ));
        }
        Err(e) => {
            return Err(Reply::error(
                400,
                "bad_request",
                format!("cannot read the body: {e}"),
            ));
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        Reply::error(
            400,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    fn status_of_stats(addr: SocketAddr) -> Option<String> {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        stream
            .write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin-Key: key-for-tests\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply.lines().next().map(str::to_owned)
    }

    #[test]
    fn a_server_whose_accept_timed_out_listens_again_on_the_same_address() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Queue::open(dir.path().join("q.db")).unwrap();
        let config = ServerConfig::new("127.0.0.1:0")
            .admin_key("key-for-tests")
            .io_timeout(Duration::from_millis(100))
            .without_keeper();
        let server = Server::start(queue, config).unwrap();
        let first = Arc::clone(&server.listening.current());
        assert_eq!(
            status_of_stats(server.addr()).as_deref(),
            Some("HTTP/1.1 200 OK")
        );
        // Ten timeouts without a connection: tiny_http's accept loop has ended by now.
        std::thread::sleep(Duration::from_millis(1000));
        assert!(
            !Arc::ptr_eq(&first, &server.listening.current()),
            "no new listener"
        );
        // Between the old listener closing and the new one binding, a connect may be refused.
        let answered = (0..50).find_map(|_| {
            status_of_stats(server.addr()).or_else(|| {
                std::thread::sleep(Duration::from_millis(20));
                None
            })
        });
        assert_eq!(answered.as_deref(), Some("HTTP/1.1 200 OK"));
        server.shutdown();
    }
}

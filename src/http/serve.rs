//! The transport: hyper's HTTP/1 connections on a tokio runtime of the server's own, one
//! thread for every connection, and a small pool of blocking threads for the library's
//! calls. See the module documentation of [`crate::http`] for the limits.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;

use super::{
    App, Credentials, MAX_BODY, MAX_HEAD, Reply, Route, ServerConfig, api, json_body, too_large,
    unauthorized,
};

/// The read buffer of a connection: a request head must fit in it (431 otherwise), with
/// room for the start of a body read along with it.
const READ_BUFFER: usize = MAX_HEAD + (8 << 10);

/// How long the accept loop rests when accepting fails for want of a file descriptor (or
/// memory), before it tries again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection needs to know.
#[derive(Debug, Clone, Copy)]
struct Settings {
    io_timeout: Duration,
}

/// A server started on its thread.
pub(super) struct Running {
    pub addr: SocketAddr,
    /// Sending `true` (or dropping it) stops the server.
    pub stop: watch::Sender<bool>,
    pub thread: JoinHandle<()>,
}

/// Binds `addr` and serves `app` on a thread of its own until told to stop.
pub(super) fn start(addr: SocketAddr, app: App, config: &ServerConfig) -> Result<Running, String> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen: {e}"))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .max_blocking_threads(config.threads)
        .thread_name("jobq-http-call")
        .build()
        .map_err(|e| format!("cannot start the HTTP runtime: {e}"))?;
    let settings = Settings {
        io_timeout: config.io_timeout,
    };
    let max_connections = config.max_connections;
    let (stop, stopped) = watch::channel(false);
    let app = Arc::new(app);
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    let thread = std::thread::Builder::new()
        .name("jobq-http".into())
        .spawn(move || {
            tracing::dispatcher::with_default(&dispatch, || {
                runtime.block_on(accept_loop(
                    listener,
                    app,
                    settings,
                    max_connections,
                    stopped,
                ));
                // Calls still running on the blocking threads get the same time to end.
                runtime.shutdown_timeout(settings.io_timeout);
            })
        })
        .map_err(|e| format!("cannot start the HTTP thread: {e}"))?;
    Ok(Running { addr, stop, thread })
}

/// Accepts connections until told to stop. It never gives up: when accepting fails (out of
/// file descriptors, say), it rests and tries again, and it closes connections past
/// `max_connections` as soon as they are accepted.
async fn accept_loop(
    listener: std::net::TcpListener,
    app: Arc<App>,
    settings: Settings,
    max_connections: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "jobq: the HTTP server cannot listen");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    tracing::debug!("jobq: HTTP connection refused: too many connections");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                connections.spawn(serve_connection(
                    stream,
                    Arc::clone(&app),
                    settings,
                    stopped.clone(),
                    permit,
                ));
            }
            // The connection went away before it was accepted: nothing to do.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "jobq: the HTTP server cannot accept a connection now; trying again");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    // Connections finish the request they serve (each was told to stop), within the
    // I/O timeout; whatever is left then is closed.
    let _ = tokio::time::timeout(settings.io_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// One connection: HTTP/1 requests, one after another, until the client closes, a
/// deadline passes, a limit is broken or the server stops.
async fn serve_connection(
    stream: TcpStream,
    app: Arc<App>,
    settings: Settings,
    mut stopped: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let unread = Arc::new(AtomicBool::new(false));
    let io = TokioIo::new(WriteDeadline::new(
        stream,
        settings.io_timeout,
        Arc::clone(&unread),
    ));
    let service = service_fn(move |request: Request<Incoming>| {
        let app = Arc::clone(&app);
        let unread = Arc::clone(&unread);
        async move {
            // Until its body is read whole, a request may leave some of it on the wire.
            unread.store(!request.body().is_end_stream(), Ordering::Relaxed);
            let reply = answer(&app, settings, request, &unread).await;
            Ok::<_, Infallible>(into_response(reply))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.io_timeout)
        .max_header_size(MAX_HEAD)
        .max_buf_size(READ_BUFFER)
        // A client may shut its side down once it has sent its request: it still gets the
        // answer.
        .half_close(true)
        .keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = ended {
        tracing::debug!(error = %e, "jobq: HTTP connection ended");
    }
}

/// The answer to one request. Everything that can be decided from the request head is
/// decided before its body is read, and nobody's body is read before they are known.
async fn answer(
    app: &Arc<App>,
    settings: Settings,
    request: Request<Incoming>,
    unread: &AtomicBool,
) -> Reply {
    match respond(app, settings, request, unread).await {
        Ok(reply) | Err(reply) => reply,
    }
}

async fn respond(
    app: &Arc<App>,
    settings: Settings,
    request: Request<Incoming>,
    unread: &AtomicBool,
) -> Result<Reply, Reply> {
    let (head, body) = request.into_parts();
    let mut lengths = head.headers.get_all(header::CONTENT_LENGTH).iter();
    if let Some(length) = lengths.next() {
        if lengths.next().is_some() {
            return Err(Reply::error(
                400,
                "bad_request",
                "more than one Content-Length header",
            ));
        }
        // hyper refused any length that is not a number.
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(u64::MAX);
        if length > MAX_BODY as u64 {
            return Err(too_large());
        }
    }
    let path = head.uri.path().to_string();
    let query = head.uri.query().unwrap_or("").to_string();
    // The API's routes answer HEAD as GET (hyper leaves the body out).
    let method = match head.method {
        Method::HEAD => "GET".to_string(),
        ref m => m.as_str().to_ascii_uppercase(),
    };
    // Each segment is percent-decoded here, once: `my%20queue` names the queue `my queue`,
    // and `a%2Fb` one segment `a/b`.
    let segments = segments_of(&path);
    let route = App::route(&method, &as_strs(&segments), &path)?;
    app.refuse_foreign(
        &method,
        header_text(&head.headers, "host").as_deref(),
        header_text(&head.headers, "origin").as_deref(),
    )?;
    if route == Route::Dashboard {
        return Ok(Reply::text(200, "text/html; charset=utf-8", api::DASHBOARD));
    }

    let credentials = Credentials::read(
        header_text(&head.headers, "x-admin-key").as_deref(),
        header_text(&head.headers, "authorization").as_deref(),
    );
    let caller = if app.caller_needs_database(&credentials) {
        let app = Arc::clone(app);
        blocking(move || app.caller(&credentials)).await?
    } else {
        app.caller(&credentials)
    };
    let caller = caller.map_err(Reply::from)?.ok_or_else(unauthorized)?;

    let body = match head.method {
        Method::POST | Method::PUT | Method::PATCH => {
            require_json(header_text(&head.headers, "content-type").as_deref())?;
            let json = read_body(body, settings.io_timeout).await?;
            unread.store(false, Ordering::Relaxed);
            Some(json)
        }
        _ => None,
    };
    let app = Arc::clone(app);
    blocking(move || {
        let query = super::query::Query::parse(&query);
        super::routes::handle(
            &app,
            &caller,
            &method,
            &as_strs(&segments),
            &query,
            body.as_ref(),
        )
    })
    .await
}

/// The path's segments after the leading `/`, without a trailing empty one, each
/// percent-decoded.
fn segments_of(path: &str) -> Vec<String> {
    path.trim_end_matches('/')
        .split('/')
        .skip(1)
        .map(|s| super::query::decode(s, false))
        .collect()
}

fn as_strs(segments: &[String]) -> Vec<&str> {
    segments.iter().map(String::as_str).collect()
}

/// Every write carries JSON, said so by its `Content-Type`: a form or `text/plain` body,
/// which a web page can send anywhere without asking, is refused (415).
fn require_json(content_type: Option<&str>) -> Result<(), Reply> {
    let essence = content_type
        .and_then(|t| t.split(';').next())
        .map(|t| t.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        other => Err(Reply::error(
            415,
            "unsupported_media_type",
            format!(
                "a request that changes something must send JSON with `Content-Type: application/json`, not {}",
                other.map_or("no Content-Type".to_string(), |t| format!("{t:?}"))
            ),
        )),
    }
}

/// A header's value as text (bytes that are not UTF-8 replaced, so that a malformed header
/// still counts as present).
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes within `deadline`: 413 beyond (a chunked
/// body is refused as soon as it passes the limit), 408 when it does not arrive in time,
/// 400 when it is not JSON.
async fn read_body(body: Incoming, deadline: Duration) -> Result<serde_json::Value, Reply> {
    let collected = tokio::time::timeout(deadline, Limited::new(body, MAX_BODY).collect()).await;
    let bytes = match collected {
        Err(_) => {
            return Err(Reply::error(
                408,
                "request_timeout",
                format!(
                    "the body did not arrive within {}",
                    crate::duration::format_duration(deadline)
                ),
            ));
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(Reply::error(
                400,
                "bad_request",
                format!("cannot read the body: {e}"),
            ));
        }
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    json_body(&bytes)
}

/// Runs a call into the (synchronous) library on a blocking thread, reporting to the same
/// `tracing` subscriber as the server.
async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Reply> {
    let dispatch = tracing::dispatcher::get_default(|d| d.clone());
    tokio::task::spawn_blocking(move || tracing::dispatcher::with_default(&dispatch, call))
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "jobq: an HTTP request's call failed");
            Reply::error(500, "internal", "the request failed inside the server")
        })
}

fn into_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.append(name, value);
        }
    }
    response
}

/// How long a closing connection goes on reading (and dropping) what the client still
/// sends, and how much of it, at most (see [`WriteDeadline::poll_shutdown`]).
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 4 << 20;

/// A TCP stream whose writes give up once they have waited `timeout` without progress (a
/// client that stops reading its answers cannot hold its connection open), and whose close
/// lingers when a request's body was left unread: see [`WriteDeadline::poll_shutdown`].
struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
    /// Whether the last request's body may still be on its way (the answer refused it).
    unread: Arc<AtomicBool>,
    /// Set once the write half is shut: until when the close goes on reading.
    lingering: Option<Pin<Box<Sleep>>>,
    drained: usize,
}

impl WriteDeadline {
    fn new(stream: TcpStream, timeout: Duration, unread: Arc<AtomicBool>) -> WriteDeadline {
        WriteDeadline {
            stream,
            timeout,
            stalled: None,
            unread,
            lingering: None,
            drained: 0,
        }
    }

    /// Passes a write's result on, starting the deadline when it waits and failing it with
    /// `TimedOut` once the deadline passes.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped taking the answer",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.watch(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.watch(cx, poll)
    }

    /// Shuts the write half, so that the client reads the whole answer and its end. When the
    /// last request's body was left unread (refused from its length, say), the close then
    /// lingers, as careful servers do: for up to [`LINGER`] and [`LINGER_BYTES`], what the
    /// client still sends is read and dropped. Closed at once, the connection would be
    /// reset under a client still sending, and the reset can destroy the answer unread.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.lingering.is_none() {
            let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
            match self.watch(cx, poll) {
                Poll::Ready(Ok(())) if self.unread.load(Ordering::Relaxed) => {
                    self.lingering = Some(Box::pin(tokio::time::sleep(LINGER)));
                }
                other => return other,
            }
        }
        let mut buf = [0u8; 8192];
        loop {
            let mut read = ReadBuf::new(&mut buf);
            match Pin::new(&mut self.stream).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                    self.drained += read.filled().len();
                    if self.drained > LINGER_BYTES {
                        return Poll::Ready(Ok(()));
                    }
                }
                // The client's end, or its reset: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    let done = self
                        .lingering
                        .as_mut()
                        .is_none_or(|linger| linger.as_mut().poll(cx).is_ready());
                    return if done {
                        Poll::Ready(Ok(()))
                    } else {
                        Poll::Pending
                    };
                }
            }
        }
    }
}

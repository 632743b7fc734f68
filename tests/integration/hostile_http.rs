//! Hostile clients against the HTTP server, over real sockets: bodies promised past any
//! limit, clients that trickle, a process out of file descriptors, request heads of many
//! megabytes, and the protocol's edge cases. `jobq serve` runs as a child process wherever
//! a failure could take the process down, so that the test sees it die instead of dying
//! with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jobq::http::{Server, ServerConfig};
use jobq::{NewJob, Queue};

use crate::http::KEY;

/// `jobq serve` in a child process on a fresh database.
struct Serve {
    _dir: tempfile::TempDir,
    child: Child,
    addr: SocketAddr,
    queue: Queue,
}

impl Serve {
    fn start() -> Serve {
        Serve::start_with(None)
    }

    /// With at most `nofile` open file descriptors (`prlimit --nofile`).
    fn start_with(nofile: Option<u64>) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.db");
        let queue = Queue::open(&db).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_jobq"));
        command
            .arg("--db")
            .arg(&db)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .env("JOBQ_ADMIN_KEY", KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .rsplit("http://")
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("no address in {line:?}: {e}"));
        // Keep reading what it prints, so that it never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = stdout.read_to_end(&mut sink);
        });
        Serve {
            _dir: dir,
            child,
            addr,
            queue,
        }
    }

    #[track_caller]
    fn assert_alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "jobq serve died: {:?}",
            self.child.try_wait()
        );
    }

    /// The most memory the process has held at once, in bytes (`VmHWM`).
    fn peak_rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `request` on a new connection and returns the status line of the answer ("" when
/// the server closed without one) and how long it took. Write errors are ignored: a server
/// may close before the client has sent everything.
fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(wait)).unwrap();
    let _ = stream.write_all(request);
    (status_line(&mut stream), started.elapsed())
}

fn status_line(stream: &mut TcpStream) -> String {
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&reply)
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A whole answer on a connection the server closes after it (`Connection: close`).
fn whole_answer(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

fn get_stats(addr: SocketAddr) -> String {
    exchange(
        addr,
        format!(
            "GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(10),
    )
    .0
}

#[test]
fn a_body_length_past_any_limit_is_refused_at_once_and_the_server_lives() {
    let mut serve = Serve::start();
    let job = serve.queue.enqueue(NewJob::new("k")).unwrap().job_id;
    let routes = [
        "/".to_string(),
        "/api/jobs".into(),
        "/api/stats".into(),
        "/metrics".into(),
        format!("/api/jobs/{job}"),
        "/api/groups".into(),
        "/no-such-route".into(),
    ];
    for length in ["100000000000000", "18446744073709551615"] {
        for route in &routes {
            for method in ["GET", "POST", "DELETE"] {
                for auth in ["", "X-Admin-Key: admin-key-for-tests\r\n"] {
                    let request = format!(
                        "{method} {route} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {length}\r\n\r\n{{"
                    );
                    let (status, took) =
                        exchange(serve.addr, request.as_bytes(), Duration::from_secs(5));
                    // A length the parser cannot even represent (over 2^64 - 3) is refused
                    // by hyper itself, as a header too large (431).
                    let refused = if length.len() > 15 {
                        ["HTTP/1.1 400", "HTTP/1.1 413", "HTTP/1.1 431"].as_slice()
                    } else {
                        ["HTTP/1.1 413"].as_slice()
                    };
                    assert!(
                        refused.iter().any(|r| status.starts_with(r)),
                        "{method} {route} with Content-Length {length}: {status:?} after {took:?}"
                    );
                    serve.assert_alive();
                }
            }
        }
    }
    assert_eq!(get_stats(serve.addr), "HTTP/1.1 200 OK");
    assert_eq!(serve.queue.get(&job).unwrap().kind, "k", "nothing changed");
}

#[test]
fn clients_trickling_bodies_do_not_delay_anyone_and_meet_a_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let queue = Queue::open(dir.path().join("q.db")).unwrap();
    let server = Server::start(
        queue.clone(),
        ServerConfig::new("127.0.0.1:0")
            .admin_key(KEY)
            .io_timeout(Duration::from_secs(3)),
    )
    .unwrap();
    let addr = server.addr();
    // Eight clients promise a body and send it a byte a second.
    let mut tricklers: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(
                format!(
                    "POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
                )
                .as_bytes(),
            )
            .unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut answered = Vec::new();
    let mut ended = vec![None; tricklers.len()];
    while started.elapsed() < Duration::from_secs(10) && ended.iter().any(Option::is_none) {
        for (i, s) in tricklers.iter_mut().enumerate() {
            if ended[i].is_none() && s.write_all(b" ").is_err() {
                ended[i] = Some(started.elapsed());
            }
        }
        // Meanwhile an authenticated request answers at once.
        let (status, took) = exchange(
            addr,
            format!("GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert_eq!(status, "HTTP/1.1 200 OK");
        answered.push(took);
        std::thread::sleep(Duration::from_millis(1000));
        for (i, s) in tricklers.iter_mut().enumerate() {
            s.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 512];
            if ended[i].is_none() && s.read(&mut buf).is_ok() {
                // The server answered (408) or closed: the request met its deadline.
                ended[i] = Some(started.elapsed());
            }
            s.set_nonblocking(false).unwrap();
        }
    }
    let slowest = answered.iter().max().unwrap();
    eprintln!("beside 8 tricklers: slowest answer {slowest:?}; tricklers cut off at {ended:?}");
    assert!(
        *slowest < Duration::from_secs(1),
        "a request waited {slowest:?} behind the trickling clients: {answered:?}"
    );
    // Each request had 3 s for its headers and 3 s for its body, trickle or not.
    for (i, end) in ended.iter().enumerate() {
        let end = end.unwrap_or_else(|| panic!("client {i} still trickling after 10 s"));
        assert!(
            end <= Duration::from_secs(8),
            "client {i} ended after {end:?}"
        );
    }
    assert_eq!(queue.stats(&jobq::StatsFilter::new()).unwrap().total, 0);
    server.shutdown();
}

#[test]
fn running_out_of_file_descriptors_never_stops_the_listener() {
    let mut serve = Serve::start_with(Some(64));
    assert_eq!(get_stats(serve.addr), "HTTP/1.1 200 OK");
    // A hundred idle connections: more than the process may hold.
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect_timeout(&serve.addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(idle.len() > 64, "only {} connected", idle.len());
    std::thread::sleep(Duration::from_secs(2));
    serve.assert_alive();
    drop(idle);
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < Duration::from_secs(15) {
        last = get_stats(serve.addr);
        if last == "HTTP/1.1 200 OK" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "100 idle connections, 64 open files: answered again {:?} after they closed",
        started.elapsed()
    );
    assert_eq!(
        last, "HTTP/1.1 200 OK",
        "no answer 15 s after the clients left"
    );
    serve.assert_alive();
}

#[test]
fn request_heads_are_capped_with_431_and_a_huge_one_costs_no_memory() {
    let mut serve = Serve::start();
    let long = "a".repeat(17 * 1024);
    let (status, _) = exchange(
        serve.addr,
        format!(
            "GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nX-Long: {long}\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(status.starts_with("HTTP/1.1 431"), "{status:?}");
    let (status, _) = exchange(
        serve.addr,
        format!("GET /api/stats?{long} HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\n\r\n")
            .as_bytes(),
        Duration::from_secs(5),
    );
    assert!(
        status.starts_with("HTTP/1.1 431") || status.starts_with("HTTP/1.1 414"),
        "{status:?}"
    );

    // A 64 MiB header line, sent as fast as the server takes it.
    let mut stream = TcpStream::connect(serve.addr).unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = stream.write_all(b"GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Huge: ");
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..64 {
        if stream.write_all(&chunk).is_err() {
            break;
        }
    }
    let status = status_line(&mut stream);
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "{status:?}"
    );
    drop(stream);
    serve.assert_alive();
    assert_eq!(get_stats(serve.addr), "HTTP/1.1 200 OK");
    let peak = serve.peak_rss();
    eprintln!(
        "after a 64 MiB header line: peak RSS {} MB",
        peak / 1_000_000
    );
    assert!(
        peak < 64_000_000,
        "jobq serve held {} MB at its peak",
        peak / 1_000_000
    );
}

#[test]
fn duplicate_lengths_head_bearer_case_h2_prefaces_and_bare_newlines() {
    let mut serve = Serve::start();
    let addr = serve.addr;
    let job = serve.queue.enqueue(NewJob::new("k")).unwrap().job_id;

    // Two Content-Length headers: refused, even when they agree.
    for (a, b) in [("2", "2"), ("2", "3")] {
        let (status, _) = exchange(
            addr,
            format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {a}\r\nContent-Length: {b}\r\n\r\n{{}}")
                .as_bytes(),
            Duration::from_secs(5),
        );
        assert!(status.starts_with("HTTP/1.1 400"), "{a}, {b}: {status:?}");
    }
    assert_eq!(
        serve.queue.stats(&jobq::StatsFilter::new()).unwrap().total,
        1
    );

    // HEAD answers every GET route like GET, without a body.
    for route in [
        "/".to_string(),
        "/api/jobs".into(),
        format!("/api/jobs/{job}"),
        "/api/jobs/running".into(),
        "/api/jobs/dead".into(),
        "/api/stats".into(),
        "/api/stats/timing".into(),
        "/api/stats/stages".into(),
        "/api/stats/costs".into(),
        "/api/groups".into(),
        "/metrics".into(),
    ] {
        let answer = whole_answer(
            addr,
            &format!(
                "HEAD {route} HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "HEAD {route}: {answer}");
        let (_, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(body.is_empty(), "HEAD {route} sent a body: {body:?}");
    }

    // The Bearer scheme in any case.
    let token = serve.queue.create_token("ada").unwrap();
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let answer = whole_answer(
            addr,
            &format!(
                "GET /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: {scheme} {token}\r\nConnection: close\r\n\r\n"
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{scheme}: {answer}");
    }

    // Neither an HTTP/2 preface nor a request with bare LF line ends hangs.
    for request in [
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_string(),
        format!("GET /api/stats HTTP/1.1\nHost: x\nX-Admin-Key: {KEY}\n\n"),
    ] {
        let (status, took) = exchange(addr, request.as_bytes(), Duration::from_secs(10));
        assert!(
            took < Duration::from_secs(3),
            "{request:?}: {status:?} after {took:?}"
        );
    }
    serve.assert_alive();
    assert_eq!(get_stats(addr), "HTTP/1.1 200 OK");
}

//! Fuzzing, proptest-driven so that it runs in CI for a bounded number of cases: the HTTP
//! server with arbitrary (often malformed) requests over raw TCP, job inputs of any JSON
//! shape through the library and through HTTP, and the `worker --exec` report-line parser.
//!
//! More cases: `JOBQ_FUZZ_CASES=20000 cargo test --release --test integration fuzz`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::OnceLock;
use std::time::Duration;

use jobq::exec::{ReportLine, parse_report_line};
use jobq::http::{Server, ServerConfig};
use jobq::{NewJob, Queue};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::{Db, integrity};

fn cases(default: u32) -> u32 {
    std::env::var("JOBQ_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const KEY: &str = "fuzzing-admin-key";

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Integers past i64 are refused (see the property below), not stored.
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(2000), ..ProptestConfig::default() })]

    #[test]
    fn the_report_line_parser_never_panics_and_keeps_its_bounds(line in "(@progress|@stage|@cost|@snooze|@|)[ \\t]?.{0,40}") {
        match parse_report_line(&line) {
            Some(Ok(ReportLine::Progress(p, stage))) => {
                prop_assert!(p.is_finite() && (0.0..=1.0).contains(&p));
                prop_assert!(stage.is_none_or(|s| !s.trim().is_empty()));
            }
            Some(Ok(ReportLine::Cost(c))) => prop_assert!(c >= 0),
            Some(Ok(ReportLine::Stage(s))) => prop_assert!(!s.trim().is_empty()),
            Some(Ok(ReportLine::Snooze(d))) => prop_assert!(d <= jobq::MAX_DURATION),
            Some(Err(why)) => prop_assert!(!why.is_empty()),
            None => {
                // Ordinary output: its first word is not a directive.
                let word = line.trim_end_matches(['\r', '\n']).split(char::is_whitespace).next();
                prop_assert!(!matches!(word, Some("@progress" | "@stage" | "@cost" | "@snooze")), "{line:?}");
            }
        }
    }

    #[test]
    fn well_formed_report_lines_read_back(p in 0.0f64..=1.0, stage in "[a-z_]{1,20}", cents in 0i64..1_000_000) {
        prop_assert_eq!(parse_report_line(&format!("@progress {p} {stage}")), Some(Ok(ReportLine::Progress(p, Some(stage.clone())))));
        prop_assert_eq!(parse_report_line(&format!("@stage {stage}")), Some(Ok(ReportLine::Stage(stage))));
        prop_assert_eq!(parse_report_line(&format!("@cost {cents}")), Some(Ok(ReportLine::Cost(cents))));
        prop_assert_eq!(parse_report_line(&format!("@snooze {}s", cents)), Some(Ok(ReportLine::Snooze(std::time::Duration::from_secs(cents as u64)))));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(300), ..ProptestConfig::default() })]

    #[test]
    fn any_json_input_round_trips_through_the_queue(input in json_value()) {
        static QUEUE: OnceLock<(Db, Queue)> = OnceLock::new();
        let (_, queue) = QUEUE.get_or_init(fresh);
        let id = queue.enqueue(NewJob::new("fuzz").input(&input)).unwrap().job_id;
        prop_assert_eq!(queue.get(&id).unwrap().input, input);
    }

    #[test]
    fn an_integer_past_64_bits_anywhere_in_an_input_is_refused_not_rounded(
        input in json_value(),
        big in (i64::MAX as u64 + 1)..=u64::MAX,
        negative in any::<bool>(),
    ) {
        static QUEUE: OnceLock<(Db, Queue)> = OnceLock::new();
        let (_, queue) = QUEUE.get_or_init(fresh);
        let big = if negative { format!("-{big}0") } else { big.to_string() };
        let text = format!(r#"{{"data": {input}, "big": [{big}]}}"#);
        let err = queue.enqueue(NewJob::new("fuzz").input_json(&text)).unwrap_err();
        prop_assert!(matches!(err, jobq::Error::InvalidInput { field: "input", .. }), "{err}");
        prop_assert_eq!(queue.stats(&jobq::StatsFilter::new()).unwrap().total, 0);
    }
}

/// A queue on a fresh database, for the cases of one property (one database each would
/// be slow on PostgreSQL).
fn fresh() -> (Db, Queue) {
    let db = Db::fresh();
    let queue = Queue::open(db.path()).unwrap();
    (db, queue)
}

struct Target {
    _db: Db,
    queue: Queue,
    server: Server,
}

/// One server for every case (a server's connection threads outlive it by a few seconds).
fn target() -> &'static Target {
    static TARGET: std::sync::OnceLock<Target> = std::sync::OnceLock::new();
    TARGET.get_or_init(|| {
        let (db, queue) = fresh();
        let server = Server::start(
            queue.clone(),
            ServerConfig::new("127.0.0.1:0").admin_key(KEY),
        )
        .unwrap();
        Target {
            _db: db,
            queue,
            server,
        }
    })
}

/// Sends raw bytes, returns the status code of the answer (`None` if the server closed the
/// connection without one).
fn raw_request(t: &Target, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(t.server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    let status_line = text.lines().next()?;
    let code = status_line.split(' ').nth(1)?;
    code.parse().ok()
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("api".to_string()),
        Just("jobs".to_string()),
        Just("groups".to_string()),
        Just("stats".to_string()),
        Just("running".to_string()),
        Just("dead".to_string()),
        Just("timing".to_string()),
        Just("metrics".to_string()),
        Just("01900000-0000-7000-8000-000000000000".to_string()),
        "[a-zA-Z0-9%._~-]{0,12}".prop_map(|s| s),
    ];
    (
        proptest::collection::vec(segment, 0..5),
        "(\\?[a-z_]{0,8}=[a-zA-Z0-9%+&=]{0,16})?",
    )
        .prop_map(|(segments, query)| format!("/{}{query}", segments.join("/")))
}

fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("DELETE"),
        Just("PUT"),
        Just("PATCH"),
        Just("HEAD"),
        Just("OPTIONS"),
        Just("BREW")
    ];
    let auth = prop_oneof![
        Just(format!("X-Admin-Key: {KEY}\r\n")),
        Just("X-Admin-Key: wrong\r\n".to_string()),
        Just("Authorization: Bearer jobq_x_y\r\n".to_string()),
        Just(String::new()),
    ];
    let body = prop_oneof![
        json_value().prop_map(|v| v.to_string().into_bytes()),
        (json_value(), "[a-z_]{1,10}")
            .prop_map(|(v, k)| json!({"kind": k, "input": v}).to_string().into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..200),
    ];
    // Mostly JSON, as the server asks of every write; sometimes not.
    let content_type = prop_oneof![
        4 => Just("Content-Type: application/json\r\n".to_string()),
        1 => Just("Content-Type: text/plain\r\n".to_string()),
        1 => Just(String::new()),
    ];
    let length = prop_oneof![Just(None), (0usize..300).prop_map(Some)];
    let garbage = proptest::collection::vec(any::<u8>(), 0..100);
    prop_oneof![
        9 => (method, path(), auth, content_type, body, length).prop_map(|(m, p, a, t, b, len)| {
            let len = len.unwrap_or(b.len());
            let mut bytes = format!("{m} {p} HTTP/1.1\r\nHost: fuzz\r\n{a}{t}Content-Length: {len}\r\n\r\n").into_bytes();
            bytes.extend(b);
            bytes
        }),
        1 => garbage,
    ]
}

const ANSWERS: [u16; 16] = [
    200, 201, 204, 400, 401, 403, 404, 405, 408, 409, 411, 413, 415, 422, 431, 505,
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(400), ..ProptestConfig::default() })]

    #[test]
    fn the_http_server_answers_any_request_and_keeps_serving(requests in proptest::collection::vec(request(), 1..8)) {
        let t = target();
        for bytes in &requests {
            if let Some(code) = raw_request(t, bytes) {
                prop_assert!(ANSWERS.contains(&code), "status {code} for {:?}", String::from_utf8_lossy(bytes));
            }
        }
        // Still serving, and the file is sound.
        let health = raw_request(t, format!("GET /api/stats HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\n\r\n").as_bytes());
        prop_assert_eq!(health, Some(200));
        prop_assert_eq!(integrity(t.queue.path()), "ok");
    }

    #[test]
    fn any_json_input_posted_over_http_round_trips(input in json_value()) {
        let t = target();
        let body = json!({"kind": "fuzz", "input": input}).to_string();
        let request = format!("POST /api/jobs HTTP/1.1\r\nHost: x\r\nX-Admin-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        let mut stream = TcpStream::connect(t.server.addr()).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        prop_assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
        let doc: Value = serde_json::from_str(reply.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        let id = doc["job_id"].as_str().unwrap().parse().unwrap();
        prop_assert_eq!(t.queue.get(&id).unwrap().input, input);
    }
}

//! Slow clients against the real server over raw TCP: a partial request line, partial
//! headers, a body shorter than its `Content-Length` and an idle kept-alive connection are
//! each closed once their limit passes (not before), a normal request still works, and the
//! connection cap answers a connection over it with 503 and closes it.
//!
//! Timing: the limits here are 2 s; a connection must stay open for most of its limit and
//! close within a generous margin after it (no assertion on how fast anything is).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lodge::config::{Config, FileConfig, Overrides};
use lodge::Server;
use lodge_core::ManualClock;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::start_time;

/// The limit every timeout test uses.
const LIMIT: Duration = Duration::from_secs(2);
/// How long after its limit a connection may take to be closed (a loaded CI machine).
const MARGIN: Duration = Duration::from_secs(10);
/// How much before its limit a connection may be closed: the server starts the clock a
/// little before the test does (when the bytes arrive, or when the response is sent).
const EARLY: Duration = Duration::from_millis(300);

/// A node on a fresh SQLite database with `o` (listen, database and secrets filled in); the
/// directory lives as long as the node.
pub async fn start_node(o: Overrides) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = Config::resolve(
        Overrides {
            listen: Some("127.0.0.1:0".into()),
            database_url: Some(format!("sqlite://{}/lodge.db", dir.path().display())),
            public_base_url: Some("http://127.0.0.1:0".into()),
            rate_limit_per_minute: Some(0),
            rate_limit_burst: Some(0),
            jwt_secret: Some("test-jwt-secret-of-at-least-32-characters".into()),
            secret_key: Some("11".repeat(32)),
            ..o
        },
        FileConfig::default(),
    );
    cfg.validate().expect("valid configuration");
    let lodge = lodge::open(&cfg, Arc::new(ManualClock::new(start_time())))
        .await
        .expect("open lodge");
    let server = Server::start(&cfg, lodge).await.expect("start server");
    (server, dir)
}

fn limits(header: u64, body: u64, idle: u64, max: u32) -> Overrides {
    Overrides {
        header_timeout_secs: Some(header),
        body_timeout_secs: Some(body),
        idle_timeout_secs: Some(idle),
        max_connections: Some(max),
        ..Default::default()
    }
}

/// Reads until the server closes the connection (end of stream or a reset), at most
/// `within`. Returns what arrived and how long the connection stayed open, or `None` if it
/// was still open after `within`.
async fn until_closed(s: &mut TcpStream, within: Duration) -> Option<(String, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.checked_sub(start.elapsed())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some((String::from_utf8_lossy(&got).into_owned(), start.elapsed()))
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one whole response (headers and a `Content-Length` body) from a kept-alive
/// connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(MARGIN, s.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

async fn connect(server: &Server) -> TcpStream {
    TcpStream::connect(server.addr).await.expect("connect")
}

/// Sends `bytes` and checks the connection is closed after about `LIMIT`; returns what the
/// server answered before closing.
async fn closed_after_limit(server: &Server, bytes: &[u8], what: &str) -> String {
    let mut s = connect(server).await;
    s.write_all(bytes).await.expect("send");
    let (answer, open_for) = until_closed(&mut s, LIMIT + MARGIN)
        .await
        .unwrap_or_else(|| panic!("{what}: still open {:?} after its limit", MARGIN));
    assert!(
        open_for + EARLY >= LIMIT,
        "{what}: closed after {open_for:?}, before its limit of {LIMIT:?}: {answer}"
    );
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_at_their_limits() {
    let (server, _dir) = start_node(limits(2, 2, 2, 100)).await;

    // A normal request on a kept-alive connection works, twice.
    let mut s = connect(&server).await;
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lodge.test\r\n\r\n")
            .await
            .unwrap();
        let r = read_response(&mut s).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{r}");
        assert!(r.contains("\"ok\""), "{r}");
    }
    // Then idle: closed after the idle limit, not before.
    let idle_from = Instant::now();
    let (rest, _) = until_closed(&mut s, LIMIT + MARGIN)
        .await
        .expect("an idle kept-alive connection is closed");
    assert!(rest.is_empty(), "{rest}");
    assert!(
        idle_from.elapsed() + EARLY >= LIMIT,
        "idle connection closed after {:?}",
        idle_from.elapsed()
    );

    let cases: [(&[u8], &str); 3] = [
        (b"GET /heal", "a partial request line"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: lodge.test\r\nX-Slow: ",
            "partial headers",
        ),
        (b"", "a connection that sends nothing"),
    ];
    let runs = cases
        .iter()
        .map(|(bytes, what)| closed_after_limit(&server, bytes, what));
    for answer in futures::future::join_all(runs).await {
        // No request was complete: nothing to answer (hyper may say 408 for a cut head).
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }

    // A body shorter than its Content-Length: 408 once the body limit passes, then closed.
    let answer = closed_after_limit(
        &server,
        b"POST /v1/auth/login HTTP/1.1\r\nHost: lodge.test\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{\"email\": \"a",
        "a short body",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // Answered by the application in /v1's shape, inside the access log's layer (which
    // logged 400 when the 408 was put in place outside it).
    assert!(
        answer.contains(r#"{"detail":"The request body did not arrive in time."}"#),
        "{answer}"
    );

    // A request whose body arrives in time is answered normally (a 4xx about the login, not
    // a timeout), on a connection that stays usable.
    let mut s = connect(&server).await;
    let body = br#"{"email": "nobody@example.com", "password": "wrong-password"}"#;
    s.write_all(
        format!(
            "POST /v1/auth/login HTTP/1.1\r\nHost: lodge.test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.write_all(body).await.unwrap();
    let r = read_response(&mut s).await;
    assert!(r.starts_with("HTTP/1.1 401"), "{r}");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lodge.test\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));

    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_over_the_cap_is_answered_503_and_closed() {
    let (server, _dir) = start_node(limits(30, 30, 30, 2)).await;
    let mut first = connect(&server).await;
    let mut second = connect(&server).await;
    // Both are served (and so hold their slots).
    for s in [&mut first, &mut second] {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lodge.test\r\n\r\n")
            .await
            .unwrap();
        assert!(read_response(s).await.starts_with("HTTP/1.1 200"));
    }
    // A third is told at once and closed (long before any timeout).
    let mut third = connect(&server).await;
    let (answer, _) = until_closed(&mut third, MARGIN)
        .await
        .expect("the connection over the cap is closed");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("Retry-After: 1"), "{answer}");
    // In both dialects' error shapes, its length told right.
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.contains("content-type: application/json"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{answer}"
    );
    let error: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(error["code"], "503", "{error}");
    for field in ["detail", "message"] {
        assert!(
            error[field]
                .as_str()
                .is_some_and(|m| m.contains("Too many connections")),
            "{error}"
        );
    }

    // Once one closes, a new connection is served.
    drop(first);
    let deadline = Instant::now() + MARGIN;
    loop {
        let mut s = connect(&server).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: lodge.test\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (answer, _) = until_closed(&mut s, MARGIN).await.expect("answered");
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Stopping closes the idle connection that is left and ends.
    tokio::time::timeout(MARGIN, server.stop())
        .await
        .expect("stops without waiting for idle connections")
        .unwrap();
    let (rest, _) = until_closed(&mut second, MARGIN)
        .await
        .expect("closed by the shutdown");
    assert!(rest.is_empty(), "{rest}");
}

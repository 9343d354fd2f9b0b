//! `--metrics-listen`: `GET /metrics` after a known sequence of events (exact counter values, and
//! text that parses), `/livez` on both ports, the metrics port refusing everything else, and a bad
//! `--metrics-listen` as a clear start-up error.

mod common;

use std::collections::BTreeMap;
use std::process::Stdio;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

/// A server started with `--metrics-listen 127.0.0.1:0` (and `flags`): its URL and metrics
/// address, read from the lines it prints.
struct MetricsServer {
    _server: LoggedServer,
    url: String,
    metrics: String,
}

impl MetricsServer {
    async fn start(flags: &[&str]) -> MetricsServer {
        let mut server = LoggedServer::start_with(LoggedOptions {
            flags: ["--metrics-listen", "127.0.0.1:0"]
                .iter()
                .chain(flags)
                .map(|s| s.to_string())
                .collect(),
            ..LoggedOptions::default()
        })
        .await;
        let line = server.wait_for_log("metrics: http://").await;
        let metrics = line
            .strip_prefix("metrics: http://")
            .unwrap_or_else(|| panic!("the metrics address line: {line:?}"))
            .trim_end_matches("/metrics")
            .to_string();
        MetricsServer {
            url: server.url.clone(),
            _server: server,
            metrics,
        }
    }

    async fn connect(&self) -> Client {
        Client::connect(&self.url, ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn main_addr(&self) -> &str {
        self.url.trim_start_matches("ws://")
    }

    /// The samples of a scrape, after checking that every line parses.
    async fn scrape(&self) -> Samples {
        let (status, body) = http_get(&self.metrics, "GET", "/metrics").await;
        assert_eq!(status, 200, "{body}");
        parse_exposition(&body)
    }
}

/// One HTTP/1.1 request on a fresh connection: the status code and the body.
async fn http_get(addr: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut response))
        .await
        .expect("the answer in time")
        .expect("read the answer");
    let response = String::from_utf8(response).expect("UTF-8 answer");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"));
    (status, body.to_string())
}

/// Samples by `name{labels}` as written.
type Samples = BTreeMap<String, f64>;

/// Parses Prometheus/OpenMetrics text, failing on any line that is not a comment or
/// `name{labels} value`.
fn parse_exposition(text: &str) -> Samples {
    let mut samples = Samples::new();
    assert!(text.ends_with("# EOF\n"), "ends with # EOF: {text}");
    for line in text.lines() {
        if line.starts_with("# ") {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("`series value`: {line:?}"));
        let name_end = series.find('{').unwrap_or(series.len());
        let name = &series[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "metric name: {line:?}"
        );
        if name_end < series.len() {
            let labels = &series[name_end..];
            assert!(
                labels.starts_with('{') && labels.ends_with('}'),
                "labels: {line:?}"
            );
            for pair in labels[1..labels.len() - 1].split(',') {
                let (k, v) = pair
                    .split_once('=')
                    .unwrap_or_else(|| panic!("label: {line:?}"));
                assert!(!k.is_empty() && v.starts_with('"') && v.ends_with('"') && v.len() >= 2);
            }
        }
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("numeric value: {line:?}")),
        };
        samples.insert(series.to_string(), value);
    }
    samples
}

/// The value of `series`, failing if it is absent.
#[track_caller]
fn value(samples: &Samples, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} not in the scrape: {samples:#?}"))
}

const PREFIX: &str = "codex_exec_server_";

#[track_caller]
fn assert_series(samples: &Samples, series: &str, expected: f64) {
    let series = format!("{PREFIX}{series}");
    assert_eq!(value(samples, &series), expected, "{series}");
}

/// The Codex CLI 0.169.0 read-only intent.
fn read_only() -> Value {
    json!({
        "permissions": {"type": "managed", "network": "restricted", "file_system": {
            "type": "restricted", "entries": [
                {"path": {"type": "special", "value": {"kind": "root"}}, "access": "read"}]}},
        "windowsSandboxLevel": "disabled",
    })
}

#[tokio::test]
async fn scrape_after_a_known_sequence_has_exact_counts() {
    let server = MetricsServer::start(&["--retained-output-bytes", "1024"]).await;
    let mut a = server.connect().await;
    let session = a.initialize().await;

    // 1. Output on both streams.
    a.start_process(sh("both", "printf hello; printf err >&2"))
        .await;
    a.collect_process_events("both").await;

    // 2. 3000 bytes in three writes, each after the last was seen: at least three chunks
    // against a 1024-byte budget, so some are dropped from retention.
    let mut params = sh(
        "big",
        "for i in 1 2 3; do read line; head -c 1000 /dev/zero; done",
    );
    params["pipeStdin"] = json!(true);
    a.start_process(params).await;
    for (n, write_id) in ["w1", "w2", "w3"].into_iter().enumerate() {
        assert_eq!(a.write_stdin("big", b"go\n", write_id).await, "accepted");
        let want = (n + 1) * 1000;
        a.try_wait_until("the next 1000 bytes", DEADLINE, |c| {
            (c.tally("big").output_bytes >= want).then_some(())
        })
        .await
        .unwrap();
    }
    let big_events = a.collect_process_events("big").await;
    let notified_chunks = big_events
        .iter()
        .filter(|e| e["method"] == "process/output")
        .count() as f64;
    let retained = a
        .request_ok("process/read", json!({"processId": "big", "afterSeq": 0}))
        .await;
    let retained_chunks = retained["chunks"].as_array().unwrap();
    let retained_bytes: usize = retained_chunks
        .iter()
        .map(|c| b64_len(c["chunk"].as_str().unwrap()))
        .sum();

    // 3. A sandboxed process.
    let mut params = process_params("boxed", &["/bin/true"]);
    params["sandbox"] = read_only();
    match a.request("process/start", params).await {
        Ok(started) => assert_eq!(started["sandboxType"], "linuxSeccomp", "{started}"),
        Err(err) => {
            let reason = format!("a sandboxed process cannot start here: {err:?}");
            if std::env::var("CODEX_TEST_REQUIRE_SANDBOX").as_deref() == Ok("1") {
                panic!("CODEX_TEST_REQUIRE_SANDBOX=1, but {reason}");
            }
            println!("skipped: {reason}");
            return;
        }
    }
    a.collect_process_events("boxed").await;

    // 4. Two errors: an unknown process, an unknown method.
    a.request_err("process/read", json!({"processId": "nope"}))
        .await;
    a.request_err("no/such", json!({})).await;

    // 5. Drop the connection; once the server has detached the session, resume it elsewhere.
    let before = server.scrape().await;
    assert_series(&before, "connections_open", 1.0);
    assert_series(&before, "sessions_attached", 1.0);
    drop(a);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let now = server.scrape().await;
        if value(&now, &format!("{PREFIX}sessions_detached")) == 1.0 {
            assert_series(&now, "sessions_attached", 0.0);
            assert_series(&now, "connections_open", 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the session never showed as detached"
        );
        tokio::task::yield_now().await;
    }
    let mut b = server.connect().await;
    b.initialize_resume(&session).await.expect("resume");

    // /livez on the main port is no connection of the protocol.
    let (status, _) = http_get(server.main_addr(), "GET", "/livez").await;
    assert_eq!(status, 200);

    let s = server.scrape().await;
    assert_series(&s, "connections_total", 2.0);
    assert_series(&s, "connections_open", 1.0);
    assert_series(&s, "sessions_attached", 1.0);
    assert_series(&s, "sessions_detached", 0.0);
    assert_series(&s, "session_resumes_total", 1.0);
    assert_series(&s, "processes_started_total{sandbox=\"none\"}", 2.0);
    assert_series(&s, "processes_started_total{sandbox=\"linuxSeccomp\"}", 1.0);
    assert_series(&s, "processes_running{sandbox=\"none\"}", 0.0);
    assert_series(&s, "processes_running{sandbox=\"linuxSeccomp\"}", 0.0);
    assert_series(&s, "output_bytes_total{stream=\"stdout\"}", 3005.0);
    assert_series(&s, "output_bytes_total{stream=\"stderr\"}", 3.0);
    assert_series(&s, "output_bytes_total{stream=\"pty\"}", 0.0);
    let dropped_chunks = notified_chunks - retained_chunks.len() as f64;
    assert!(dropped_chunks >= 1.0, "3 chunks of 1000 against 1024 bytes");
    assert_series(&s, "retention_dropped_chunks_total", dropped_chunks);
    assert_series(
        &s,
        "retention_dropped_bytes_total",
        (3000 - retained_bytes) as f64,
    );
    let errors: Vec<(&String, &f64)> = s
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{PREFIX}request_errors_total")))
        .collect();
    assert_eq!(
        errors,
        [
            (
                &format!("{PREFIX}request_errors_total{{method=\"(unknown)\",code=\"-32601\"}}"),
                &1.0
            ),
            (
                &format!("{PREFIX}request_errors_total{{method=\"process/read\",code=\"-32600\"}}"),
                &1.0
            ),
        ]
    );
    assert_series(
        &s,
        "request_duration_seconds_count{method=\"process/start\"}",
        3.0,
    );
    assert_series(
        &s,
        "request_duration_seconds_count{method=\"initialize\"}",
        2.0,
    );
    // Buckets from 0.1 ms to 10 s; the three writes all took less than the largest.
    let write_buckets: Vec<(f64, f64)> = s
        .iter()
        .filter(|(k, _)| {
            k.starts_with(&format!("{PREFIX}request_duration_seconds_bucket{{"))
                && k.contains("method=\"process/write\"")
        })
        .map(|(k, v)| {
            let le = k.split("le=\"").nth(1).unwrap().split('"').next().unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, *v)
        })
        .collect();
    let finite: Vec<f64> = write_buckets
        .iter()
        .map(|b| b.0)
        .filter(|le| le.is_finite())
        .collect();
    let (low, high) = (
        finite.iter().cloned().fold(f64::MAX, f64::min),
        finite.iter().cloned().fold(0.0, f64::max),
    );
    assert!(
        (low - 1e-4).abs() < 1e-9 && (high - 10.0).abs() < 1e-6,
        "{write_buckets:?}"
    );
    assert!(
        write_buckets
            .iter()
            .filter(|b| b.0 >= high)
            .all(|b| b.1 == 3.0),
        "{write_buckets:?}"
    );
    assert!(
        !s.keys().any(|k| k.contains("auth_failures_total{")),
        "no auth failure was counted: {s:#?}"
    );
}

#[tokio::test]
async fn livez_answers_on_both_ports() {
    let server = MetricsServer::start(&[]).await;
    for addr in [server.main_addr(), server.metrics.as_str()] {
        let (status, _) = http_get(addr, "GET", "/livez").await;
        assert_eq!(status, 200, "{addr}");
        let (status, body) = http_get(addr, "HEAD", "/livez").await;
        assert_eq!((status, body.as_str()), (200, ""), "{addr}");
    }
}

#[tokio::test]
async fn metrics_port_serves_only_metrics_and_livez() {
    let server = MetricsServer::start(&[]).await;
    for path in ["/", "/readyz", "/metrics/x", "/livezz"] {
        let (status, _) = http_get(&server.metrics, "GET", path).await;
        assert_eq!(status, 404, "{path}");
    }
    let (status, _) = http_get(&server.metrics, "POST", "/metrics").await;
    assert_eq!(status, 405);
    let (status, body) = http_get(&server.metrics, "HEAD", "/metrics").await;
    assert_eq!((status, body.as_str()), (200, ""));
    // A request head that reaches 16 KiB unfinished is refused, not buffered further. (Exactly
    // 16 KiB: the server reads all of it, so its close cannot reset the answer away.)
    let mut stream = TcpStream::connect(&server.metrics).await.unwrap();
    let prefix = "GET /metrics HTTP/1.1\r\nX-Big: ";
    let huge = format!("{prefix}{}", "a".repeat(16 * 1024 - prefix.len()));
    stream.write_all(huge.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 431"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    // And the WebSocket is not served there.
    let refused = Client::connect(
        &format!("ws://{}", server.metrics),
        ConnectOptions::default(),
    )
    .await;
    assert!(refused.is_err(), "no WebSocket on the metrics port");
    // The metrics port is no way around the executor's port's Origin rule either.
    let mut stream = TcpStream::connect(&server.metrics).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nOrigin: http://evil\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
}

/// Runs `codex exec-server` with `flags` expecting a start-up failure: its stderr.
async fn start_up_error(flags: &[&str]) -> String {
    let out = tokio::time::timeout(
        DEADLINE,
        Command::new(server_binary())
            .args(["exec-server", "--listen", "ws://127.0.0.1:0"])
            .args(flags)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("the server gives up in time")
    .unwrap();
    assert!(!out.status.success(), "{flags:?} must fail");
    assert!(out.stdout.is_empty(), "no URL is printed: {out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_metrics_listen_is_a_clear_start_up_error() {
    for bad in [
        "localhost:9464",
        "https://127.0.0.1:9464",
        "127.0.0.1",
        "",
        "ws://127.0.0.1:1",
    ] {
        let err = start_up_error(&["--metrics-listen", bad]).await;
        assert!(
            err.contains("--metrics-listen") && err.contains("IP:PORT"),
            "{bad}: {err}"
        );
    }
    // An address that cannot be bound: one in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let err = start_up_error(&["--metrics-listen", &addr]).await;
    assert!(
        err.contains(&format!("failed to bind --metrics-listen {addr}")),
        "{err}"
    );
}

/// Refused upgrades are counted by reason (a bounded set), and a right token is not counted.
#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let dir = TestDir::new();
    let token_file = dir.join("token");
    std::fs::write(&token_file, "right-token").unwrap();
    let server = MetricsServer::start(&[
        "--ws-auth",
        "capability-token",
        "--ws-token-file",
        token_file.to_str().unwrap(),
    ])
    .await;
    let upgrade = |authorization: &str| {
        format!(
            "GET / HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             {authorization}\r\n"
        )
    };
    for (header, status) in [
        ("", 401),
        ("Authorization: Bearer wrong\r\n", 401),
        ("Authorization: Bearer wrong-again\r\n", 401),
        ("Authorization: Basic x\r\n", 401),
        ("Authorization: Bearer right-token\r\n", 101),
    ] {
        let mut stream = TcpStream::connect(server.main_addr()).await.unwrap();
        stream.write_all(upgrade(header).as_bytes()).await.unwrap();
        let mut head = vec![0u8; 12];
        tokio::time::timeout(DEADLINE, stream.read_exact(&mut head))
            .await
            .expect("an answer in time")
            .unwrap();
        let line = String::from_utf8_lossy(&head).to_string();
        assert!(line.ends_with(&status.to_string()), "{header:?}: {line}");
    }
    let s = server.scrape().await;
    assert_series(&s, "auth_failures_total{reason=\"missing_token\"}", 1.0);
    assert_series(&s, "auth_failures_total{reason=\"invalid_token\"}", 2.0);
    assert_series(&s, "auth_failures_total{reason=\"invalid_header\"}", 1.0);
    let total: f64 = s
        .iter()
        .filter(|(k, _)| k.contains("auth_failures_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, 4.0, "{s:#?}");
}

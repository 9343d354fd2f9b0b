//! `http/request` as a client sees it, over a real socket, against small HTTP servers the tests
//! start on 127.0.0.1: buffered and streamed bodies, headers, redirects, timeouts, `valueEnvVar`,
//! the `requestId` rule, bounded memory with a client that does not read, and disconnects.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What the test HTTP server saw and did.
#[derive(Default)]
struct Stats {
    /// Bytes of `/endless` body written so far.
    endless_written: AtomicU64,
    /// An `/endless` connection has been closed by its peer.
    endless_closed: AtomicBool,
    /// Woken on every change of the above.
    changed: tokio::sync::Notify,
}

/// A tiny HTTP/1.1 server, one request per connection, which every answer says
/// (`connection: close`: a client that pooled the connection would race its close). Paths:
/// `/echo` (200, repeated headers, the raw request as the body), `/big?n=N` (N bytes),
/// `/redirect` (302 to `/echo`), `/silent` (never answers), `/endless` (a chunked body without
/// end), `/broken` (promises 100 bytes, sends 10, closes).
struct HttpServer {
    port: u16,
    stats: Arc<Stats>,
}

impl HttpServer {
    async fn start() -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let s = stats.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve(conn, s.clone()));
            }
        });
        HttpServer { port, stats }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits until `cond` holds of the stats, failing after `within`.
    async fn wait(&self, what: &str, within: Duration, cond: impl Fn(&Stats) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            let notified = self.stats.changed.notified();
            if cond(&self.stats) {
                return;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                panic!("the HTTP server never saw: {what}");
            }
        }
    }
}

async fn serve(mut conn: TcpStream, stats: Arc<Stats>) {
    let mut request = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while request.len() < head_end + length {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    // `ends_with`: a proxied request names the whole URL.
    if path.ends_with("/echo") {
        let head = format!(
            "HTTP/1.1 200 OK\r\nconnection: close\r\nx-a: 1\r\ncontent-type: text/plain\r\nx-a: 2\r\ncontent-length: {}\r\n\r\n",
            request.len()
        );
        let _ = conn.write_all(head.as_bytes()).await;
        let _ = conn.write_all(&request).await;
    } else if path == "/latin1" {
        let _ = conn
            .write_all(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\nx-bin: caf\xe9\r\nx-ok: yes\r\ncontent-length: 0\r\n\r\n",
            )
            .await;
    } else if let Some(n) = path.strip_prefix("/big?n=") {
        let n: usize = n.parse().unwrap();
        let body: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
        let head = format!("HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {n}\r\n\r\n");
        let _ = conn.write_all(head.as_bytes()).await;
        let _ = conn.write_all(&body).await;
    } else if path == "/redirect" {
        let _ = conn
            .write_all(b"HTTP/1.1 302 Found\r\nconnection: close\r\nlocation: /echo\r\ncontent-length: 0\r\n\r\n")
            .await;
    } else if path == "/silent" {
        let _ = conn.read(&mut buf).await;
        return;
    } else if path == "/endless" {
        let _ = conn
            .write_all(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        loop {
            if conn.write_all(&framed).await.is_err() {
                break;
            }
            stats
                .endless_written
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            stats.changed.notify_waiters();
        }
        stats.endless_closed.store(true, Ordering::SeqCst);
        stats.changed.notify_waiters();
        return;
    } else if path == "/broken" {
        let _ = conn
            .write_all(
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 100\r\n\r\n0123456789",
            )
            .await;
    } else {
        let _ = conn
            .write_all(b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n")
            .await;
    }
    let _ = conn.shutdown().await;
}

async fn ready_with(opts: ServerOptions) -> (Server, Client) {
    let server = Server::start_with(opts).await;
    let mut client = server.connect().await;
    client.initialize().await;
    (server, client)
}

async fn ready() -> (Server, Client) {
    ready_with(ServerOptions::default()).await
}

fn header_values(result: &Value, name: &str) -> Vec<String> {
    result["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["name"] == name)
        .map(|h| h["value"].as_str().unwrap().to_string())
        .collect()
}

fn body(result: &Value) -> String {
    String::from_utf8(unb64(result["bodyBase64"].as_str().unwrap())).unwrap()
}

/// Every delta of `id` until the terminal one, checking seqs are 1, 2, 3…
async fn deltas(client: &mut Client, id: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let n = client
            .wait_for_notification("a body delta", |m| {
                m["method"] == "http/request/bodyDelta" && m["params"]["requestId"] == id
            })
            .await;
        let p = n["params"].clone();
        assert_eq!(p["seq"], json!(all.len() + 1), "seqs are contiguous from 1");
        let done = p["done"] == json!(true);
        all.push(p);
        if done {
            return all;
        }
    }
}

#[tokio::test]
async fn buffered_post_sends_body_and_repeated_headers_in_order_and_returns_repeats() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let result = client
        .request_ok(
            "http/request",
            json!({"method": "POST", "url": http.url("/echo"), "requestId": "r1",
                   "headers": [{"name": "x-rep", "value": "one"}, {"name": "x-rep", "value": "two"},
                               {"name": "content-type", "value": "text/plain"}],
                   "bodyBase64": b64(b"hello body")}),
        )
        .await;
    assert_eq!(result["status"], 200);
    assert_eq!(header_values(&result, "x-a"), ["1", "2"]);
    assert_eq!(header_values(&result, "content-type"), ["text/plain"]);
    let echoed = body(&result);
    assert!(echoed.starts_with("POST /echo HTTP/1.1\r\n"), "{echoed}");
    let one = echoed.find("x-rep: one").expect("first x-rep");
    let two = echoed.find("x-rep: two").expect("second x-rep");
    assert!(one < two, "repeats keep their order: {echoed}");
    assert!(echoed.ends_with("\r\n\r\nhello body"), "{echoed}");
}

#[tokio::test]
async fn buffered_get_without_optional_fields() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let result = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/echo"), "requestId": "r",
                   "headers": null, "bodyBase64": null, "timeoutMs": null,
                   "streamResponse": null, "redirectPolicy": null}),
        )
        .await;
    assert_eq!(result["status"], 200);
    assert!(body(&result).starts_with("GET /echo HTTP/1.1\r\n"));
}

#[tokio::test]
async fn streamed_3_mib_body_arrives_after_the_result_as_deltas_of_at_most_1_mib_then_done() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let n = 3 * 1024 * 1024 + 17;
    let id = client
        .send_request(
            "http/request",
            json!({"method": "GET", "url": http.url(&format!("/big?n={n}")),
                   "requestId": "s1", "streamResponse": true}),
        )
        .await;
    let result = client.await_answer(id).await.expect("result");
    assert_eq!(result["status"], 200);
    assert_eq!(result["bodyBase64"], "");
    // The answer came first: no delta was read before it.
    let all = deltas(&mut client, "s1").await;
    let last = all.last().unwrap();
    assert_eq!(last["deltaBase64"], "");
    assert_eq!(last["error"], Value::Null);
    let mut got = Vec::new();
    for d in &all[..all.len() - 1] {
        assert_eq!(d["done"], false);
        let piece = unb64(d["deltaBase64"].as_str().unwrap());
        assert!(piece.len() <= 1024 * 1024, "delta of {} bytes", piece.len());
        got.extend(piece);
    }
    let expected: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    assert!(got == expected, "the body arrives whole and in order");
}

#[tokio::test]
async fn streamed_body_cut_short_ends_with_an_error_delta() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/broken"), "requestId": "b",
                   "streamResponse": true}),
        )
        .await;
    let all = deltas(&mut client, "b").await;
    let last = all.last().unwrap();
    assert!(last["error"].is_string(), "{last}");
}

#[tokio::test]
async fn buffered_body_cut_short_is_an_internal_error() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": http.url("/broken"), "requestId": "b"}),
        )
        .await;
    assert_eq!(code, -32603);
    assert!(
        message.starts_with("failed to read http/request response body: "),
        "{message}"
    );
}

#[tokio::test]
async fn redirects_are_followed_by_default_and_returned_with_stop() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let followed = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/redirect"), "requestId": "f"}),
        )
        .await;
    assert_eq!(followed["status"], 200);
    let seen = body(&followed);
    assert!(seen.starts_with("GET /echo "), "{seen}");
    assert!(
        seen.contains(&format!("referer: {}\r\n", http.url("/redirect"))),
        "a followed redirect names where it came from: {seen}"
    );
    let stopped = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/redirect"), "requestId": "s",
                   "redirectPolicy": "stop"}),
        )
        .await;
    assert_eq!(stopped["status"], 302);
    assert_eq!(header_values(&stopped, "location"), ["/echo"]);
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": http.url("/redirect"), "requestId": "x",
                   "redirectPolicy": "sideways"}),
        )
        .await;
    assert_eq!(code, -32602);
    assert!(message.contains("unknown variant `sideways`"), "{message}");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let started = Instant::now();
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": http.url("/silent"), "requestId": "t",
                   "timeoutMs": 300}),
        )
        .await;
    assert_eq!(code, -32603);
    assert!(message.starts_with("http/request failed: "), "{message}");
    assert!(message.contains("/silent"), "{message}");
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn bad_requests_get_the_reference_texts() {
    let (_server, mut client) = ready().await;
    let cases = [
        (
            json!({"method": "GET", "url": "ftp://127.0.0.1/x", "requestId": "a"}),
            "http/request only supports http and https URLs, got ftp",
        ),
        (
            json!({"method": "GET", "url": "not a url", "requestId": "a"}),
            "http/request url is invalid: ",
        ),
        (
            json!({"method": "GE T", "url": "http://127.0.0.1:1/", "requestId": "a"}),
            "http/request method is invalid: ",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "headers": [{"name": "bad name", "value": "v"}]}),
            "http/request header name is invalid: ",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "headers": [{"name": "x-ok", "value": "line\nbreak"}]}),
            "http/request header value is invalid for x-ok: ",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "bodyBase64": "***"}),
            "http/request bodyBase64 is invalid: ",
        ),
        (
            json!({"url": "http://127.0.0.1:1/", "requestId": "a"}),
            "missing field `method`",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/"}),
            "missing field `requestId`",
        ),
        (
            json!({"method": "GET", "url": null, "requestId": "a"}),
            "invalid type: null",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "timeoutMs": "soon"}),
            "invalid type: string",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "timeoutMs": -1}),
            "invalid value: integer `-1`",
        ),
        (
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a",
                   "headers": [{"name": "x"}]}),
            "missing field `value`",
        ),
    ];
    for (params, expected) in cases {
        let (code, message) = client.request_err("http/request", params.clone()).await;
        assert_eq!(code, -32602, "{params}: {message}");
        assert!(
            message.contains(expected),
            "{params}: {message:?} vs {expected:?}"
        );
    }
    // A huge url is refused, not fetched.
    let huge = format!("gopher://{}", "a".repeat(4 * 1024 * 1024));
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": huge, "requestId": "h"}),
        )
        .await;
    assert_eq!(code, -32602, "{message}");
    // Nothing listens on port 1: a send failure.
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a"}),
        )
        .await;
    assert_eq!(code, -32603);
    assert!(message.starts_with("http/request failed: "), "{message}");
}

#[tokio::test]
async fn http_request_before_initialize_is_refused_with_the_http_label() {
    let server = Server::start(&[]).await;
    let mut client = server.connect().await;
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": "http://127.0.0.1:1/", "requestId": "a"}),
        )
        .await;
    assert_eq!(code, -32600);
    assert_eq!(
        message,
        "client must call initialize before using http methods"
    );
}

#[tokio::test]
async fn value_env_var_is_read_from_the_servers_environment_and_the_deny_list_is_refused() {
    let http = HttpServer::start().await;
    let opts = ServerOptions {
        env: vec![
            ("HTTP_TEST_SECRET".into(), "s3cr3t-on-executor".into()),
            ("HTTP_TEST_EMPTY".into(), String::new()),
            ("OPENAI_API_KEY".into(), "never-sent".into()),
        ],
        ..Default::default()
    };
    assert!(std::env::var_os("HTTP_TEST_SECRET").is_none());
    let (_server, mut client) = ready_with(opts).await;
    let result = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/echo"), "requestId": "e",
                   "headers": [{"name": "authorization", "value": "Bearer ",
                                "valueEnvVar": "HTTP_TEST_SECRET"}]}),
        )
        .await;
    assert!(
        body(&result).contains("authorization: Bearer s3cr3t-on-executor\r\n"),
        "{}",
        body(&result)
    );
    assert!(!result.to_string().contains("valueEnvVar"));
    let cases = [
        (
            "openai_api_key",
            "http/request header authorization cannot use executor environment variable openai_api_key",
        ),
        (
            "AWS_SECRET_ACCESS_KEY",
            "http/request header authorization cannot use executor environment variable AWS_SECRET_ACCESS_KEY",
        ),
        (
            "HTTP_TEST_UNSET",
            "http/request header authorization requires executor environment variable HTTP_TEST_UNSET",
        ),
        (
            "HTTP_TEST_EMPTY",
            "http/request header authorization requires a non-empty executor environment variable HTTP_TEST_EMPTY",
        ),
    ];
    for (var, expected) in cases {
        let (code, message) = client
            .request_err(
                "http/request",
                json!({"method": "GET", "url": http.url("/echo"), "requestId": "e",
                       "headers": [{"name": "authorization", "value": "Bearer ",
                                    "valueEnvVar": var}]}),
            )
            .await;
        assert_eq!((code, message.as_str()), (-32602, expected));
    }
}

#[tokio::test]
async fn environment_info_advertises_header_env_vars() {
    let (_server, mut client) = ready().await;
    let info = client.request_ok("environment/info", json!({})).await;
    assert_eq!(info["capabilities"]["httpHeaderEnvVars"], true, "{info}");
}

#[tokio::test]
async fn a_request_id_is_refused_while_its_stream_is_active_and_free_after_done() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let params = json!({"method": "GET", "url": http.url("/endless"), "requestId": "dup",
                        "streamResponse": true});
    client.request_ok("http/request", params.clone()).await;
    let (code, message) = client.request_err("http/request", params).await;
    assert_eq!(code, -32602);
    assert_eq!(
        message,
        "http/request streamResponse requestId `dup` is already active"
    );
    // A finished stream frees its id.
    let finite = json!({"method": "GET", "url": http.url("/big?n=10"), "requestId": "again",
                        "streamResponse": true});
    client.request_ok("http/request", finite.clone()).await;
    deltas(&mut client, "again").await;
    client.request_ok("http/request", finite).await;
    deltas(&mut client, "again").await;
}

#[tokio::test]
async fn an_endless_body_to_a_client_that_does_not_read_is_not_buffered_without_bound() {
    let http = HttpServer::start().await;
    let (server, mut client) = ready().await;
    client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/endless"), "requestId": "inf",
                   "streamResponse": true}),
        )
        .await;
    // Not reading: the writes must stall. Wait until the body has not grown for a second (the
    // socket buffers, the delta budget and the queue are full), failing if it grows past LIMIT.
    const LIMIT: u64 = 64 * 1024 * 1024;
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let notified = http.stats.changed.notified();
        let now = http.stats.endless_written.load(Ordering::SeqCst);
        assert!(
            now < LIMIT,
            "the server buffered {now} bytes of a body nobody reads"
        );
        assert!(
            Instant::now() < deadline,
            "the body kept flowing: {now} bytes"
        );
        if tokio::time::timeout(Duration::from_secs(1), notified)
            .await
            .is_err()
            && now > 0
        {
            break now;
        }
    };
    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let rss_kb: u64 = rss
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    eprintln!("stalled after {last} bytes; server RSS {rss_kb} kB");
    assert!(
        rss_kb < 100 * 1024,
        "server RSS {rss_kb} kB after {last} bytes"
    );
    // Reading again, the body flows again.
    let n = client
        .wait_for_notification("a delta", |m| m["method"] == "http/request/bodyDelta")
        .await;
    assert_eq!(n["params"]["seq"], 1);
}

#[tokio::test]
async fn a_disconnect_mid_stream_aborts_the_body() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/endless"), "requestId": "cut",
                   "streamResponse": true}),
        )
        .await;
    client
        .wait_for_notification("a delta", |m| m["method"] == "http/request/bodyDelta")
        .await;
    client.close().await;
    http.wait(
        "the executor closed the body's connection",
        Duration::from_secs(20),
        |s| s.endless_closed.load(Ordering::SeqCst),
    )
    .await;
}

#[tokio::test]
async fn literal_loopback_targets_bypass_the_proxy_variables_and_names_do_not() {
    let target = HttpServer::start().await;
    let proxy = HttpServer::start().await;
    let proxy_url = proxy.url("");
    let opts = ServerOptions {
        env: vec![
            ("HTTP_PROXY".into(), proxy_url.clone()),
            ("http_proxy".into(), proxy_url),
            ("NO_PROXY".into(), String::new()),
            ("no_proxy".into(), String::new()),
        ],
        ..Default::default()
    };
    let (_server, mut client) = ready_with(opts).await;
    let direct = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": target.url("/echo"), "requestId": "d"}),
        )
        .await;
    assert!(
        body(&direct).starts_with("GET /echo HTTP/1.1"),
        "{}",
        body(&direct)
    );
    let named = format!("http://localhost:{}/echo", target.port);
    let proxied = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": named, "requestId": "p"}),
        )
        .await;
    let seen = body(&proxied);
    assert!(
        seen.starts_with(&format!("GET {named} HTTP/1.1")),
        "the proxy saw: {seen}"
    );
}

#[tokio::test]
async fn a_buffered_body_too_large_for_one_message_is_refused() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let n = 100_660_224 + 1;
    let (code, message) = client
        .request_err(
            "http/request",
            json!({"method": "GET", "url": http.url(&format!("/big?n={n}")), "requestId": "big"}),
        )
        .await;
    assert_eq!(code, -32603);
    assert!(
        message.starts_with("failed to read http/request response body: the body is larger than"),
        "{message}"
    );
}

#[tokio::test]
async fn the_client_library_makes_a_buffered_request_with_an_executor_variable() {
    use codex::client::{ClientOptions, ExecServerClient};
    use codex::protocol::http::{HttpRequestHeader, HttpRequestParams};
    let http = HttpServer::start().await;
    let server = Server::start_with(ServerOptions {
        env: vec![("HTTP_LIB_TOKEN".into(), "only-here".into())],
        ..Default::default()
    })
    .await;
    let client = tokio::time::timeout(
        DEADLINE,
        ExecServerClient::connect(server.url(), ClientOptions::default()),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let answer = client
        .http_request(HttpRequestParams {
            method: "PUT".into(),
            url: http.url("/echo"),
            headers: Some(vec![HttpRequestHeader {
                name: "x-token".into(),
                value: "t=".into(),
                value_env_var: Some("HTTP_LIB_TOKEN".into()),
            }]),
            body_base64: Some(b64(b"payload")),
            timeout_ms: Some(10_000),
            request_id: "lib".into(),
            stream_response: Some(true),
            redirect_policy: None,
        })
        .await
        .expect("http_request");
    assert_eq!(answer.status, 200);
    let echoed = String::from_utf8(unb64(&answer.body_base64)).unwrap();
    assert!(echoed.starts_with("PUT /echo HTTP/1.1\r\n"), "{echoed}");
    assert!(echoed.contains("x-token: t=only-here\r\n"), "{echoed}");
    assert!(echoed.ends_with("payload"), "{echoed}");
    let err = client
        .http_request(HttpRequestParams {
            method: "GET".into(),
            url: "file:///etc/passwd".into(),
            headers: None,
            body_base64: None,
            timeout_ms: None,
            request_id: "lib".into(),
            stream_response: None,
            redirect_policy: None,
        })
        .await
        .expect_err("a file URL is refused");
    assert!(
        err.to_string()
            .contains("http/request only supports http and https URLs, got file"),
        "{err}"
    );
}

#[tokio::test]
async fn response_header_values_that_are_not_utf8_are_left_out() {
    let http = HttpServer::start().await;
    let (_server, mut client) = ready().await;
    let result = client
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/latin1"), "requestId": "l"}),
        )
        .await;
    assert_eq!(header_values(&result, "x-ok"), ["yes"]);
    assert_eq!(header_values(&result, "x-bin"), Vec::<String>::new());
}

//! The server's limits as a client meets them, over a real socket: connections
//! (`--max-connections`, 503 before the upgrade), sessions (`--max-sessions`, detached ones
//! count, a resume never refused), processes per session (`--max-processes-per-session`,
//! finished ones count until their retention ends), streamed `http/request`s per connection
//! (`--max-http-streams-per-connection`) and the message size (`--max-message-bytes`).
//!
//! Each test shows the refusal and its text, that another client's session on the same server
//! goes on working meanwhile (a [`Bystander`] echoes a line, runs a process, reads a file), and
//! that a freed place is taken again (no slot leaks: refused attempts take none, finished ones
//! give theirs back).

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// The bystander's session still works: its `cat` echoes, a new process runs to its end, and a
/// file written before is read back.
async fn assert_bystander_works(bystander: &mut Bystander, process_id: &str) {
    bystander.check().await;
    let client = &mut bystander.client;
    client
        .start_process(sh(process_id, "echo bystander-ran"))
        .await;
    client.wait_for_output(process_id, "bystander-ran").await;
    let dir = TestDir::new();
    let path = dir.join("f");
    std::fs::write(&path, b"bystander file").unwrap();
    let read = client
        .request_ok("fs/readFile", json!({"path": file_uri(&path)}))
        .await;
    assert_eq!(
        unb64(read["dataBase64"].as_str().unwrap()),
        b"bystander file"
    );
}

/// Whether [`DEADLINE`] from `start` has passed; for a retry loop that waits for a place freed by
/// something the client cannot watch (the server noticing a closed socket, a retention timer).
/// Each retry is a full round trip.
fn still_within(start: Instant, what: &str) {
    assert!(start.elapsed() < DEADLINE, "never happened: {what}");
}

// ---------------------------------------------------------------------------------------------
// Connections

/// A raw HTTP exchange: sends `request`, returns the status line, headers and body as read until
/// the server closes (a refusal), or until the head ends (an upgrade, then dropped).
async fn raw_http(addr: &str, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.starts_with(b"HTTP/1.1 101") && got.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server answered within the deadline");
    String::from_utf8_lossy(&got).into_owned()
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

fn assert_connection_refused(answer: &str, limit: usize) {
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/plain"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    assert!(
        body.contains(&format!(
            "too many connections: the limit is {limit} (--max-connections)"
        )),
        "{answer}"
    );
}

#[tokio::test]
async fn connections_beyond_the_limit_get_503_before_the_upgrade_and_a_closed_one_frees_its_place()
{
    let server = Server::start(&["--max-connections", "2"]).await;
    let mut bystander = Bystander::start(&server).await;
    let mut a = server.connect().await;
    a.initialize().await;

    // Full: an upgrade is refused, again and again (the refused ones take no place); the
    // client library's handshake sees the 503.
    for _ in 0..20 {
        assert_connection_refused(&raw_http(&server.addr(), UPGRADE).await, 2);
    }
    let err = Client::connect(server.url(), ConnectOptions::default())
        .await
        .err()
        .expect("a third connection must be refused");
    assert!(err.0.contains("503"), "{err}");
    // Readiness is answered whatever the count.
    let ready = raw_http(&server.addr(), "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(ready.starts_with("HTTP/1.1 200 OK\r\n"), "{ready}");
    // The open connections go on.
    assert_bystander_works(&mut bystander, "during-503").await;
    let info = a.request_ok("environment/info", json!({})).await;
    assert_eq!(info["platformOs"], "linux");

    // A closes: its place is taken by the next connection, and then the server is full again.
    a.close().await;
    let start = Instant::now();
    let mut c = loop {
        match Client::connect(server.url(), ConnectOptions::default()).await {
            Ok(c) => break c,
            Err(err) => assert!(err.0.contains("503"), "{err}"),
        }
        still_within(start, "a connection after one closed");
        tokio::task::yield_now().await;
    };
    c.initialize().await;
    assert_connection_refused(&raw_http(&server.addr(), UPGRADE).await, 2);
    assert_bystander_works(&mut bystander, "after-reuse").await;
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// The pid a `sh -c 'echo $$; exec sleep 1000'` process printed.
async fn printed_pid(client: &mut Client, process_id: &str) -> i32 {
    client.wait_for_output(process_id, "\n").await;
    let events = client.process_events(process_id);
    output_text(&events, None).trim().parse().expect("a pid")
}

#[tokio::test]
async fn sessions_beyond_the_limit_are_refused_at_initialize_detached_ones_count_and_a_resume_never_is()
 {
    let server = Server::start(&["--max-sessions", "2", "--detached-session-ttl-ms", "3000"]).await;
    let mut bystander = Bystander::start(&server).await;
    let mut a = server.connect().await;
    let a_session = a.initialize().await;
    a.start_process(sh("holder", "echo $$; exec sleep 1000"))
        .await;
    let holder = Pidfd::open(printed_pid(&mut a, "holder").await).expect("holder runs");

    let mut c = server.connect().await;
    let refused = |(code, message): RpcError| {
        assert_eq!(code, INVALID_REQUEST, "{message}");
        assert!(
            message.contains("too many sessions: the limit is 2 (--max-sessions)"),
            "{message}"
        );
    };
    refused(
        c.try_initialize("test", None, DEADLINE)
            .await
            .unwrap()
            .expect_err("a third session must be refused"),
    );
    assert_bystander_works(&mut bystander, "during-refusal").await;

    // Detached, A's session still counts; resuming it is not refused by the limit.
    a.close().await;
    refused(
        c.try_initialize("test", None, DEADLINE)
            .await
            .unwrap()
            .expect_err("a detached session still counts"),
    );
    let (mut resumed, _) = resume_on_new_connection(&server, &a_session).await;
    let info = resumed.request_ok("environment/info", json!({})).await;
    assert_eq!(info["platformOs"], "linux");

    // Left to expire: its processes are killed after it is forgotten, and its place is free.
    resumed.close().await;
    holder
        .wait_exit(DEADLINE, "the expired session's process")
        .await;
    // The same connection's failed initialize may be retried (protocol.md).
    let session = c
        .try_initialize("test", None, DEADLINE)
        .await
        .unwrap()
        .expect("a place is free once the detached session expired");
    assert!(session["sessionId"].is_string());
    c.start_process(sh("c-ran", "echo c-ran")).await;
    c.wait_for_output("c-ran", "c-ran").await;
    // Full again.
    let mut d = server.connect().await;
    refused(
        d.try_initialize("test", None, DEADLINE)
            .await
            .unwrap()
            .expect_err("full again"),
    );
    assert_bystander_works(&mut bystander, "after-reuse").await;
}

// ---------------------------------------------------------------------------------------------
// Processes

fn assert_processes_refused((code, message): RpcError, limit: usize) {
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(
        message.contains(&format!(
            "too many processes in this session: the limit is {limit} \
             (--max-processes-per-session)"
        )),
        "{message}"
    );
}

#[tokio::test]
async fn processes_beyond_the_limit_are_refused_in_that_session_only_and_finished_ones_count_until_retention_ends()
 {
    let server = Server::start(&[
        "--max-processes-per-session",
        "2",
        "--closed-process-ttl-ms",
        "300",
    ])
    .await;
    let mut bystander = Bystander::start(&server).await;
    let mut a = server.connect().await;
    a.initialize().await;

    let mut cat = process_params("cat", &["/bin/cat"]);
    cat["pipeStdin"] = json!(true);
    a.start_process(cat).await;
    // A start that fails to spawn gives its place back at once.
    let (code, message) = a
        .request_err(
            "process/start",
            process_params("missing", &["/nonexistent/program"]),
        )
        .await;
    assert_eq!(code, INTERNAL_ERROR, "{message}");
    a.start_process(sh("quick", "echo quick")).await;
    a.wait_for_process_event("quick", "process/closed").await;

    // One running and one finished but retained: full.
    let third = sh("third", "echo third");
    assert_processes_refused(a.request_err("process/start", third.clone()).await, 2);
    // The refused start left nothing behind.
    let (code, message) = a
        .request_err("process/read", json!({"processId": "third", "afterSeq": 0}))
        .await;
    assert_eq!(code, INVALID_REQUEST, "{message}");
    // Another session is not limited by this one's processes (its own: the cat and this one).
    assert_bystander_works(&mut bystander, "other-session").await;
    assert_eq!(a.write_stdin("cat", b"still\n", "w1").await, "accepted");
    a.wait_for_output("cat", "still").await;

    // Once the finished one's retention ends, its place is taken again; then the session is full
    // again.
    let start = Instant::now();
    while let Err(refused) = a.request("process/start", third.clone()).await {
        assert_processes_refused(refused, 2);
        still_within(start, "a start after the finished process was forgotten");
        tokio::task::yield_now().await;
    }
    a.wait_for_output("third", "third").await;
    assert_processes_refused(
        a.request_err("process/start", sh("fourth", "echo fourth"))
            .await,
        2,
    );
}

// ---------------------------------------------------------------------------------------------
// http/request streams

/// An HTTP server whose `/held1` and `/held2` answer 200 with one chunk of body and end it only
/// when their gate opens; `/quick` answers at once.
struct HeldServer {
    port: u16,
    gates: [tokio::sync::watch::Sender<bool>; 2],
}

impl HeldServer {
    async fn start() -> HeldServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let gates = [
            tokio::sync::watch::channel(false).0,
            tokio::sync::watch::channel(false).0,
        ];
        let receivers = [gates[0].subscribe(), gates[1].subscribe()];
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(serve_held(conn, receivers.clone()));
            }
        });
        HeldServer { port, gates }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn open(&self, gate: usize) {
        self.gates[gate].send_replace(true);
    }
}

async fn serve_held(mut conn: TcpStream, mut gates: [tokio::sync::watch::Receiver<bool>; 2]) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
    let _ = conn
        .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        .await;
    let gate = match path.as_str() {
        "/held1" => Some(&mut gates[0]),
        "/held2" => Some(&mut gates[1]),
        _ => None,
    };
    if let Some(gate) = gate {
        let _ = gate.wait_for(|open| *open).await;
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let _ = conn.shutdown().await;
}

fn stream_params(id: &str, url: String) -> Value {
    json!({"method": "GET", "url": url, "requestId": id, "streamResponse": true})
}

/// Waits for the terminal delta of `id`; asserts it ended without error.
async fn wait_stream_done(client: &mut Client, id: &str) {
    let done = client
        .wait_for_notification("the terminal delta", |m| {
            m["method"] == "http/request/bodyDelta"
                && m["params"]["requestId"] == id
                && m["params"]["done"] == json!(true)
        })
        .await;
    assert_eq!(done["params"]["error"], Value::Null, "{done}");
}

fn assert_streams_refused((code, message): RpcError) {
    assert_eq!(code, INVALID_REQUEST, "{message}");
    assert!(
        message.contains(
            "too many http/request streams on this connection: the limit is 1 \
             (--max-http-streams-per-connection)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn http_streams_beyond_the_limit_are_refused_on_that_connection_only_and_an_ended_one_frees_its_place()
 {
    let http = HeldServer::start().await;
    let server = Server::start(&["--max-http-streams-per-connection", "1"]).await;
    let mut bystander = Bystander::start(&server).await;
    let mut a = server.connect().await;
    a.initialize().await;

    // A stream that fails before its answer (nothing listens on port 1) gives its place back.
    let (code, message) = a
        .request_err(
            "http/request",
            stream_params("s0", "http://127.0.0.1:1/".into()),
        )
        .await;
    assert_eq!(code, INTERNAL_ERROR, "{message}");
    let first = a
        .request_ok("http/request", stream_params("s1", http.url("/held1")))
        .await;
    assert_eq!(first["status"], 200);
    assert_streams_refused(
        a.request_err("http/request", stream_params("s2", http.url("/held2")))
            .await,
    );
    // A buffered request is not a stream.
    let buffered = a
        .request_ok(
            "http/request",
            json!({"method": "GET", "url": http.url("/quick"), "requestId": "b1"}),
        )
        .await;
    assert_eq!(unb64(buffered["bodyBase64"].as_str().unwrap()), b"first");
    // Another connection has its own streams, and its session works.
    let other = bystander
        .client
        .request_ok("http/request", stream_params("s1", http.url("/held1")))
        .await;
    assert_eq!(other["status"], 200);
    assert_bystander_works(&mut bystander, "during-streams").await;

    // The stream ends: its place is free by the time its terminal delta arrives.
    http.open(0);
    wait_stream_done(&mut a, "s1").await;
    wait_stream_done(&mut bystander.client, "s1").await;
    let second = a
        .request_ok("http/request", stream_params("s2", http.url("/held2")))
        .await;
    assert_eq!(second["status"], 200);
    // And the limit still holds.
    assert_streams_refused(
        a.request_err("http/request", stream_params("s3", http.url("/held2")))
            .await,
    );
    http.open(1);
    wait_stream_done(&mut a, "s2").await;
}

// ---------------------------------------------------------------------------------------------
// Message size

const SMALL_LIMIT: usize = 2 << 20;

/// The only message before the close is an error with id -1 naming the limit.
fn assert_too_large_then_closed(before_close: &[Value], limit: usize) {
    assert_eq!(before_close.len(), 1, "{before_close:?}");
    let answer = &before_close[0];
    assert_eq!(answer["id"], json!(-1), "{answer}");
    assert_eq!(answer["error"]["code"], json!(INVALID_REQUEST), "{answer}");
    assert_eq!(
        answer["error"]["message"],
        json!(format!("message too large: the limit is {limit} bytes")),
        "{answer}"
    );
}

/// `fs/writeFile` of `data` to `path` as request `id`, padded with spaces to exactly `len` bytes.
fn write_file_message(id: i64, path: &std::path::Path, data: &[u8], len: usize) -> String {
    let mut text = json!({
        "id": id, "method": "fs/writeFile",
        "params": {"path": file_uri(path), "dataBase64": b64(data)}
    })
    .to_string();
    assert!(text.len() <= len, "{} > {len}", text.len());
    text.push_str(&" ".repeat(len - text.len()));
    text
}

#[tokio::test]
async fn a_message_over_max_message_bytes_is_answered_with_id_minus_one_then_closed_and_one_at_it_is_served()
 {
    let server = Server::start(&["--max-message-bytes", &SMALL_LIMIT.to_string()]).await;
    let mut bystander = Bystander::start(&server).await;
    let mut a = server.connect().await;
    let session = a.initialize().await;
    let dir = TestDir::new();

    // The floor carries the largest fs/writeBlock chunk (1 MiB): a 1 MiB file in one message of
    // exactly the limit is served.
    let data: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let path = dir.join("one-mib");
    a.send_raw_text(&write_file_message(900, &path, &data, SMALL_LIMIT))
        .await;
    assert_eq!(a.await_answer(900).await, Ok(json!({})));
    assert_eq!(std::fs::read(&path).unwrap(), data);

    // One byte more: refused, then closed. The server answers and closes as soon as the frame's
    // header names a length over the limit, so our write of the rest may be cut off (reset by
    // the peer); the answer is already in our receive queue then.
    let _ = a
        .try_send_text(write_file_message(
            901,
            &dir.join("too-big"),
            &data,
            SMALL_LIMIT + 1,
        ))
        .await;
    assert_too_large_then_closed(&a.wait_for_close().await, SMALL_LIMIT);
    assert!(!dir.join("too-big").exists());
    assert_bystander_works(&mut bystander, "after-too-large").await;
    // The refused client's session is only detached: it resumes.
    let (mut resumed, _) = resume_on_new_connection(&server, &session).await;
    let read = resumed
        .request_ok("fs/readFile", json!({"path": file_uri(&path)}))
        .await;
    assert_eq!(unb64(read["dataBase64"].as_str().unwrap()), data);
}

#[tokio::test]
async fn a_stdio_line_over_max_message_bytes_is_answered_with_id_minus_one_then_the_server_exits() {
    let (mut server, mut client) =
        StdioServer::start(&["--max-message-bytes", &SMALL_LIMIT.to_string()]).await;
    client.initialize().await;
    let dir = TestDir::new();
    let data = vec![7u8; 1 << 20];
    let path = dir.join("one-mib");
    client
        .send_raw_text(&write_file_message(900, &path, &data, SMALL_LIMIT))
        .await;
    assert_eq!(client.await_answer(900).await, Ok(json!({})));
    client.write_raw_bytes(&vec![b' '; SMALL_LIMIT + 1]).await;
    assert_too_large_then_closed(&client.wait_for_close().await, SMALL_LIMIT);
    assert!(server.wait_for_exit().await.success());
}

// ---------------------------------------------------------------------------------------------
// Flags

/// `codex exec-server ARGS`: its exit status and stderr (it must refuse to start).
async fn refused_start(args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(server_binary())
            .arg("exec-server")
            .args(["--listen", "ws://127.0.0.1:0"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the server exits at once")
    .expect("run the server");
    assert!(
        out.stdout.is_empty(),
        "nothing was listened on: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn limit_flags_refuse_zero_junk_and_a_message_limit_outside_its_range_naming_the_flag() {
    for flag in [
        "--max-connections",
        "--max-sessions",
        "--max-processes-per-session",
        "--max-http-streams-per-connection",
    ] {
        for value in ["0", "-1", "many", "", "4294967296"] {
            let (code, stderr) = refused_start(&[&format!("{flag}={value}")]).await;
            assert_eq!(code, Some(2), "{flag} {value:?}: {stderr}");
            assert!(stderr.contains(flag), "{flag} {value:?}: {stderr}");
        }
    }
    for value in ["2097151", "1073741825", "0", "lots"] {
        let (code, stderr) = refused_start(&["--max-message-bytes", value]).await;
        assert_eq!(code, Some(2), "{value}: {stderr}");
        assert!(stderr.contains("--max-message-bytes"), "{value}: {stderr}");
    }
    let (_, stderr) = refused_start(&["--max-message-bytes", "1000"]).await;
    assert!(stderr.contains("fs/writeBlock"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Request head timeout

/// A peer that connects and sends nothing, or half a head, is answered 408 and closed once
/// `--request-head-timeout-ms` has passed (it cannot hold a task and a descriptor forever), and a
/// connected client's session is not disturbed meanwhile.
#[tokio::test]
async fn a_request_head_not_sent_in_time_is_answered_408_and_closed() {
    let server = Server::start(&["--request-head-timeout-ms", "300"]).await;
    let mut bystander = Bystander::start(&server).await;
    for partial in ["", "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"] {
        let started = Instant::now();
        let answer = raw_http(&server.addr(), partial).await;
        assert!(
            answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{partial:?}: {answer}"
        );
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(300),
            "answered before the timeout: {partial:?}"
        );
    }
    assert_bystander_works(&mut bystander, "after-408").await;
    // A whole head in time is served as before.
    let answer = raw_http(&server.addr(), "GET /readyz HTTP/1.1\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

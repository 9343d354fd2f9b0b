//! The server's log with everything turned on (`RUST_LOG=trace`), in both `--log-format`s:
//! secrets placed in a process's `env` and `argv`, in its output, in `fs/writeFile` content, in
//! an `http/request` header value and body never reach stderr (dependencies that log frames are
//! capped unless named), while the audit records of process start and exit do, with their fields
//! (the program name, not its arguments).

mod common;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ENV_SECRET: &str = "S3CRETenvZq81";
const ARGV_SECRET: &str = "S3CRETargvWx27";
const FILE_SECRET: &str = "S3CRETfileKp55";
const HEADER_SECRET: &str = "S3CRETheaderJd90";
const BODY_SECRET: &str = "S3CRETbodyVm34";

/// The forms a secret may take in a log: as is, in base64 (output, file and body bytes travel
/// so), in hex (how tungstenite prints a frame's payload).
fn forms(secret: &str) -> [String; 3] {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    [secret.to_string(), b64(secret.as_bytes()), hex]
}

/// A one-request-per-connection HTTP server answering 200 `ok` to anything: its address.
async fn http_sink() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then the body the client announced (ours: the secret).
                while !String::from_utf8_lossy(&request).contains(BODY_SECRET) {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    addr
}

/// Runs a server with `RUST_LOG=rust_log` and `--log-format format`, puts every secret through
/// it, stops it with SIGTERM, and returns its whole stderr and the session id.
async fn run_with_secrets(rust_log: &str, format: &str) -> (String, String) {
    let sink = http_sink().await;
    let dir = TestDir::new();
    let mut server = LoggedServer::start_with(LoggedOptions {
        flags: vec!["--log-format".into(), format.into()],
        env: vec![("RUST_LOG".into(), rust_log.into())],
        listen: None,
    })
    .await;

    let mut c = Client::connect(&server.url, ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let session = c.initialize().await;
    // env and argv, and the env secret again as output.
    let mut params = process_params(
        "p1",
        &["/bin/sh", "-c", "printf %s \"$MY_TOKEN\"", ARGV_SECRET],
    );
    params["env"]["MY_TOKEN"] = json!(ENV_SECRET);
    c.start_process(params).await;
    let events = c.collect_process_events("p1").await;
    assert_eq!(output_text(&events, Some("stdout")), ENV_SECRET);
    assert_eq!(exit_code(&events), 0);
    // fs/writeFile content.
    let path = dir.join("f");
    c.request_ok(
        "fs/writeFile",
        json!({"path": file_uri(&path), "dataBase64": b64(FILE_SECRET.as_bytes())}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), FILE_SECRET);
    // http/request header value and body.
    let answer = c
        .request_ok(
            "http/request",
            json!({"method": "POST", "url": format!("http://{sink}/x"), "requestId": "r1",
                   "headers": [{"name": "authorization", "value": HEADER_SECRET}],
                   "bodyBase64": b64(BODY_SECRET.as_bytes())}),
        )
        .await;
    assert_eq!(answer["status"], 200, "{answer}");
    c.close().await;

    server.kill_with(libc::SIGTERM);
    let status = server.wait_for_exit().await;
    assert!(status.success(), "{status:?}");
    let log = server.log_to_end().await;
    (log, session)
}

#[track_caller]
fn assert_no_secret(log: &str) {
    for secret in [
        ENV_SECRET,
        ARGV_SECRET,
        FILE_SECRET,
        HEADER_SECRET,
        BODY_SECRET,
    ] {
        for form in forms(secret) {
            assert!(
                !log.contains(&form),
                "{form:?} (a form of {secret}) is in the log:\n{log}"
            );
        }
    }
}

#[tokio::test]
async fn trace_text_log_has_audit_records_and_no_secret() {
    let (log, session) = run_with_secrets("trace", "text").await;
    assert_no_secret(&log);
    // Everything was on: our own debug events are there.
    assert!(log.contains("session created"), "{log}");
    let start = log
        .lines()
        .find(|l| l.contains("codex::audit") && l.contains("event=\"process.start\""))
        .unwrap_or_else(|| panic!("no audit start record:\n{log}"));
    for field in [
        format!("session=\"{session}\""),
        "process_id=\"p1\"".into(),
        "program=\"sh\"".into(),
        "sandbox=\"none\"".into(),
        "tty=false".into(),
        " INFO ".into(),
    ] {
        assert!(start.contains(&field), "{field} not in {start}");
    }
    assert!(start.contains("pid="), "{start}");
    // No argument of argv (not `-c`, not the script): fields are `key=value`, so an argument
    // would stand as a word of its own or inside a quoted argv (a session id may hold "-c").
    assert!(
        !start.contains(" -c") && !start.contains("\"-c") && !start.contains("printf"),
        "no argument of argv: {start}"
    );
    let exit = log
        .lines()
        .find(|l| l.contains("codex::audit") && l.contains("event=\"process.exit\""))
        .unwrap_or_else(|| panic!("no audit exit record:\n{log}"));
    for field in [
        format!("session=\"{session}\""),
        "process_id=\"p1\"".into(),
        "exit_code=0".into(),
        "duration_ms=".into(),
    ] {
        assert!(exit.contains(&field), "{field} not in {exit}");
    }
}

#[tokio::test]
async fn trace_json_log_has_audit_records_as_keys_and_no_secret() {
    let (log, session) = run_with_secrets("trace", "json").await;
    assert_no_secret(&log);
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["message"] == "session created"),
        "{log}"
    );
    let audit = |event: &str| {
        lines
            .iter()
            .find(|l| l["target"] == "codex::audit" && l["event"] == event)
            .unwrap_or_else(|| panic!("no {event} record:\n{log}"))
            .clone()
    };
    let start = audit("process.start");
    assert_eq!(start["level"], "INFO", "{start}");
    assert_eq!(start["session"], session.as_str(), "{start}");
    assert_eq!(start["process_id"], "p1", "{start}");
    assert_eq!(start["program"], "sh", "{start}");
    assert_eq!(start["sandbox"], "none", "{start}");
    assert_eq!(start["tty"], false, "{start}");
    assert!(start["pid"].as_i64().is_some_and(|p| p > 1), "{start}");
    let exit = audit("process.exit");
    assert_eq!(exit["session"], session.as_str(), "{exit}");
    assert_eq!(exit["process_id"], "p1", "{exit}");
    assert_eq!(exit["exit_code"], 0, "{exit}");
    assert!(exit["duration_ms"].as_u64().is_some(), "{exit}");
}

/// The cap is what keeps the secrets out: a crate named in RUST_LOG is not capped, and then
/// tungstenite's frame log shows what the tests above look for.
#[tokio::test]
async fn naming_tungstenite_uncaps_it_and_its_frames_show_secrets() {
    let (log, _) = run_with_secrets("warn,tungstenite=trace", "text").await;
    assert!(
        forms(ENV_SECRET).iter().any(|form| log.contains(form)),
        "tungstenite at trace logs the frames:\n{log}"
    );
}

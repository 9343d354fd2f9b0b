//! Authentication at the door (`--ws-auth`), through the real binary on loopback: the 401s and
//! their bodies for every kind of bad credential, the start-up refusals with the reference's
//! texts, token rotation on SIGHUP, the audit line, and 10,000 wrong-token upgrades after which
//! the right token still works.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio::time::Instant;

const TOKEN: &str = "c4p4bility-t0ken-for-tests";
const SECRET: &str = "an-hs256-secret-of-more-than-32-bytes!";

// ---------------------------------------------------------------------------------------------
// Helpers

/// Writes a file in `dir` and returns its path as a string.
fn write(dir: &TestDir, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_string()
}

/// A server started with `--ws-auth capability-token --ws-token-file F` (F holds [`TOKEN`]).
async fn token_server() -> (Server, TestDir) {
    let dir = TestDir::new();
    let file = write(&dir, "token", &format!("  {TOKEN}\n"));
    let server = Server::start(&["--ws-auth", "capability-token", "--ws-token-file", &file]).await;
    (server, dir)
}

/// What the server answered a request: status, head (lower-cased names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `GET / ` as a WebSocket upgrade with `extra` header lines and reads the answer's head
/// (and, unless it is a 101, its body until the server closes).
async fn upgrade_raw(addr: &str, extra: &str) -> Answer {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    );
    request_raw(addr, request.as_bytes()).await
}

async fn request_raw(addr: &str, request: &[u8]) -> Answer {
    tokio::time::timeout(DEADLINE, async {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(request).await.expect("send the request");
        read_answer(&mut tcp).await
    })
    .await
    .expect("an answer in time")
}

async fn read_answer<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.expect("read the answer");
        assert!(n > 0, "the server closed before answering: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = buf[head_end..].to_vec();
    if status != 101 {
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        while body.len() < length {
            let n = stream.read(&mut chunk).await.expect("read the body");
            assert!(n > 0, "the body ended early");
            body.extend_from_slice(&chunk[..n]);
        }
    }
    Answer {
        status,
        head,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Asserts a 401 with the reference's content type and `body`.
fn assert_401(answer: &Answer, body: &str) {
    assert_eq!(answer.status, 401, "{answer:?}");
    assert_eq!(
        answer.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8"),
        "{answer:?}"
    );
    assert_eq!(answer.body, body, "{answer:?}");
}

async fn bearer(addr: &str, token: &str) -> Answer {
    upgrade_raw(addr, &format!("Authorization: Bearer {token}\r\n")).await
}

/// Connects with `Authorization: Bearer token`, initializes, runs `echo`, and checks its output.
async fn runs_a_command(url: &str, token: &str) {
    let auth = format!("Bearer {token}");
    let mut client =
        Client::connect_with_headers(url, ConnectOptions::default(), &[("authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    client.initialize().await;
    client
        .start_process(process_params("p1", &["echo", "through the door"]))
        .await;
    let events = client.collect_process_events("p1").await;
    assert_eq!(output_text(&events, None), "through the door\n");
}

/// Runs the binary with `args` and expects it to refuse to start: exit code 1 and `message` on
/// stderr. Returns stderr.
async fn refused(args: &[&str], message: &str) -> String {
    refused_in(None, args, message).await
}

async fn refused_in(cwd: Option<&Path>, args: &[&str], message: &str) -> String {
    let mut cmd = Command::new(server_binary());
    cmd.arg("exec-server")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        cmd.current_dir(cwd);
    }
    let out = tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("the server must refuse at once")
        .expect("run the server");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains(message),
        "expected {message:?} in: {stderr}"
    );
    assert!(stdout.is_empty(), "nothing is printed (no URL): {stdout}");
    stderr
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt_with(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn jwt(claims: Value) -> String {
    jwt_with(SECRET, claims)
}

fn b64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A server with `--ws-auth signed-bearer-token`, the [`SECRET`], and `extra` flags.
async fn jwt_server(extra: &[&str]) -> (Server, TestDir) {
    let dir = TestDir::new();
    let file = write(&dir, "secret", &format!("{SECRET}\n"));
    let mut flags = vec![
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        &file,
    ];
    flags.extend_from_slice(extra);
    let server = Server::start(&flags).await;
    (server, dir)
}

// ---------------------------------------------------------------------------------------------
// Capability token: the 401s

#[tokio::test]
async fn an_upgrade_without_authorization_is_401_missing_token() {
    let (server, _dir) = token_server().await;
    let answer = upgrade_raw(&server.addr(), "").await;
    assert_401(&answer, "missing websocket bearer token");
}

#[tokio::test]
async fn a_basic_scheme_is_401_invalid_header() {
    let (server, _dir) = token_server().await;
    let answer = upgrade_raw(&server.addr(), "Authorization: Basic x\r\n").await;
    assert_401(&answer, "invalid authorization header");
}

#[tokio::test]
async fn an_empty_bearer_token_is_401_invalid_header() {
    let (server, _dir) = token_server().await;
    for value in ["Bearer", "Bearer ", "Bearer    ", ""] {
        let answer = upgrade_raw(&server.addr(), &format!("Authorization: {value}\r\n")).await;
        assert_401(&answer, "invalid authorization header");
    }
}

#[tokio::test]
async fn a_wrong_token_and_a_token_one_byte_off_are_401_invalid_token() {
    let (server, _dir) = token_server().await;
    let mut off_by_one = TOKEN.as_bytes().to_vec();
    *off_by_one.last_mut().unwrap() ^= 1;
    let off_by_one = String::from_utf8(off_by_one).unwrap();
    let longer = format!("{TOKEN}x");
    for token in ["wrong", &off_by_one, &TOKEN[..TOKEN.len() - 1], &longer] {
        let answer = bearer(&server.addr(), token).await;
        assert_401(&answer, "invalid websocket bearer token");
    }
}

#[tokio::test]
async fn the_right_token_connects_and_runs_a_command_and_the_scheme_is_case_insensitive() {
    let (server, _dir) = token_server().await;
    runs_a_command(server.url(), TOKEN).await;
    let answer = upgrade_raw(
        &server.addr(),
        &format!("Authorization: bearer {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(answer.status, 101, "{answer:?}");
    let answer = upgrade_raw(
        &server.addr(),
        &format!("authorization: BEARER {TOKEN}\r\n"),
    )
    .await;
    assert_eq!(answer.status, 101, "{answer:?}");
}

#[tokio::test]
async fn a_token_given_by_its_sha256_is_accepted() {
    let hex: String = sha2::Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    let server = Server::start(&["--ws-auth", "capability-token", "--ws-token-sha256", &hex]).await;
    runs_a_command(server.url(), TOKEN).await;
    assert_401(
        &bearer(&server.addr(), "nope").await,
        "invalid websocket bearer token",
    );
}

#[tokio::test]
async fn origin_with_a_valid_token_is_403() {
    let (server, _dir) = token_server().await;
    let answer = upgrade_raw(
        &server.addr(),
        &format!("Authorization: Bearer {TOKEN}\r\nOrigin: http://localhost\r\n"),
    )
    .await;
    assert_eq!(answer.status, 403, "{answer:?}");
}

#[tokio::test]
async fn readyz_needs_no_token() {
    let (server, _dir) = token_server().await;
    let answer = request_raw(
        &server.addr(),
        b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, "");
}

#[tokio::test]
async fn a_1_mib_header_is_431_and_the_server_serves_after() {
    let (server, _dir) = token_server().await;
    let addr = server.addr();
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let (mut rd, mut wr) = tcp.split();
    // The server answers after its head limit and closes: the rest of the write may fail.
    let write = async {
        let _ = wr.write_all(head.as_bytes()).await;
    };
    let (_, answer) = tokio::time::timeout(DEADLINE, async {
        tokio::join!(write, read_answer(&mut rd))
    })
    .await
    .expect("an answer in time");
    assert_eq!(answer.status, 431, "{answer:?}");
    runs_a_command(server.url(), TOKEN).await;
}

#[tokio::test]
async fn an_auth_failure_is_logged_with_the_peer_and_reason_and_never_the_token() {
    let dir = TestDir::new();
    let file = write(&dir, "token", TOKEN);
    let mut server =
        LoggedServer::start(&["--ws-auth", "capability-token", "--ws-token-file", &file]).await;
    let presented = "presented-but-wrong-token";
    let answer = bearer(&server.addr(), presented).await;
    assert_401(&answer, "invalid websocket bearer token");
    let line = server.wait_for_log("websocket authentication failed").await;
    assert!(line.contains("invalid_token"), "{line}");
    assert!(line.contains("127.0.0.1:"), "the peer: {line}");
    // A right token, then make sure no line of the log has either token in it.
    runs_a_command(&server.url, TOKEN).await;
    upgrade_raw(&server.addr(), "").await;
    server.wait_for_log("missing_token").await;
    for line in &server.seen {
        assert!(!line.contains(presented) && !line.contains(TOKEN), "{line}");
    }
}

// ---------------------------------------------------------------------------------------------
// Signed bearer token (HS256 JWT)

#[tokio::test]
async fn a_valid_jwt_connects_and_runs_a_command() {
    let (server, _dir) = jwt_server(&[]).await;
    runs_a_command(server.url(), &jwt(json!({"exp": now() + 60}))).await;
}

#[tokio::test]
async fn jwts_that_are_not_hs256_signed_with_the_secret_are_401_invalid_jwt() {
    let (server, _dir) = jwt_server(&[]).await;
    let claims = b64url(json!({"exp": now() + 60}).to_string().as_bytes());
    let none = format!("{}.{claims}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    let rs256 = format!(
        "{}.{claims}.{}",
        b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
        b64url(&[7u8; 256])
    );
    let bad_signature = jwt_with(
        "another-secret-of-more-than-32-bytes!!",
        json!({"exp": now() + 60}),
    );
    // One character of the signature changed (in the middle: the last one carries padding bits).
    let valid = jwt(json!({"exp": now() + 60}));
    let at = valid.rfind('.').unwrap() + 10;
    let swapped = if &valid[at..at + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &valid[..at], &valid[at + 1..]);
    let missing_exp = jwt(json!({"sub": "x"}));
    for (what, token) in [
        ("alg none", none.as_str()),
        ("RS256", &rs256),
        ("signed with another secret", &bad_signature),
        ("tampered signature", &tampered),
        ("no exp", &missing_exp),
        ("not a JWT", "garbage"),
    ] {
        let answer = bearer(&server.addr(), token).await;
        assert_eq!(answer.body, "invalid websocket jwt", "{what}: {answer:?}");
        assert_401(&answer, "invalid websocket jwt");
    }
}

#[tokio::test]
async fn jwt_times_are_checked_with_the_clock_skew() {
    let (server, _dir) = jwt_server(&["--ws-max-clock-skew-seconds", "30"]).await;
    let addr = server.addr();
    let expired = jwt(json!({"exp": now() - 120}));
    assert_401(&bearer(&addr, &expired).await, "expired websocket jwt");
    let not_yet = jwt(json!({"exp": now() + 600, "nbf": now() + 120}));
    assert_401(
        &bearer(&addr, &not_yet).await,
        "websocket jwt is not valid yet",
    );
    // Within the skew both ways: accepted.
    let just_expired = jwt(json!({"exp": now() - 10}));
    assert_eq!(bearer(&addr, &just_expired).await.status, 101);
    let almost_valid = jwt(json!({"exp": now() + 600, "nbf": now() + 10}));
    assert_eq!(bearer(&addr, &almost_valid).await.status, 101);
}

#[tokio::test]
async fn jwt_issuer_and_audience_must_match() {
    let (server, _dir) = jwt_server(&["--ws-issuer", "the-issuer", "--ws-audience", "exec"]).await;
    let addr = server.addr();
    let exp = now() + 60;
    let wrong_issuer = jwt(json!({"exp": exp, "iss": "someone", "aud": "exec"}));
    assert_401(
        &bearer(&addr, &wrong_issuer).await,
        "websocket jwt issuer mismatch",
    );
    let wrong_audience = jwt(json!({"exp": exp, "iss": "the-issuer", "aud": "other"}));
    assert_401(
        &bearer(&addr, &wrong_audience).await,
        "websocket jwt audience mismatch",
    );
    let wrong_audience_list = jwt(json!({"exp": exp, "iss": "the-issuer", "aud": ["a", "b"]}));
    assert_401(
        &bearer(&addr, &wrong_audience_list).await,
        "websocket jwt audience mismatch",
    );
    let good_list = jwt(json!({"exp": exp, "iss": "the-issuer", "aud": ["a", "exec"]}));
    assert_eq!(bearer(&addr, &good_list).await.status, 101);
    runs_a_command(
        server.url(),
        &jwt(json!({"exp": exp, "iss": "the-issuer", "aud": "exec"})),
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Start-up refusals (exit 1, the reference's texts)

#[tokio::test]
async fn a_shared_secret_of_31_bytes_is_refused() {
    let dir = TestDir::new();
    let file = write(&dir, "short", &format!("{}\n", "s".repeat(31)));
    refused(
        &[
            "--ws-auth",
            "signed-bearer-token",
            "--ws-shared-secret-file",
            &file,
        ],
        &format!("signed websocket bearer secret {file} must be at least 32 bytes"),
    )
    .await;
}

#[tokio::test]
async fn an_auth_flag_without_ws_auth_is_refused() {
    refused(
        &["--ws-token-file", "/nonexistent"],
        "websocket auth flags require `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
    )
    .await;
}

#[tokio::test]
async fn both_token_flags_are_refused() {
    refused(
        &[
            "--ws-auth",
            "capability-token",
            "--ws-token-file",
            "/x",
            "--ws-token-sha256",
            &"ab".repeat(32),
        ],
        "`--ws-token-file` and `--ws-token-sha256` are mutually exclusive",
    )
    .await;
}

#[tokio::test]
async fn a_capability_token_without_a_token_flag_is_refused() {
    refused(
        &["--ws-auth", "capability-token"],
        "`--ws-token-file` or `--ws-token-sha256` is required when `--ws-auth capability-token` is set",
    )
    .await;
}

#[tokio::test]
async fn a_bad_sha256_is_refused() {
    for bad in ["abc".to_string(), "zz".repeat(32), "ab".repeat(33)] {
        refused(
            &["--ws-auth", "capability-token", "--ws-token-sha256", &bad],
            "--ws-token-sha256 must be a 64-character hex SHA-256 digest",
        )
        .await;
    }
}

#[tokio::test]
async fn an_empty_or_missing_token_file_is_refused_naming_it() {
    let dir = TestDir::new();
    let empty = write(&dir, "empty", " \n");
    refused(
        &["--ws-auth", "capability-token", "--ws-token-file", &empty],
        &format!("websocket auth secret {empty} must not be empty"),
    )
    .await;
    // A relative path is taken from the working directory, and named absolute.
    let missing = dir.join("relative.txt");
    refused_in(
        Some(dir.path()),
        &[
            "--ws-auth",
            "capability-token",
            "--ws-token-file",
            "relative.txt",
        ],
        &format!(
            "failed to read websocket auth secret {}: No such file or directory",
            missing.display()
        ),
    )
    .await;
}

#[tokio::test]
async fn mixed_mode_flags_are_refused() {
    refused(
        &[
            "--ws-auth",
            "capability-token",
            "--ws-token-sha256",
            &"ab".repeat(32),
            "--ws-audience",
            "x",
        ],
        "`--ws-shared-secret-file`, `--ws-issuer`, `--ws-audience`, and `--ws-max-clock-skew-seconds` require `--ws-auth signed-bearer-token`",
    )
    .await;
    refused(
        &[
            "--ws-auth",
            "signed-bearer-token",
            "--ws-token-sha256",
            &"ab".repeat(32),
        ],
        "`--ws-token-file` and `--ws-token-sha256` require `--ws-auth capability-token`, not `signed-bearer-token`",
    )
    .await;
    refused(
        &["--ws-auth", "signed-bearer-token"],
        "`--ws-shared-secret-file` is required when `--ws-auth signed-bearer-token` is set",
    )
    .await;
}

#[tokio::test]
async fn ws_auth_with_stdio_is_refused() {
    refused(
        &[
            "--listen",
            "stdio",
            "--ws-auth",
            "capability-token",
            "--ws-token-sha256",
            &"ab".repeat(32),
        ],
        "WebSocket auth requires a WebSocket listener, not stdio",
    )
    .await;
}

/// Refused before binding: nothing is ever exposed.
#[tokio::test]
async fn a_non_loopback_listen_without_auth_is_refused() {
    refused(
        &["--listen", "ws://0.0.0.0:0"],
        "refusing to start non-loopback websocket listener 0.0.0.0:0 without auth; configure `--ws-auth capability-token` or `--ws-auth signed-bearer-token`",
    )
    .await;
    refused(
        &["--listen", "ws://[::]:0"],
        "refusing to start non-loopback websocket listener [::]:0 without auth",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Rotation

#[tokio::test]
async fn a_rotated_token_file_is_reloaded_on_sighup_without_touching_sessions() {
    let dir = TestDir::new();
    let file = write(&dir, "token", "old-token");
    let mut server =
        LoggedServer::start(&["--ws-auth", "capability-token", "--ws-token-file", &file]).await;
    // A session with a live process (cat echoes stdin) on a connection made with the old token.
    let mut client = Client::connect_with_headers(
        &server.url,
        ConnectOptions::default(),
        &[("authorization", "Bearer old-token")],
    )
    .await
    .unwrap();
    let session = client.initialize().await;
    let mut params = process_params("cat", &["cat"]);
    params["pipeStdin"] = json!(true);
    client.start_process(params).await;
    client.write_stdin("cat", b"before\n", "w1").await;
    client.wait_for_output("cat", "before\n").await;

    std::fs::write(&file, "new-token\n").unwrap();
    server.hangup();
    server
        .wait_for_log("reloaded the websocket auth credential")
        .await;
    assert_401(
        &bearer(&server.addr(), "old-token").await,
        "invalid websocket bearer token",
    );
    runs_a_command(&server.url, "new-token").await;
    // The connection and its session go on.
    client.write_stdin("cat", b"after\n", "w2").await;
    client.wait_for_output("cat", "after\n").await;
    assert!(!session.is_empty());

    // A reload that fails (an empty file) keeps the new token.
    std::fs::write(&file, "").unwrap();
    server.hangup();
    let warning = server.wait_for_log("websocket auth reload failed").await;
    assert!(warning.contains("must not be empty"), "{warning}");
    runs_a_command(&server.url, "new-token").await;
}

// ---------------------------------------------------------------------------------------------
// Brute force

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// 10,000 wrong-token upgrades over 32 concurrent connections; the right token then still
/// connects and runs a command. Prints (never asserts) the median time of a wrong-token and of a
/// right-token handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_wrong_token_upgrades_leave_the_right_token_working() {
    const ATTEMPTS: usize = 10_000;
    const CONCURRENCY: usize = 32;
    let (server, _dir) = token_server().await;
    let addr = server.addr();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..CONCURRENCY {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut refused = 0;
            for i in (worker..ATTEMPTS).step_by(CONCURRENCY) {
                let answer = bearer(&addr, &format!("wrong-{i}")).await;
                if answer.status == 401 && answer.body == "invalid websocket bearer token" {
                    refused += 1;
                }
            }
            refused
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("the attempts in time")
            .unwrap();
    }
    assert_eq!(refused, ATTEMPTS);
    let flood = started.elapsed();
    runs_a_command(server.url(), TOKEN).await;

    // Timing, one at a time: a wrong token of the right length, and the right one.
    let wrong = "x".repeat(TOKEN.len());
    let (mut wrong_times, mut right_times) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let t = Instant::now();
        assert_eq!(bearer(&addr, &wrong).await.status, 401);
        wrong_times.push(t.elapsed());
        let t = Instant::now();
        assert_eq!(bearer(&addr, TOKEN).await.status, 101);
        right_times.push(t.elapsed());
    }
    println!(
        "{ATTEMPTS} wrong-token upgrades over {CONCURRENCY} connections in {flood:?}; \
         median handshake: wrong token {:?}, right token {:?} (200 each)",
        median(wrong_times),
        median(right_times)
    );
}

#[tokio::test]
async fn a_rotated_shared_secret_is_reloaded_on_sighup() {
    let dir = TestDir::new();
    let file = write(&dir, "secret", SECRET);
    let mut server = LoggedServer::start(&[
        "--ws-auth",
        "signed-bearer-token",
        "--ws-shared-secret-file",
        &file,
    ])
    .await;
    let new_secret = "a-new-secret-that-is-also-32-bytes-or-more";
    let old_jwt = jwt(json!({"exp": now() + 60}));
    let new_jwt = jwt_with(new_secret, json!({"exp": now() + 60}));
    assert_eq!(bearer(&server.addr(), &old_jwt).await.status, 101);
    std::fs::write(&file, new_secret).unwrap();
    server.hangup();
    server
        .wait_for_log("reloaded the websocket auth credential")
        .await;
    assert_401(
        &bearer(&server.addr(), &old_jwt).await,
        "invalid websocket jwt",
    );
    runs_a_command(&server.url, &new_jwt).await;
    // A secret that became too short is not taken.
    std::fs::write(&file, "short").unwrap();
    server.hangup();
    let warning = server.wait_for_log("websocket auth reload failed").await;
    assert!(warning.contains("must be at least 32 bytes"), "{warning}");
    runs_a_command(&server.url, &new_jwt).await;
}

/// With `--ws-token-sha256` there is nothing to re-read, but SIGHUP must not end the server.
#[tokio::test]
async fn sighup_with_a_token_digest_keeps_serving() {
    let hex: String = sha2::Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut server =
        LoggedServer::start(&["--ws-auth", "capability-token", "--ws-token-sha256", &hex]).await;
    server.hangup();
    server.wait_for_log("no file to reload").await;
    runs_a_command(&server.url, TOKEN).await;
}

//! The client side of authentication and TLS: `codex remote` (the real binary) and the client
//! library send `Authorization: Bearer` from a file, a variable or `environments.toml`, over
//! `wss://` with `--ca-file`, again on every resume; a refused token is a clear, final error that
//! never shows the token; a token is never sent in clear text to another machine; the connection
//! flags work before or after the subcommand.
//!
//! The server side is a real `codex exec-server` behind a small gate in this file that checks the
//! upgrade's `Authorization` as the reference server does (401, `text/plain`, the reference's
//! bodies), records every header it saw, can terminate TLS, and can cut every connection.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use codex::client::{
    BearerToken, ClientError, ClientOptions, ConnectionStatus, ExecServerClient, ProcessEvent,
    ProcessHandle, start_params,
};
use codex::protocol::process::WriteStatus;
use common::{DEADLINE, Server, TestDir, file_uri};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio_rustls::rustls;

const TOKEN: &str = "s3cret-Token_0123456789";

// ---------------------------------------------------------------------------------------------
// The gate: an authenticating front for a real exec-server.

/// What the gate lets through and what it saw.
struct GateState {
    /// The token it accepts now.
    expected: String,
    /// The `Authorization` header of every upgrade, in order (`None`: there was none).
    seen: Vec<Option<String>>,
    /// The connections it forwards, to cut them.
    live: Vec<tokio::task::AbortHandle>,
}

/// Listens on 127.0.0.1:0; checks each upgrade's bearer token; forwards good ones to the server.
struct Gate {
    url: String,
    state: Arc<Mutex<GateState>>,
    /// Upgrades seen so far.
    upgrades: Arc<tokio::sync::watch::Sender<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    async fn start(server: &Server, tls: Option<Arc<rustls::ServerConfig>>) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let scheme = if tls.is_some() { "wss" } else { "ws" };
        let url = format!("{scheme}://{}", listener.local_addr().unwrap());
        let upstream = server.addr();
        let state = Arc::new(Mutex::new(GateState {
            expected: TOKEN.into(),
            seen: Vec::new(),
            live: Vec::new(),
        }));
        let upgrades = Arc::new(tokio::sync::watch::Sender::new(0));
        let task = {
            let (state, upgrades) = (state.clone(), upgrades.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        break;
                    };
                    let (state2, upstream, tls) = (state.clone(), upstream.clone(), tls.clone());
                    let upgrades = upgrades.clone();
                    let conn = tokio::spawn(async move {
                        match tls {
                            None => serve(tcp, &upstream, &state2, &upgrades).await,
                            Some(config) => {
                                let acceptor = tokio_rustls::TlsAcceptor::from(config);
                                if let Ok(stream) = acceptor.accept(tcp).await {
                                    serve(stream, &upstream, &state2, &upgrades).await;
                                }
                            }
                        }
                    });
                    state.lock().unwrap().live.push(conn.abort_handle());
                }
            })
        };
        Gate {
            url,
            state,
            upgrades,
            task,
        }
    }

    /// Waits until `n` upgrades have been seen.
    async fn wait_upgrades(&self, n: usize) {
        let mut seen = self.upgrades.subscribe();
        tokio::time::timeout(DEADLINE, seen.wait_for(|&c| c >= n))
            .await
            .expect("upgrades in time")
            .unwrap();
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn seen(&self) -> Vec<Option<String>> {
        self.state.lock().unwrap().seen.clone()
    }

    fn accept_only(&self, token: &str) {
        self.state.lock().unwrap().expected = token.into();
    }

    /// Drops every connection it forwards (both sockets close).
    fn cut_all(&self) {
        for conn in self.state.lock().unwrap().live.drain(..) {
            conn.abort();
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

/// One connection: the request head, the check, then the bytes both ways.
async fn serve<S>(
    mut client: S,
    upstream: &str,
    state: &Mutex<GateState>,
    upgrades: &tokio::sync::watch::Sender<usize>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let authorization = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, value)| value.trim().to_string());
    let refusal = {
        let mut state = state.lock().unwrap();
        state.seen.push(authorization.clone());
        match authorization.as_deref() {
            None => Some("missing websocket bearer token"),
            Some(value) => match value.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() =>
                {
                    (token != state.expected).then_some("invalid websocket bearer token")
                }
                _ => Some("invalid authorization header"),
            },
        }
    };
    upgrades.send_modify(|n| *n += 1);
    if let Some(body) = refusal {
        let answer = format!(
            "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
        let _ = client.shutdown().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    if server.write_all(&head).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it, written to a
/// directory, plus the gate's TLS configuration with them.
struct Pki {
    server_config: Arc<rustls::ServerConfig>,
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn certificates(dir: &TestDir) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "codex remote_auth test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &*ca)
        .unwrap();
    let (ca_file, cert_file, key_file) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_file, ca.pem()).unwrap();
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    Pki {
        server_config: Arc::new(config),
        ca_file,
        cert_file,
        key_file,
    }
}

/// A real server that requires [`TOKEN`] (`--ws-auth capability-token --ws-token-file`), with
/// `extra` flags.
async fn token_server(dir: &TestDir, extra: &[&str]) -> Server {
    let file = dir.join("server-token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let mut flags = vec![
        "--ws-auth",
        "capability-token",
        "--ws-token-file",
        file.to_str().unwrap(),
    ];
    flags.extend_from_slice(extra);
    Server::start(&flags).await
}

// ---------------------------------------------------------------------------------------------
// `codex remote`.

/// `codex remote ARGS...` with a private CODEX_HOME and no CODEX_EXEC_SERVER_URL.
fn remote(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_codex"));
    cmd.arg("remote")
        .args(args)
        .env_remove("CODEX_EXEC_SERVER_URL")
        .env("CODEX_HOME", home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

async fn run(mut cmd: Command) -> Output {
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .expect("codex remote did not finish in time")
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts a successful `echo` run.
fn assert_echoed(out: &Output, what: &str) {
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        (what, Some(0)),
        "stderr: {}",
        text(&out.stderr)
    );
}

fn token_file(dir: &TestDir, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[tokio::test]
async fn remote_exec_sends_the_token_from_a_file() {
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let home = TestDir::new();
    let file = token_file(&home, TOKEN);
    let out = run(remote(
        home.path(),
        &[
            "--url",
            gate.url(),
            "--token-file",
            file.to_str().unwrap(),
            "exec",
            "--",
            "echo",
            "hi",
        ],
    ))
    .await;
    assert_echoed(&out, "hi\n");
    assert_eq!(gate.seen(), vec![Some(format!("Bearer {TOKEN}"))]);
}

#[tokio::test]
async fn remote_exec_sends_the_token_from_an_environment_variable_with_flags_after_the_subcommand()
{
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let home = TestDir::new();
    let mut cmd = remote(
        home.path(),
        &[
            "exec",
            "--url",
            gate.url(),
            "--token-env",
            "MY_EXEC_TOKEN",
            "--",
            "echo",
            "hi",
        ],
    );
    cmd.env("MY_EXEC_TOKEN", TOKEN);
    assert_echoed(&run(cmd).await, "hi\n");
    assert_eq!(gate.seen(), vec![Some(format!("Bearer {TOKEN}"))]);
}

#[tokio::test]
async fn remote_exec_takes_the_url_and_token_from_environments_toml() {
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let home = TestDir::new();
    std::fs::write(
        home.join("environments.toml"),
        format!(
            "[[environments]]\nid = \"other\"\nurl = \"ws://127.0.0.1:9\"\n\n\
             [[environments]]\nid = \"gated\"\nurl = \"{}\"\nauth_bearer_token = \"{TOKEN}\"\n\
             connect_timeout_sec = 5\ninitialize_timeout_sec = 5\n",
            gate.url()
        ),
    )
    .unwrap();
    let out = run(remote(
        home.path(),
        &["exec", "--env", "gated", "--", "echo", "hi"],
    ))
    .await;
    assert_echoed(&out, "hi\n");
    // Before the subcommand too, and a token flag overrides the file's.
    let wrong = token_file(&home, "not-the-token");
    let out = run(remote(
        home.path(),
        &[
            "--env",
            "gated",
            "--token-file",
            wrong.to_str().unwrap(),
            "info",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        gate.seen(),
        vec![
            Some(format!("Bearer {TOKEN}")),
            Some("Bearer not-the-token".to_string())
        ]
    );
}

#[tokio::test]
async fn remote_env_runs_a_program_entry_over_its_stdio() {
    let home = TestDir::new();
    std::fs::write(
        home.join("environments.toml"),
        format!(
            "[[environments]]\nid = \"local-stdio\"\nprogram = \"{}\"\n\
             args = [\"exec-server\", \"--listen\", \"stdio\"]\nenv = {{ GREETING = \"from-env\" }}\n",
            env!("CARGO_BIN_EXE_codex")
        ),
    )
    .unwrap();
    let out = run(remote(
        home.path(),
        &[
            "--env",
            "local-stdio",
            "exec",
            "--",
            "sh",
            "-c",
            "echo $GREETING",
        ],
    ))
    .await;
    assert_echoed(&out, "from-env\n");
}

#[tokio::test]
async fn a_wrong_token_is_a_clear_error_exit_255_for_exec_and_1_for_the_others_never_printing_it() {
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let home = TestDir::new();
    let wrong = "wrong-Token-9876543210";
    let file = token_file(&home, wrong);
    let file = file.to_str().unwrap();
    for (args, code) in [
        (vec!["exec", "--", "echo", "hi"], 255),
        (vec!["info"], 1),
        (vec!["ls", "/"], 1),
    ] {
        let mut all = vec!["--url", gate.url(), "--token-file", file];
        all.extend(args.iter());
        let out = run(remote(home.path(), &all)).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains("refused the connection (HTTP 401"),
            "{stderr}"
        );
        assert!(
            stderr.contains("invalid websocket bearer token"),
            "{stderr}"
        );
        assert!(stderr.contains("the bearer token was refused"), "{stderr}");
        assert!(
            !stderr.contains(wrong) && !text(&out.stdout).contains(wrong),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    }
}

#[tokio::test]
async fn a_server_that_requires_a_token_says_so_when_none_is_given() {
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let home = TestDir::new();
    let out = run(remote(
        home.path(),
        &["--url", gate.url(), "exec", "--", "true"],
    ))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("missing websocket bearer token"),
        "{stderr}"
    );
    assert!(
        stderr.contains("requires a bearer token and none was given"),
        "{stderr}"
    );
    assert_eq!(gate.seen(), vec![None]);
}

#[tokio::test]
async fn a_token_over_plain_ws_to_another_machine_is_refused_before_connecting() {
    let home = TestDir::new();
    let file = token_file(&home, TOKEN);
    // 192.0.2.1 is TEST-NET-1: nothing answers there, so a connection attempt would time out
    // (10 s) with a different error rather than be refused.
    let started = std::time::Instant::now();
    let out = run(remote(
        home.path(),
        &[
            "exec",
            "--url",
            "ws://192.0.2.1:9",
            "--token-file",
            file.to_str().unwrap(),
            "--",
            "true",
        ],
    ))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("exec-server WebSocket headers require wss:// or a loopback destination"),
        "{stderr}"
    );
    assert!(!stderr.contains(TOKEN), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connection_flags_are_accepted_after_the_subcommand() {
    let server = Server::start(&[]).await;
    let home = TestDir::new();
    let out = run(remote(
        home.path(),
        &["exec", "--url", server.url(), "--", "echo", "after"],
    ))
    .await;
    assert_echoed(&out, "after\n");
    let out = run(remote(home.path(), &["info", "--url", server.url()])).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("\"cwd\""),
        "{}",
        text(&out.stdout)
    );
    // `-e K=V` still sets the command's variable; its long form is `--set-env`.
    let out = run(remote(
        home.path(),
        &[
            "exec",
            "--url",
            server.url(),
            "-e",
            "A=1",
            "--set-env",
            "B=2",
            "--",
            "sh",
            "-c",
            "echo $A$B",
        ],
    ))
    .await;
    assert_echoed(&out, "12\n");
}

#[tokio::test]
async fn without_url_or_env_the_error_names_both() {
    let home = TestDir::new();
    for (args, code) in [(vec!["info"], 1), (vec!["exec", "--", "true"], 255)] {
        let out = run(remote(home.path(), &args)).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{stderr}");
        assert!(
            stderr.contains("--url") && stderr.contains("--env"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn bad_connection_flags_are_errors_naming_the_flag_or_file() {
    let home = TestDir::new();
    let missing = home.join("no-such-token");
    let empty = token_file(&home, "  ");
    let huge = home.join("huge-token");
    std::fs::write(&huge, "x".repeat(1 << 20)).unwrap();
    std::fs::write(
        home.join("environments.toml"),
        "[[environments]]\nid = \"box\"\nprogram = \"p\"\nauth_bearer_token = \"x\"\n",
    )
    .unwrap();
    let url = "ws://127.0.0.1:9";
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--url", url, "--token-file", missing.to_str().unwrap()],
            "--token-file",
        ),
        (
            vec!["--url", url, "--token-file", empty.to_str().unwrap()],
            "the bearer token is empty",
        ),
        (
            vec!["--url", url, "--token-file", huge.to_str().unwrap()],
            "the bearer token is longer than 16384 bytes",
        ),
        (
            vec!["--url", url, "--token-file", "/dev/zero"],
            "--token-file /dev/zero",
        ),
        (
            vec!["--url", url, "--token-env", "CODEX_TEST_UNSET_VAR"],
            "--token-env CODEX_TEST_UNSET_VAR: the variable is not set",
        ),
        (
            vec!["--env", "box"],
            "environment `box` auth_bearer_token requires url",
        ),
        (vec!["--env", "box"], "environments.toml"),
        (
            vec!["--url", url, "--ca-file", "/nonexistent.pem"],
            "not a wss:// URL",
        ),
        (
            vec![
                "--url",
                "wss://127.0.0.1:9",
                "--ca-file",
                "/nonexistent.pem",
            ],
            "CA file /nonexistent.pem",
        ),
        (
            vec!["--url", "http://127.0.0.1:9"],
            "must start with ws:// or wss://",
        ),
    ];
    for (args, want) in cases {
        let mut all = args.clone();
        all.push("info");
        let out = run(remote(home.path(), &all)).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: want {want:?} in {stderr}");
    }
    // `--env K=V` (the old long form of `exec -e`) says what to use instead.
    let out = run(remote(
        home.path(),
        &["exec", "--env", "FOO=bar", "--", "true"],
    ))
    .await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("--set-env K=V"), "{stderr}");
    // An empty --token-env variable.
    let mut cmd = remote(
        home.path(),
        &["--url", url, "--token-env", "MY_EMPTY_TOKEN", "info"],
    );
    cmd.env("MY_EMPTY_TOKEN", "");
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--token-env MY_EMPTY_TOKEN: the bearer token is empty"),
        "{stderr}"
    );
    // A file the Codex CLI would refuse; an id that is not there; both name the file.
    std::fs::write(
        home.join("environments.toml"),
        "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\ncolour = 1\n",
    )
    .unwrap();
    let out = run(remote(home.path(), &["--env", "a", "info"])).await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("environments.toml") && stderr.contains("unknown field `colour`"),
        "{stderr}"
    );
    std::fs::write(
        home.join("environments.toml"),
        "[[environments]]\nid = \"a\"\nurl = \"ws://h\"\n",
    )
    .unwrap();
    let out = run(remote(home.path(), &["--env", "b", "info"])).await;
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no environment `b` (there are: `a`)"),
        "{stderr}"
    );
    // --url and --env together, and both token sources: refused by the parser (exit 2).
    for args in [
        vec!["--url", url, "--env", "a", "info"],
        vec![
            "--url",
            url,
            "--token-file",
            "f",
            "--token-env",
            "V",
            "info",
        ],
    ] {
        let out = run(remote(home.path(), &args)).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains("cannot be used with"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[tokio::test]
async fn wss_with_a_ca_file_reaches_a_tls_server_and_without_it_the_certificate_is_refused() {
    let server = Server::start(&[]).await;
    let dir = TestDir::new();
    let pki = certificates(&dir);
    let (tls, ca_file) = (pki.server_config.clone(), pki.ca_file.clone());
    let gate = Gate::start(&server, Some(tls)).await;
    let file = token_file(&dir, TOKEN);
    let (file, ca) = (file.to_str().unwrap(), ca_file.to_str().unwrap());
    let out = run(remote(
        dir.path(),
        &[
            "exec",
            "--url",
            gate.url(),
            "--ca-file",
            ca,
            "--token-file",
            file,
            "--",
            "echo",
            "tls",
        ],
    ))
    .await;
    assert_echoed(&out, "tls\n");
    // localhost is in the certificate too.
    let by_name = gate.url().replace("127.0.0.1", "localhost");
    let out = run(remote(
        dir.path(),
        &[
            "exec",
            "--url",
            &by_name,
            "--ca-file",
            ca,
            "--token-file",
            file,
            "--",
            "echo",
            "name",
        ],
    ))
    .await;
    assert_echoed(&out, "name\n");
    assert_eq!(gate.seen(), vec![Some(format!("Bearer {TOKEN}")); 2]);
    // The system's store is used too: with SSL_CERT_FILE naming our CA, no --ca-file is needed.
    let mut cmd = remote(
        dir.path(),
        &[
            "exec",
            "--url",
            gate.url(),
            "--token-file",
            file,
            "--",
            "echo",
            "system",
        ],
    );
    cmd.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    assert_echoed(&run(cmd).await, "system\n");
    assert_eq!(gate.seen().len(), 3);
    // Trusting only another CA, the server's certificate is refused, and nothing reaches the
    // gate's HTTP side (no token is sent).
    let other_dir = TestDir::new();
    let other_ca = certificates(&other_dir).ca_file;
    let mut cmd = remote(
        dir.path(),
        &[
            "exec",
            "--url",
            gate.url(),
            "--token-file",
            file,
            "--",
            "echo",
            "tls",
        ],
    );
    cmd.env("SSL_CERT_FILE", &other_ca)
        .env_remove("SSL_CERT_DIR");
    let out = run(cmd).await;
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(stderr.contains("TLS handshake failed"), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert_eq!(gate.seen().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// The library across a resume.

fn token_options() -> ClientOptions {
    ClientOptions {
        bearer_token: Some(BearerToken::new(TOKEN).unwrap()),
        retry_interval: Duration::from_millis(20),
        ..ClientOptions::default()
    }
}

/// Waits until the client's status satisfies `pred`.
async fn wait_status(
    client: &ExecServerClient,
    pred: impl Fn(&ConnectionStatus) -> bool,
) -> ConnectionStatus {
    let mut status = client.watch_status();
    tokio::time::timeout(DEADLINE, status.wait_for(|s| pred(s)))
        .await
        .expect("status in time")
        .expect("status channel")
        .clone()
}

/// Starts `p1`, `sh -c "read line; echo got:$line"` with stdin piped, in `cwd`.
async fn start_line_echo(client: &ExecServerClient, cwd: &Path) -> ProcessHandle {
    let mut params = start_params(
        "p1",
        ["sh", "-c", "read line; echo got:$line"],
        file_uri(cwd),
    );
    params.pipe_stdin = true;
    client.start(params).await.unwrap()
}

/// Reads a process's events until its close (each under the deadline): all its output and its
/// exit code.
async fn read_to_close(handle: &mut ProcessHandle) -> (Vec<u8>, Option<i32>) {
    let mut output = Vec::new();
    let mut exit = None;
    while let Some(event) = tokio::time::timeout(DEADLINE, handle.recv())
        .await
        .expect("events")
    {
        match event.unwrap() {
            ProcessEvent::Output { data, .. } => output.extend(data),
            ProcessEvent::Exited { exit_code, .. } => exit = Some(exit_code),
            ProcessEvent::Closed { .. } => break,
        }
    }
    (output, exit)
}

#[tokio::test]
async fn a_resume_after_a_dropped_connection_carries_the_token_again() {
    // The real server requires the token; the gate in front records it and cuts the connection.
    let dir = TestDir::new();
    let server = token_server(&dir, &[]).await;
    let gate = Gate::start(&server, None).await;
    let client = ExecServerClient::connect(gate.url(), token_options())
        .await
        .unwrap();
    let mut handle = start_line_echo(&client, dir.path()).await;

    gate.cut_all();
    // The client comes back (only after it saw the drop), and the server let it in.
    gate.wait_upgrades(2).await;
    // The session resumed (the process lives on): stdin reaches it, its output comes back.
    assert_eq!(
        handle.control().write(b"after-cut\n").await.unwrap(),
        WriteStatus::Accepted
    );
    let (output, exit) = read_to_close(&mut handle).await;
    assert_eq!((text(&output).as_str(), exit), ("got:after-cut\n", Some(0)));
    assert_eq!(client.stats().recoveries, 1);
    let seen = gate.seen();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|h| *h == Some(format!("Bearer {TOKEN}"))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn a_token_refused_during_a_resume_ends_the_session_at_once() {
    let server = Server::start(&[]).await;
    let gate = Gate::start(&server, None).await;
    let dir = TestDir::new();
    // A deadline far longer than the test's: giving up must come from the 401, not from time.
    let options = ClientOptions {
        recovery_deadline: Duration::from_secs(600),
        ..token_options()
    };
    let client = ExecServerClient::connect(gate.url(), options)
        .await
        .unwrap();
    let params = start_params("p1", ["sleep", "30"], file_uri(dir.path()));
    let mut handle = client.start(params).await.unwrap();

    gate.accept_only("rotated-token");
    gate.cut_all();
    let status = wait_status(&client, |s| matches!(s, ConnectionStatus::Failed { .. })).await;
    let ConnectionStatus::Failed { error } = status else {
        unreachable!()
    };
    assert!(
        matches!(&error, ClientError::Unauthorized { token_sent: true, body, .. } if body == "invalid websocket bearer token"),
        "{error:?}"
    );
    assert!(!error.to_string().contains(TOKEN), "{error}");
    // One refused attempt, not a retry loop.
    assert_eq!(gate.seen().len(), 2, "{:?}", gate.seen());
    let event = tokio::time::timeout(DEADLINE, handle.recv())
        .await
        .expect("the handle fails");
    assert!(
        matches!(event, Some(Err(ClientError::Unauthorized { .. }))),
        "{event:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Against the real server's own `--ws-auth` and `--tls-cert` (no gate).

#[tokio::test]
async fn the_real_token_server_takes_the_token_from_a_file_a_variable_and_environments_toml() {
    let home = TestDir::new();
    let server = token_server(&home, &[]).await;
    let file = token_file(&home, TOKEN);
    // With every log on, the token still appears nowhere.
    let mut cmd = remote(
        home.path(),
        &[
            "exec",
            "--url",
            server.url(),
            "--token-file",
            file.to_str().unwrap(),
            "--",
            "echo",
            "file",
        ],
    );
    cmd.env("RUST_LOG", "trace,tungstenite=trace");
    let out = run(cmd).await;
    assert_echoed(&out, "file\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("TRACE"), "no trace log at all: {stderr}");
    assert!(!stderr.contains(TOKEN), "the token is in the log: {stderr}");
    let mut cmd = remote(
        home.path(),
        &[
            "--token-env",
            "MY_EXEC_TOKEN",
            "exec",
            "--url",
            server.url(),
            "--",
            "echo",
            "var",
        ],
    );
    cmd.env("MY_EXEC_TOKEN", TOKEN);
    assert_echoed(&run(cmd).await, "var\n");
    std::fs::write(
        home.join("environments.toml"),
        format!(
            "[[environments]]\nid = \"real\"\nurl = \"{}\"\nauth_bearer_token = \"{TOKEN}\"\n",
            server.url()
        ),
    )
    .unwrap();
    let out = run(remote(
        home.path(),
        &["exec", "--env", "real", "--", "echo", "toml"],
    ))
    .await;
    assert_echoed(&out, "toml\n");
}

#[tokio::test]
async fn the_real_token_server_refuses_a_wrong_or_missing_token_clearly() {
    let home = TestDir::new();
    let server = token_server(&home, &[]).await;
    let wrong = "wrong-Token-9876543210";
    let file = token_file(&home, wrong);
    for (args, code, body) in [
        (
            vec!["--token-file", file.to_str().unwrap(), "exec", "--", "true"],
            255,
            "invalid websocket bearer token",
        ),
        (
            vec!["--token-file", file.to_str().unwrap(), "stat", "/"],
            1,
            "invalid websocket bearer token",
        ),
        (
            vec!["exec", "--", "true"],
            255,
            "missing websocket bearer token",
        ),
    ] {
        let mut all = vec!["--url", server.url()];
        all.extend(args.iter());
        let out = run(remote(home.path(), &all)).await;
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(
            stderr.contains("HTTP 401") && stderr.contains(body),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains(wrong) && !stderr.contains(TOKEN),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn the_real_tls_server_is_reached_over_wss_with_the_ca_file_and_the_token() {
    let dir = TestDir::new();
    let pki = certificates(&dir);
    let (cert, key) = (
        pki.cert_file.to_str().unwrap(),
        pki.key_file.to_str().unwrap(),
    );
    let server = token_server(&dir, &["--tls-cert", cert, "--tls-key", key]).await;
    assert!(server.url().starts_with("wss://"), "{}", server.url());
    let mut cmd = remote(
        dir.path(),
        &[
            "exec",
            "--url",
            server.url(),
            "--ca-file",
            pki.ca_file.to_str().unwrap(),
            "--token-env",
            "MY_EXEC_TOKEN",
            "--",
            "echo",
            "wss",
        ],
    );
    cmd.env("MY_EXEC_TOKEN", TOKEN);
    assert_echoed(&run(cmd).await, "wss\n");
    // The library across a resume over wss://: a relay below TLS cuts the connection; the
    // resume must bring the token again, or the server would refuse it.
    let relay = Relay::start(&server.addr()).await;
    let options = ClientOptions {
        ca_file: Some(pki.ca_file.clone()),
        ..token_options()
    };
    let client = ExecServerClient::connect(&format!("wss://{}", relay.addr), options)
        .await
        .unwrap();
    let mut handle = start_line_echo(&client, dir.path()).await;
    relay.cut_all();
    relay.wait_connections(2).await;
    assert_eq!(
        handle.control().write(b"tls\n").await.unwrap(),
        WriteStatus::Accepted
    );
    let (output, _) = read_to_close(&mut handle).await;
    assert_eq!(text(&output), "got:tls\n");
    assert_eq!(client.stats().recoveries, 1);
    assert!(relay.connections() >= 2);
}

/// Forwards bytes to the server as they are (TLS included) and can cut every connection.
struct Relay {
    addr: String,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    count: Arc<tokio::sync::watch::Sender<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: &str) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let live = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(tokio::sync::watch::Sender::new(0));
        let upstream = upstream.to_string();
        let task = {
            let (live, count) = (live.clone(), count.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    count.send_modify(|n| *n += 1);
                    let upstream = upstream.clone();
                    let conn = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    live.lock().unwrap().push(conn.abort_handle());
                }
            })
        };
        Relay {
            addr,
            live,
            count,
            task,
        }
    }

    fn cut_all(&self) {
        for conn in self.live.lock().unwrap().drain(..) {
            conn.abort();
        }
    }

    fn connections(&self) -> usize {
        *self.count.borrow()
    }

    /// Waits until `n` connections have come in.
    async fn wait_connections(&self, n: usize) {
        let mut seen = self.count.subscribe();
        tokio::time::timeout(DEADLINE, seen.wait_for(|&c| c >= n))
            .await
            .expect("connections in time")
            .unwrap();
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut_all();
    }
}

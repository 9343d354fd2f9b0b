//! TLS at the door (`--tls-cert`, `--tls-key`), through the real binary on loopback, with
//! certificates made in the test (rcgen): a client trusting the CA runs a process over `wss://`;
//! one trusting another CA fails the handshake; plain `ws://` to the TLS port fails and the server
//! goes on; `/readyz` and the token check work over TLS; SIGHUP serves a new certificate (and a
//! bad new pair keeps the old one).

mod common;

use std::process::Stdio;
use std::sync::Arc;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A CA and a leaf certificate for 127.0.0.1 signed by it, as PEM and DER.
struct Pki {
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
    leaf_pem: String,
    key_pem: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    Pki {
        ca_der: ca.der().clone(),
        leaf_der: leaf.der().clone(),
        leaf_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    }
}

/// Writes the pair into `dir` as `cert.pem` and `key.pem`; returns their paths.
fn install(dir: &TestDir, pki: &Pki) -> (String, String) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &pki.leaf_pem).unwrap();
    std::fs::write(&key, &pki.key_pem).unwrap();
    (cert.to_str().unwrap().into(), key.to_str().unwrap().into())
}

fn connector(ca: &CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr`, trusting `ca`.
async fn tls_connect(
    addr: &str,
    ca: &CertificateDer<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    tokio::time::timeout(DEADLINE, connector(ca).connect(name, tcp))
        .await
        .expect("the TLS handshake in time")
}

/// The certificate the server presented.
fn served(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// Over an established TLS stream: the WebSocket handshake (with `authorization`, if any).
async fn wss(
    url: &str,
    tls: TlsStream<TcpStream>,
    authorization: Option<&str>,
) -> Result<WebSocketStream<TlsStream<TcpStream>>, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = url.into_client_request().unwrap();
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(request, tls))
        .await
        .expect("the WebSocket handshake in time")
        .map(|(ws, _)| ws)
}

/// The next JSON message (text frame), skipping pings.
async fn next_json(ws: &mut WebSocketStream<TlsStream<TcpStream>>) -> Value {
    loop {
        let frame = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("a message in time")
            .expect("the connection is open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Initializes and runs `echo` over the WebSocket; checks its output.
async fn run_echo(ws: &mut WebSocketStream<TlsStream<TcpStream>>) {
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(
        json!({"id": 1, "method": "initialize", "params": {"clientName": "tls-test"}}),
    ))
    .await
    .unwrap();
    let answer = next_json(ws).await;
    assert!(answer["result"]["sessionId"].is_string(), "{answer}");
    ws.send(send(json!({"method": "initialized", "params": {}})))
        .await
        .unwrap();
    ws.send(send(json!({"id": 2, "method": "process/start",
        "params": process_params("p1", &["echo", "over tls"])})))
        .await
        .unwrap();
    let mut output = Vec::new();
    loop {
        let message = next_json(ws).await;
        match message["method"].as_str() {
            Some("process/output") => {
                output.extend(unb64(message["params"]["chunk"].as_str().unwrap()))
            }
            Some("process/closed") => break,
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&output), "over tls\n");
}

/// A TLS server (`--tls-cert cert --tls-key key` and `extra`, `RUST_LOG=info`) whose stderr is
/// read line by line (for the reload's log lines). Killed on drop.
async fn tls_server(cert: &str, key: &str, extra: &[&str]) -> LoggedServer {
    let mut flags = vec!["--tls-cert", cert, "--tls-key", key];
    flags.extend_from_slice(extra);
    let server = LoggedServer::start(&flags).await;
    assert!(server.url.starts_with("wss://127.0.0.1:"), "{}", server.url);
    server
}

#[tokio::test]
async fn a_client_trusting_the_ca_runs_a_process_over_wss() {
    let dir = TestDir::new();
    let pki = pki();
    let (cert, key) = install(&dir, &pki);
    let server = tls_server(&cert, &key, &[]).await;
    let tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    assert_eq!(served(&tls), pki.leaf_der);
    let mut ws = wss(&server.url, tls, None).await.unwrap();
    run_echo(&mut ws).await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_the_handshake() {
    let dir = TestDir::new();
    let pki = pki();
    let (cert, key) = install(&dir, &pki);
    let mut server = tls_server(&cert, &key, &[]).await;
    let other = self::pki();
    let err = tls_connect(&server.addr(), &other.ca_der)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    server.assert_running();
    let tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    run_echo(&mut wss(&server.url, tls, None).await.unwrap()).await;
}

#[tokio::test]
async fn plain_ws_to_the_tls_port_fails_and_the_server_goes_on() {
    let dir = TestDir::new();
    let pki = pki();
    let (cert, key) = install(&dir, &pki);
    let mut server = tls_server(&cert, &key, &[]).await;
    let plain_url = format!("ws://{}", server.addr());
    let result = Client::connect(&plain_url, ConnectOptions::default()).await;
    assert!(result.is_err(), "a plain WebSocket must not get through");
    // Raw HTTP too: no HTTP answer, the connection just ends.
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut got);
    let _ = tokio::time::timeout(DEADLINE, read)
        .await
        .expect("closed in time");
    assert!(!got.starts_with(b"HTTP/1.1 200"), "{got:?}");
    server.assert_running();
    let tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    run_echo(&mut wss(&server.url, tls, None).await.unwrap()).await;
}

#[tokio::test]
async fn readyz_and_the_token_check_work_over_tls() {
    let dir = TestDir::new();
    let pki = pki();
    let (cert, key) = install(&dir, &pki);
    let token = dir.join("token");
    std::fs::write(&token, "tls-token").unwrap();
    let server = tls_server(
        &cert,
        &key,
        &[
            "--ws-auth",
            "capability-token",
            "--ws-token-file",
            token.to_str().unwrap(),
        ],
    )
    .await;
    // /readyz, no token.
    let mut tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    tls.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        DEADLINE,
        tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut got),
    )
    .await
    .expect("answered in time");
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // An upgrade without the token: 401 with the reference's body.
    let tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    match wss(&server.url, tls, None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert_eq!(
                response.body().as_deref(),
                Some(&b"missing websocket bearer token"[..])
            );
        }
        other => panic!("expected a 401, got {:?}", other.map(|_| ())),
    }
    let tls = tls_connect(&server.addr(), &pki.ca_der).await.unwrap();
    let mut ws = wss(&server.url, tls, Some("Bearer tls-token"))
        .await
        .unwrap();
    run_echo(&mut ws).await;
}

#[tokio::test]
async fn sighup_serves_the_new_certificate_and_a_bad_pair_keeps_the_old() {
    let dir = TestDir::new();
    let first = pki();
    let (cert, key) = install(&dir, &first);
    let mut server = tls_server(&cert, &key, &[]).await;
    // A connection made with the first certificate.
    let tls = tls_connect(&server.addr(), &first.ca_der).await.unwrap();
    let mut before = wss(&server.url, tls, None).await.unwrap();

    let second = pki();
    install(&dir, &second);
    server.hangup();
    server
        .wait_for_log("reloaded the TLS certificate and key")
        .await;
    let tls = tls_connect(&server.addr(), &second.ca_der).await.unwrap();
    assert_eq!(served(&tls), second.leaf_der);
    run_echo(&mut wss(&server.url, tls, None).await.unwrap()).await;
    // The connection made before the reload goes on.
    run_echo(&mut before).await;

    // A key that does not match the certificate: the second pair stays.
    std::fs::write(&key, &first.key_pem).unwrap();
    server.hangup();
    let warning = server.wait_for_log("TLS reload failed").await;
    assert!(warning.contains("do not go together"), "{warning}");
    let tls = tls_connect(&server.addr(), &second.ca_der).await.unwrap();
    assert_eq!(served(&tls), second.leaf_der);
}

#[tokio::test]
async fn tls_flags_are_checked_at_start() {
    let dir = TestDir::new();
    let pki = pki();
    let (cert, key) = install(&dir, &pki);
    let other = self::pki();
    let other_key = dir.join("other-key.pem");
    std::fs::write(&other_key, &other.key_pem).unwrap();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--tls-cert", &cert],
            "`--tls-cert` needs `--tls-key`".into(),
        ),
        (
            vec!["--tls-key", &key],
            "`--tls-key` needs `--tls-cert`".into(),
        ),
        (
            vec![
                "--tls-cert",
                &cert,
                "--tls-key",
                other_key.to_str().unwrap(),
            ],
            "do not go together".into(),
        ),
        (
            vec!["--tls-cert", "/nonexistent.pem", "--tls-key", &key],
            "failed to read TLS certificate /nonexistent.pem (--tls-cert)".into(),
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key],
            "no PEM certificate in".into(),
        ),
    ];
    for (flags, message) in cases {
        let out = tokio::time::timeout(
            DEADLINE,
            Command::new(server_binary())
                .args(["exec-server", "--listen", "ws://127.0.0.1:0"])
                .args(&flags)
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("refused at once")
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {stderr}");
        assert!(
            stderr.contains(&message),
            "{flags:?}: expected {message:?} in {stderr}"
        );
    }
}

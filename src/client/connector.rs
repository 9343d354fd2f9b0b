//! How the client opens a transport: the [`Connect`] trait (a WebSocket URL here, `ws://` or
//! `wss://`, with an optional bearer token; tests plug in in-memory transports), and a child process spoken to over its stdio, whose process group is
//! killed when the client goes away ([`ChildGroup`]).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, HeaderValue};
use tokio_tungstenite::tungstenite::http::{StatusCode, Uri};
use tokio_util::task::TaskTracker;

use super::error::ClientError;
use super::status::{BearerToken, ClientOptions};
use crate::rpc::{self, Transport};

/// A boxed future returned by [`Connect::connect`].
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Transport, ClientError>> + Send + 'a>>;

/// Opens transports to one server, as often as the client needs (the first connection and every
/// resume attempt).
pub trait Connect: Send + Sync + 'static {
    /// Opens a new transport; its reader and writer tasks go on `tracker`.
    fn connect<'a>(&'a self, tracker: &'a TaskTracker) -> ConnectFuture<'a>;

    /// The server, for messages (a URL).
    fn target(&self) -> String;
}

/// Connects to `ws://HOST:PORT` or `wss://HOST:PORT` (no `Origin` header, so the server's
/// browser guard lets us in), with `Authorization: Bearer` on every upgrade when given a token.
#[derive(Debug, Clone)]
pub struct WebSocketConnector {
    /// The URL as the user gave it.
    url: String,
    /// Sent on every upgrade.
    token: Option<BearerToken>,
    /// For `wss://`: the roots and the provider; built once, when the connector is.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Limit on one connection (TCP, TLS, upgrade).
    connect_timeout: Option<Duration>,
}

impl WebSocketConnector {
    /// A connector for `url`, without a token; `wss://` trusts the system's roots.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            tls: None,
            connect_timeout: None,
        }
    }

    /// A connector for `url` with the token, CA file and timeout of `options`. Checked here,
    /// before anything is sent: the URL, the transport a token needs (`wss://`, or `ws://` to a
    /// loopback host, as the reference client requires), and the CA file.
    pub fn with_options(
        url: impl Into<String>,
        options: &ClientOptions,
    ) -> Result<Self, ClientError> {
        let url = url.into();
        let endpoint = Endpoint::parse(&url)?;
        if options.bearer_token.is_some() && !endpoint.secure && !endpoint.is_loopback() {
            return Err(ClientError::InsecureToken { target: url });
        }
        let tls = match (endpoint.secure, &options.ca_file) {
            (true, ca_file) => Some(Arc::new(tls_config(ca_file.as_deref())?)),
            (false, Some(ca_file)) => {
                return Err(ClientError::Config {
                    message: format!(
                        "a CA file ({}) was given, but {url} is not a wss:// URL (no TLS is \
                         spoken on ws://)",
                        ca_file.display()
                    ),
                });
            }
            (false, None) => None,
        };
        Ok(Self {
            url,
            token: options.bearer_token.clone(),
            tls,
            connect_timeout: options.connect_timeout,
        })
    }

    /// One connection: TCP, TLS for `wss://`, the upgrade with the token.
    async fn open(&self, tracker: &TaskTracker) -> Result<Transport, ClientError> {
        let failed = |message: String| ClientError::Connect {
            target: self.url.clone(),
            message,
        };
        let endpoint = Endpoint::parse(&self.url)?;
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.secret()))
                .map_err(|_| failed("the bearer token cannot go in an HTTP header".into()))?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let refused = |e| upgrade_error(&self.url, self.token.as_ref(), e);
        if !endpoint.secure {
            let stream = tokio_tungstenite::MaybeTlsStream::Plain(tcp);
            let (ws, _response) = tokio_tungstenite::client_async_with_config(
                request,
                stream,
                Some(rpc::ws::config()),
            )
            .await
            .map_err(refused)?;
            return Ok(rpc::ws::spawn(ws, tracker, rpc::ws::PING_INTERVAL));
        }
        let tls = match &self.tls {
            Some(tls) => tls.clone(),
            None => Arc::new(tls_config(None)?),
        };
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone()).map_err(|e| {
            failed(format!(
                "`{}` is not a valid TLS server name: {e}",
                endpoint.host
            ))
        })?;
        // The TCP socket under TLS, for the transport's TCP_QUICKACK and silence check: its
        // number (the TLS stream owns it, and the transport holds the stream).
        let socket = Some(std::os::fd::AsRawFd::as_raw_fd(&tcp));
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| failed(format!("TLS handshake failed: {e}")))?;
        let (ws, _response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(rpc::ws::config()))
                .await
                .map_err(refused)?;
        let options = rpc::ws::Options {
            ping_interval: rpc::ws::PING_INTERVAL,
            max_message_bytes: rpc::MAX_MESSAGE_BYTES,
            slot: None,
            socket,
        };
        Ok(rpc::ws::spawn_with(ws, tracker, options))
    }
}

impl Connect for WebSocketConnector {
    fn connect<'a>(&'a self, tracker: &'a TaskTracker) -> ConnectFuture<'a> {
        Box::pin(async move {
            match self.connect_timeout {
                None => self.open(tracker).await,
                Some(limit) => tokio::time::timeout(limit, self.open(tracker))
                    .await
                    .unwrap_or_else(|_| {
                        Err(ClientError::Connect {
                            target: self.url.clone(),
                            message: format!("no connection within {limit:?}"),
                        })
                    }),
            }
        })
    }

    fn target(&self) -> String {
        self.url.clone()
    }
}

/// What a WebSocket URL names.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    /// `wss://`.
    secure: bool,
    /// The host, without an IPv6 literal's brackets.
    host: String,
    /// The port (80 or 443 when the URL has none).
    port: u16,
}

impl Endpoint {
    /// Parses `ws://HOST[:PORT][/PATH]` or `wss://…`.
    fn parse(url: &str) -> Result<Self, ClientError> {
        let bad = |why: &str| ClientError::Config {
            message: format!("invalid exec-server URL `{url}`: {why}"),
        };
        let uri: Uri = url.parse().map_err(|e| bad(&format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(bad("it must start with ws:// or wss://")),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it has no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Self { secure, host, port })
    }

    /// A loopback IP address, or `localhost`.
    fn is_loopback(&self) -> bool {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host.eq_ignore_ascii_case("localhost"),
        }
    }
}

/// The TLS client configuration: rustls with the ring provider, TLS 1.2 and 1.3, the system's
/// trust store plus the certificates of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's store (on Linux the distribution's bundle, or SSL_CERT_FILE/SSL_CERT_DIR):
    // an operator's own CA installed there is trusted, and the list follows OS updates.
    // Unreadable entries are skipped; the store may well be empty (a scratch container).
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let bad = |why: String| ClientError::Config {
            message: format!("CA file {}: {why}", path.display()),
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        return Err(ClientError::Config {
            message: "no trusted certificate authority for wss://: the system has none (set \
                      SSL_CERT_FILE) and no CA file was given"
                .into(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Config {
            message: format!("TLS set-up: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The error of a refused upgrade: a 401 is [`ClientError::Unauthorized`] (final), any other
/// HTTP answer or failure a connection error, with the server's body where there is one.
fn upgrade_error(
    url: &str,
    token: Option<&BearerToken>,
    error: tokio_tungstenite::tungstenite::Error,
) -> ClientError {
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => {
            let body = body_text(response.body().as_deref().unwrap_or_default(), token);
            if response.status() == StatusCode::UNAUTHORIZED {
                ClientError::Unauthorized {
                    target: url.to_string(),
                    token_sent: token.is_some(),
                    body,
                }
            } else {
                ClientError::Connect {
                    target: url.to_string(),
                    message: format!("HTTP {}: {body:?}", response.status()),
                }
            }
        }
        other => ClientError::Connect {
            target: url.to_string(),
            message: other.to_string(),
        },
    }
}

/// Most characters of a refusal's body quoted in an error.
const BODY_QUOTE_CHARS: usize = 300;

/// A refusal's body as text for an error: trimmed, shortened, and without the token, should the
/// server echo it.
fn body_text(body: &[u8], token: Option<&BearerToken>) -> String {
    let mut text: String = String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(BODY_QUOTE_CHARS)
        .collect();
    if let Some(token) = token {
        text = text.replace(token.secret(), "<redacted>");
    }
    text
}

/// Grace between SIGTERM and SIGKILL to a stdio child's process group.
const CHILD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A server child spoken to over its stdin/stdout, in a process group of its own. Dropping this
/// ends the whole group: SIGTERM first (our server then kills every process it manages and
/// exits), SIGKILL to the group after [`CHILD_GRACE`] (or at once when the leader is gone, to
/// catch stragglers), then the child is reaped. The waiting happens on a short-lived thread,
/// which waits on a pidfd, so drop never blocks.
#[derive(Debug)]
pub(super) struct ChildGroup {
    /// The child, which leads its own process group; `None` once handed to the reaper thread.
    child: Option<std::process::Child>,
}

impl Drop for ChildGroup {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = rustix::process::Pid::from_child(&child);
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::TERM);
        let reaper = std::thread::Builder::new()
            .name("codex-stdio-reaper".into())
            .spawn(move || {
                if let Ok(pidfd) =
                    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                {
                    let grace = rustix::event::Timespec {
                        tv_sec: CHILD_GRACE.as_secs() as _,
                        tv_nsec: 0,
                    };
                    let mut fds = [rustix::event::PollFd::new(
                        &pidfd,
                        rustix::event::PollFlags::IN,
                    )];
                    let _ = rustix::event::poll(&mut fds, Some(&grace));
                }
                // The leader is not reaped yet, so its group id cannot have been reused.
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                let _ = child.wait();
            });
        if reaper.is_err() {
            tracing::warn!("could not start the thread that reaps the stdio server");
        }
    }
}

/// Spawns `command` in a new process group with piped stdin/stdout and wraps its stdio as a
/// transport (newline-delimited JSON). Must run inside a tokio runtime.
pub(super) fn spawn_stdio(
    mut command: std::process::Command,
    tracker: &TaskTracker,
) -> Result<(Transport, ChildGroup), ClientError> {
    use std::os::unix::process::CommandExt;
    let target = format!("{command:?}");
    let failed = |message: String| ClientError::Connect {
        target: target.clone(),
        message,
    };
    command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|e| failed(e.to_string()))?;
    let pipes = (child.stdin.take(), child.stdout.take());
    let group = ChildGroup { child: Some(child) };
    let (Some(stdin), Some(stdout)) = pipes else {
        return Err(failed("the child has no stdin or stdout pipe".into()));
    };
    let stdin = tokio::process::ChildStdin::from_std(stdin).map_err(|e| failed(e.to_string()))?;
    let stdout =
        tokio::process::ChildStdout::from_std(stdout).map_err(|e| failed(e.to_string()))?;
    let transport = rpc::stdio::spawn(stdout, stdin, tracker);
    Ok((transport, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token() -> ClientOptions {
        ClientOptions {
            bearer_token: Some(BearerToken::new("tok-123").unwrap()),
            ..ClientOptions::default()
        }
    }

    #[test]
    fn a_token_goes_over_wss_or_to_a_loopback_host_only() {
        for url in [
            "ws://127.0.0.1:1",
            "ws://127.8.9.10:1/x",
            "ws://[::1]:1",
            "ws://localhost:1",
            "ws://LocalHost",
        ] {
            assert!(
                WebSocketConnector::with_options(url, &with_token()).is_ok(),
                "{url}"
            );
        }
        for url in [
            "ws://192.0.2.1:9",
            "ws://example.com",
            "ws://[2001:db8::1]:9",
            "ws://localhost.evil.example",
        ] {
            let err = WebSocketConnector::with_options(url, &with_token()).unwrap_err();
            assert!(
                matches!(err, ClientError::InsecureToken { .. }),
                "{url}: {err:?}"
            );
            let text = err.to_string();
            assert!(
                text.starts_with(
                    "exec-server WebSocket headers require wss:// or a loopback destination"
                ),
                "{text}"
            );
            assert!(!text.contains("tok-123"), "{text}");
        }
        // Without a token, plain ws:// anywhere is the user's call.
        assert!(
            WebSocketConnector::with_options("ws://192.0.2.1:9", &ClientOptions::default()).is_ok()
        );
    }

    #[test]
    fn endpoints_parse_with_default_ports_and_bad_urls_are_config_errors() {
        assert_eq!(
            Endpoint::parse("wss://[::1]/path").unwrap(),
            Endpoint {
                secure: true,
                host: "::1".into(),
                port: 443
            }
        );
        assert_eq!(
            Endpoint::parse("ws://h.example:8080").unwrap(),
            Endpoint {
                secure: false,
                host: "h.example".into(),
                port: 8080
            }
        );
        for bad in ["http://127.0.0.1:1", "127.0.0.1:1", "ws://", "", "ws://a b"] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(matches!(err, ClientError::Config { .. }), "{bad}: {err:?}");
        }
    }

    #[test]
    fn a_ca_file_is_for_wss_and_must_hold_a_certificate() {
        let options = ClientOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..ClientOptions::default()
        };
        let err = WebSocketConnector::with_options("ws://127.0.0.1:1", &options).unwrap_err();
        assert!(err.to_string().contains("not a wss:// URL"), "{err}");
        let err = WebSocketConnector::with_options("wss://127.0.0.1:1", &options).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let dir = std::env::temp_dir().join(format!("codex-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let options = ClientOptions {
            ca_file: Some(empty.clone()),
            ..ClientOptions::default()
        };
        let err = WebSocketConnector::with_options("wss://127.0.0.1:1", &options).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_refusal_body_is_shortened_and_never_carries_the_token() {
        let token = BearerToken::new("tok-123").unwrap();
        assert_eq!(
            body_text(b" bad token tok-123 \n", Some(&token)),
            "bad token <redacted>"
        );
        assert_eq!(body_text(&[b'x'; 5000], None).len(), BODY_QUOTE_CHARS);
    }
}

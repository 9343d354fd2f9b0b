//! The HTTP side of the listening port, read by hand before any WebSocket handshake so that each
//! request is answered by the rules of protocol.md: a request with an `Origin` header is 403 on every
//! path (browsers must not drive a local executor); `GET`/`HEAD /readyz` and `/livez` are 200
//! (`/livez`: the runtime answers; also on the metrics listener), other methods 405;
//! `/` upgrades to WebSocket, without an upgrade 400; other paths 404. With `--ws-auth`, an
//! upgrade is 401 unless its `Authorization` header passes ([`Door`], `auth.rs`); the check comes
//! after the `Origin` rule and never applies to `/readyz` or `/livez`. An upgrade that passes is
//! 503 beyond `--max-connections`.
//!
//! Written by hand (with `httparse` for the request line and headers) because tungstenite's
//! server handshake can only accept or reject upgrades, not serve the health path beside them.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::auth::Authenticator;
use super::state::ServerState;
use super::tls::TlsServer;
use crate::rpc::{Transport, ws};

/// What guards the port besides the HTTP rules: authentication of upgrades and TLS. Cloned into
/// every connection (two `Arc`s).
#[derive(Debug, Clone, Default)]
pub struct Door {
    /// `--ws-auth`: every upgrade must pass it.
    pub auth: Option<Arc<Authenticator>>,
    /// `--tls-cert`/`--tls-key`: the port speaks TLS.
    pub tls: Option<Arc<TlsServer>>,
}

impl Door {
    /// Whether SIGHUP has something to re-read.
    pub fn reloadable(&self) -> bool {
        self.auth.is_some() || self.tls.is_some()
    }

    /// Re-reads the token or secret file and the certificate and key (SIGHUP). Whatever fails to
    /// load is kept as it was, with a warning; connections already up are not touched.
    pub fn reload(&self) {
        if let Some(auth) = &self.auth {
            match auth.reload() {
                Ok(Some(path)) => {
                    tracing::info!(path = %path.display(), "reloaded the websocket auth credential")
                }
                Ok(None) => {
                    tracing::info!("--ws-token-sha256 has no file to reload")
                }
                Err(err) => {
                    tracing::warn!("websocket auth reload failed, the old credential stays: {err}")
                }
            }
        }
        if let Some(tls) = &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificate and key"),
                Err(err) => {
                    tracing::warn!("TLS reload failed, the old certificate stays: {err}")
                }
            }
        }
    }
}

/// Largest request head we read; more is answered 431.
const MAX_HEAD: usize = 16 * 1024;
/// Headers we look at; more is answered 431.
const MAX_HEADERS: usize = 64;

/// What the request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Upgrade to WebSocket with this `Sec-WebSocket-Key`, if the `Authorization` header (its
    /// raw value) passes.
    Upgrade {
        key: String,
        authorization: Option<Vec<u8>>,
    },
    /// Answer with this status line and body, then close.
    Respond(&'static str, &'static str),
}

/// Reads one request head and either upgrades the stream or answers and closes it. `socket`: the
/// number of the TCP socket under a TLS stream, which owns it (see [`ws::Options::socket`]).
pub(super) async fn accept<S>(
    mut stream: S,
    socket: Option<RawFd>,
    door: &Door,
    peer: SocketAddr,
    state: &ServerState,
    ping_interval: std::time::Duration,
) -> Option<Transport>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tracker = &state.tracker;
    let mut buf = Vec::with_capacity(1024);
    // The whole head must arrive by then: a peer that connects and sends nothing (or a byte at a
    // time) is answered 408 and closed, instead of holding a task and a descriptor forever.
    let head_deadline = tokio::time::Instant::now() + state.limits.request_head_timeout;
    let (route, head_len) = loop {
        let mut chunk = [0u8; 2048];
        let read = tokio::time::timeout_at(head_deadline, stream.read(&mut chunk)).await;
        let n = match read {
            Err(_elapsed) => {
                tracing::debug!(%peer, "request head not received in time");
                respond(
                    &mut stream,
                    "408 Request Timeout",
                    "request head not received in time\n",
                )
                .await;
                return None;
            }
            Ok(Ok(0) | Err(_)) => return None,
            Ok(Ok(n)) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        match route(&buf) {
            Ok(Some(found)) => break found,
            Ok(None) if buf.len() < MAX_HEAD => continue,
            Ok(None) => {
                break (
                    Route::Respond("431 Request Header Fields Too Large", ""),
                    buf.len(),
                );
            }
            Err(()) => {
                break (
                    Route::Respond("400 Bad Request", "bad request\n"),
                    buf.len(),
                );
            }
        }
    };
    match route {
        Route::Respond(status, body) => {
            respond(&mut stream, status, body).await;
            None
        }
        Route::Upgrade { authorization, .. }
            if let Some(auth) = &door.auth
                && let Err(failure) = auth.check(authorization.as_deref()) =>
        {
            // The audit line: who, and why (never the header).
            tracing::info!(target: "codex::audit", %peer, reason = failure.reason(), "websocket authentication failed");
            state.metrics.auth_failed(failure.reason());
            let body = failure.body();
            let response = format!(
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain; charset=utf-8\r\nwww-authenticate: Bearer\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
        Route::Upgrade { key, .. } => {
            // `--max-connections`: refused before the upgrade, so the client sees why.
            let slot = match state.connection_slot() {
                Ok(slot) => slot,
                Err(body) => {
                    tracing::debug!("connection limit reached: upgrade refused");
                    respond(&mut stream, "503 Service Unavailable", &body).await;
                    return None;
                }
            };
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(response.as_bytes()).await.ok()?;
            let rest = buf.split_off(head_len);
            let max_message_bytes = state.limits.max_message_bytes;
            let ws = WebSocketStream::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(ws::config_with_limit(max_message_bytes)),
            )
            .await;
            let options = ws::Options {
                ping_interval,
                max_message_bytes,
                slot: Some(Box::new(slot)),
                socket,
            };
            Some(ws::spawn_with(ws, tracker, options))
        }
    }
}

/// Answers with `status` and a text body, then closes.
async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, body: &str) {
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Parses a request head. `Ok(None)`: incomplete; `Err`: not HTTP.
fn route(buf: &[u8]) -> Result<Option<(Route, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Ok(Some((
                Route::Respond("431 Request Header Fields Too Large", ""),
                buf.len(),
            )));
        }
        Err(_) => return Err(()),
    };
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    let method = req.method.unwrap_or_default();
    let path = req
        .path
        .unwrap_or_default()
        .split('?')
        .next()
        .unwrap_or_default();
    let route = if header("origin").is_some() {
        Route::Respond("403 Forbidden", "")
    } else if path == "/readyz" || path == "/livez" {
        if method == "GET" || method == "HEAD" {
            Route::Respond("200 OK", "")
        } else {
            Route::Respond("405 Method Not Allowed", "method not allowed\n")
        }
    } else if path == "/" {
        let upgrade = header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        match header("sec-websocket-key") {
            Some(key) if upgrade && method == "GET" => Route::Upgrade {
                key,
                authorization: req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("authorization"))
                    .map(|h| h.value.to_vec()),
            },
            _ => Route::Respond("400 Bad Request", "expected a WebSocket upgrade\n"),
        }
    } else {
        Route::Respond("404 Not Found", "not found\n")
    };
    Ok(Some((route, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(head: &str) -> Route {
        route(head.as_bytes()).unwrap().unwrap().0
    }

    #[test]
    fn origin_is_forbidden_on_every_path() {
        for path in ["/", "/readyz", "/x"] {
            let r = routed(&format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nOrigin: http://evil\r\n\r\n"
            ));
            assert_eq!(r, Route::Respond("403 Forbidden", ""), "{path}");
        }
    }

    #[test]
    fn readyz_answers_get_and_head_only() {
        assert_eq!(
            routed("GET /livez HTTP/1.1\r\n\r\n"),
            Route::Respond("200 OK", "")
        );
        assert_eq!(
            routed("GET /readyz HTTP/1.1\r\n\r\n"),
            Route::Respond("200 OK", "")
        );
        assert_eq!(
            routed("HEAD /readyz HTTP/1.1\r\n\r\n"),
            Route::Respond("200 OK", "")
        );
        assert!(
            matches!(routed("POST /readyz HTTP/1.1\r\n\r\n"), Route::Respond(s, _) if s.starts_with("405"))
        );
    }

    #[test]
    fn root_without_upgrade_is_bad_request_and_others_not_found() {
        assert!(
            matches!(routed("GET / HTTP/1.1\r\n\r\n"), Route::Respond(s, _) if s.starts_with("400"))
        );
        assert!(
            matches!(routed("GET /x HTTP/1.1\r\n\r\n"), Route::Respond(s, _) if s.starts_with("404"))
        );
    }

    #[test]
    fn upgrade_carries_the_key() {
        let r = routed(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: abc\r\n\r\n",
        );
        assert_eq!(
            r,
            Route::Upgrade {
                key: "abc".into(),
                authorization: None
            }
        );
        let r = routed(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nAuthorization: Bearer t\r\n\r\n",
        );
        assert_eq!(
            r,
            Route::Upgrade {
                key: "k".into(),
                authorization: Some(b"Bearer t".to_vec())
            }
        );
    }

    #[test]
    fn partial_head_waits_for_more() {
        assert_eq!(route(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
    }
}

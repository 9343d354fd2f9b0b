//! The HTTP side of the listening port, read by hand before any WebSocket handshake so that each
//! request is answered by the rules of protocol.md: a request with an `Origin` header is 403 on every
//! path (browsers must not drive a local executor); `GET`/`HEAD /readyz` and `/livez` are 200
//! (`/livez`: the runtime answers; also on the metrics listener), other methods 405;
//! `/` upgrades to WebSocket, without an upgrade 400; other paths 404.
//!
//! Written by hand (with `httparse` for the request line and headers) because tungstenite's
//! server handshake can only accept or reject upgrades, not serve the health path beside them.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_util::task::TaskTracker;

use crate::rpc::{Transport, ws};

/// Largest request head we read; more is answered 431.
const MAX_HEAD: usize = 16 * 1024;
/// Headers we look at; more is answered 431.
const MAX_HEADERS: usize = 64;

/// What the request head asked for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// Upgrade to WebSocket with this `Sec-WebSocket-Key`.
    Upgrade(String),
    /// Answer with this status line and body, then close.
    Respond(&'static str, &'static str),
}

/// Reads one request head and either upgrades the stream or answers and closes it.
pub(super) async fn accept(
    mut stream: TcpStream,
    tracker: &TaskTracker,
    ping_interval: std::time::Duration,
) -> Option<Transport> {
    let mut buf = Vec::with_capacity(1024);
    let (route, head_len) = loop {
        let mut chunk = [0u8; 2048];
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => n,
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
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
            None
        }
        Route::Upgrade(key) => {
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(response.as_bytes()).await.ok()?;
            let rest = buf.split_off(head_len);
            let ws = WebSocketStream::from_partially_read(
                stream,
                rest,
                Role::Server,
                Some(ws::config()),
            )
            .await;
            Some(ws::spawn(ws, tracker, ping_interval))
        }
    }
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
            Some(key) if upgrade && method == "GET" => Route::Upgrade(key),
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
        assert_eq!(r, Route::Upgrade("abc".into()));
    }

    #[test]
    fn partial_head_waits_for_more() {
        assert_eq!(route(b"GET / HTTP/1.1\r\nHost:"), Ok(None));
    }
}

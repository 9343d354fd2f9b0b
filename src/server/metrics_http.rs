//! The metrics listener (`--metrics-listen`): a small HTTP/1.1 server apart from the executor's
//! port, so a scraper never needs the executor's credentials and never reaches the executor.
//! It serves `GET`/`HEAD /metrics` (the scrape) and `/livez` (200 while the runtime answers);
//! any other path is 404, another method 405, a request with an `Origin` header 403 (a browser
//! page must not read it). One request per connection, then close.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at once (more wait in the kernel's backlog), a request
//! head of at most 16 KiB, read within [`HEAD_TIMEOUT`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::metrics::Metrics;

/// Scrapes served at once.
const MAX_CONNECTIONS: usize = 16;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The OpenMetrics text the encoder writes (Prometheus reads it).
const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the metrics listener until the runtime stops.
pub async fn serve_metrics(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // EMFILE and friends: keep serving.
                tracing::warn!(%err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(HEAD_TIMEOUT * 2, answer(stream, &metrics)).await;
            drop(permit);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, metrics: &Metrics) {
    let mut buf = Vec::with_capacity(1024);
    let read_head = async {
        loop {
            let mut chunk = [0u8; 2048];
            let n = match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            match parse(&buf) {
                Parsed::Partial if buf.len() < MAX_HEAD => continue,
                Parsed::Partial => {
                    return Some(Reply::Status("431 Request Header Fields Too Large"));
                }
                Parsed::Done(reply) => return Some(reply),
            }
        }
    };
    let Ok(Some(reply)) = tokio::time::timeout(HEAD_TIMEOUT, read_head).await else {
        return;
    };
    let (status, content_type, body, head_only) = match reply {
        Reply::Metrics { head_only } => {
            ("200 OK", METRICS_CONTENT_TYPE, metrics.encode(), head_only)
        }
        Reply::Live { head_only } => ("200 OK", "text/plain", "ok\n".to_string(), head_only),
        Reply::Status(status) => (status, "text/plain", String::new(), false),
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        response.push_str(&body);
    }
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Metrics { head_only: bool },
    Live { head_only: bool },
    Status(&'static str),
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Partial,
    Done(Reply),
}

fn parse(buf: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Done(Reply::Status("431 Request Header Fields Too Large"));
        }
        Err(_) => return Parsed::Done(Reply::Status("400 Bad Request")),
    }
    if req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("origin"))
    {
        return Parsed::Done(Reply::Status("403 Forbidden"));
    }
    let path = req.path.unwrap_or_default();
    let path = path.split('?').next().unwrap_or_default();
    let head_only = match req.method.unwrap_or_default() {
        "GET" => false,
        "HEAD" => true,
        _ if matches!(path, "/metrics" | "/livez") => {
            return Parsed::Done(Reply::Status("405 Method Not Allowed"));
        }
        _ => return Parsed::Done(Reply::Status("404 Not Found")),
    };
    Parsed::Done(match path {
        "/metrics" => Reply::Metrics { head_only },
        "/livez" => Reply::Live { head_only },
        _ => Reply::Status("404 Not Found"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Parsed {
        parse(head.as_bytes())
    }

    #[test]
    fn serves_metrics_and_livez_only() {
        assert_eq!(
            parsed("GET /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Done(Reply::Metrics { head_only: false })
        );
        assert_eq!(
            parsed("HEAD /livez HTTP/1.1\r\n\r\n"),
            Parsed::Done(Reply::Live { head_only: true })
        );
        for head in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET /readyz HTTP/1.1\r\n\r\n",
            "GET /metricsx HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(
                parsed(head),
                Parsed::Done(Reply::Status("404 Not Found")),
                "{head}"
            );
        }
        assert_eq!(
            parsed("POST /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Done(Reply::Status("405 Method Not Allowed"))
        );
        assert_eq!(
            parsed("GET /metrics HTTP/1.1\r\nOrigin: http://x\r\n\r\n"),
            Parsed::Done(Reply::Status("403 Forbidden"))
        );
        assert_eq!(parsed("GET /metrics HTTP/1.1\r\nHost:"), Parsed::Partial);
        assert_eq!(
            parsed("\x01\x02 nonsense\r\n\r\n"),
            Parsed::Done(Reply::Status("400 Bad Request"))
        );
    }
}

//! `http/request`: an HTTP request made by the executor, its body answered at once (buffered) or
//! streamed as `http/request/bodyDelta` notifications after the result.
//!
//! A body is read one chunk at a time and each delta is queued on the connection before the next
//! read (`http_streams.rs`: the connection's streams, their ids and their byte budget).

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Client, Url};
use tokio::sync::oneshot;

use super::call::{Answer, Call, to_value};
use super::http_streams::{HttpStreams, Reservation};
use crate::protocol::http::{
    HttpHeader, HttpRequestBodyDelta, HttpRequestParams, HttpRequestResponse,
    MAX_HTTP_BODY_DELTA_BYTES, RedirectPolicy, is_denied_header_env_var,
};
use crate::rpc::RpcError;

/// The largest buffered body: its base64 must fit in one message, as for `fs/readFile`.
const MAX_BUFFERED_BODY_BYTES: usize = 100_660_224;

/// The four clients (redirects followed or not × proxy variables honoured or not), made once.
fn client(redirect: RedirectPolicy, loopback: bool) -> Result<Client, RpcError> {
    static CLIENTS: OnceLock<Result<[Client; 4], String>> = OnceLock::new();
    let clients = CLIENTS.get_or_init(|| {
        let make = |follow: bool, proxies: bool| {
            let mut b = Client::builder().redirect(if follow {
                reqwest::redirect::Policy::default()
            } else {
                reqwest::redirect::Policy::none()
            });
            if !proxies {
                b = b.no_proxy();
            }
            b.build().map_err(|e| e.to_string())
        };
        Ok([
            make(true, true)?,
            make(true, false)?,
            make(false, true)?,
            make(false, false)?,
        ])
    });
    let clients = clients
        .as_ref()
        .map_err(|e| RpcError::internal(format!("http/request failed: {e}")))?;
    let index = match redirect {
        RedirectPolicy::Follow => 0,
        RedirectPolicy::Stop => 2,
    } + usize::from(loopback);
    Ok(clients[index].clone())
}

/// Whether the URL's host is a literal loopback address (those bypass proxy variables).
fn is_literal_loopback(url: &Url) -> bool {
    url.host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

/// A header's value: `value`, followed by the executor's variable `valueEnvVar` if named.
fn header_value(name: &str, value: &str, env_var: Option<&str>) -> Result<String, RpcError> {
    let Some(var) = env_var else {
        return Ok(value.to_string());
    };
    if is_denied_header_env_var(var) {
        return Err(RpcError::invalid_params(format!(
            "http/request header {name} cannot use executor environment variable {var}"
        )));
    }
    match std::env::var_os(var) {
        None => Err(RpcError::invalid_params(format!(
            "http/request header {name} requires executor environment variable {var}"
        ))),
        Some(v) if v.is_empty() => Err(RpcError::invalid_params(format!(
            "http/request header {name} requires a non-empty executor environment variable {var}"
        ))),
        Some(v) => {
            let v = v.to_string_lossy();
            Ok(format!("{value}{v}"))
        }
    }
}

/// `http/request`.
pub(super) async fn request(call: &Call, p: HttpRequestParams) -> Result<Answer, RpcError> {
    let method = reqwest::Method::from_bytes(p.method.as_bytes())
        .map_err(|e| RpcError::invalid_params(format!("http/request method is invalid: {e}")))?;
    let url = Url::parse(&p.url)
        .map_err(|e| RpcError::invalid_params(format!("http/request url is invalid: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RpcError::invalid_params(format!(
            "http/request only supports http and https URLs, got {}",
            url.scheme()
        )));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for h in p.headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| {
            RpcError::invalid_params(format!("http/request header name is invalid: {e}"))
        })?;
        let value = header_value(&h.name, &h.value, h.value_env_var.as_deref())?;
        let value = HeaderValue::from_str(&value).map_err(|e| {
            RpcError::invalid_params(format!(
                "http/request header value is invalid for {}: {e}",
                h.name
            ))
        })?;
        headers.append(name, value);
    }
    let body = match &p.body_base64 {
        None => None,
        Some(b) => Some(crate::b64::decode(b.as_bytes()).map_err(|e| {
            RpcError::invalid_params(format!("http/request bodyBase64 is invalid: {e}"))
        })?),
    };
    let stream = p.stream_response.unwrap_or(false);
    let reservation = match stream {
        true => Some(call.http.reserve(&p.request_id)?),
        false => None,
    };

    let loopback = is_literal_loopback(&url);
    let client = client(p.redirect_policy.unwrap_or_default(), loopback)?;
    let mut builder = client.request(method, url).headers(headers);
    if let Some(body) = body {
        builder = builder.body(body);
    }
    if let Some(ms) = p.timeout_ms {
        builder = builder.timeout(Duration::from_millis(ms));
    }
    let send = builder.send();
    let response = tokio::select! {
        r = send => r,
        // The connection ended: nobody is left to answer.
        _ = call.http.cancelled() => {
            return Err(RpcError::internal("http/request failed: the connection closed"));
        }
    }
    .map_err(|e| RpcError::internal(format!("http/request failed: {e}")))?;

    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            let value = std::str::from_utf8(value.as_bytes()).ok()?;
            Some(HttpHeader {
                name: name.as_str().to_string(),
                value: value.to_string(),
            })
        })
        .collect();

    let Some(reservation) = reservation else {
        let bytes = tokio::select! {
            b = read_buffered(response) => b,
            _ = call.http.cancelled() => {
                return Err(RpcError::internal("http/request failed: the connection closed"));
            }
        }
        .map_err(|e| {
            RpcError::internal(format!("failed to read http/request response body: {e}"))
        })?;
        return Ok(Answer::Value(to_value(&HttpRequestResponse {
            status,
            headers,
            body_base64: crate::b64::encode(&bytes),
        })?));
    };
    let result = to_value(&HttpRequestResponse {
        status,
        headers,
        body_base64: String::new(),
    })?;
    let (sent, result_sent) = oneshot::channel();
    let streams = call.http.clone();
    let id = p.request_id;
    call.state.tracker.spawn(async move {
        // The result goes on the wire first.
        if result_sent.await.is_err() {
            return;
        }
        stream_body(&streams, reservation, id, response).await;
    });
    Ok(Answer::ValueThen(result, sent))
}

/// A buffered body, refused past [`MAX_BUFFERED_BODY_BYTES`].
async fn read_buffered(response: reqwest::Response) -> Result<Vec<u8>, String> {
    let too_large = || {
        format!(
            "the body is larger than {MAX_BUFFERED_BODY_BYTES} bytes; stream it with streamResponse"
        )
    };
    // A declared length says so before a byte is read.
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BUFFERED_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = response.bytes_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        if bytes.len() + chunk.len() > MAX_BUFFERED_BODY_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Sends the body as deltas, then the terminal one; stops when the connection ends.
async fn stream_body(
    streams: &HttpStreams,
    mut reservation: Reservation,
    id: String,
    response: reqwest::Response,
) {
    let mut body = response.bytes_stream();
    let mut seq = 0u64;
    loop {
        let next = tokio::select! {
            n = body.next() => n,
            _ = streams.cancelled() => return,
        };
        let (chunk, end) = match next {
            Some(Ok(chunk)) => (chunk, None),
            Some(Err(e)) => (
                Default::default(),
                Some(Some(format!(
                    "failed to read http/request response body: {e}"
                ))),
            ),
            None => (Default::default(), Some(None)),
        };
        for piece in chunk.chunks(MAX_HTTP_BODY_DELTA_BYTES) {
            seq += 1;
            let delta = HttpRequestBodyDelta {
                request_id: id.clone(),
                seq,
                delta_base64: crate::b64::encode(piece),
                done: false,
                error: None,
            };
            if !streams.send(&delta).await {
                return;
            }
        }
        if let Some(error) = end {
            seq += 1;
            reservation.release();
            let delta = HttpRequestBodyDelta {
                request_id: id,
                seq,
                delta_base64: String::new(),
                done: true,
                error,
            };
            streams.send(&delta).await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_literal_loopback_addresses_bypass_proxies() {
        for (url, loopback) in [
            ("http://127.0.0.1:8080/x", true),
            ("http://127.1.2.3/", true),
            ("http://[::1]:9/", true),
            ("http://localhost/", false),
            ("http://10.0.0.1/", false),
            ("https://example.com/", false),
        ] {
            assert_eq!(
                is_literal_loopback(&Url::parse(url).unwrap()),
                loopback,
                "{url}"
            );
        }
    }

    #[test]
    fn header_values_without_a_variable_are_sent_as_given_and_denied_names_never_read() {
        assert_eq!(header_value("a", "v", None).unwrap(), "v");
        // Refused by name, set or not, in any case.
        for var in ["OPENAI_API_KEY", "openai_api_key", "Aws_Session_Token"] {
            let err = header_value("authorization", "Bearer ", Some(var)).unwrap_err();
            assert_eq!(
                err.message,
                format!(
                    "http/request header authorization cannot use executor environment variable {var}"
                )
            );
        }
    }
}

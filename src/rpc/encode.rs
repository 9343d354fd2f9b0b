//! Encoding what the server and the client send: answers, errors, notifications, requests. No
//! `"jsonrpc"` member is sent. `process/output` notifications are built by hand
//! ([`encode_output`]); everything else goes through serde.

use serde::Serialize;

use super::error::RpcError;
use super::message::RequestId;
use super::transport::Text;
use crate::protocol::PARSE_ERROR_ID;
use crate::protocol::method;
use crate::protocol::process::Stream;

#[derive(Serialize)]
struct ResultEnvelope<'a, T: Serialize> {
    id: &'a RequestId,
    result: T,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: i64,
    message: &'a str,
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    id: &'a RequestId,
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct NotificationEnvelope<'a, T: Serialize> {
    method: &'a str,
    params: T,
}

#[derive(Serialize)]
struct RequestEnvelope<'a, T: Serialize> {
    id: &'a RequestId,
    method: &'a str,
    params: T,
}

/// Encodes a successful answer.
pub fn encode_result<T: Serialize>(id: &RequestId, result: T) -> String {
    serde_json::to_string(&ResultEnvelope { id, result }).expect("answers always serialize")
}

/// Encodes a successful answer whose result is JSON text already; it is copied in as is, not
/// parsed or escaped again.
pub fn encode_raw_result(id: &RequestId, result_json: &str) -> String {
    let mut text = raw_result_head(id);
    text.reserve(result_json.len() + RAW_RESULT_TAIL.len());
    text.push_str(result_json);
    text.push_str(RAW_RESULT_TAIL);
    text
}

/// What comes before a result's JSON text in its answer (see [`encode_raw_result`]).
pub fn raw_result_head(id: &RequestId) -> String {
    let id = serde_json::to_string(id).expect("ids always serialize");
    format!("{{\"id\":{id},\"result\":")
}

/// What comes after a result's JSON text in its answer.
pub const RAW_RESULT_TAIL: &str = "}";

/// Encodes an error answer.
pub fn encode_error(id: &RequestId, error: &RpcError) -> String {
    serde_json::to_string(&ErrorEnvelope {
        id,
        error: ErrorBody {
            code: error.code.code(),
            message: &error.message,
        },
    })
    .expect("errors always serialize")
}

/// Encodes an error answer to a message whose id could not be read.
pub fn encode_parse_error(error: &RpcError) -> String {
    encode_error(&RequestId::Int(PARSE_ERROR_ID), error)
}

/// Encodes a notification.
pub fn encode_notification<T: Serialize>(method: &str, params: T) -> String {
    serde_json::to_string(&NotificationEnvelope { method, params })
        .expect("notifications always serialize")
}

/// Encodes a request (client side).
pub fn encode_request<T: Serialize>(id: &RequestId, method: &str, params: T) -> String {
    serde_json::to_string(&RequestEnvelope { id, method, params })
        .expect("requests always serialize")
}

/// Encodes a request (client side) around params the caller has already encoded as a JSON
/// object: the same text as [`encode_request`], but `params_json` is copied in as it is, never
/// parsed nor scanned for escapes (a transfer's megabyte of base64 per block). The caller vouches
/// that it is valid JSON.
pub fn encode_request_with_params_text(id: &RequestId, method: &str, params_json: &str) -> String {
    let head = serde_json::to_string(&RequestEnvelope {
        id,
        method,
        params: (),
    })
    .expect("requests always serialize");
    // `head` ends in `"params":null}`: the params go where the null is.
    let head = head
        .strip_suffix("null}")
        .expect("the envelope ends with its params");
    let mut text = String::with_capacity(head.len() + params_json.len() + 1);
    text.push_str(head);
    text.push_str(params_json);
    text.push('}');
    text
}

/// Encodes a `process/output` notification of `data`; returns it and where its base64 is in it.
///
/// The same JSON as [`OutputNotification`](crate::protocol::process::OutputNotification) through
/// [`encode_notification`], but built by hand: the base64 is encoded straight into the message
/// (one buffer, shared with the output log, no copies), and it never needs JSON escaping, so
/// serde_json's byte-by-byte escape scan of it (a third of the server's CPU time while
/// streaming, by `perf`) is skipped.
pub fn encode_output(
    process_id: &str,
    seq: u64,
    stream: Stream,
    data: &[u8],
) -> (Text, std::ops::Range<usize>) {
    use std::fmt::Write as _;
    let id = serde_json::to_string(process_id).expect("a string always serializes");
    let stream = match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
        Stream::Pty => "pty",
    };
    let mut text = String::with_capacity(data.len().div_ceil(3) * 4 + id.len() + 96);
    let _ = write!(
        text,
        r#"{{"method":"{}","params":{{"processId":{id},"seq":{seq},"stream":"{stream}","chunk":""#,
        method::PROCESS_OUTPUT
    );
    let start = text.len();
    crate::b64::encode_append(data, &mut text);
    let end = text.len();
    text.push_str("\"}}");
    (text.into(), start..end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::process::OutputNotification;

    #[test]
    fn request_around_encoded_params_matches_serde() {
        let params = serde_json::json!({"handleId": "h\"1", "offset": 7, "chunk": "AAAA"});
        for (id, method) in [
            (RequestId::Int(3), "fs/writeBlock"),
            (RequestId::Str("a\"b".into()), "we\\ird"),
        ] {
            let by_hand = encode_request_with_params_text(
                &id,
                method,
                &serde_json::to_string(&params).unwrap(),
            );
            assert_eq!(by_hand, encode_request(&id, method, &params));
        }
    }

    #[test]
    fn hand_encoded_output_matches_serde() {
        for (id, stream) in [
            ("p1", Stream::Stdout),
            ("quote\"and\\back\u{1}slash é", Stream::Stderr),
            ("", Stream::Pty),
        ] {
            let data = b"hi\n\xfb\xff";
            let chunk = "aGkK+/8=";
            let by_serde = encode_notification(
                method::PROCESS_OUTPUT,
                OutputNotification {
                    process_id: id.to_string(),
                    seq: 42,
                    stream,
                    chunk: chunk.to_string(),
                },
            );
            let (by_hand, base64) = encode_output(id, 42, stream, data);
            assert_eq!(by_hand.as_str(), by_serde);
            assert_eq!(&by_hand.as_str()[base64], chunk);
        }
    }
}

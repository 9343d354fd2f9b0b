//! The envelope: parsing one frame into a request, notification or response (encoding is
//! `encode.rs`). A `"jsonrpc"` member that arrives is ignored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request id: an integer or a string. `92` and `"92"` are different ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    Int(i64),
    Str(String),
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => write!(f, "{s:?}"),
        }
    }
}

/// A call that expects an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Value,
}

/// A one-way message.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Value,
}

/// One message read from the peer.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Request(Request),
    Notification(Notification),
    /// An answer to a call we made, or an error object: the client side uses these.
    Response {
        id: RequestId,
        result: Result<Value, (i64, String)>,
    },
    /// A frame that is not a JSON-RPC message; answered with id -1 and the connection stays.
    Malformed(String),
    /// A frame over the reader's limit (by default [`super::MAX_MESSAGE_BYTES`]), which it carries;
    /// answered with an error, then the connection ends.
    TooLarge(usize),
}

impl Incoming {
    /// Parses one frame.
    pub fn parse(bytes: &[u8]) -> Self {
        Self::from_parsed(serde_json::from_slice(bytes))
    }

    /// Parses one frame known to be UTF-8 (a WebSocket text frame, checked by the transport):
    /// the strings in it are not checked again (an 8 MiB `fs/writeFile` is 11 MB of them).
    pub fn parse_str(text: &str) -> Self {
        Self::from_parsed(serde_json::from_str(text))
    }

    fn from_parsed(parsed: serde_json::Result<Value>) -> Self {
        match parsed {
            Ok(value) => Self::from_value(value),
            Err(err) => Self::Malformed(format!("failed to parse JSON-RPC message: {err}")),
        }
    }

    /// Classifies a parsed JSON value.
    pub fn from_value(value: Value) -> Self {
        let Value::Object(mut obj) = value else {
            return Self::Malformed(
                "failed to parse JSON-RPC message: expected a JSON-RPC object".into(),
            );
        };
        let id = match obj.remove("id") {
            None => None,
            Some(Value::Number(n)) if n.is_i64() => n.as_i64().map(RequestId::Int),
            Some(Value::String(s)) => Some(RequestId::Str(s)),
            Some(_) => {
                return Self::Malformed(
                    "failed to parse JSON-RPC message: id must be an integer or a string"
                        .to_string(),
                );
            }
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        match (obj.remove("method"), id) {
            (Some(Value::String(method)), Some(id)) => {
                Self::Request(Request { id, method, params })
            }
            (Some(Value::String(method)), None) => {
                Self::Notification(Notification { method, params })
            }
            (Some(_), _) => {
                Self::Malformed("failed to parse JSON-RPC message: method must be a string".into())
            }
            (None, Some(id)) => {
                if let Some(err) = obj.remove("error") {
                    let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
                    let message = err
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    Self::Response {
                        id,
                        result: Err((code, message)),
                    }
                } else if let Some(result) = obj.remove("result") {
                    Self::Response {
                        id,
                        result: Ok(result),
                    }
                } else {
                    Self::Malformed(
                        "failed to parse JSON-RPC message: expected method, result or error".into(),
                    )
                }
            }
            (None, None) => Self::Malformed(
                "failed to parse JSON-RPC message: expected method, result or error".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::encode::{encode_raw_result, encode_result};

    #[test]
    fn notification_with_explicit_null_params() {
        let m = Incoming::parse(br#"{"method":"initialized","params":null}"#);
        assert_eq!(
            m,
            Incoming::Notification(Notification {
                method: "initialized".into(),
                params: Value::Null
            })
        );
    }

    #[test]
    fn int_and_string_ids_stay_apart() {
        let a = Incoming::parse(br#"{"id":92,"method":"m"}"#);
        let b = Incoming::parse(br#"{"id":"92","method":"m"}"#);
        let (Incoming::Request(a), Incoming::Request(b)) = (a, b) else {
            panic!()
        };
        assert_ne!(a.id, b.id);
        assert_eq!(encode_result(&b.id, 1), r#"{"id":"92","result":1}"#);
    }

    #[test]
    fn raw_result_is_the_same_json_as_a_value_result() {
        let id = RequestId::Str("a\"b".into());
        let raw = encode_raw_result(&id, r#"{"dataBase64":"aGkK"}"#);
        let value = encode_result(&id, serde_json::json!({"dataBase64": "aGkK"}));
        let a: Value = serde_json::from_str(&raw).unwrap();
        let b: Value = serde_json::from_str(&value).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn jsonrpc_member_is_ignored() {
        let m = Incoming::parse(br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{}}"#);
        assert!(matches!(m, Incoming::Request(_)));
    }

    #[test]
    fn null_and_float_ids_are_malformed() {
        assert!(matches!(
            Incoming::parse(br#"{"id":null,"method":"m"}"#),
            Incoming::Malformed(_)
        ));
        assert!(matches!(
            Incoming::parse(br#"{"id":1.5,"method":"m"}"#),
            Incoming::Malformed(_)
        ));
    }

    #[test]
    fn array_is_not_an_object() {
        assert_eq!(
            Incoming::parse(b"[1,2]"),
            Incoming::Malformed(
                "failed to parse JSON-RPC message: expected a JSON-RPC object".into()
            )
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let Incoming::Malformed(msg) = Incoming::parse(deep.as_bytes()) else {
            panic!()
        };
        assert!(msg.contains("recursion limit exceeded"), "{msg}");
    }
}
